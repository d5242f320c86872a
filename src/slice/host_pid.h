// Host pids of slice processes that run in another pid namespace (every container of a pod).
//
// The driver names a process by its pid in the host's pid namespace: NVML's per-process usage, which is
// how the shim measures its context and the growth of it (modules, library workspaces, pools), lists
// host pids. A process in a container only knows its pid inside the container, so its own match fails
// and its context would stay at the estimate. The node agent runs in the host's namespace (hostPID) and
// sees both sides in /proc: a process's pid namespace (/proc/<pid>/ns/pid) and its pid inside it (the last
// NSpid entry of /proc/<pid>/status). PublishHostPids finds, for every row of a region whose owner lives in
// another namespace, the host process with that namespace, that inner pid and the owner's start time, and
// writes its host pid into the row (PublishHostPid, region.h); the shim then matches NVML's rows against it.
//
// Libc only and heap-free like the rest of src/slice; the shim itself never calls it.
#pragma once

#include <cstdint>

#include "slice/region.h"

namespace tessera::slice {

// "pid:[4026531836]" (the text of a /proc/<pid>/ns/pid link) -> 4026531836; 0 when malformed.
uint64_t ParsePidNamespaceLink(const char* text);

struct HostPidPass {
  int pending = 0;     // live rows of other namespaces without a host pid before the pass
  int published = 0;   // of which now published
  int scanned = 0;     // /proc entries examined (0 when nothing was pending)
  // The first unresolved rows (owner values), for the caller's diagnostics.
  uint64_t unresolved[8] = {};
  int unresolved_count = 0;
};

// One pass over the region's rows: those whose owner is alive in a pid namespace other than own_ns and has
// no host pid yet are looked up under proc_root (normally "/proc", read from the host's namespace) and
// published. Costs nothing but the row scan when no row is pending; otherwise one walk of proc_root.
HostPidPass PublishHostPids(RegionHeader* h, const char* proc_root, uint64_t own_ns);

}  // namespace tessera::slice
