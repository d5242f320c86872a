// Internals shared by the agent's source files (not part of the agent's interface): the log line, the
// steady clock, the kubelet-call trace timer, the gRPC adapter of the device plugin service and the
// metrics HTTP server. Included only by src/agent/*.cc.
#pragma once

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <cstdint>
#include <thread>

#include "agent/agent.h"
#include "agent/proto/deviceplugin_v1beta1.grpc.pb.h"
#include "kube/serving.h"

namespace tessera::agent {

// One line on stderr: "HH:MM:SS.mmm tessera-agent: <text>".
void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Steady clock in nanoseconds.
int64_t NowNs();

// How long a pod the marker patched is not queued again by MarkHeldPods (the watch cache may still read
// it pending), and how long Agent::mark_done_ remembers it.
inline constexpr int64_t kRecentlyMarkedNs = 60'000'000'000;

// With TESSERA_AGENT_TRACE set, logs how long the enclosing kubelet call took.
class TraceTimer {
 public:
  explicit TraceTimer(const char* what) : what_(what), t0_(NowNs()) {}
  ~TraceTimer() {
    if (std::getenv("TESSERA_AGENT_TRACE")) Log("%s %.1f ms", what_, (NowNs() - t0_) / 1e6);
  }

 private:
  const char* what_;
  int64_t t0_;
};

// Thin adapter from gRPC to Agent.
class DevicePluginService final : public v1beta1::DevicePlugin::Service {
 public:
  explicit DevicePluginService(Agent* a) : a_(a) {}
  grpc::Status GetDevicePluginOptions(grpc::ServerContext*, const v1beta1::Empty*,
                                      v1beta1::DevicePluginOptions* out) override {
    // PreStartContainer comes after the kubelet recorded which container holds the devices and before
    // the container starts: the moment to check (and repair) the slice it is about to read.
    out->set_pre_start_required(true);
    out->set_get_preferred_allocation_available(true);
    return grpc::Status::OK;
  }
  grpc::Status ListAndWatch(grpc::ServerContext* ctx, const v1beta1::Empty*,
                            grpc::ServerWriter<v1beta1::ListAndWatchResponse>* w) override {
    a_->ListAndWatch(ctx, w);
    return grpc::Status::OK;
  }
  grpc::Status GetPreferredAllocation(grpc::ServerContext*, const v1beta1::PreferredAllocationRequest* req,
                                      v1beta1::PreferredAllocationResponse* resp) override {
    gpu::Status st = a_->Prefer(*req, resp);
    return st.ok() ? grpc::Status::OK : grpc::Status(grpc::StatusCode::UNAVAILABLE, st.message());
  }
  grpc::Status Allocate(grpc::ServerContext*, const v1beta1::AllocateRequest* req,
                        v1beta1::AllocateResponse* resp) override {
    gpu::Status st = a_->Allocate(*req, resp);
    return st.ok() ? grpc::Status::OK : grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, st.message());
  }
  grpc::Status PreStartContainer(grpc::ServerContext*, const v1beta1::PreStartContainerRequest* req,
                                 v1beta1::PreStartContainerResponse*) override {
    a_->PreStart(std::vector<std::string>(req->devices_ids().begin(), req->devices_ids().end()));
    return grpc::Status::OK;
  }

 private:
  Agent* a_;
};

class MetricsServer {
 public:
  explicit MetricsServer(kube::ServingLimits limits) : guard(limits) {}
  kube::ServingGuard guard;  // declared first: it must outlive the server
  httplib::Server http;
  std::thread thread;
};

}  // namespace tessera::agent
