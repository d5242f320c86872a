// Spatial mode: a Tessera-owned MPS control daemon per GPU, and the client settings of a slice.
//
// Spatial mode is opt-in per GPU. The `tessera-mps` tool (StartMpsDaemon) starts one
// nvidia-cuda-mps-control daemon for the GPU with its own pipe and log directories under
// /run/tessera/mps/<gpu-uuid>/, restricted to that GPU by CUDA_VISIBLE_DEVICES.
// It never touches the GPU's compute mode, clocks or MIG layout, so processes outside Tessera keep
// using the GPU as before (time-sliced against the MPS server). A slice opts in with the config key
// `mps_pipe=<pipe dir>` (parsed with the rest of the slice config, slice/config.h); the shim then points the process at that daemon and gives it the SM share
// CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (MpsPartitionPercent; CUDA_MPS_CLIENT_PRIORITY=1 for best effort), set
// before the driver initialises so the application cannot pick its own. The memory wall still applies:
// the shim's allocation hooks run in MPS clients exactly as in ordinary processes.
//
// Thread-safety: the functions here fork/exec or touch the environment; call them from one thread,
// before other threads use CUDA (the shim calls MpsApplyClientEnv from LaunchGateInit).
#pragma once

#include <cstdint>
#include <string>

namespace tessera::shim {

inline constexpr const char* kMpsBaseDir = "/run/tessera/mps";

struct MpsPaths {
  std::string pipe_dir;
  std::string log_dir;
};
MpsPaths MpsPathsFor(const std::string& gpu_uuid, const std::string& base = kMpsBaseDir);

// Starts the control daemon for the GPU unless one already answers on paths.pipe_dir.
bool StartMpsDaemon(const std::string& gpu_uuid, const MpsPaths& paths, std::string* err);
// Asks the daemon to quit (its server exits once clients are gone). True when it answered.
bool StopMpsDaemon(const MpsPaths& paths, std::string* err);
// Sends one command to the control daemon and returns its reply (e.g. "get_server_list").
bool MpsControl(const MpsPaths& paths, const std::string& command, std::string* reply, std::string* err);

// The SM partition (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE) of a slice process. `override_pct` (the config
// key `mps_percentage`, 1..100; 0 when absent) wins. Otherwise `cores`, except that a best-effort
// process started while a high-priority participant lives on the GPU leaves kMpsBestEffortGuardPct
// points of SMs free: MPS partitions are SM counts, not fixed SMs, and a best-effort client that fills
// the GPU up to the high-priority client's share lands its blocks beside the other's (measured on an
// H100: HP 10 % + BE 90 % raised the high-priority p99 from 81 to 122..153 us; BE 86 % kept it at
// 76..83 us, the best effort keeping 0.82..0.84 of its solo rate).
//
// With `sm_count` (the GPU's SMs, config key `mps_sms`; 0 when unknown) a partition sized by cores asks
// for the smallest percentage that MPS turns into at least cores % of the SMs: MPS grants an even number
// of SMs, rounded down (MpsGrantedSms), so 75 % of an H100's 132 SMs is 98 SMs (74.2 %) and 76 % is 100.
// The slice's budget then charges the partition actually granted (SpatialChargePpm), so the cap is held
// by time on a partition at least as large as the share. The guard and mps_percentage are used as given.
inline constexpr int kMpsBestEffortGuardPct = 4;
int MpsPartitionPercent(int cores, int priority, int override_pct, bool high_priority_present,
                        int sm_count = 0);
// SMs MPS grants for `pct` of `sm_count` (observed with CUDA 12/13 on H100: the count rounded down to even).
int MpsGrantedSms(int pct, int sm_count);
// What one ns of this process's GPU time costs the slice's budget, in ppm of the GPU: granted/sm_count
// when both are known (granted as the driver reports it under MPS), else the asked percentage.
int64_t SpatialChargePpm(int granted_sms, int sm_count, int asked_pct);

// The client environment for a slice process: `pct` 1..100 (MpsPartitionPercent); priority 0 high,
// 1 best effort.
void MpsApplyClientEnv(const std::string& pipe_dir, int pct, int priority);


}  // namespace tessera::shim
