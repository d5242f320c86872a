// DraDriver: the node agent in DRA mode (`tessera agent --mode dra`): the kubelet plugin of DRA driver
// gpu.tessera.io, and the publisher of this node's ResourceSlice.
//
// Start() discovers the GPUs, publishes them as one ResourceSlice (kube/resource_slice.h: one shared
// device per GPU, consumable memory and cores), serves the kubelet's DRA plugin API v1 on
// <kubelet-dir>/plugins/gpu.tessera.io/dra.sock and the plugin registration API v1 on
// <kubelet-dir>/plugins_registry/gpu.tessera.io-reg.sock (the kubelet's plugin watcher finds it there),
// then runs one thread that follows GPU health (an unhealthy GPU is republished with a NoSchedule taint),
// retries a failed publish, checks the slice every resync period (and recreates it if it was deleted), and serves both sockets again when they are removed (kubelet restart,
// cleanup).
//
// NodePrepareResources reads each claim from the API server, checks its UID, and turns our part of its
// allocation into one slice per claim, written by the same SliceWriter as the device-plugin path (the
// consumed memory and cores per GPU, priority and cap mode from the claim's opaque config
// {"priority":0|1,"capMode":"hard"|"burst"}), plus a CDI spec file <cdi-dir>/gpu.tessera.io-<uid>.json
// whose one device "gpu.tessera.io/claim=<uid>" carries the slice's mounts and environment; the runtime
// injects it into every container that uses the claim. NodeUnprepareResources removes both. Both are
// idempotent; what was prepared is checkpointed in <state-dir>/dra/checkpoint.json (replaced atomically
// after every change), so a restarted agent answers a repeated prepare with the same devices and
// unprepares claims it prepared before the restart; leftovers of a prepare interrupted by a crash (a
// claim slice or CDI file absent from the checkpoint) are removed at start.
//
// Thread-safe: prepare and unprepare of distinct claims may run concurrently (the kubelet serialises per
// claim); the checkpoint is guarded by one mutex. Stop() joins the thread; the destructor calls it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/slice_writer.h"
#include "gpu/backend.h"
#include "kube/client.h"
#include "kube/resource_slice.h"

namespace grpc {
class Server;
}
namespace k8s::io::kubelet::pkg::apis::dra::v1 {
class NodePrepareResourcesRequest;
class NodePrepareResourcesResponse;
class NodeUnprepareResourcesRequest;
class NodeUnprepareResourcesResponse;
}  // namespace k8s::io::kubelet::pkg::apis::dra::v1

namespace tessera::agent {

namespace drapb = k8s::io::kubelet::pkg::apis::dra::v1;

// What the DRA driver needs from the API server; KubeDraApi goes through src/kube, tests use a fake.
class DraApi {
 public:
  virtual ~DraApi() = default;
  virtual kube::Result<kube::Json> GetClaim(const std::string& ns, const std::string& name) = 0;
  virtual kube::Result<kube::Json> GetSlice(const std::string& name) = 0;
  virtual kube::Result<kube::Json> CreateSlice(const kube::Json& slice) = 0;
  virtual kube::Result<kube::Json> UpdateSlice(const kube::Json& slice) = 0;
  virtual kube::Result<std::string> NodeUid(const std::string& node) = 0;
};
std::unique_ptr<DraApi> MakeKubeDraApi(std::shared_ptr<kube::Client> client);

struct DraOptions {
  std::string node;
  std::filesystem::path kubelet_dir = "/var/lib/kubelet";  // plugins/ and plugins_registry/ below
  std::filesystem::path cdi_dir = "/var/run/cdi";
  SliceWriter::Options slices;
  std::string driver_version;  // attribute driverVersion when the backend does not say
  double retry_period_s = 1.0;   // publish retries and socket checks
  double resync_period_s = 30.0;  // re-read the ResourceSlice (the kubelet wipes it when the plugin is gone)
};

// One prepared claim, as checkpointed and as answered to the kubelet.
struct DraPreparedDevice {
  std::vector<std::string> request_names;
  std::string pool, device, share_id;
  std::vector<std::string> cdi_ids;
};
struct DraPreparedClaim {
  std::string namespace_, name, uid;
  std::string slice;  // slice name under <state-dir>/slices
  std::vector<DraPreparedDevice> devices;
};

// The CDI spec (JSON) for one claim's slice: kind gpu.tessera.io/claim, one device named `device`.
nlohmann::json BuildCdiSpec(const std::string& device, const ContainerSlice& slice);

class DraDriver {
 public:
  DraDriver(DraOptions opts, std::unique_ptr<gpu::Backend> backend, std::unique_ptr<DraApi> api);
  ~DraDriver();
  DraDriver(const DraDriver&) = delete;
  DraDriver& operator=(const DraDriver&) = delete;

  gpu::Status Start();
  void Stop();

  std::filesystem::path plugin_socket() const;
  std::filesystem::path registration_socket() const;
  // Publishes the ResourceSlice now if it differs from what the API server has (tests, health).
  gpu::Status PublishNow();
  // True once the kubelet answered NotifyRegistrationStatus with plugin_registered.
  bool registered() const { return registered_.load(); }
  std::vector<DraPreparedClaim> Prepared() const;

  // One claim; the response's error says why it failed.
  DraPreparedClaim PrepareClaim(const std::string& ns, const std::string& name, const std::string& uid,
                                std::string* error);
  // Removes what PrepareClaim made; unknown claims succeed (idempotent).
  gpu::Status UnprepareClaim(const std::string& uid);

  // gRPC handlers (public so the service classes stay thin adapters).
  void NodePrepareResources(const drapb::NodePrepareResourcesRequest& req, drapb::NodePrepareResourcesResponse* resp);
  void NodeUnprepareResources(const drapb::NodeUnprepareResourcesRequest& req,
                              drapb::NodeUnprepareResourcesResponse* resp);
  void SetRegistered(bool ok, const std::string& error);

 private:
  gpu::Status Serve();
  void StopServers();
  void Loop();
  gpu::Status LoadCheckpoint();
  gpu::Status SaveCheckpointLocked();
  void RemoveLeftovers();
  std::filesystem::path CdiFile(const std::string& uid) const;
  std::vector<kube::DraGpu> GpusForSlice();

  DraOptions opts_;
  std::unique_ptr<gpu::Backend> backend_;
  std::unique_ptr<DraApi> api_;
  SliceWriter writer_;

  mutable std::mutex mu_;  // guards gpus_, prepared_, publish state
  std::vector<gpu::GpuInfo> gpus_;
  std::map<std::string, DraPreparedClaim> prepared_;  // by claim UID
  bool publish_pending_ = true;
  std::string node_uid_;

  std::mutex server_mu_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<class DraPluginService> plugin_service_;
  std::unique_ptr<class DraRegistrationService> registration_service_;
  std::atomic<bool> registered_{false};

  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::thread thread_;
};

}  // namespace tessera::agent
