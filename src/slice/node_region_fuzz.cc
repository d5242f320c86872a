// Fuzz target (bench/fuzz): the node region's two files as tenants may have left them (each slice can
// write its own priority's file). Byte 0 picks the mode; the rest is split in half, written to <gpu> and
// <gpu>.high in a scratch directory (NodeRegion::Open sizes them, zero-filled). In mode bit 0 the headers
// are kept as they are (so damaged and foreign files are rebuilt); otherwise their magic, version and row
// count are made right so the rows are read as they are. Every member then runs over them at a fixed
// clock; none may crash or overflow, whatever the rows say.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fuzz_check.h"
#include "slice/node_region.h"

namespace slice = tessera::slice;

namespace {

// The header's first fields as node_region.cc lays them out (a private struct there).
constexpr uint64_t kMagic = 0x31474e4f444e5354ull;
constexpr uint32_t kVersion = 6;

// A scratch directory of this process, removed at exit (plain storage: no destructor runs before that).
const char* Dir() {
  static char dir[64];
  static const bool made = [] {
    // Memory-backed where there is one, as /run/tessera/node is.
    const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof(dir), "%s/tessera-fuzz-node-region-XXXXXX", base);
    FUZZ_CHECK(mkdtemp(dir) != nullptr);
    std::atexit([] {
      for (const char* f : {"/GPU-fuzz", "/GPU-fuzz.high"}) unlink((std::string(dir) + f).c_str());
      rmdir(dir);
    });
    return true;
  }();
  (void)made;
  return dir;
}

void WriteFile(const std::string& path, const uint8_t* data, size_t n, bool fix_header) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  FUZZ_CHECK(fd >= 0);
  std::string bytes(reinterpret_cast<const char*>(data), n);
  if (fix_header) {
    if (bytes.size() < 16) bytes.resize(16, '\0');
    const uint32_t rows = slice::NodeRegion::kRows;
    memcpy(bytes.data(), &kMagic, 8);
    memcpy(bytes.data() + 8, &kVersion, 4);
    memcpy(bytes.data() + 12, &rows, 4);
  }
  FUZZ_CHECK(write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool raw = data[0] & 1;
  const size_t half = (size - 1) / 2;
  const std::string path = std::string(Dir()) + "/GPU-fuzz";
  WriteFile(path, data + 1, half, !raw);
  WriteFile(path + ".high", data + 1 + half, size - 1 - half, !raw);
  std::string err;
  auto region = slice::NodeRegion::Open(path, &err);
  if (!region) return 0;

  // A clock well past boot, and the limiter's usual windows.
  const int64_t now = int64_t{1} << 40, linger = 2'000'000, stale = 200'000'000, idle = 1'000'000;
  slice::NodeRegion& r = *region;
  r.HighPriorityMaybePresent();
  r.HighPriorityPresent(now, stale);
  r.HighPriorityActive(nullptr, now, linger, stale);
  r.HighPriorityPending(nullptr, now, stale);
  int64_t period = 0;
  r.HighPriorityDueIn(nullptr, now, stale, &period);
  static slice::NodeRegion::ActivityWatch watch;
  r.OthersIdle(nullptr, now, idle, stale, &watch);
  r.LiveRows(now, stale);
  int top = 0;
  const int64_t busy = r.OthersBusy(nullptr, now - 1'000'000, now, &top);
  FUZZ_CHECK(busy <= 1'000'000);
  FUZZ_CHECK(top >= -1 && top < 2 * slice::NodeRegion::kRows);
  r.OthersPublishedThrough(nullptr, now, now, stale);
  for (int priority : {0, 1}) {
    slice::NodeRow* row = r.Join(priority, "fuzz", now);
    if (row == nullptr) continue;
    r.Heartbeat(row, now);
    r.NoteSubmit(row, now);
    r.NoteSubmit(row, now + 1'000'000);
    slice::NodeRegion::NoteUntrackedSubmit(row);
    r.PublishBusy(row, now - 500'000, now);
    r.HighPriorityActive(row, now, linger, stale);
    r.HighPriorityDueIn(row, now, stale);
    r.OthersIdle(row, now, idle, stale, &watch);
    r.OthersBusy(row, now - 1'000'000, now, &top);
    if (top >= 0) r.Bill(top, 1000);
    r.OthersPublishedThrough(row, now, now, stale);
    r.NoteComplete(row, 2);
    r.Leave(row);
  }
  return 0;
}
