#include "agent/dra_driver.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "agent/proto/dra_v1.grpc.pb.h"
#include "agent/proto/pluginregistration_v1.grpc.pb.h"
#include "kube/file_read.h"

namespace tessera::agent {

namespace fs = std::filesystem;
using gpu::Status;
using kube::Json;

namespace {

constexpr const char* kCdiKind = "gpu.tessera.io/claim";
constexpr const char* kSlicePrefix = "claim-";

void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Log(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "tessera agent (dra): %s\n", buf);
}

std::string KubeError(const kube::Error& e) { return e.ToString(); }

// A claim UID as a file-name part: the API server's UIDs are [0-9a-f-]; anything else is refused.
bool SafeUid(const std::string& uid) {
  if (uid.empty() || uid.size() > 64) return false;
  for (char c : uid) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-')) return false;
  }
  return true;
}

class KubeDraApi final : public DraApi {
 public:
  explicit KubeDraApi(std::shared_ptr<kube::Client> c) : c_(std::move(c)) {}
  kube::Result<Json> GetClaim(const std::string& ns, const std::string& name) override {
    return c_->Get(kube::kResourceClaims, ns, name);
  }
  kube::Result<Json> GetSlice(const std::string& name) override { return c_->Get(kube::kResourceSlices, "", name); }
  kube::Result<Json> CreateSlice(const Json& s) override { return c_->Create(kube::kResourceSlices, "", s); }
  kube::Result<Json> UpdateSlice(const Json& s) override {
    return c_->Update(kube::kResourceSlices, "", kube::Name(s), s);
  }
  kube::Result<std::string> NodeUid(const std::string& node) override {
    auto n = c_->Get(kube::kNodes, "", node);
    if (!n.ok()) return n.error();
    return kube::Uid(*n);
  }

 private:
  std::shared_ptr<kube::Client> c_;
};

}  // namespace

std::unique_ptr<DraApi> MakeKubeDraApi(std::shared_ptr<kube::Client> client) {
  return std::make_unique<KubeDraApi>(std::move(client));
}

Json BuildCdiSpec(const std::string& device, const ContainerSlice& slice) {
  Json env = Json::array();
  for (const auto& [k, v] : slice.envs) env.push_back(k + "=" + v);
  Json mounts = Json::array();
  for (const auto& m : slice.mounts) {
    Json opts = Json::array({m.read_only ? "ro" : "rw", "nosuid", "nodev", "rbind"});
    mounts.push_back({{"hostPath", m.host_path}, {"containerPath", m.container_path}, {"type", "bind"},
                      {"options", opts}});
  }
  return Json{{"cdiVersion", "0.6.0"},
              {"kind", kCdiKind},
              {"devices", Json::array({{{"name", device}, {"containerEdits", {{"env", env}, {"mounts", mounts}}}}})}};
}

// Thin adapters from gRPC to DraDriver.
class DraPluginService final : public drapb::DRAPlugin::Service {
 public:
  explicit DraPluginService(DraDriver* d) : d_(d) {}
  grpc::Status NodePrepareResources(grpc::ServerContext*, const drapb::NodePrepareResourcesRequest* req,
                                    drapb::NodePrepareResourcesResponse* resp) override {
    d_->NodePrepareResources(*req, resp);
    return grpc::Status::OK;
  }
  grpc::Status NodeUnprepareResources(grpc::ServerContext*, const drapb::NodeUnprepareResourcesRequest* req,
                                      drapb::NodeUnprepareResourcesResponse* resp) override {
    d_->NodeUnprepareResources(*req, resp);
    return grpc::Status::OK;
  }

 private:
  DraDriver* d_;
};

class DraRegistrationService final : public pluginregistration::Registration::Service {
 public:
  explicit DraRegistrationService(DraDriver* d) : d_(d) {}
  grpc::Status GetInfo(grpc::ServerContext*, const pluginregistration::InfoRequest*,
                       pluginregistration::PluginInfo* out) override {
    out->set_type("DRAPlugin");
    out->set_name(kube::kDraDriver);
    out->set_endpoint(d_->plugin_socket().string());
    out->add_supported_versions("v1.DRAPlugin");
    return grpc::Status::OK;
  }
  grpc::Status NotifyRegistrationStatus(grpc::ServerContext*, const pluginregistration::RegistrationStatus* st,
                                        pluginregistration::RegistrationStatusResponse*) override {
    d_->SetRegistered(st->plugin_registered(), st->error());
    return grpc::Status::OK;
  }

 private:
  DraDriver* d_;
};

DraDriver::DraDriver(DraOptions opts, std::unique_ptr<gpu::Backend> backend, std::unique_ptr<DraApi> api)
    : opts_(std::move(opts)), backend_(std::move(backend)), api_(std::move(api)), writer_(opts_.slices) {}

DraDriver::~DraDriver() { Stop(); }

fs::path DraDriver::plugin_socket() const {
  return opts_.kubelet_dir / "plugins" / kube::kDraDriver / "dra.sock";
}
fs::path DraDriver::registration_socket() const {
  return opts_.kubelet_dir / "plugins_registry" / (std::string(kube::kDraDriver) + "-reg.sock");
}
fs::path DraDriver::CdiFile(const std::string& uid) const {
  return opts_.cdi_dir / (std::string(kube::kDraDriver) + "-" + uid + ".json");
}

Status DraDriver::Start() {
  if (opts_.node.empty()) return Status::Error("--node: required (or $NODE_NAME)");
  Status st = backend_->Init();
  if (!st.ok()) return Status::Error("GPU backend " + backend_->Name() + ": " + st.message());
  std::vector<gpu::GpuInfo> gpus;
  st = backend_->Discover(&gpus);
  if (!st.ok()) return Status::Error("GPU discovery: " + st.message());
  {
    std::lock_guard<std::mutex> l(mu_);
    gpus_ = gpus;
  }
  st = writer_.Prepare();
  if (!st.ok()) return st;
  std::error_code ec;
  fs::create_directories(opts_.cdi_dir, ec);
  if (ec) return Status::Error("cannot create " + opts_.cdi_dir.string() + ": " + ec.message());
  st = LoadCheckpoint();
  if (!st.ok()) return st;
  RemoveLeftovers();
  st = PublishNow();
  if (!st.ok()) Log("publishing the ResourceSlice failed (will retry): %s", st.message().c_str());
  st = Serve();
  if (!st.ok()) return st;
  Log("driver %s on node %s: %zu GPUs, %zu claims prepared before; plugin %s", kube::kDraDriver,
      opts_.node.c_str(), gpus.size(), prepared_.size(), plugin_socket().c_str());
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void DraDriver::Stop() {
  {
    std::lock_guard<std::mutex> l(stop_mu_);
    if (stopping_.exchange(true)) {
      if (!thread_.joinable()) return;
    }
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  StopServers();
}

Status DraDriver::Serve() {
  std::lock_guard<std::mutex> lock(server_mu_);
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_.reset();
  }
  if (!plugin_service_) plugin_service_ = std::make_unique<DraPluginService>(this);
  if (!registration_service_) registration_service_ = std::make_unique<DraRegistrationService>(this);
  std::error_code ec;
  for (const auto& sock : {plugin_socket(), registration_socket()}) {
    fs::create_directories(sock.parent_path(), ec);
    if (ec) return Status::Error("cannot create " + sock.parent_path().string() + ": " + ec.message());
    ::unlink(sock.c_str());
  }
  grpc::ServerBuilder b;
  // The plugin socket first: the kubelet dials it as soon as the registration socket appears.
  b.AddListeningPort("unix://" + plugin_socket().string(), grpc::InsecureServerCredentials());
  b.AddListeningPort("unix://" + registration_socket().string(), grpc::InsecureServerCredentials());
  b.RegisterService(plugin_service_.get());
  b.RegisterService(registration_service_.get());
  server_ = b.BuildAndStart();
  if (!server_) return Status::Error("cannot serve on " + plugin_socket().string() + " and " +
                                     registration_socket().string());
  registered_ = false;
  return Status::Ok();
}

void DraDriver::StopServers() {
  std::lock_guard<std::mutex> lock(server_mu_);
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_.reset();
  ::unlink(plugin_socket().c_str());
  ::unlink(registration_socket().c_str());
  registered_ = false;
}

void DraDriver::SetRegistered(bool ok, const std::string& error) {
  registered_ = ok;
  if (ok) {
    Log("registered with the kubelet");
  } else {
    Log("the kubelet refused the registration: %s", error.c_str());
  }
}

std::vector<kube::DraGpu> DraDriver::GpusForSlice() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<kube::DraGpu> out;
  for (const auto& g : gpus_) {
    kube::DraGpu d;
    d.index = g.index;
    d.uuid = g.uuid;
    d.model = g.model;
    d.memory_bytes = g.memory_bytes;
    d.numa_node = g.numa_node;
    d.pci_bus_id = g.pci_bus_id;
    d.compute_capability = g.compute_capability;
    d.driver_version = g.driver_version.empty() ? opts_.driver_version : g.driver_version;
    d.healthy = g.healthy;
    d.health_reason = g.health_reason;
    out.push_back(std::move(d));
  }
  return out;
}

Status DraDriver::PublishNow() {
  if (node_uid_.empty()) {
    auto uid = api_->NodeUid(opts_.node);
    if (uid.ok()) node_uid_ = *uid;  // without it the slice simply has no owner
  }
  const std::vector<kube::DraGpu> gpus = GpusForSlice();
  const std::string name = kube::DraSliceName(opts_.node);
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto cur = api_->GetSlice(name);
    if (!cur.ok() && !cur.error().NotFound()) {
      std::lock_guard<std::mutex> l(mu_);
      publish_pending_ = true;
      return Status::Error("reading ResourceSlice " + name + ": " + KubeError(cur.error()));
    }
    if (!cur.ok()) {
      auto made = api_->CreateSlice(kube::BuildResourceSlice(opts_.node, node_uid_, gpus, 1));
      if (made.ok()) {
        std::lock_guard<std::mutex> l(mu_);
        publish_pending_ = false;
        return Status::Ok();
      }
      if (made.error().Conflict()) continue;  // someone created it meanwhile: update instead
      std::lock_guard<std::mutex> l(mu_);
      publish_pending_ = true;
      return Status::Error("creating ResourceSlice " + name + ": " + KubeError(made.error()));
    }
    int64_t generation = 0;
    const Json& spec = (*cur)["spec"];
    if (spec.contains("pool") && spec["pool"].contains("generation") && spec["pool"]["generation"].is_number()) {
      generation = spec["pool"]["generation"].get<int64_t>();
    }
    Json want = kube::BuildResourceSlice(opts_.node, node_uid_, gpus, generation);
    if (kube::SameSliceDevices(*cur, want)) {
      std::lock_guard<std::mutex> l(mu_);
      publish_pending_ = false;
      return Status::Ok();
    }
    want["spec"]["pool"]["generation"] = generation + 1;
    want["metadata"]["resourceVersion"] = kube::ResourceVersionOf(*cur);
    auto upd = api_->UpdateSlice(want);
    if (upd.ok()) {
      std::lock_guard<std::mutex> l(mu_);
      publish_pending_ = false;
      Log("ResourceSlice %s: generation %lld", name.c_str(), static_cast<long long>(generation + 1));
      return Status::Ok();
    }
    if (upd.error().Conflict()) continue;
    std::lock_guard<std::mutex> l(mu_);
    publish_pending_ = true;
    return Status::Error("updating ResourceSlice " + name + ": " + KubeError(upd.error()));
  }
  std::lock_guard<std::mutex> l(mu_);
  publish_pending_ = true;
  return Status::Error("ResourceSlice " + name + ": conflicting writers, will retry");
}

void DraDriver::Loop() {
  auto next_check = std::chrono::steady_clock::now();
  const auto period = std::chrono::milliseconds(static_cast<int64_t>(opts_.retry_period_s * 1000));
  const auto resync = std::chrono::milliseconds(static_cast<int64_t>(opts_.resync_period_s * 1000));
  auto next_resync = std::chrono::steady_clock::now() + resync;
  while (!stopping_) {
    std::optional<gpu::HealthEvent> ev;
    Status st = backend_->WaitHealthEvent(std::chrono::milliseconds(200), &ev);
    if (stopping_) break;
    bool changed = false;
    if (st.ok() && ev) {
      std::lock_guard<std::mutex> l(mu_);
      for (auto& g : gpus_) {
        if (g.uuid != ev->uuid || g.healthy == ev->healthy) continue;
        g.healthy = ev->healthy;
        g.health_reason = ev->healthy ? "" : ev->reason;
        changed = true;
      }
    } else if (!st.ok()) {
      std::unique_lock<std::mutex> l(stop_mu_);
      stop_cv_.wait_for(l, std::chrono::milliseconds(200), [this] { return stopping_.load(); });
    }
    if (changed) {
      Log("GPU %s is now %s; republishing", ev->uuid.c_str(), ev->healthy ? "healthy" : "unhealthy");
      std::lock_guard<std::mutex> l(mu_);
      publish_pending_ = true;
    }
    bool pending;
    {
      std::lock_guard<std::mutex> l(mu_);
      pending = publish_pending_;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_resync) {
      next_resync = now + resync;
      changed = true;  // PublishNow compares and writes only when the API server's copy differs or is gone
    }
    if (changed || (now >= next_check)) {
      next_check = now + period;
      if (changed || pending) {
        Status p = PublishNow();
        if (!p.ok()) Log("%s", p.message().c_str());
      }
      std::error_code ec;
      if (!fs::exists(registration_socket(), ec) || !fs::exists(plugin_socket(), ec)) {
        Log("plugin sockets are gone; serving again");
        Status s = Serve();
        if (!s.ok()) Log("%s", s.message().c_str());
      }
    }
  }
}

constexpr size_t kMaxCheckpointBytes = size_t{16} << 20;

Status DraDriver::LoadCheckpoint() {
  const fs::path file = opts_.slices.state_dir / "dra" / "checkpoint.json";
  std::error_code ec;
  if (!fs::exists(file, ec)) return Status::Ok();  // first start
  // One entry per prepared claim: a node's worth is a few hundred KiB at most.
  std::string text, err;
  if (!kube::ReadFileCapped(file.string(), kMaxCheckpointBytes, "the DRA checkpoint", &text, &err))
    return Status::Error(err + "; move it away to start empty");
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("version", 0) != 1 || !j.contains("claims")) {
    return Status::Error(file.string() + ": not a version 1 checkpoint; move it away to start empty");
  }
  std::map<std::string, DraPreparedClaim> claims;
  try {
    for (const auto& [uid, c] : j["claims"].items()) {
      DraPreparedClaim pc;
      pc.uid = uid;
      pc.namespace_ = c.at("namespace").get<std::string>();
      pc.name = c.at("name").get<std::string>();
      pc.slice = c.at("slice").get<std::string>();
      for (const auto& d : c.at("devices")) {
        DraPreparedDevice pd;
        pd.request_names = d.at("request_names").get<std::vector<std::string>>();
        pd.pool = d.at("pool").get<std::string>();
        pd.device = d.at("device").get<std::string>();
        pd.share_id = d.value("share_id", "");
        pd.cdi_ids = d.at("cdi_ids").get<std::vector<std::string>>();
        pc.devices.push_back(std::move(pd));
      }
      claims[uid] = std::move(pc);
    }
  } catch (const Json::exception& e) {
    return Status::Error(file.string() + ": " + e.what());
  }
  std::lock_guard<std::mutex> l(mu_);
  prepared_ = std::move(claims);
  return Status::Ok();
}

Status DraDriver::SaveCheckpointLocked() {
  Json claims = Json::object();
  for (const auto& [uid, c] : prepared_) {
    Json devices = Json::array();
    for (const auto& d : c.devices) {
      devices.push_back({{"request_names", d.request_names}, {"pool", d.pool}, {"device", d.device},
                         {"share_id", d.share_id}, {"cdi_ids", d.cdi_ids}});
    }
    claims[uid] = {{"namespace", c.namespace_}, {"name", c.name}, {"slice", c.slice}, {"devices", devices}};
  }
  const fs::path dir = opts_.slices.state_dir / "dra";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::Error("cannot create " + dir.string() + ": " + ec.message());
  return WriteFileAtomic(dir / "checkpoint.json", Json{{"version", 1}, {"claims", claims}}.dump() + "\n", 0644);
}

void DraDriver::RemoveLeftovers() {
  std::set<std::string> slices, uids;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [uid, c] : prepared_) {
      slices.insert(c.slice);
      uids.insert(uid);
    }
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(writer_.slices_dir(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(kSlicePrefix, 0) == 0 && !slices.count(name)) {
      Log("removing slice %s (no prepared claim holds it)", name.c_str());
      (void)writer_.Remove(e.path());
    }
  }
  const std::string prefix = std::string(kube::kDraDriver) + "-";
  for (const auto& e : fs::directory_iterator(opts_.cdi_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || e.path().extension() != ".json") continue;
    const std::string uid = name.substr(prefix.size(), name.size() - prefix.size() - 5);
    if (!uids.count(uid)) fs::remove(e.path(), ec);
  }
}

std::vector<DraPreparedClaim> DraDriver::Prepared() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<DraPreparedClaim> out;
  for (const auto& [uid, c] : prepared_) out.push_back(c);
  return out;
}

DraPreparedClaim DraDriver::PrepareClaim(const std::string& ns, const std::string& name, const std::string& uid,
                                         std::string* error) {
  const std::string who = "ResourceClaim " + ns + "/" + name;
  if (!SafeUid(uid)) {
    *error = who + ": uid \"" + uid + "\": must be 1..64 characters of [0-9A-Za-z-]";
    return {};
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = prepared_.find(uid);
    if (it != prepared_.end()) return it->second;  // prepared before (maybe before a restart)
  }
  auto claim = api_->GetClaim(ns, name);
  if (!claim.ok()) {
    *error = who + ": " + KubeError(claim.error());
    return {};
  }
  if (kube::Uid(*claim) != uid) {
    *error = who + ": has uid " + kube::Uid(*claim) + ", the kubelet asked for " + uid +
             " (the claim was deleted and created again)";
    return {};
  }
  auto alloc = kube::ParseClaimAllocation(*claim);
  if (!alloc.ok()) {
    *error = alloc.error().message;
    return {};
  }

  // One slice per claim: every GPU of ours the claim got on this node, with what it consumes there
  // (two requests on the same GPU add up).
  std::vector<gpu::GpuInfo> gpus;
  {
    std::lock_guard<std::mutex> l(mu_);
    gpus = gpus_;
  }
  ContainerAssignment a;
  a.pod_uid = uid;
  a.namespace_ = ns;
  a.pod_name = name;
  a.container = "claim";
  std::map<std::string, uint64_t> memory;
  std::vector<std::string> requests;
  DraPreparedClaim pc{ns, name, uid, "", {}};
  for (const auto& d : alloc->devices) {
    if (d.pool != opts_.node) {
      *error = who + ": device " + d.pool + "/" + d.device + " is not on node " + opts_.node;
      return {};
    }
    const gpu::GpuInfo* g = nullptr;
    for (const auto& x : gpus) {
      if (kube::DraDeviceName(x.uuid) == d.device) g = &x;
    }
    if (g == nullptr) {
      *error = who + ": device " + d.device + " is not a GPU of node " + opts_.node;
      return {};
    }
    memory[g->uuid] = g->memory_bytes;
    const int64_t mib = d.memory_bytes < 0 ? static_cast<int64_t>(g->memory_bytes >> 20) : (d.memory_bytes + (1 << 20) - 1) >> 20;
    const int cores = d.cores < 0 ? 100 : d.cores;
    Grant* grant = nullptr;
    for (auto& x : a.grants) {
      if (x.uuid == g->uuid) grant = &x;
    }
    if (grant == nullptr) {
      a.grants.push_back(Grant{g->uuid, 0, 0});
      grant = &a.grants.back();
      // A request that consumes no cores (0) leaves the GPU's SMs unlimited, as gpucores 0 does.
      grant->cores = 0;
    }
    grant->memory_mib += mib;
    grant->cores = std::min(100, grant->cores + cores);
    DraPreparedDevice pd;
    pd.request_names = {d.request};
    pd.pool = d.pool;
    pd.device = d.device;
    pd.share_id = d.share_id;
    pc.devices.push_back(std::move(pd));
    if (std::find(requests.begin(), requests.end(), d.request) == requests.end()) requests.push_back(d.request);
  }
  if (pc.devices.empty()) return pc;  // nothing of ours in this claim
  // Priority and cap mode: the strictest over the claim's requests (one slice serves them all).
  a.priority = 1;
  for (const auto& r : requests) {
    kube::DraSliceConfig cfg = alloc->ConfigFor(r);
    a.priority = std::min(a.priority, cfg.priority);
    a.burst = a.burst || cfg.burst;
  }
  for (auto& g : a.grants) {
    if (g.memory_mib > static_cast<int64_t>(memory[g.uuid] >> 20)) g.memory_mib = static_cast<int64_t>(memory[g.uuid] >> 20);
  }
  ContainerSlice slice;
  Status st = writer_.Write(a, {std::string(kSlicePrefix) + uid}, memory, &slice);
  if (!st.ok()) {
    *error = who + ": " + st.message();
    return {};
  }
  pc.slice = slice.slice;
  st = WriteFileAtomic(CdiFile(uid), BuildCdiSpec(uid, slice).dump(2) + "\n", 0644);
  if (!st.ok()) {
    (void)writer_.Remove(slice.dir);
    *error = who + ": " + st.message();
    return {};
  }
  // The slice's CDI device goes with the first device, which answers for every request of the claim, so
  // any container using any of them gets it once.
  pc.devices[0].request_names = requests;
  pc.devices[0].cdi_ids = {std::string(kCdiKind) + "=" + uid};
  std::lock_guard<std::mutex> l(mu_);
  auto [it, fresh] = prepared_.emplace(uid, pc);
  if (!fresh) return it->second;  // a concurrent prepare of the same claim won
  st = SaveCheckpointLocked();
  if (!st.ok()) {
    prepared_.erase(uid);
    std::error_code ec;
    fs::remove(CdiFile(uid), ec);
    (void)writer_.Remove(slice.dir);
    *error = who + ": checkpoint: " + st.message();
    return {};
  }
  Log("prepared %s (%s): slice %s", who.c_str(), uid.c_str(), pc.slice.c_str());
  return pc;
}

Status DraDriver::UnprepareClaim(const std::string& uid) {
  if (!SafeUid(uid)) return Status::Error("claim uid \"" + uid + "\": must be 1..64 characters of [0-9A-Za-z-]");
  std::lock_guard<std::mutex> l(mu_);
  auto it = prepared_.find(uid);
  std::string slice = it != prepared_.end() ? it->second.slice : SliceNameForDevices({kSlicePrefix + uid});
  std::error_code ec;
  fs::remove(CdiFile(uid), ec);
  if (ec) return Status::Error("cannot remove " + CdiFile(uid).string() + ": " + ec.message());
  if (!slice.empty()) {
    Status st = writer_.Remove(writer_.slices_dir() / slice);
    if (!st.ok()) return st;
  }
  if (it == prepared_.end()) return Status::Ok();
  DraPreparedClaim gone = it->second;
  prepared_.erase(it);
  Status st = SaveCheckpointLocked();
  if (!st.ok()) {
    prepared_.emplace(uid, gone);
    return Status::Error("checkpoint: " + st.message());
  }
  Log("unprepared ResourceClaim %s/%s (%s)", gone.namespace_.c_str(), gone.name.c_str(), uid.c_str());
  return Status::Ok();
}

void DraDriver::NodePrepareResources(const drapb::NodePrepareResourcesRequest& req,
                                     drapb::NodePrepareResourcesResponse* resp) {
  for (const auto& c : req.claims()) {
    std::string error;
    DraPreparedClaim pc = PrepareClaim(c.namespace_(), c.name(), c.uid(), &error);
    auto& out = (*resp->mutable_claims())[c.uid()];
    if (!error.empty()) {
      out.set_error(error);
      continue;
    }
    for (const auto& d : pc.devices) {
      auto* dev = out.add_devices();
      for (const auto& r : d.request_names) dev->add_request_names(r);
      dev->set_pool_name(d.pool);
      dev->set_device_name(d.device);
      for (const auto& id : d.cdi_ids) dev->add_cdi_device_ids(id);
      if (!d.share_id.empty()) dev->set_share_id(d.share_id);
    }
  }
}

void DraDriver::NodeUnprepareResources(const drapb::NodeUnprepareResourcesRequest& req,
                                       drapb::NodeUnprepareResourcesResponse* resp) {
  for (const auto& c : req.claims()) {
    Status st = UnprepareClaim(c.uid());
    auto& out = (*resp->mutable_claims())[c.uid()];
    if (!st.ok()) out.set_error(st.message());
  }
}

}  // namespace tessera::agent
