// slicectl: the GPU test suite's stand-in for `tessera run`/`tessera slices` in the shim-only build
// (the GPU machine has no gRPC/protobuf, so the full CLI is not built there). Uses the same src/slice
// code as the CLI and the agent.
//   slicectl create DIR NAME UUID BYTES [UUID BYTES...]   writes DIR/slice.conf (region DIR/region)
//   slicectl usage CONFIG                                 reclaims dead rows, prints usage as JSON
//                                                         (first GPU at the top level, every GPU in "gpus")
//   slicectl peek CONFIG                                  same without reclaiming (observer only)
//   slicectl hostpids CONFIG STOP_FILE publish|observe    every 100 ms until STOP_FILE exists: with
//                                                         `publish`, the node agent's host-pid pass
//                                                         (slice/host_pid.h); then the rows seen, as JSON
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "slice/config.h"
#include "slice/host_pid.h"
#include "slice/region.h"

using namespace tessera::slice;

// The slice of the config at `path` and its region, mapped read-write; says why on stderr when not.
static bool OpenSlice(const char* path, SliceConfig* c, Region* r) {
  char err[256];
  if (LoadSliceConfig(path, false, c, err, sizeof(err)) && OpenRegion(c->region, true, r, err, sizeof(err))) return true;
  fprintf(stderr, "slicectl: %s\n", err);
  return false;
}

int main(int argc, char** argv) {
  char err[256];
  if (argc >= 6 && !strcmp(argv[1], "create") && (argc - 4) % 2 == 0) {
    SliceConfig c;
    InitSliceConfig(&c);
    snprintf(c.name, sizeof(c.name), "%s", argv[3]);
    snprintf(c.region, sizeof(c.region), "%s/region", argv[2]);
    for (int i = 4; i + 1 < argc; i += 2) {
      GpuLimit& g = c.gpus[c.gpu_count++];
      snprintf(g.uuid, sizeof(g.uuid), "%s", argv[i]);
      g.memory_bytes = strtoull(argv[i + 1], nullptr, 10);
      g.cores = 100;
    }
    char path[600];
    snprintf(path, sizeof(path), "%s/slice.conf", argv[2]);
    if (!WriteSliceConfig(path, c, err, sizeof(err))) {
      fprintf(stderr, "slicectl: %s\n", err);
      return 1;
    }
    Region r;
    if (!OpenRegionForSlice(c, &r, err, sizeof(err))) {
      fprintf(stderr, "slicectl: %s\n", err);
      return 1;
    }
    printf("%s\n", path);
    return 0;
  }
  if (argc == 3 && (!strcmp(argv[1], "usage") || !strcmp(argv[1], "peek"))) {
    SliceConfig c;
    Region r;
    if (!OpenSlice(argv[2], &c, &r)) return 1;
    if (!strcmp(argv[1], "usage")) ReclaimDead(r.hdr);  // peek: see only what the slice's processes did
    GpuUsage u = ReadGpuUsage(r.hdr, 0);
    ProcUsage procs[kRegionMaxProcs];
    int n = ReadProcs(r.hdr, procs, kRegionMaxProcs);
    printf(
        "{\"limit\":%llu,\"used\":%llu,\"charged\":%llu,\"overhead\":%llu,\"peak\":%llu,\"refusals\":%llu,"
        "\"ctx_hint\":%llu,\"procs\":[",
        (unsigned long long)u.limit_bytes, (unsigned long long)u.used_bytes,
        (unsigned long long)u.charged_bytes, (unsigned long long)u.overhead_bytes,
        (unsigned long long)u.peak_bytes, (unsigned long long)u.wall_refusals,
        (unsigned long long)r.hdr->gpus[0].ctx_hint_bytes.load());
    for (int i = 0; i < n; ++i)
      printf("%s{\"pid\":%d,\"bytes\":%llu}", i ? "," : "", procs[i].pid,
             (unsigned long long)procs[i].bytes[0]);
    // Every GPU of the slice (the fields above are its first GPU's).
    printf("],\"gpus\":[");
    for (int g = 0; g < c.gpu_count; ++g) {
      int rg = FindRegionGpu(r.hdr, c.gpus[g].uuid);
      GpuUsage gu = rg >= 0 ? ReadGpuUsage(r.hdr, rg) : GpuUsage{};
      printf(
          "%s{\"uuid\":\"%s\",\"limit\":%llu,\"used\":%llu,\"charged\":%llu,\"peak\":%llu,\"refusals\":%llu}",
          g ? "," : "", c.gpus[g].uuid, (unsigned long long)c.gpus[g].memory_bytes,
          (unsigned long long)gu.used_bytes, (unsigned long long)gu.charged_bytes,
          (unsigned long long)gu.peak_bytes, (unsigned long long)gu.wall_refusals);
    }
    printf("]}\n");
    return 0;
  }
  if (argc == 5 && !strcmp(argv[1], "hostpids")) {
    SliceConfig c;
    Region r;
    if (!OpenSlice(argv[2], &c, &r)) return 1;
    const bool publish = !strcmp(argv[4], "publish");
    struct Seen {
      int pid, host_pid;
      unsigned long long first_overhead, last_overhead, max_overhead, max_used;
    } seen[64];
    int nseen = 0, passes = 0, published = 0;
    const uint64_t own_ns = SelfPidNamespace();
    while (access(argv[3], F_OK) != 0) {
      if (publish) published += PublishHostPids(r.hdr, "/proc", own_ns).published;
      ++passes;
      ProcUsage procs[kRegionMaxProcs];
      const int n = ReadProcs(r.hdr, procs, kRegionMaxProcs);
      for (int i = 0; i < n; ++i) {
        int k = 0;
        while (k < nseen && seen[k].pid != procs[i].pid) ++k;
        if (k == nseen) {
          if (nseen == 64) continue;
          seen[nseen++] = Seen{procs[i].pid, 0, procs[i].overhead[0], 0, 0, 0};
        }
        Seen& s = seen[k];
        if (procs[i].host_pid) s.host_pid = procs[i].host_pid;
        s.last_overhead = procs[i].overhead[0];
        if (s.last_overhead > s.max_overhead) s.max_overhead = s.last_overhead;
        if (procs[i].bytes[0] > s.max_used) s.max_used = procs[i].bytes[0];
      }
      timespec ts{0, 100 * 1000 * 1000};
      nanosleep(&ts, nullptr);
    }
    printf("{\"mode\":\"%s\",\"passes\":%d,\"published\":%d,\"rows\":[", argv[4], passes, published);
    for (int k = 0; k < nseen; ++k) {
      const Seen& s = seen[k];
      printf("%s{\"pid\":%d,\"host_pid\":%d,\"first_overhead\":%llu,\"last_overhead\":%llu,"
             "\"max_overhead\":%llu,\"max_used\":%llu}",
             k ? "," : "", s.pid, s.host_pid, s.first_overhead, s.last_overhead, s.max_overhead, s.max_used);
    }
    printf("]}\n");
    return 0;
  }
  fprintf(stderr,
          "usage: slicectl create DIR NAME UUID BYTES [UUID BYTES...] | slicectl usage|peek CONFIG |\n"
          "       slicectl hostpids CONFIG STOP_FILE publish|observe\n");
  return 2;
}
