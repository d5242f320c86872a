// Root processes of a standalone slice (`tessera run`): who started processes in it.
//
// A slice made by `tessera run` lives in no pod, so no cgroup names it. Each `tessera run` that creates or
// joins the slice appends one line "<pid> <start ticks>" to <slice dir>/roots before it execs the command
// (the exec keeps pid and start time). The node agent's watchdog (src/agent/watchdog.h) counts a process
// as the slice's when it or one of its ancestors is such a root, in the host's pid namespace.
//
// Header-only, libc only: used by the CLI, the agent and the GPU test programs.
#pragma once

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cstdint>

namespace tessera::slice {

inline constexpr const char* kRootsFile = "roots";

// Appends "<pid> <start_ticks>\n" to <dir>/roots (created 0644). One write(2) with O_APPEND, so lines of
// concurrent joiners never interleave. False when the file cannot be written.
inline bool AppendSliceRoot(const char* dir, int pid, uint64_t start_ticks) {
  char path[4096];
  if (snprintf(path, sizeof(path), "%s/%s", dir, kRootsFile) >= static_cast<int>(sizeof(path))) return false;
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  char line[64];
  int n = snprintf(line, sizeof(line), "%d %llu\n", pid, static_cast<unsigned long long>(start_ticks));
  bool ok = write(fd, line, static_cast<size_t>(n)) == n;
  close(fd);
  return ok;
}

}  // namespace tessera::slice
