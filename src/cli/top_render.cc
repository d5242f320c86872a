#include "cli/top_render.h"

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace tessera::cli {
namespace {

const char* kBold = "\x1b[1m";
const char* kRed = "\x1b[31m";
const char* kReset = "\x1b[0m";

std::string Fit(const std::string& s, size_t w) {
  if (s.size() <= w) return s + std::string(w - s.size(), ' ');
  if (w <= 1) return s.substr(0, w);
  // Keep the tail: pod names and GPU UUIDs differ at the end more often than at the start.
  return "~" + s.substr(s.size() - (w - 1));
}

std::string Pct(double v) {
  if (v < 0) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.0f%%", v);
  return b;
}

std::string Int(int64_t v) { return v < 0 ? "-" : std::to_string(v); }

std::string Ratio(uint64_t used, uint64_t limit) {
  std::string s = FormatBytes(used) + " / " + FormatBytes(limit);
  if (limit > 0) {
    char b[16];
    std::snprintf(b, sizeof b, " %3.0f%%", 100.0 * static_cast<double>(used) / static_cast<double>(limit));
    s += b;
  }
  return s;
}

std::string Priority(int p) {
  if (p == 0) return "high";
  if (p == 1) return "best";
  return "-";
}

}  // namespace

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char b[32];
  if (u == 0) std::snprintf(b, sizeof b, "%llu B", static_cast<unsigned long long>(bytes));
  else std::snprintf(b, sizeof b, "%.1f %s", v, kUnits[u]);
  return b;
}

std::string RenderTable(const TopSnapshot& snap, const RenderOptions& opt) {
  std::string out;
  auto bold = [&](const std::string& s) { return opt.color ? kBold + s + kReset : s; };
  size_t procs = 0;
  for (const TopSlice& s : snap.slices) procs += s.process_count > 0 ? static_cast<size_t>(s.process_count) : 0;
  char title[512];
  std::snprintf(title, sizeof title, "tessera top%s%s  source: %s  GPUs: %zu  slices: %zu  processes: %zu\n",
                opt.clock.empty() ? "" : " - ", opt.clock.c_str(), snap.source.c_str(), snap.gpus.size(),
                snap.slices.size(), procs);
  out += title;
  out += "\n";

  // GPUs. Fixed columns first; the UUID takes what is left of the width.
  const size_t gfixed = 14 + 30 + 30 + 6 + 7;
  size_t gw = std::max<size_t>(20, opt.width > static_cast<int>(gfixed) ? opt.width - gfixed : 20);
  gw = std::min<size_t>(gw, 44);
  out += bold(Fit("GPU", gw) + " " + Fit("MODEL", 13) + " " + Fit("MEMORY USED / TOTAL", 29) + " " +
              Fit("ALLOCATED TO SLICES", 29) + " " + Fit("UTIL", 5) + " " + "SLICES") + "\n";
  for (const TopGpu& g : snap.gpus) {
    std::string used = g.used_bytes < 0 ? "-" : (g.total_bytes > 0 ? Ratio(g.used_bytes, g.total_bytes)
                                                                     : FormatBytes(g.used_bytes));
    std::string alloc = g.total_bytes > 0 ? Ratio(g.allocated_bytes, g.total_bytes) : FormatBytes(g.allocated_bytes);
    out += Fit(g.uuid, gw) + " " + Fit(g.model.empty() ? "-" : g.model, 13) + " " + Fit(used, 29) + " " +
           Fit(alloc, 29) + " " + Fit(Pct(g.utilization_percent), 5) + " " + std::to_string(g.slices) + "\n";
  }
  if (snap.gpus.empty()) out += "(no GPUs)\n";
  out += "\n";

  // Slices.
  const size_t sfixed = 14 + 30 + 5 + 6 + 5 + 6 + 8 + 9 + 7;
  size_t nw = std::max<size_t>(16, opt.width > static_cast<int>(sfixed) ? opt.width - sfixed : 16);
  nw = std::min<size_t>(nw, 60);
  out += bold(Fit("SLICE", nw) + " " + Fit("GPU", 13) + " " + Fit("MEMORY USED / LIMIT", 29) + " " + Fit("CAP", 4) +
              " " + Fit("SHARE", 5) + " " + Fit("PRIO", 4) + " " + Fit("PROCS", 5) + " " + Fit("REFUSED", 7) + " " +
              "THROTTLED") + "\n";
  for (const TopSlice& s : snap.slices) {
    std::string mem = Fit(Ratio(s.used_bytes, s.limit_bytes), 29);
    if (opt.color && s.limit_bytes > 0 && s.used_bytes * 10 >= s.limit_bytes * 9) mem = kRed + mem + kReset;
    std::string thr = "-";
    if (s.throttled_seconds >= 0) {
      char b[32];
      std::snprintf(b, sizeof b, "%.1fs", s.throttled_seconds);
      thr = b;
    }
    // Short GPU id: the first block of the UUID is what nvidia-smi -L users recognise.
    std::string gpu = s.gpu.size() > 12 ? s.gpu.substr(0, 12) : s.gpu;
    out += Fit(s.name, nw) + " " + Fit(gpu, 13) + " " + mem + " " + Fit(s.cap_percent < 0 ? "-" : Pct(s.cap_percent), 4) +
           " " + Fit(Pct(s.share_percent), 5) + " " + Fit(Priority(s.priority), 4) + " " +
           Fit(Int(s.process_count), 5) + " " + Fit(Int(s.wall_refusals), 7) + " " + thr + "\n";
    for (const TopProcess& p : s.processes) {
      out += "  pid " + Fit(std::to_string(p.pid), 8) + " " + FormatBytes(p.bytes) + "\n";
    }
  }
  if (snap.slices.empty()) out += "(no slices)\n";
  return out;
}

std::string RenderJson(const TopSnapshot& snap) {
  using nlohmann::json;
  auto num = [](double v) { return v < 0 ? json(nullptr) : json(v); };
  auto inum = [](int64_t v) { return v < 0 ? json(nullptr) : json(v); };
  json j;
  j["source"] = snap.source;
  j["time_ms"] = snap.time_ms;
  j["gpus"] = json::array();
  for (const TopGpu& g : snap.gpus) {
    j["gpus"].push_back({{"uuid", g.uuid},
                         {"model", g.model.empty() ? json(nullptr) : json(g.model)},
                         {"memory_used_bytes", inum(g.used_bytes)},
                         {"memory_total_bytes", inum(g.total_bytes)},
                         {"memory_allocated_bytes", g.allocated_bytes},
                         {"utilization_percent", num(g.utilization_percent)},
                         {"slices", g.slices}});
  }
  j["slices"] = json::array();
  for (const TopSlice& s : snap.slices) {
    json procs = json::array();
    for (const TopProcess& p : s.processes) procs.push_back({{"pid", p.pid}, {"bytes", p.bytes}});
    json o = {{"name", s.name},
              {"gpu", s.gpu},
              {"memory_used_bytes", s.used_bytes},
              {"memory_limit_bytes", s.limit_bytes},
              {"cap_percent", inum(s.cap_percent)},
              {"share_percent", num(s.share_percent)},
              {"priority", inum(s.priority)},
              {"process_count", inum(s.process_count)},
              {"processes", procs},
              {"wall_refusals", inum(s.wall_refusals)},
              {"throttled_seconds", num(s.throttled_seconds)}};
    if (!s.pod.empty()) {
      o["namespace"] = s.ns;
      o["pod"] = s.pod;
      o["container"] = s.container;
    }
    j["slices"].push_back(std::move(o));
  }
  return j.dump(2) + "\n";
}

}  // namespace tessera::cli
