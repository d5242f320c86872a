// Fuzz target (bench/fuzz): the slice region as any process of the slice may have left it (standalone,
// the slice's processes write the whole file; under the agent, each its own row). The input is laid over
// a zeroed RegionHeader: its first page over the header (the trusted part and the roster), the rest over
// the rows' counters, 320 bytes a row, so short inputs reach the rows. ValidateRegion judges it as it is;
// then, with the layout fields and the checksum made right so that the rest is reached, every read and
// write entry point runs on it. None may crash; a charge that succeeds leaves the GPU within its wall.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "fuzz_check.h"
#include "slice/region.h"

namespace slice = tessera::slice;

namespace {

constexpr size_t kRowBytes =
    offsetof(slice::RegionRow, limiter_spare) + sizeof(slice::RegionRow::limiter_spare);

slice::RegionHeader* Buffer() {
  static void* p = std::aligned_alloc(slice::kRegionPage, sizeof(slice::RegionHeader));
  return static_cast<slice::RegionHeader*>(p);
}

uint64_t Word(const uint8_t* data, size_t size, size_t at) {
  uint64_t v = 0;
  if (at + sizeof(v) <= size) memcpy(&v, data + at, sizeof(v));
  return v;
}

// No counter is large enough for a sum over the rows to wrap (the region's own sanity bound, 2^50).
bool Sane(const slice::RegionHeader* h) {
  for (int i = 0; i < slice::kRegionMaxProcs; ++i)
    for (int g = 0; g < slice::kMaxGpus; ++g)
      if (h->rows[i].bytes[g].load() > (1ull << 50) || h->rows[i].overhead[g].load() > (1ull << 50))
        return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  slice::RegionHeader* h = Buffer();
  memset(static_cast<void*>(h), 0, sizeof(*h));
  const size_t head = size < slice::kRegionPage ? size : slice::kRegionPage;
  memcpy(static_cast<void*>(h), data, head);
  for (size_t off = head, row = 0; off < size && row < slice::kRegionMaxProcs; off += kRowBytes, ++row) {
    const size_t n = size - off < kRowBytes ? size - off : kRowBytes;
    memcpy(static_cast<void*>(&h->rows[row]), data + off, n);
  }
  char err[160];
  slice::ValidateRegion(h, err, sizeof(err));
  h->magic = slice::kRegionMagic;
  h->version = slice::kRegionVersion;
  h->header_size = sizeof(slice::RegionHeader);
  h->row_size = sizeof(slice::RegionRow);
  h->max_procs = slice::kRegionMaxProcs;
  h->checksum = slice::RegionChecksum(h);
  if (!slice::ValidateRegion(h, err, sizeof(err))) return 0;

  const int gpus = static_cast<int>(h->gpu_count);
  for (int g = -1; g <= gpus; ++g) slice::ReadGpuUsage(h, g);
  static slice::ProcUsage procs[slice::kRegionMaxProcs];
  const int n = slice::ReadProcs(h, procs, slice::kRegionMaxProcs);
  FUZZ_CHECK(n >= 0 && n <= slice::kRegionMaxProcs);
  for (int i = 0; i < slice::kRegionMaxProcs; ++i) slice::RowHostPid(h, i);
  char uuid[slice::kUuidMax + 1] = {};
  memcpy(uuid, h->limits[0].uuid, slice::kUuidMax);
  const int found = slice::FindRegionGpu(h, uuid);
  FUZZ_CHECK(found >= -1 && found < gpus);

  slice::ReclaimDead(h);
  const int row = slice::ClaimRow(h);
  if (row < 0) return 0;
  FUZZ_CHECK(row < slice::kRegionMaxProcs);
  const bool sane = Sane(h);
  // Charge amounts from the input's last bytes: around the wall, and anything at all.
  const uint64_t any = Word(data, size, size >= 8 ? size - 8 : 0);
  for (int g = -1; g <= gpus; ++g) {
    const uint64_t wall = g >= 0 && g < slice::kMaxGpus ? h->limits[g].limit_bytes : 0;
    for (uint64_t bytes : {any, wall / 2, wall, wall + 1, uint64_t{1}}) {
      for (bool overhead : {false, true}) {
        slice::ChargeOutcome c = slice::TryCharge(h, row, g, bytes, overhead);
        if (c.result == slice::ChargeResult::kOk && sane && bytes <= (1ull << 50)) {
          FUZZ_CHECK(slice::ReadGpuUsage(h, g).used_bytes <= c.limit);
        }
        slice::Uncharge(h, row, g, bytes, overhead);
      }
    }
    slice::SetOverhead(h, row, g, any);
  }
  slice::PublishHostPid(h, row, h->rows[row].owner.load(), 1);
  slice::RowHostPid(h, row);
  slice::ReleaseRow(h, row);
  return 0;
}
