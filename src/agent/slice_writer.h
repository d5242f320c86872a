// SliceWriter: turns a container's assignment into its slice on the host and into what the kubelet
// must tell the runtime (mounts, environment).
//
// Host layout under the state dir (default /var/lib/tessera):
//   slices/<slice>/slice.conf      the slice config (src/slice/config.h), root-owned, 0644
//   slices/<slice>/region/         the accounting region's directory (root, 0755), mounted READ-ONLY:
//                                  slice.region, live, rows/<i>, agent.sock (src/slice/agent_rows.h),
//                                  kept by the RowBroker this writer owns
//   slices/<slice>/owner.json      which pod/container the slice serves (for metrics and repairs)
//   ld.so.preload                  one line: the in-container path of libtessera.so
// <slice> is derived from the kubelet's first device ID ("GPU-ab12…::3" → "gpu-ab12…-3"): the kubelet
// hands each device ID to one live container only, so the name is unique while the container lives,
// and the kubelet's PodResources answer (pod/container → device IDs) leads straight to the slice it
// got, which is what makes repairs possible after a wrong guess.
//
// In the container everything is read-only except as noted: /run/tessera/slice.conf, /run/tessera/region
// (a process gets its own row through the agent's socket there, never by path),
// /usr/local/lib/tessera/libtessera.so, /etc/ld.so.preload, when configured the node-wide priority files
// of the slice's GPUs one by one (/run/tessera/node/<uuid>: read-write, the best-effort participants'
// file; <uuid>.high: read-write only for a high-priority slice, read-only for the others, so no tenant
// can make itself high priority; see slice/node_region.h), and for a spatial slice its GPU's MPS pipe
// dir (read-write, at the host path). NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES name the assigned
// GPUs by UUID and nothing else.
//
// Thread-safe: distinct slices may be written concurrently; one slice is written by one caller.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/assignment.h"
#include "agent/mps_supervisor.h"
#include "agent/row_broker.h"
#include "gpu/status.h"

namespace tessera::agent {

inline constexpr const char* kCtrSliceConf = "/run/tessera/slice.conf";
inline constexpr const char* kCtrRegionDir = "/run/tessera/region";
inline constexpr const char* kCtrRegionFile = "/run/tessera/region/slice.region";
inline constexpr const char* kCtrShim = "/usr/local/lib/tessera/libtessera.so";
inline constexpr const char* kCtrPreload = "/etc/ld.so.preload";
inline constexpr const char* kCtrNodeDir = "/run/tessera/node";

struct Mount {
  std::string container_path;
  std::string host_path;
  bool read_only = true;
  bool operator==(const Mount&) const = default;
};

struct ContainerSlice {
  std::string slice;          // slice name
  std::filesystem::path dir;  // host dir of the slice
  std::map<std::string, std::string> envs;
  std::vector<Mount> mounts;
};

// Who a slice serves, as recorded in owner.json.
struct SliceOwner {
  std::string namespace_, pod, pod_uid, container;
  std::vector<std::string> device_ids;
  std::vector<Grant> grants;
  bool verified = false;  // PodResources confirmed this container holds these device IDs
};

std::string SliceNameForDevices(const std::vector<std::string>& device_ids);

// Replaces PATH with TEXT (mode MODE) atomically: a temporary in the same directory, fsync'ed, renamed over
// it. Through slice::CurrentFs (the writers' seam), so a test can make the disk full or a rename fail. The
// old file stays whole until the rename; a failed write leaves no temporary behind.
gpu::Status WriteFileAtomic(const std::filesystem::path& path, const std::string& text, mode_t mode);

class SliceWriter {
 public:
  struct Options {
    std::filesystem::path state_dir = "/var/lib/tessera";
    std::filesystem::path shim_path;        // libtessera.so on the host
    std::filesystem::path node_region_dir;  // host dir for node-wide priority files; empty: none
    // Spatial slices (ContainerAssignment::spatial) get their GPU's MPS daemon from here: the config keys
    // mps_pipe (and mps_sms when the GPU's SM count is known, SetSmCounts) and the pipe dir mounted at
    // the same path. Null: spatial slices are refused with a message saying spatial mode is off.
    MpsSupervisor* mps = nullptr;
  };
  explicit SliceWriter(Options opts);

  // Creates the state dir, slices/ and ld.so.preload, and starts serving the rows of every slice already
  // there (an agent restart keeps its containers' books). Idempotent.
  gpu::Status Prepare();

  // Writes (or rewrites) the slice for `a` on `device_ids`. gpu_memory_bytes gives each GPU's total so a
  // grant of 0 MiB (whole card) becomes the card's memory. Nothing is half-applied: each file is replaced
  // atomically (through slice::CurrentFs, so tests inject disk-full faults), and a new slice that cannot be
  // written whole is removed again (its region no longer served, its MPS daemon released).
  gpu::Status Write(const ContainerAssignment& a, const std::vector<std::string>& device_ids,
                    const std::map<std::string, uint64_t>& gpu_memory_bytes, ContainerSlice* out);

  gpu::Status WriteOwner(const std::filesystem::path& dir, const SliceOwner& owner);
  static gpu::Status ReadOwner(const std::filesystem::path& dir, SliceOwner* owner);

  // Every slice dir with an owner.json.
  std::vector<std::filesystem::path> ListSlices() const;
  // Removes a slice dir (the container is gone) and releases its MPS daemon when it was spatial.
  gpu::Status Remove(const std::filesystem::path& dir);
  // SMs per GPU uuid (mps_sms of spatial slices).
  void SetSmCounts(std::map<std::string, int> sms);
  // After a restart: hands the running spatial slices to the MPS supervisor.
  void AdoptSpatialSlices();

  std::filesystem::path slices_dir() const { return opts_.state_dir / "slices"; }

 private:
  gpu::Status WriteFiles(const ContainerAssignment& a, const std::vector<std::string>& device_ids,
                         const std::map<std::string, uint64_t>& gpu_memory_bytes, ContainerSlice* out,
                         bool* mps_acquired);

  Options opts_;
  std::unique_ptr<RowBroker> broker_ = std::make_unique<RowBroker>();
  std::mutex sms_mu_;
  std::map<std::string, int> sms_;
};

}  // namespace tessera::agent
