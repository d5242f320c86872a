// Agent: the node agent (`tessera agent`): the kubelet's device plugin for Tessera's GPU slices.
//
// Start() discovers the GPUs, publishes them on the Node, serves the device plugin API on
// <kubelet-dir>/device-plugins/<socket> and registers with the kubelet, then runs these threads:
//   - watcher: inotify on the device plugin directory; when the kubelet restarts (kubelet.sock
//     recreated, our socket wiped) it serves again and re-registers;
//   - health: follows the backend's health events, pushes new device lists to ListAndWatch streams and
//     republishes the Node;
//   - verifier: asks the kubelet's PodResources API which container holds which device IDs, confirms
//     each slice went to the container it was written for, repairs the ones that did not, and removes
//     slices of pods that are gone;
//   - metrics: HTTP :<metrics-port>/metrics (see metrics.h) and /healthz;
//   - marker: patches pods allocation-state=allocated (retrying on API errors);
//   - watchdog: the driver's per-process memory against each slice's wall (watchdog.h), over the slices
//     this agent wrote and the standalone ones of `tessera run` under standalone_slices_dir.
//   - node config: rereads the per-node ConfigMap file and the node's tessera.dev/cordon annotation and
//     applies changes (split, scaling, mode, filters, cordon) to what is offered and published, without
//     touching running containers (agent_node_config.cc, node_config.h);
//   - the MPS supervisor's checker, when spatial mode is on (mps_supervisor.h).
// Allocate() (gRPC thread) matches the request to a pod (matcher.h), writes its slice (slice_writer.h)
// and marks the pod allocated once all its GPU containers are served. Only the matching and claiming
// step is serialised, and only inside this process: there is no node-wide lock.
//
// Thread-safe; Stop() joins every thread and is called by the destructor.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/cluster.h"
#include "agent/matcher.h"
#include "agent/metrics.h"
#include "agent/mps_supervisor.h"
#include "agent/node_config.h"
#include "agent/slice_writer.h"
#include "agent/watchdog.h"
#include "gpu/backend.h"

namespace grpc {
class Channel;
class Server;
class ServerContext;
template <class W>
class ServerWriter;
}  // namespace grpc
namespace v1beta1 {
class ListAndWatchResponse;
class AllocateRequest;
class AllocateResponse;
class PreferredAllocationRequest;
class PreferredAllocationResponse;
}  // namespace v1beta1

namespace tessera::agent {

struct AgentOptions {
  std::string node;
  std::string resource = "nvidia.com/gpu";
  int split = 10;                                          // devices advertised per GPU, 1..64
  std::filesystem::path kubelet_dir = "/var/lib/kubelet";  // device-plugins/ and pod-resources/ below
  std::string socket_name = "tessera-gpu.sock";
  SliceWriter::Options slices;
  int metrics_port = 9394;  // 0: no metrics server
  std::string metrics_address = "0.0.0.0";
  std::string metrics_token_file;  // non-empty: /metrics needs "Authorization: Bearer <this file's token>"
  bool hami_metric_names = true;
  double verify_period_s = 1.0;
  // Host pids of slice processes in containers (slice/host_pid.h): looked up under proc_root, which
  // must be the host's /proc (the DaemonSet runs with hostPID), every host_pid_period_s.
  std::string proc_root = "/proc";
  double host_pid_period_s = 0.25;
  // The watchdog (watchdog.h); its proc_root and all_gpus_shared are taken from proc_root and split.
  WatchdogOptions watchdog;
  // Where `tessera run` keeps standalone slices on this host (its default); empty: none watched.
  std::filesystem::path standalone_slices_dir = "/run/tessera/slices";
  // Where the GPUs' device nodes are (/dev/nvidiaN, /dev/nvidiactl, ...): Allocate hands them to containers
  // as DeviceSpecs (device_nodes.h). Empty (simulated GPUs): none.
  std::string dev_root;
  int init_attempts = 5;     // GPU backend Init() tries before Start() fails
  int init_retry_ms = 1000;  // wait before try n+1: n × this
  std::string version = "dev";
  // Per-node settings (node_config.h): the flags' values, then the ConfigMap file (empty: none), then
  // the node's cordon annotation, reread every node_config_period_s.
  double memory_scaling = 1.0;
  double core_scaling = 1.0;
  bool spatial_default = false;  // --compute-mode spatial
  std::filesystem::path node_config;
  double node_config_period_s = 2.0;
  // Spatial mode: base of the MPS daemons' directories (shim/mps.h layout); empty: spatial slices refused.
  std::filesystem::path mps_dir;
};

// The Event a spatial slice's pod gets: how its fault isolation differs (docs/compute.md).
void SpatialEvent(Cluster& cluster, const ContainerAssignment& a);

// Checks ranges; the message names the flag and the allowed range.
gpu::Status ValidateOptions(const AgentOptions& o);

class Agent {
 public:
  Agent(AgentOptions opts, std::unique_ptr<gpu::Backend> backend, std::shared_ptr<Cluster> cluster);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  gpu::Status Start();
  void Stop();

  std::filesystem::path plugin_socket() const;
  std::filesystem::path kubelet_socket() const;
  int metrics_port() const { return bound_metrics_port_; }
  AgentCounters counters() const;
  bool registered() const { return registered_.load(); }
  std::string RenderMetricsNow();
  // One verification pass now (tests); returns false when PodResources was unreachable.
  bool VerifyNow();
  // Pods waiting for the marker to patch them allocated (not counting the one being patched).
  size_t PendingMarks() const;
  // One pass of host-pid publishing over every slice region now; returns the rows published.
  int MapHostPidsNow();
  // The watchdog (null when both its actions are off), for tests.
  Watchdog* watchdog() { return watchdog_.get(); }
  // Rereads the node config file and the cordon annotation now; true when what is offered changed.
  bool ReloadNodeConfigNow();
  NodeSettings settings() const;

  // gRPC handlers (called by the service; public so the service class stays a thin adapter).
  void ListAndWatch(grpc::ServerContext* ctx, grpc::ServerWriter<v1beta1::ListAndWatchResponse>* w);
  gpu::Status Allocate(const v1beta1::AllocateRequest& req, v1beta1::AllocateResponse* resp);
  gpu::Status Prefer(const v1beta1::PreferredAllocationRequest& req,
                     v1beta1::PreferredAllocationResponse* resp);
  // Before a container starts: checks (and repairs) the slice of these device IDs.
  void PreStart(const std::vector<std::string>& device_ids);

 private:
  gpu::Status ServeAndRegister();
  void StopServer();
  void WatchKubelet();
  void FollowHealth();
  void VerifyLoop();
  void MarkLoop();
  // Queues ns/name for the marker unless it is queued already (mu_ held). Returns whether it queued.
  bool QueueMarkLocked(const std::string& ns, const std::string& name);
  void HostPidLoop();
  void NodeConfigLoop();
  bool ListPodResources(PodResourcesView* view);
  void VerifyEntry(const std::string& ns, const std::string& pod, const std::string& container,
                   const std::vector<std::string>& ids);
  void PublishNode();
  // GPU containers of pods on this node; *seen gets "<ns>/<name>" of every pod listed (GPU or not).
  std::vector<ContainerAssignment> Candidates(bool fresh, gpu::Status* st, std::set<std::string>* seen);
  // Candidates, read again from etcd when the cached list lacks a pod the kubelet already lists.
  std::vector<ContainerAssignment> CandidatesFor(const PodResourcesView* view, gpu::Status* st, bool* fresh);
  void MarkHeldPods(const PodResourcesView& view);
  void MarkAllocatedIfComplete(const std::vector<ContainerAssignment>& candidates,
                               const std::string& pod_uid);
  MetricsSnapshot Snapshot();
  // Watchdog hooks (watchdog_hooks.cc): the slices it watches, container names, events.
  void StartWatchdog();
  std::vector<WatchedSlice> WatchedSlices();
  std::string ContainerName(const std::string& pod_uid, const std::string& container_id);

  AgentOptions opts_;
  std::unique_ptr<gpu::Backend> backend_;
  std::shared_ptr<Cluster> cluster_;
  std::unique_ptr<MpsSupervisor> mps_;  // before writer_, which uses it
  SliceWriter writer_;

  mutable std::mutex mu_;  // guards everything below up to alloc_mu_
  std::condition_variable devices_cv_;
  std::vector<gpu::GpuInfo> gpus_;  // as discovered (and followed for health), before NodeSettings
  NodeSettings settings_;
  std::string node_config_text_;   // last file content applied (or refused)
  uint64_t devices_version_ = 0;
  uint64_t stream_epoch_ = 0;      // bumped to end ListAndWatch streams (server restart, Stop)
  std::set<std::string> claimed_;  // ContainerAssignment::Key() served by a slice
  AgentCounters counters_;
  std::map<std::string, std::pair<uint64_t, int64_t>> busy_prev_;  // share: last busy_ns per slice GPU
  std::deque<std::pair<std::string, std::string>> mark_queue_;     // pods to mark allocated (ns, name)
  std::set<std::string> mark_queued_;             // "ns/name" in mark_queue_ or being patched: queued once
  std::map<std::string, int64_t> mark_done_;      // "ns/name" -> when it was marked, for a minute
  std::condition_variable mark_cv_;
  std::shared_ptr<grpc::Channel> podres_channel_;

  std::mutex alloc_mu_;  // serialises match+claim (one Allocate at a time inside this agent)
  std::mutex server_mu_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<class DevicePluginService> service_;
  std::atomic<bool> registered_{false};
  // Identity (inode, ctime ns) of the kubelet socket we last registered with: a kubelet restart shows as
  // a different socket, so a late inotify event for a socket we already registered with changes nothing.
  std::pair<uint64_t, int64_t> registered_kubelet_{0, 0};
  std::atomic<bool> published_{false};
  std::atomic<int64_t> last_publish_ns_{0};  // steady clock

  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::vector<std::thread> threads_;
  std::mutex host_pid_mu_;                          // one MapHostPidsNow at a time
  // Row owners the host-pid pass could not map: when first missed, and whether that was logged.
  std::map<uint64_t, std::pair<int64_t, bool>> host_pid_missing_;
  std::unique_ptr<Watchdog> watchdog_;
  std::unique_ptr<class MetricsServer> metrics_;
  int bound_metrics_port_ = 0;
};

}  // namespace tessera::agent
