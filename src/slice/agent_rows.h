// Agent rows: a slice region whose enforcement state no process of the slice can write.
//
// Under Kubernetes the node agent owns each slice's region directory (root, 0755, mounted read-only into
// the container):
//   slice.region   the header: layout, limits, the roster of rows (slot_owner). Written by the agent only.
//   live           the live counters (peak, refusals, the compute limiter's shared state): one file shared
//                  read-write by the slice's processes, handed to each by the agent.
//   rows/<i>       row i: one page, the bytes one process has charged. Read-write for that process only.
//   agent.sock     the agent's socket (SOCK_SEQPACKET) for this slice.
// A process of the slice connects to agent.sock (RegisterRow). The agent learns who it is from the kernel
// (SO_PEERCRED: its host pid; the slice from which socket was used), takes a free slot, writes the owner
// into the roster and into a fresh rows/<i>, and sends back file descriptors of rows/<i> and live
// (SCM_RIGHTS). The process maps the header read-only and lays its own row (read-write) and everyone
// else's (read-only, opened by path) over it (slice::MapAgentParts). Because the directory is read-only in
// the container, no process can open another's row, the roster or the limits for writing, whatever its
// uid: zeroing a neighbour's row or rewriting the limit fails with EROFS.
//
// Dead rows: the agent runs in the host's pid namespace, so it judges every owner (host pid + start time)
// whatever namespace the process lived in (ReclaimAgentRows), and a container restarted in a new pid
// namespace gets its whole slice back. A process refused at the wall asks the agent to reclaim at once
// (AskAgentToReclaim) before saying no.
//
// No wait on anything a tenant controls: each request has a deadline; a dead or busy agent costs the
// caller at most that deadline and an error it can report. Client functions are libc-only and heap-free
// (the shim runs them inside applications); agent functions are called from the node agent's RowBroker.
#pragma once

#include <cstddef>
#include <cstdint>

#include "slice/config.h"
#include "slice/region.h"

namespace tessera::slice {

inline constexpr const char* kAgentSocketName = "agent.sock";
inline constexpr uint32_t kRowRequestMagic = 0x51525354;  // "TSRQ"
inline constexpr uint32_t kRowReplyMagic = 0x50525354;    // "TSRP"
enum class RowOp : uint32_t { kRegister = 1, kReclaim = 2 };

struct RowRequest {
  uint32_t magic;
  uint32_t version;  // 1
  uint32_t op;       // RowOp
  uint32_t pad;
};
struct RowReply {
  uint32_t magic;
  int32_t status;  // 0 ok, else an errno value
  int32_t slot;    // register: the row; reclaim: rows reclaimed
  uint32_t pad;
  uint64_t generation;  // the region's generation the row belongs to
  char message[160];
};

// ---- Client (the shim) --------------------------------------------------------------------------------

// Registers the calling process with the agent at socket_path: on success *slot, *row_fd (read-write, its
// row) and *live_fd (read-write, the live part). Gives up after timeout_ms in all.
bool RegisterRow(const char* socket_path, int timeout_ms, int* slot, int* row_fd, int* live_fd, uint64_t* generation,
                 char* err, size_t errlen);
// Asks the agent to reclaim the rows of dead processes now. Rows reclaimed, or -1 (no answer in time).
int AskAgentToReclaim(const char* socket_path, int timeout_ms);
// Registers and maps the region of cfg (cfg.agent names the socket) as a process of the slice: the header
// read-only, its own row read-write. out->own_row is the row. Fails when the agent does not answer, the
// region is not the agent's or does not match cfg.
bool OpenRegionAsMember(const SliceConfig& cfg, int timeout_ms, Region* out, char* err, size_t errlen);

// After the agent rebuilt the region (its generation changed) or in a forked child: registers again and
// lays the new row (and the live part) over the existing mapping of r, which stays valid throughout.
bool RejoinAsMember(const SliceConfig& cfg, int timeout_ms, Region* r, char* err, size_t errlen);

// ---- Agent side ---------------------------------------------------------------------------------------

// Makes dir hold the agent-owned region for cfg: creates it, or rebuilds it (in place, a new generation,
// roster cleared) when missing, truncated, corrupt, of another layout or for other limits. *rebuilt tells.
bool PrepareAgentRegion(const char* dir, const SliceConfig& cfg, bool* rebuilt, char* err, size_t errlen);
// Gives a free row of r (opened writable with OpenRegion) to the process host_pid: returns the slot and
// open descriptors of its row file (fresh, read-write) and of the live file. Reclaims dead rows when full.
bool AssignAgentRow(Region* r, int host_pid, int* slot, int* row_fd, int* live_fd, char* err, size_t errlen);
// Frees the rows whose owner (host pid + start time) is no longer alive under proc_root, in any pid
// namespace: zeroes the row's file, unlinks it, clears its roster entry. Returns how many.
int ReclaimAgentRows(Region* r);

}  // namespace tessera::slice
