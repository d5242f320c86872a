// Fs: the file-system calls through which the slice files are created and replaced, so tests can inject
// faults (disk full, a failing rename, a short write) the way src/gpu/fault_backend does for the GPU.
//
// Used by the writers of enforcement state: the slice config writer (WriteSliceConfig) and the node
// agent's region files (agent_rows.cc). Readers (the shim's loads and maps) call the OS directly. The
// table is plain function pointers, constant-initialised (no constructor runs in the shim), and is
// swapped only by tests, before any other thread writes slice files.
#pragma once

#include <sys/types.h>

namespace tessera::slice {

struct Fs {
  int (*open)(const char* path, int flags, mode_t mode);
  ssize_t (*write)(int fd, const void* buf, size_t n);
  int (*fsync)(int fd);
  int (*ftruncate)(int fd, off_t len);
  int (*rename)(const char* from, const char* to);
};

// The POSIX calls.
const Fs& PosixFs();
// The table in use (PosixFs unless a test set another).
const Fs& CurrentFs();
// Replaces the table (nullptr: back to PosixFs). Tests only.
void SetFsForTesting(const Fs* fs);

}  // namespace tessera::slice
