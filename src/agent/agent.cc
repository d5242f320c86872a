// Agent's life cycle: options, Start (discovery, node publishing, serving, threads), Stop, and the log.
#include "agent/agent.h"

#include <chrono>
#include <cstdarg>
#include <cstdio>

#include "agent/agent_internal.h"

namespace tessera::agent {

namespace fs = std::filesystem;
using gpu::Status;

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
  return ValidateWatchdogOptions(o.watchdog);
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
    metrics_ = std::make_unique<MetricsServer>(kube::ServingLimits{});
    if (!opts_.metrics_token_file.empty()) metrics_->guard.RequireBearerToken(opts_.metrics_token_file);
    metrics_->guard.Apply(metrics_->http);
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
  StartWatchdog();
  threads_.emplace_back([this] { NodeConfigLoop(); });
  return Status::Ok();
}

void Agent::Stop() {
  if (stopping_.exchange(true)) return;
  if (watchdog_) watchdog_->Stop();
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

}  // namespace tessera::agent
