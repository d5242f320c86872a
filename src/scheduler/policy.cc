#include "scheduler/policy.h"

#include <sstream>

namespace tessera::scheduler {
namespace {

kube::Error Invalid(const std::string& msg) { return kube::Error{0, "Invalid", msg}; }

std::string Trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

}  // namespace

std::string AllowedPolicyNames(PolicyLevel level) {
  return level == PolicyLevel::kGpu ? "binpack, spread, topology-aware, numa"
                                    : "binpack, spread, bestfit, fgd, tessera, random, topology-aware, numa";
}

kube::Result<PolicyChoice> ParsePolicyChoice(std::string_view what, std::string_view value, PolicyLevel level,
                                             PolicyChoice def) {
  const std::string text(value);
  if (Trim(text).empty()) return def;
  const std::string head = std::string(what) + "=" + text;
  PolicyChoice out = def;
  out.topology_aware = out.numa = false;
  std::string named_base;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::string name = Trim(item);
    if (name.empty()) return Invalid(head + ": empty entry in the list (names separated by commas)");
    if (name == "topology-aware") {
      out.topology_aware = true;
      continue;
    }
    if (name == "numa") {
      out.numa = true;
      continue;
    }
    auto p = placement::ParsePolicy(name);
    const bool gpu_ok = p && (*p == placement::Policy::kBinpack || *p == placement::Policy::kSpread);
    if (!p || (level == PolicyLevel::kGpu && !gpu_ok))
      return Invalid(head + " is not allowed: \"" + name + "\" is not one of " + AllowedPolicyNames(level) +
                     " (a comma-separated list may join one packing policy with topology-aware and numa)");
    if (!named_base.empty() && *p != out.base)
      return Invalid(head + " is not allowed: it names two packing policies (" + named_base + " and " + name +
                     "); keep one and add topology-aware or numa as needed");
    named_base = name;
    out.base = *p;
  }
  if (!text.empty() && text.back() == ',') return Invalid(head + ": empty entry in the list (names separated by commas)");
  return out;
}

}  // namespace tessera::scheduler
