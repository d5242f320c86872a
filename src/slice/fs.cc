#include "slice/fs.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>

namespace tessera::slice {
namespace {

int PosixOpen(const char* path, int flags, mode_t mode) { return ::open(path, flags, mode); }
int PosixRename(const char* from, const char* to) { return ::rename(from, to); }

constexpr Fs kPosix{&PosixOpen, &::write, &::fsync, &::ftruncate, &PosixRename};
std::atomic<const Fs*> g_fs{nullptr};

}  // namespace

const Fs& PosixFs() { return kPosix; }

const Fs& CurrentFs() {
  const Fs* fs = g_fs.load(std::memory_order_acquire);
  return fs != nullptr ? *fs : kPosix;
}

void SetFsForTesting(const Fs* fs) { g_fs.store(fs, std::memory_order_release); }

}  // namespace tessera::slice
