// slicectl: the GPU test suite's stand-in for `tessera run`/`tessera slices` in the shim-only build
// (the GPU machine has no gRPC/protobuf, so the full CLI is not built there). Uses the same src/slice
// code as the CLI and the agent.
//   slicectl create DIR NAME UUID BYTES [UUID BYTES...]   writes DIR/slice.conf (region DIR/region)
//   slicectl usage CONFIG                                 reclaims dead rows, prints usage as JSON
//                                                         (first GPU at the top level, every GPU in "gpus")
//   slicectl peek CONFIG                                  same without reclaiming (observer only)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slice/config.h"
#include "slice/region.h"

using namespace tessera::slice;

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
    if (!LoadSliceConfig(argv[2], false, &c, err, sizeof(err)) ||
        !OpenRegion(c.region, true, &r, err, sizeof(err))) {
      fprintf(stderr, "slicectl: %s\n", err);
      return 1;
    }
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
  fprintf(stderr,
          "usage: slicectl create DIR NAME UUID BYTES [UUID BYTES...] | slicectl usage|peek CONFIG\n");
  return 2;
}
