#include "gpu/topology.h"

#include <charconv>
#include <map>

namespace tessera::gpu {

bool ValidLinkName(std::string_view name) {
  if (name == "PIX" || name == "PXB" || name == "PHB" || name == "NODE" || name == "SYS") return true;
  if (name.size() < 3 || name.substr(0, 2) != "NV") return false;
  int n = 0;
  auto [p, ec] = std::from_chars(name.data() + 2, name.data() + name.size(), n);
  return ec == std::errc() && p == name.data() + name.size() && n >= 1 && n <= 64 && name[2] != '0';
}

std::string LinkFromCommonAncestor(int level) {
  if (level <= 10) return "PIX";  // internal (one board) or a single PCIe switch
  if (level <= 20) return "PXB";
  if (level <= 30) return "PHB";
  if (level <= 40) return "NODE";
  return "SYS";
}

Status NormalizeLinks(std::vector<GpuInfo>* gpus, const std::string& where) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < gpus->size(); ++i) index[(*gpus)[i].uuid] = i;
  for (size_t i = 0; i < gpus->size(); ++i) {
    GpuInfo& g = (*gpus)[i];
    for (const auto& [peer, link] : g.links) {
      const std::string field = where + "[" + std::to_string(i) + "].links." + peer;
      if (!ValidLinkName(link))
        return Status::Error(field + ": '" + link + "' is not a link (allowed: NV1..NV64, PIX, PXB, PHB, NODE, SYS)");
      auto it = index.find(peer);
      if (it == index.end()) return Status::Error(field + ": no GPU of this node has that uuid");
      if (it->second == i) return Status::Error(field + ": a GPU has no link to itself");
    }
  }
  for (size_t i = 0; i < gpus->size(); ++i) {
    for (const auto& [peer, link] : (*gpus)[i].links) {
      GpuInfo& other = (*gpus)[index[peer]];
      auto back = other.links.find((*gpus)[i].uuid);
      if (back == other.links.end()) {
        other.links[(*gpus)[i].uuid] = link;
      } else if (back->second != link) {
        return Status::Error(where + ": " + (*gpus)[i].uuid + " says " + link + " to " + peer + " but " + peer +
                             " says " + back->second + " (a link has one kind)");
      }
    }
  }
  return Status::Ok();
}

}  // namespace tessera::gpu
