// See host_pid.h.
#include "slice/host_pid.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace tessera::slice {
namespace {

struct Pending {
  int row;
  uint64_t owner;
  uint64_t ns;
};

// Reads a small file under proc_root into buf (NUL-terminated); false when absent or empty.
bool ReadSmall(const char* path, char* buf, size_t len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, len - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  return true;
}

// The process's pid in its own (innermost) namespace: the last number of the NSpid line; 0 if none.
int InnermostPid(const char* status) {
  const char* p = strstr(status, "\nNSpid:");
  if (p == nullptr) return 0;
  p += 7;
  long last = 0;
  for (;;) {
    while (*p == ' ' || *p == '\t') ++p;
    if (*p < '0' || *p > '9') break;
    char* end = nullptr;
    last = strtol(p, &end, 10);
    p = end;
  }
  return last > 0 && last < 0x7fffffff ? static_cast<int>(last) : 0;
}

}  // namespace

uint64_t ParsePidNamespaceLink(const char* text) {
  if (text == nullptr || strncmp(text, "pid:[", 5) != 0) return 0;
  const char* p = text + 5;
  uint64_t v = 0;
  int digits = 0;
  while (*p >= '0' && *p <= '9' && digits < 20) {
    v = v * 10 + static_cast<uint64_t>(*p++ - '0');
    ++digits;
  }
  return digits > 0 && p[0] == ']' && p[1] == '\0' ? v : 0;
}

HostPidPass PublishHostPids(RegionHeader* h, const char* proc_root, uint64_t own_ns) {
  HostPidPass out;
  Pending pending[kRegionMaxProcs];
  uint32_t hw = h->rows_high_water.load();
  if (hw > kRegionMaxProcs) hw = kRegionMaxProcs;
  for (uint32_t i = 0; i < hw; ++i) {
    RegionRow& r = h->rows[i];
    const uint64_t o = r.owner.load();
    if (o == 0 || (o & kOwnerReclaiming)) continue;
    const uint64_t ns = r.pidns.load();
    // Same namespace as the agent (or unknown): the owner's pid is already the driver's.
    if (ns == 0 || ns == own_ns || RowHostPid(h, static_cast<int>(i)) != 0) continue;
    pending[out.pending++] = Pending{static_cast<int>(i), o, ns};
  }
  if (out.pending == 0) return out;
  bool done[kRegionMaxProcs] = {};
  DIR* d = opendir(proc_root);
  if (d != nullptr) {
    char path[512], link[64], buf[4096];
    while (dirent* e = readdir(d)) {
      if (out.published == out.pending) break;
      char* end = nullptr;
      const long host = strtol(e->d_name, &end, 10);
      if (host <= 0 || *end != '\0' || host > 0x7fffffff) continue;
      ++out.scanned;
      snprintf(path, sizeof(path), "%s/%s/ns/pid", proc_root, e->d_name);
      const ssize_t n = readlink(path, link, sizeof(link) - 1);
      if (n <= 0) continue;
      link[n] = '\0';
      const uint64_t ns = ParsePidNamespaceLink(link);
      int want = -1;
      for (int k = 0; k < out.pending && want < 0; ++k) want = !done[k] && pending[k].ns == ns ? k : -1;
      if (want < 0) continue;
      snprintf(path, sizeof(path), "%s/%s/status", proc_root, e->d_name);
      if (!ReadSmall(path, buf, sizeof(buf))) continue;
      const int inner = InnermostPid(buf);
      snprintf(path, sizeof(path), "%s/%s/stat", proc_root, e->d_name);
      uint64_t ticks = 0;
      if (ReadSmall(path, buf, sizeof(buf))) ParseStatStartTicks(buf, &ticks);  // stays 0 when unreadable
      for (int k = 0; k < out.pending; ++k) {
        const Pending& p = pending[k];
        if (done[k] || p.ns != ns || OwnerPid(p.owner) != inner) continue;
        // A pid reused inside the container by another process is not the owner.
        if (static_cast<uint32_t>(ticks & 0x7fffffffu) != OwnerStart(p.owner)) continue;
        done[k] = true;
        if (PublishHostPid(h, p.row, p.owner, static_cast<int>(host))) ++out.published;
      }
    }
    closedir(d);
  }
  for (int k = 0; k < out.pending && out.unresolved_count < 8; ++k) {
    if (!done[k]) out.unresolved[out.unresolved_count++] = pending[k].owner;
  }
  return out;
}

}  // namespace tessera::slice
