// Slice config: the file that sets a slice's limits (contract in BRIEF "Slice config file").
//
// Written by `tessera run` (standalone) and the node agent (Kubernetes); read by libtessera.so in every
// process of the slice and by `tessera slices`. Format: text, one key=value per line, '#' comments,
// unknown keys ignored, version=1; the key `gpu` repeats, one line per GPU:
//   gpu=<uuid> memory=<bytes> cores=<1..100>
// Optional: agent=<socket> (the node agent keeps the region, agent_rows.h), mps_pipe=<dir>,
// mps_percentage=<1..100>, mps_sms=<1..4096> (spatial mode, src/shim/mps.h). This is the only parser of
// the file: the shim loads it once and every part of the shim reads that copy.
// The parser is C-style on purpose: it runs inside arbitrary applications (through the shim), so it never
// throws, never allocates and works on caller-owned buffers. All functions are reentrant.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tessera::slice {

inline constexpr int kMaxGpus = 16;
inline constexpr int kUuidMax = 96;       // "GPU-" + 36 chars fits with room for MIG UUIDs
inline constexpr int kSliceNameMax = 64;  // [a-z0-9][a-z0-9._-]{0,62} + NUL
inline constexpr int kPathMax = 512;
inline constexpr size_t kConfigMaxBytes = 16384;

enum class CapMode : int { kHard = 0, kBurst = 1 };

struct GpuLimit {
  char uuid[kUuidMax];
  uint64_t memory_bytes;
  int cores;  // 1..100, default 100
};

struct SliceConfig {
  int version;
  char name[kSliceNameMax];
  char region[kPathMax];
  int priority;  // 0 high, 1 best effort (default 1)
  CapMode cap_mode;
  int gpu_count;
  GpuLimit gpus[kMaxGpus];
  // The node agent's socket for this slice (agent_rows.h); empty: the slice's processes keep the region
  // themselves (`tessera run`).
  char agent[kPathMax];
  // Spatial mode (src/shim/mps.h): the MPS control pipe directory (empty: time-sliced), the partition
  // override (1..100, 0 none) and the GPU's SM count (1..4096, 0 unknown).
  char mps_pipe[kPathMax];
  int mps_percentage;
  int mps_sms;
};

// Fills cfg with defaults (version 1, priority 1, cap_mode hard, no GPUs).
void InitSliceConfig(SliceConfig* cfg);

// Parses text[0..len). On error returns false and writes "line N: <field>: <problem> (allowed ...)" to err.
// Required: version=1, slice, region, at least one gpu line. Duplicate GPU UUIDs are an error.
bool ParseSliceConfig(const char* text, size_t len, SliceConfig* cfg, char* err, size_t errlen);

// Reads and parses path. When require_trusted is set the file must be a regular file owned by root or by
// the caller's effective uid and not writable by group or other (so an application cannot raise its own
// limit by pointing the shim at a file it wrote). Uses only open/fstat/read/close.
bool LoadSliceConfig(const char* path, bool require_trusted, SliceConfig* cfg, char* err, size_t errlen);

// Where the shim reads its slice config: the node agent's mount kContainerSliceConfig when it exists (inside a
// container it wins over anything the environment says, so an application cannot point the shim at a file of
// its own), else $TESSERA_SLICE_CONFIG (set by `tessera run`), else nullptr (no slice). One stat().
inline constexpr const char* kContainerSliceConfig = "/run/tessera/slice.conf";
const char* SliceConfigPath();

// Formats cfg into buf (NUL-terminated). Returns the length, or -1 when buf is too small or cfg is invalid
// (message in err).
int FormatSliceConfig(const SliceConfig& cfg, char* buf, size_t buflen, char* err, size_t errlen);

// Writes cfg to path atomically (temp file + rename) with mode 0644. Parent directory must exist.
bool WriteSliceConfig(const char* path, const SliceConfig& cfg, char* err, size_t errlen);

bool ValidSliceName(const char* name);
// Index of the GPU with this UUID in cfg, or -1.
int FindGpu(const SliceConfig& cfg, const char* uuid);

// Parses a byte quantity: plain bytes, or a number with K/M/G/T (powers of 1000) or KiB/MiB/GiB/TiB
// (powers of 1024) suffix, case-insensitive, optional 'B'. Returns false on junk or overflow.
bool ParseBytes(const char* s, uint64_t* out);

}  // namespace tessera::slice
