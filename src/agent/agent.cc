#include "agent/agent.h"

#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <fstream>

#include "agent/assignment.h"
#include "agent/inventory.h"
#include "agent/matcher.h"
#include "agent/proto/deviceplugin_v1beta1.grpc.pb.h"
#include "agent/proto/podresources_v1.grpc.pb.h"
#include "slice/config.h"
#include "slice/host_pid.h"
#include "slice/region.h"

namespace tessera::agent {

namespace fs = std::filesystem;
using gpu::Status;

namespace {

void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Log(const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  auto tp = std::chrono::system_clock::now();
  auto now = std::chrono::system_clock::to_time_t(tp);
  int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count() % 1000);
  char ts[32];
  std::strftime(ts, sizeof(ts), "%H:%M:%S", std::gmtime(&now));
  std::fprintf(stderr, "%s.%03d tessera-agent: %s\n", ts, ms, buf);
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

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

}  // namespace

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
    Status st = a_->Prefer(*req, resp);
    return st.ok() ? grpc::Status::OK : grpc::Status(grpc::StatusCode::UNAVAILABLE, st.message());
  }
  grpc::Status Allocate(grpc::ServerContext*, const v1beta1::AllocateRequest* req,
                        v1beta1::AllocateResponse* resp) override {
    Status st = a_->Allocate(*req, resp);
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
  httplib::Server http;
  std::thread thread;
};

Status ValidateOptions(const AgentOptions& o) {
  if (o.node.empty()) return Status::Error("--node: required (the Node this agent serves)");
  if (o.split < 1 || o.split > 64) {
    return Status::Error("--split: " + std::to_string(o.split) + " is out of range [1, 64]");
  }
  if (o.metrics_port < 0 || o.metrics_port > 65535) {
    return Status::Error("--metrics-port: " + std::to_string(o.metrics_port) + " is out of range [0, 65535]");
  }
  if (o.resource.empty() || o.resource.find('/') == std::string::npos) {
    return Status::Error("--resource: '" + o.resource +
                         "' must be a domain-qualified name like nvidia.com/gpu");
  }
  if (o.slices.shim_path.empty()) return Status::Error("--shim: required (host path of libtessera.so)");
  for (auto [flag, v] : {std::pair{"--memory-scaling", o.memory_scaling}, std::pair{"--core-scaling", o.core_scaling}})
    if (!(v >= 0.1 && v <= 16))
      return Status::Error(std::string(flag) + ": " + std::to_string(v) + " is out of range [0.1, 16]");
  return Status::Ok();
}

Agent::Agent(AgentOptions opts, std::unique_ptr<gpu::Backend> backend, std::shared_ptr<Cluster> cluster)
    : opts_(std::move(opts)),
      backend_(std::move(backend)),
      cluster_(std::move(cluster)),
      mps_(opts_.mps_dir.empty() ? nullptr
                                 : std::make_unique<MpsSupervisor>(MpsSupervisor::Options{
                                       opts_.mps_dir.string(), std::chrono::milliseconds(2000),
                                       [](const std::string& uuid, const std::string& why) {
                                         Log("MPS daemon of %s restarted: %s", uuid.c_str(), why.c_str());
                                       }})),
      writer_([this] {
        SliceWriter::Options o = opts_.slices;
        o.mps = mps_.get();
        return o;
      }()) {
  settings_.split = opts_.split;
  settings_.memory_scaling = opts_.memory_scaling;
  settings_.core_scaling = opts_.core_scaling;
  settings_.spatial = opts_.spatial_default;
}

Agent::~Agent() { Stop(); }

fs::path Agent::plugin_socket() const { return opts_.kubelet_dir / "device-plugins" / opts_.socket_name; }
fs::path Agent::kubelet_socket() const { return opts_.kubelet_dir / "device-plugins" / "kubelet.sock"; }

AgentCounters Agent::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

Status Agent::Start() {
  Status st = ValidateOptions(opts_);
  if (!st.ok()) return st;
  // The driver may still be loading when the agent starts with the node: retry a few times before
  // giving up (the DaemonSet then restarts us with its own backoff).
  for (int attempt = 1;; ++attempt) {
    st = backend_->Init();
    if (st.ok()) break;
    if (attempt >= opts_.init_attempts) {
      return Status::Error("GPU backend " + backend_->Name() + ": " + st.message());
    }
    Log("GPU backend %s: %s (attempt %d of %d)", backend_->Name().c_str(), st.message().c_str(), attempt,
        opts_.init_attempts);
    std::this_thread::sleep_for(std::chrono::milliseconds(opts_.init_retry_ms * attempt));
  }
  std::vector<gpu::GpuInfo> gpus;
  st = backend_->Discover(&gpus);
  if (!st.ok()) return Status::Error("GPU discovery: " + st.message());
  for (const auto& g : gpus) {
    Log("GPU %d %s %s %llu MiB numa=%d %s", g.index, g.uuid.c_str(), g.model.c_str(),
        static_cast<unsigned long long>(g.memory_bytes >> 20), g.numa_node,
        g.healthy ? "healthy" : ("UNHEALTHY: " + g.health_reason).c_str());
  }
  st = writer_.Prepare();
  if (!st.ok()) return st;
  {
    std::map<std::string, int> sms;
    for (const auto& g : gpus) sms[g.uuid] = g.sm_count;
    writer_.SetSmCounts(std::move(sms));
  }
  writer_.AdoptSpatialSlices();
  if (mps_) mps_->Start();
  {
    std::lock_guard<std::mutex> lock(mu_);
    gpus_ = std::move(gpus);
    ++devices_version_;
    // Slices written before a restart still serve their containers: their claims stand.
    for (const auto& dir : writer_.ListSlices()) {
      SliceOwner o;
      if (SliceWriter::ReadOwner(dir, &o).ok()) claimed_.insert(o.pod_uid + "/" + o.container);
    }
  }
  ReloadNodeConfigNow();
  PublishNode();
  std::error_code ec;
  fs::create_directories(plugin_socket().parent_path(), ec);
  service_ = std::make_unique<DevicePluginService>(this);
  st = ServeAndRegister();
  if (!st.ok()) Log("%s (will retry when the kubelet's socket appears)", st.message().c_str());

  if (opts_.metrics_port >= 0 && opts_.metrics_port != 0) {
    metrics_ = std::make_unique<MetricsServer>();
    metrics_->http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(RenderMetricsNow(), "text/plain; version=0.0.4; charset=utf-8");
    });
    metrics_->http.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
      res.status = registered_ ? 200 : 503;
      res.set_content(registered_ ? "ok\n" : "not registered with the kubelet\n", "text/plain");
    });
    if (!metrics_->http.bind_to_port(opts_.metrics_address, opts_.metrics_port)) {
      Stop();
      return Status::Error("--metrics-port: cannot listen on " + opts_.metrics_address + ":" +
                           std::to_string(opts_.metrics_port));
    }
    bound_metrics_port_ = opts_.metrics_port;
    metrics_->thread = std::thread([this] { metrics_->http.listen_after_bind(); });
  }
  threads_.emplace_back([this] { WatchKubelet(); });
  threads_.emplace_back([this] { FollowHealth(); });
  threads_.emplace_back([this] { VerifyLoop(); });
  threads_.emplace_back([this] { MarkLoop(); });
  threads_.emplace_back([this] { HostPidLoop(); });
  threads_.emplace_back([this] { NodeConfigLoop(); });
  return Status::Ok();
}

void Agent::Stop() {
  if (stopping_.exchange(true)) return;
  stop_cv_.notify_all();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stream_epoch_;
  }
  devices_cv_.notify_all();
  mark_cv_.notify_all();
  if (metrics_) {
    metrics_->http.stop();
    if (metrics_->thread.joinable()) metrics_->thread.join();
  }
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  StopServer();
}

void Agent::StopServer() {
  std::lock_guard<std::mutex> lock(server_mu_);
  if (!server_) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    ++stream_epoch_;
  }
  devices_cv_.notify_all();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
  server_.reset();
  registered_ = false;
}

Status Agent::ServeAndRegister() {
  StopServer();
  std::lock_guard<std::mutex> lock(server_mu_);
  const fs::path sock = plugin_socket();
  ::unlink(sock.c_str());
  grpc::ServerBuilder b;
  b.AddListeningPort("unix://" + sock.string(), grpc::InsecureServerCredentials());
  b.RegisterService(service_.get());
  server_ = b.BuildAndStart();
  if (!server_) return Status::Error("cannot serve the device plugin on " + sock.string());

  auto channel =
      grpc::CreateChannel("unix://" + kubelet_socket().string(), grpc::InsecureChannelCredentials());
  auto stub = v1beta1::Registration::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1beta1::RegisterRequest req;
  req.set_version("v1beta1");
  req.set_endpoint(opts_.socket_name);
  req.set_resource_name(opts_.resource);
  req.mutable_options()->set_get_preferred_allocation_available(true);
  v1beta1::Empty resp;
  grpc::Status s = stub->Register(&ctx, req, &resp);
  if (!s.ok()) {
    return Status::Error("registration with the kubelet at " + kubelet_socket().string() +
                         " failed: " + s.error_message());
  }
  registered_ = true;
  {
    std::lock_guard<std::mutex> l(mu_);
    ++counters_.registrations;
  }
  Log("registered %s with the kubelet (%s, split %d)", opts_.resource.c_str(), sock.c_str(), opts_.split);
  return Status::Ok();
}

void Agent::WatchKubelet() {
  const fs::path dir = plugin_socket().parent_path();
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  int wd = -1;
  auto backoff = std::chrono::milliseconds(200);
  auto next_try = std::chrono::steady_clock::now();
  while (!stopping_) {
    if (wd < 0 && fd >= 0) wd = inotify_add_watch(fd, dir.c_str(), IN_CREATE | IN_DELETE | IN_MOVED_TO);
    bool kubelet_restarted = false;
    pollfd p{fd, POLLIN, 0};
    int n = fd >= 0 && wd >= 0 ? ::poll(&p, 1, 200) : (::usleep(200000), 0);
    if (n > 0) {
      alignas(inotify_event) char buf[4096];
      ssize_t len;
      while ((len = ::read(fd, buf, sizeof(buf))) > 0) {
        for (char* q = buf; q < buf + len;) {
          auto* ev = reinterpret_cast<inotify_event*>(q);
          if (ev->len && std::string(ev->name) == "kubelet.sock" && (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
            kubelet_restarted = true;
          }
          if (ev->mask & IN_IGNORED) wd = -1;  // the directory itself went away
          q += sizeof(inotify_event) + ev->len;
        }
      }
    }
    if (stopping_) break;
    // Decide on state, not on single events: our own unlink/recreate also shows up as events.
    std::error_code ec;
    const bool ours_missing = !fs::exists(plugin_socket(), ec);
    const bool kubelet_up = fs::exists(kubelet_socket(), ec);
    if (kubelet_restarted) {
      Log("kubelet socket recreated: the kubelet restarted; registering again");
      registered_ = false;
      next_try = std::chrono::steady_clock::now();
      backoff = std::chrono::milliseconds(200);
    }
    if (ours_missing && registered_) {
      Log("our socket %s was removed; serving again", plugin_socket().c_str());
      registered_ = false;
      next_try = std::chrono::steady_clock::now();
    }
    if (!registered_ && kubelet_up && std::chrono::steady_clock::now() >= next_try) {
      Status st = ServeAndRegister();
      if (!st.ok()) {
        Log("%s", st.message().c_str());
        next_try = std::chrono::steady_clock::now() + backoff;
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
      } else {
        backoff = std::chrono::milliseconds(200);
      }
    }
  }
  if (fd >= 0) ::close(fd);
}

void Agent::ListAndWatch(grpc::ServerContext* ctx, grpc::ServerWriter<v1beta1::ListAndWatchResponse>* w) {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t epoch = stream_epoch_;
  uint64_t sent = 0;
  while (!stopping_ && stream_epoch_ == epoch && !ctx->IsCancelled()) {
    if (sent != devices_version_) {
      v1beta1::ListAndWatchResponse resp;
      for (const auto& d : PluginDevices(OfferedGpus(gpus_, settings_), settings_.split)) {
        auto* dev = resp.add_devices();
        dev->set_id(d.id);
        dev->set_health(d.healthy ? "Healthy" : "Unhealthy");
        if (d.numa >= 0) dev->mutable_topology()->add_nodes()->set_id(d.numa);
      }
      sent = devices_version_;
      lock.unlock();
      bool ok = w->Write(resp);
      lock.lock();
      if (!ok) return;
      continue;
    }
    devices_cv_.wait_for(lock, std::chrono::seconds(1));
  }
}

std::vector<ContainerAssignment> Agent::Candidates(bool fresh, Status* st, std::set<std::string>* seen) {
  std::vector<ContainerAssignment> out;
  auto pods = cluster_->PodsOnNode(opts_.node, fresh);
  if (!pods.ok()) {
    *st = Status::Error("cannot list pods on node " + opts_.node + ": " + pods.error().ToString());
    return out;
  }
  for (const auto& pod : *pods) {
    if (seen) seen->insert(kube::Namespace(pod) + "/" + kube::Name(pod));
    const std::string phase = pod.contains("status") ? pod["status"].value("phase", "") : "";
    if (phase == "Succeeded" || phase == "Failed") continue;
    std::string err;
    auto a = ParseAssignments(pod, opts_.node, opts_.resource, &err);
    if (!err.empty()) Log("%s", err.c_str());
    for (auto& c : a) out.push_back(std::move(c));
  }
  *st = Status::Ok();
  return out;
}

std::vector<ContainerAssignment> Agent::CandidatesFor(const PodResourcesView* view, Status* st, bool* fresh) {
  std::set<std::string> seen;
  *fresh = false;
  auto candidates = Candidates(false, st, &seen);
  if (!st->ok() || !view) return candidates;
  for (const auto& [pod, ctrs] : *view) {
    if (!seen.count(pod)) {
      // The kubelet has a pod our cache has not seen yet: a watch lag. Read from etcd.
      *fresh = true;
      return Candidates(true, st, nullptr);
    }
  }
  return candidates;
}

Status Agent::Prefer(const v1beta1::PreferredAllocationRequest& req,
                     v1beta1::PreferredAllocationResponse* resp) {
  TraceTimer trace("Prefer");
  std::lock_guard<std::mutex> alloc(alloc_mu_);
  Status st;
  PodResourcesView view;
  const bool have_view = ListPodResources(&view);
  bool fresh = false;
  auto candidates = CandidatesFor(have_view ? &view : nullptr, &st, &fresh);
  if (!st.ok()) return st;
  if (have_view) candidates = NarrowToAdmitting(candidates, view);
  std::set<std::string> claimed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    claimed = claimed_;
  }
  for (const auto& c : req.container_requests()) {
    std::vector<std::string> avail(c.available_deviceids().begin(), c.available_deviceids().end());
    std::vector<std::string> must(c.must_include_deviceids().begin(), c.must_include_deviceids().end());
    auto ids = PreferDevices(candidates, claimed, avail, must, c.allocation_size());
    auto* out = resp->add_container_responses();
    for (const auto& id : ids) out->add_deviceids(id);
  }
  return Status::Ok();
}

Status Agent::Allocate(const v1beta1::AllocateRequest& req, v1beta1::AllocateResponse* resp) {
  const int64_t t0 = NowNs();
  std::lock_guard<std::mutex> alloc(alloc_mu_);
  Status st;
  PodResourcesView view;
  const bool have_view = ListPodResources(&view);
  bool fresh = false;
  auto candidates = CandidatesFor(have_view ? &view : nullptr, &st, &fresh);
  auto fail = [&](const std::string& msg) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counters_.allocation_failures;
    Log("Allocate failed: %s", msg.c_str());
    return Status::Error(msg);
  };
  if (!st.ok()) return fail(st.message());
  std::map<std::string, uint64_t> memory;
  std::set<std::string> known_devices, claimed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& g : gpus_) memory[g.uuid] = g.memory_bytes;
    for (const auto& d : PluginDevices(OfferedGpus(gpus_, settings_), settings_.split)) known_devices.insert(d.id);
    // A container the kubelet lists without devices is being (re)admitted: whatever an earlier
    // Allocate did for it did not stick (the kubelet dropped the pod after a later failure), so it is
    // not served, whatever our bookkeeping says.
    if (have_view) {
      for (const auto& c : candidates) {
        auto pod = view.find(c.namespace_ + "/" + c.pod_name);
        if (pod == view.end()) continue;
        auto ctr = pod->second.find(c.container);
        if (ctr != pod->second.end() && ctr->second.empty()) claimed_.erase(c.Key());
      }
    }
    claimed = claimed_;
  }
  std::set<std::string> touched_pods;
  std::vector<std::string> new_claims;
  bool ambiguous_any = false;
  for (const auto& creq : req.container_requests()) {
    std::vector<std::string> ids(creq.devices_ids().begin(), creq.devices_ids().end());
    for (const auto& id : ids) {
      if (!known_devices.count(id)) return fail("device " + id + " is not one of this node's devices");
    }
    MatchResult m = MatchAllocate(have_view ? NarrowToAdmitting(candidates, view) : candidates, claimed, ids);
    if (!m.found && !fresh) {
      // The watch cache may not have the pod yet: ask etcd.
      fresh = true;
      candidates = Candidates(true, &st, nullptr);
      if (!st.ok()) return fail(st.message());
      m = MatchAllocate(have_view ? NarrowToAdmitting(candidates, view) : candidates, claimed, ids);
    }
    if (!m.found) return fail(m.reason);
    ContainerSlice slice;
    st = writer_.Write(m.chosen, ids, memory, &slice);
    if (!st.ok()) return fail(st.message());
    auto* out = resp->add_container_responses();
    for (const auto& [k, v] : slice.envs) (*out->mutable_envs())[k] = v;
    for (const auto& mnt : slice.mounts) {
      auto* pm = out->add_mounts();
      pm->set_container_path(mnt.container_path);
      pm->set_host_path(mnt.host_path);
      pm->set_read_only(mnt.read_only);
    }
    claimed.insert(m.chosen.Key());
    new_claims.push_back(m.chosen.Key());
    touched_pods.insert(m.chosen.pod_uid);
    ambiguous_any |= m.ambiguous;
    if (m.chosen.spatial) SpatialEvent(*cluster_, m.chosen);
    Log("Allocate %s → %s/%s container %s in %.1f ms (slice %s%s%s)", ids.front().c_str(),
        m.chosen.namespace_.c_str(), m.chosen.pod_name.c_str(), m.chosen.container.c_str(),
        (NowNs() - t0) / 1e6, slice.slice.c_str(),
        m.gpu_set_matched ? "" : ", kubelet devices off the assigned GPUs",
        m.ambiguous ? ", ambiguous: will verify" : "");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& k : new_claims) claimed_.insert(k);
    counters_.allocations += new_claims.size();
    if (ambiguous_any) ++counters_.ambiguous_matches;
  }
  for (const auto& uid : touched_pods) MarkAllocatedIfComplete(candidates, uid);
  stop_cv_.notify_all();  // wake the verifier
  return Status::Ok();
}

void Agent::MarkAllocatedIfComplete(const std::vector<ContainerAssignment>& candidates,
                                    const std::string& pod_uid) {
  const ContainerAssignment* any = nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& c : candidates) {
    if (c.pod_uid != pod_uid) continue;
    any = &c;
    if (!claimed_.count(c.Key())) return;  // more containers of this pod still to come
  }
  if (!any || any->state == kStateAllocated) return;
  // Patched by the marker thread: the kubelet does not wait on it, so Allocate does not either.
  mark_queue_.push_back({any->namespace_, any->pod_name});
  mark_cv_.notify_all();
}

void Agent::MarkLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (mark_queue_.empty()) {
      mark_cv_.wait_for(lock, std::chrono::seconds(1));
      continue;
    }
    auto [ns, name] = mark_queue_.front();
    mark_queue_.pop_front();
    lock.unlock();
    auto st = cluster_->AnnotatePod(ns, name,
                                    {{kAnnAllocationState, kStateAllocated}, {kAnnHamiBindPhase, "success"}});
    lock.lock();
    if (!st.ok() && !st.error().NotFound()) {
      Log("cannot mark %s/%s allocated: %s (retrying)", ns.c_str(), name.c_str(),
          st.error().ToString().c_str());
      mark_queue_.push_back({ns, name});
      mark_cv_.wait_for(lock, std::chrono::seconds(1));
    }
  }
}

void Agent::PublishNode() {
  std::vector<gpu::GpuInfo> gpus;
  NodeSettings settings;
  {
    std::lock_guard<std::mutex> lock(mu_);
    settings = settings_;
    gpus = OfferedGpus(gpus_, settings);
  }
  auto st = cluster_->PatchNode(opts_.node, NodeMetadataPatch(gpus, settings.split, opts_.version, &settings),
                                NodeStatusPatch(gpus, settings.split, opts_.resource));
  published_ = st.ok();
  last_publish_ns_ = NowNs();
  if (!st.ok()) Log("cannot publish GPUs on node %s: %s", opts_.node.c_str(), st.error().ToString().c_str());
}

void Agent::FollowHealth() {
  while (!stopping_) {
    std::optional<gpu::HealthEvent> ev;
    Status st = backend_->WaitHealthEvent(std::chrono::milliseconds(500), &ev);
    if (!st.ok()) {
      Log("health: %s", st.message().c_str());
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_.load(); });
      continue;
    }
    if (!ev) continue;
    bool changed = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& g : gpus_) {
        if (g.uuid == ev->uuid && g.healthy != ev->healthy) {
          g.healthy = ev->healthy;
          g.health_reason = ev->healthy ? "" : ev->reason;
          changed = true;
        }
      }
      if (changed) {
        ++devices_version_;
        ++counters_.health_events;
      }
    }
    if (!changed) continue;
    Log("GPU %s is now %s%s%s", ev->uuid.c_str(), ev->healthy ? "healthy" : "UNHEALTHY",
        ev->reason.empty() ? "" : ": ", ev->reason.c_str());
    devices_cv_.notify_all();
    PublishNode();
  }
}

bool Agent::ListPodResources(PodResourcesView* view) {
  const fs::path sock = opts_.kubelet_dir / "pod-resources" / "kubelet.sock";
  std::error_code ec;
  if (!fs::exists(sock, ec)) return false;
  std::shared_ptr<grpc::Channel> channel;
  {
    // One channel for the agent's life: it reconnects by itself when the kubelet restarts.
    std::lock_guard<std::mutex> lock(mu_);
    if (!podres_channel_) {
      podres_channel_ = grpc::CreateChannel("unix://" + sock.string(), grpc::InsecureChannelCredentials());
    }
    channel = podres_channel_;
  }
  auto stub = v1::PodResourcesLister::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListPodResourcesRequest req;
  v1::ListPodResourcesResponse resp;
  if (!stub->List(&ctx, req, &resp).ok()) return false;
  view->clear();
  for (const auto& pod : resp.pod_resources()) {
    auto& ctrs = (*view)[pod.namespace_() + "/" + pod.name()];
    for (const auto& ctr : pod.containers()) {
      auto& ids = ctrs[ctr.name()];
      for (const auto& d : ctr.devices()) {
        if (d.resource_name() == opts_.resource)
          ids.insert(ids.end(), d.device_ids().begin(), d.device_ids().end());
      }
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    }
  }
  return true;
}

void Agent::VerifyEntry(const std::string& ns, const std::string& pod, const std::string& container,
                        const std::vector<std::string>& ids) {
  const std::string name = SliceNameForDevices(ids);
  const fs::path dir = writer_.slices_dir() / name;
  SliceOwner owner;
  if (!SliceWriter::ReadOwner(dir, &owner).ok()) {
    Log("verify: %s/%s container %s holds %s but no slice was written for it", ns.c_str(), pod.c_str(),
        container.c_str(), ids.front().c_str());
    return;
  }
  if (owner.namespace_ == ns && owner.pod == pod && owner.container == container) {
    if (!owner.verified) {
      owner.verified = true;
      writer_.WriteOwner(dir, owner);
      std::lock_guard<std::mutex> lock(mu_);
      ++counters_.verified;
    }
    return;
  }
  // The kubelet gave this slice to another container than the one it was written for: rewrite it
  // with the assignment of the container that really holds it (same host path, so the mount the
  // kubelet already has is right).
  auto real = cluster_->GetPod(ns, pod);
  if (!real.ok()) {
    Log("verify: cannot read pod %s/%s: %s", ns.c_str(), pod.c_str(), real.error().ToString().c_str());
    return;
  }
  std::map<std::string, uint64_t> memory;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& g : gpus_) memory[g.uuid] = g.memory_bytes;
  }
  std::string err;
  auto assignments = ParseAssignments(*real, opts_.node, opts_.resource, &err);
  for (const auto& a : assignments) {
    if (a.container != container) continue;
    ContainerSlice out;
    Status st = writer_.Write(a, ids, memory, &out);
    if (!st.ok()) {
      Log("repair of slice %s failed: %s", name.c_str(), st.message().c_str());
      return;
    }
    SliceOwner fixed;
    SliceWriter::ReadOwner(dir, &fixed);
    fixed.verified = true;
    writer_.WriteOwner(dir, fixed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++counters_.repairs;
      ++counters_.verified;
      claimed_.insert(a.Key());
      // The container the slice was first written for has not been served after all.
      claimed_.erase(owner.pod_uid + "/" + owner.container);
    }
    const std::string msg = "slice " + name + " was written for " + owner.namespace_ + "/" + owner.pod + "/" +
                            owner.container + "; rewritten for this container";
    Log("repair: %s/%s container %s: %s", ns.c_str(), pod.c_str(), container.c_str(), msg.c_str());
    cluster_->PodEvent(*real, "Warning", "TesseraSliceRepaired", msg);
    MarkAllocatedIfComplete(assignments, a.pod_uid);
    return;
  }
  Log("verify: cannot repair slice %s: pod %s/%s has no assignment for container %s", name.c_str(),
      ns.c_str(), pod.c_str(), container.c_str());
}

void Agent::PreStart(const std::vector<std::string>& request_ids) {
  TraceTimer trace("PreStart");
  std::vector<std::string> ids(request_ids);
  std::sort(ids.begin(), ids.end());
  std::lock_guard<std::mutex> alloc(alloc_mu_);
  PodResourcesView view;
  if (!ListPodResources(&view)) return;
  for (const auto& [pod, ctrs] : view) {
    for (const auto& [ctr, held] : ctrs) {
      if (held != ids) continue;
      auto slash = pod.find('/');
      VerifyEntry(pod.substr(0, slash), pod.substr(slash + 1), ctr, ids);
      return;
    }
  }
}

// A pod whose GPU containers all hold devices at the kubelet but that is still marked pending: the agent
// that served it died before its marker thread patched the pod (that queue lives only in memory), or
// the patch was lost. The kubelet's word is the truth, so mark it now.
void Agent::MarkHeldPods(const PodResourcesView& view) {
  Status st;
  auto candidates = Candidates(false, &st, nullptr);
  if (!st.ok()) return;
  std::set<std::string> done;
  for (const auto& c : candidates) {
    if (c.state == kStateAllocated || done.count(c.pod_uid)) continue;
    done.insert(c.pod_uid);
    auto held = [&view](const ContainerAssignment& d) {
      auto pod = view.find(d.namespace_ + "/" + d.pod_name);
      if (pod == view.end()) return false;
      auto ctr = pod->second.find(d.container);
      return ctr != pod->second.end() && !ctr->second.empty();
    };
    bool all_held = true;
    for (const auto& d : candidates) {
      if (d.pod_uid == c.pod_uid && !held(d)) {
        all_held = false;
        break;
      }
    }
    if (!all_held) continue;
    std::lock_guard<std::mutex> lock(mu_);
    mark_queue_.push_back({c.namespace_, c.pod_name});
    mark_cv_.notify_all();
  }
}

bool Agent::VerifyNow() {
  std::lock_guard<std::mutex> alloc(alloc_mu_);
  PodResourcesView view;
  if (!ListPodResources(&view)) return false;
  std::set<std::string> live_slices;
  for (const auto& [pod, ctrs] : view) {
    auto slash = pod.find('/');
    for (const auto& [ctr, ids] : ctrs) {
      if (ids.empty()) continue;
      live_slices.insert(SliceNameForDevices(ids));
      VerifyEntry(pod.substr(0, slash), pod.substr(slash + 1), ctr, ids);
    }
  }
  MarkHeldPods(view);
  // Slices nobody holds any more: remove them once their pod is gone from the API server.
  for (const auto& dir : writer_.ListSlices()) {
    if (live_slices.count(dir.filename().string())) continue;
    SliceOwner owner;
    if (!SliceWriter::ReadOwner(dir, &owner).ok()) continue;
    if (!owner.verified) {
      // Written by an Allocate whose admission the kubelet then abandoned: nobody ever held it.
      std::error_code ec;
      auto age = fs::file_time_type::clock::now() - fs::last_write_time(dir / "owner.json", ec);
      if (!ec && age > std::chrono::minutes(2)) writer_.Remove(dir);
      continue;
    }
    auto pod = cluster_->GetPod(owner.namespace_, owner.pod);
    bool gone = (!pod.ok() && pod.error().NotFound()) || (pod.ok() && kube::Uid(*pod) != owner.pod_uid);
    if (!gone) continue;
    writer_.Remove(dir);
    std::lock_guard<std::mutex> lock(mu_);
    claimed_.erase(owner.pod_uid + "/" + owner.container);
  }
  return true;
}

void Agent::VerifyLoop() {
  bool warned = false;
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, std::chrono::duration<double>(opts_.verify_period_s),
                        [this] { return stopping_.load(); });
    }
    if (stopping_) break;
    // Republish after a failure (the Node may not exist yet) and now and then, so a manual edit of the
    // annotation does not mislead the scheduler for long.
    if (!published_ || NowNs() - last_publish_ns_ > 60'000'000'000) PublishNode();
    bool ok = VerifyNow();
    if (!ok && !warned) {
      Log("the kubelet's PodResources API is unreachable: slices cannot be verified");
    }
    warned = !ok;
  }
}

int Agent::MapHostPidsNow() {
  std::lock_guard<std::mutex> guard(host_pid_mu_);
  const uint64_t own_ns = slice::SelfPidNamespace();
  const int64_t now = NowNs();
  int published = 0;
  std::set<uint64_t> still_missing;
  for (const auto& dir : writer_.ListSlices()) {
    slice::Region region;
    char err[256];
    const fs::path rpath = dir / "region" / "slice.region";
    if (!slice::OpenRegion(rpath.c_str(), true, &region, err, sizeof(err))) continue;  // no process yet
    const slice::HostPidPass pass = slice::PublishHostPids(region.hdr, opts_.proc_root.c_str(), own_ns);
    slice::CloseRegion(&region);
    published += pass.published;
    for (int k = 0; k < pass.unresolved_count; ++k) {
      const uint64_t owner = pass.unresolved[k];
      still_missing.insert(owner);
      auto& [since, warned] = host_pid_missing_.emplace(owner, std::make_pair(now, false)).first->second;
      // A process that stays unmapped: the agent does not see the host's pids (no hostPID), and the
      // driver's figure for this process's context cannot be matched.
      if (now - since > 5'000'000'000 && !warned) {
        warned = true;
        Log("slice %s: process %d of another pid namespace is not in %s after 5 s; its context is counted "
            "at the estimate, not measured (does the agent run with hostPID?)",
            dir.filename().c_str(), slice::OwnerPid(owner), opts_.proc_root.c_str());
      }
    }
  }
  for (auto it = host_pid_missing_.begin(); it != host_pid_missing_.end();) {
    it = still_missing.count(it->first) ? std::next(it) : host_pid_missing_.erase(it);
  }
  return published;
}

void Agent::HostPidLoop() {
  while (!stopping_) {
    MapHostPidsNow();
    std::unique_lock<std::mutex> lock(stop_mu_);
    stop_cv_.wait_for(lock, std::chrono::duration<double>(opts_.host_pid_period_s),
                      [this] { return stopping_.load(); });
  }
}

MetricsSnapshot Agent::Snapshot() {
  MetricsSnapshot s;
  s.node = opts_.node;
  std::vector<gpu::GpuInfo> gpus;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gpus = gpus_;
    s.counters = counters_;
  }
  for (const auto& g : gpus) {
    GpuSample gs{g.uuid, g.index, g.model, g.healthy, g.memory_bytes, 0, -1};
    gpu::GpuUsage u;
    if (backend_->Usage(g.uuid, &u).ok()) {
      gs.memory_used_bytes = u.memory_used_bytes;
      gs.utilization_percent = u.utilization_percent;
    }
    s.gpus.push_back(gs);
  }
  const int64_t now = NowNs();
  for (const auto& dir : writer_.ListSlices()) {
    SliceOwner owner;
    if (!SliceWriter::ReadOwner(dir, &owner).ok()) continue;
    slice::SliceConfig cfg;
    char err[256];
    if (!slice::LoadSliceConfig((dir / "slice.conf").c_str(), false, &cfg, err, sizeof(err))) continue;
    SliceSample sl{owner.namespace_, owner.pod, owner.container, dir.filename().string(), {}};
    slice::Region region;
    const fs::path rpath = dir / "region" / "slice.region";
    const bool have_region = slice::OpenRegion(rpath.c_str(), false, &region, err, sizeof(err));
    for (int g = 0; g < cfg.gpu_count; ++g) {
      SliceGpuSample x;
      x.uuid = cfg.gpus[g].uuid;
      x.vdevice = g;
      x.limit_bytes = cfg.gpus[g].memory_bytes;
      x.cap_ratio = cfg.gpus[g].cores / 100.0;
      int rg = have_region ? slice::FindRegionGpu(region.hdr, cfg.gpus[g].uuid) : -1;
      if (rg >= 0) {
        slice::GpuUsage u = slice::ReadGpuUsage(region.hdr, rg);
        const auto& rgpu = region.hdr->gpus[rg];
        x.used_bytes = u.used_bytes;
        x.wall_refusals = u.wall_refusals;
        x.throttled_seconds = rgpu.throttled_ns.load() / 1e9;
        x.priority_waits = rgpu.priority_waits.load();
        const uint64_t busy = rgpu.busy_ns.load();
        const std::string key = sl.slice + "/" + x.uuid;
        std::lock_guard<std::mutex> lock(mu_);
        auto it = busy_prev_.find(key);
        if (it != busy_prev_.end() && now > it->second.second && busy >= it->second.first) {
          x.share_ratio = std::min(1.0, double(busy - it->second.first) / double(now - it->second.second));
        }
        busy_prev_[key] = {busy, now};
      }
      sl.gpus.push_back(x);
    }
    if (have_region) slice::CloseRegion(&region);
    s.slices.push_back(std::move(sl));
  }
  return s;
}

std::string Agent::RenderMetricsNow() {
  return RenderMetrics(Snapshot(), RenderOptions{.hami_names = opts_.hami_metric_names});
}

}  // namespace tessera::agent
