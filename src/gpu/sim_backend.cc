#include "gpu/sim_backend.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include "gpu/topology.h"

namespace tessera::gpu {
namespace {

constexpr uint64_t kMiB = 1024ull * 1024ull;
constexpr int64_t kMaxMemoryMiB = 16ll * 1024 * 1024;  // 16 TiB: far above any card, catches unit slips

bool ValidUuid(const std::string& s) {
  if (s.size() < 5 || s.size() > 56 || s.rfind("GPU-", 0) != 0) return false;
  // Real UUIDs are hex; simulated ones may carry a node name ("GPU-node-7-0") to stay readable.
  return std::all_of(s.begin() + 4, s.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; });
}

// Reads an integer field; yaml-cpp would happily turn "1.5" or "abc" into garbage otherwise.
Status ReadInt(const YAML::Node& node, const std::string& where, int64_t lo, int64_t hi, int64_t* out) {
  if (!node.IsScalar())
    return Status::Error(where + ": must be an integer in [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + "]");
  const std::string& text = node.Scalar();
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != text.size() || v < lo || v > hi) {
    return Status::Error(where + ": '" + text + "' is not an integer in [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + "]");
  }
  *out = v;
  return Status::Ok();
}

Status ReadBool(const YAML::Node& node, const std::string& where, bool* out) {
  if (node.IsScalar()) {
    const std::string& t = node.Scalar();
    if (t == "true") {
      *out = true;
      return Status::Ok();
    }
    if (t == "false") {
      *out = false;
      return Status::Ok();
    }
  }
  return Status::Error(where + ": must be true or false");
}

Status ReadString(const YAML::Node& node, const std::string& where, size_t max_len, std::string* out) {
  if (!node.IsScalar() || node.Scalar().empty() || node.Scalar().size() > max_len) {
    return Status::Error(where + ": must be a non-empty string of at most " + std::to_string(max_len) +
                         " characters");
  }
  for (char c : node.Scalar()) {
    if (static_cast<unsigned char>(c) < 0x20) return Status::Error(where + ": control character");
  }
  *out = node.Scalar();
  return Status::Ok();
}

Status CheckKeys(const YAML::Node& map, const std::string& where,
                 std::initializer_list<const char*> allowed) {
  for (const auto& kv : map) {
    // A key may be a list or a mapping in YAML ("? [a]: 1"): no key we know.
    if (!kv.first.IsScalar()) return Status::Error(where + ": a key must be a plain name");
    std::string key = kv.first.Scalar();
    bool ok = std::any_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; });
    if (!ok) {
      std::string list;
      for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
      return Status::Error(where + ": unknown key '" + key + "' (allowed: " + list + ")");
    }
  }
  return Status::Ok();
}

Status ParseGpu(const YAML::Node& g, const std::string& where, int index, SimSpec::Gpu* out) {
  if (!g.IsMap()) return Status::Error(where + ": must be a mapping");
  Status st = CheckKeys(
      g, where,
      {"uuid", "model", "memory_mib", "numa", "healthy", "utilization", "memory_used_mib", "pci_bus_id", "processes",
       "compute_capability", "driver_version", "links", "sms"});
  if (!st.ok()) return st;
  GpuInfo& info = out->info;
  info.index = index;
  if (!g["uuid"]) return Status::Error(where + ".uuid: required");
  st = ReadString(g["uuid"], where + ".uuid", 56, &info.uuid);
  if (!st.ok()) return st;
  if (!ValidUuid(info.uuid)) {
    return Status::Error(where + ".uuid: '" + info.uuid +
                         "' must be 'GPU-' followed by letters, digits and dashes (at most 56 characters)");
  }
  if (!g["model"]) return Status::Error(where + ".model: required");
  st = ReadString(g["model"], where + ".model", 128, &info.model);
  if (!st.ok()) return st;
  if (!g["memory_mib"]) return Status::Error(where + ".memory_mib: required");
  int64_t mib = 0;
  st = ReadInt(g["memory_mib"], where + ".memory_mib", 1, kMaxMemoryMiB, &mib);
  if (!st.ok()) return st;
  info.memory_bytes = static_cast<uint64_t>(mib) * kMiB;
  if (g["numa"]) {
    int64_t numa = -1;
    st = ReadInt(g["numa"], where + ".numa", -1, 1023, &numa);
    if (!st.ok()) return st;
    info.numa_node = static_cast<int>(numa);
  }
  if (g["healthy"]) {
    st = ReadBool(g["healthy"], where + ".healthy", &info.healthy);
    if (!st.ok()) return st;
    if (!info.healthy) info.health_reason = "marked unhealthy in the simulator file";
  }
  if (g["pci_bus_id"]) {
    st = ReadString(g["pci_bus_id"], where + ".pci_bus_id", 32, &info.pci_bus_id);
    if (!st.ok()) return st;
  }
  if (g["compute_capability"]) {
    st = ReadString(g["compute_capability"], where + ".compute_capability", 16, &info.compute_capability);
    if (!st.ok()) return st;
  }
  if (g["driver_version"]) {
    st = ReadString(g["driver_version"], where + ".driver_version", 32, &info.driver_version);
    if (!st.ok()) return st;
  }
  if (g["sms"]) {
    int64_t sms = 0;
    st = ReadInt(g["sms"], where + ".sms", 1, 4096, &sms);
    if (!st.ok()) return st;
    info.sm_count = static_cast<int>(sms);
  }
  if (const YAML::Node links = g["links"]) {
    if (!links.IsMap()) return Status::Error(where + ".links: must be a mapping of GPU uuid to link (NV4, PIX, ...)");
    for (const auto& kv : links) {
      std::string peer, link;
      st = ReadString(kv.first, where + ".links", 56, &peer);
      if (!st.ok()) return st;
      st = ReadString(kv.second, where + ".links." + peer, 8, &link);
      if (!st.ok()) return st;
      info.links[peer] = link;
    }
  }
  if (g["utilization"]) {
    int64_t u = 0;
    st = ReadInt(g["utilization"], where + ".utilization", 0, 100, &u);
    if (!st.ok()) return st;
    out->utilization_percent = static_cast<int>(u);
  }
  if (g["memory_used_mib"]) {
    int64_t used = 0;
    st = ReadInt(g["memory_used_mib"], where + ".memory_used_mib", 0, mib, &used);
    if (!st.ok()) return st;
    out->memory_used_bytes = static_cast<uint64_t>(used) * kMiB;
  }
  if (const YAML::Node procs = g["processes"]) {
    if (!procs.IsSequence()) return Status::Error(where + ".processes: must be a list");
    if (procs.size() > 4096) return Status::Error(where + ".processes: at most 4096 processes");
    for (size_t i = 0; i < procs.size(); ++i) {
      const YAML::Node p = procs[i];
      const std::string pw = where + ".processes[" + std::to_string(i) + "]";
      if (!p.IsMap()) return Status::Error(pw + ": must be a mapping");
      st = CheckKeys(p, pw, {"pid", "memory_used_mib", "memory_unknown"});
      if (!st.ok()) return st;
      ProcessUsage u;
      int64_t v = 0;
      if (!p["pid"]) return Status::Error(pw + ".pid: required");
      st = ReadInt(p["pid"], pw + ".pid", 1, 4194304, &v);
      if (!st.ok()) return st;
      u.pid = static_cast<uint32_t>(v);
      for (const auto& other : out->processes) {
        if (other.pid == u.pid) return Status::Error(pw + ".pid: " + std::to_string(v) + " appears twice");
      }
      bool unknown = false;
      if (p["memory_unknown"]) {
        st = ReadBool(p["memory_unknown"], pw + ".memory_unknown", &unknown);
        if (!st.ok()) return st;
      }
      if (unknown == static_cast<bool>(p["memory_used_mib"])) {
        return Status::Error(pw + ": give exactly one of memory_used_mib and memory_unknown: true");
      }
      if (!unknown) {
        st = ReadInt(p["memory_used_mib"], pw + ".memory_used_mib", 0, mib, &v);
        if (!st.ok()) return st;
        u.used_bytes = static_cast<uint64_t>(v) * kMiB;
      }
      u.used_known = !unknown;
      out->processes.push_back(u);
    }
  }
  return Status::Ok();
}

Status ParseEvent(const YAML::Node& e, const std::string& where, const std::set<std::string>& uuids,
                  SimEvent* out) {
  if (!e.IsMap()) return Status::Error(where + ": must be a mapping");
  Status st = CheckKeys(e, where, {"after_ms", "uuid", "healthy", "reason"});
  if (!st.ok()) return st;
  int64_t after = 0;
  if (!e["after_ms"]) return Status::Error(where + ".after_ms: required");
  st = ReadInt(e["after_ms"], where + ".after_ms", 0, 86400000, &after);
  if (!st.ok()) return st;
  out->after = std::chrono::milliseconds(after);
  if (!e["uuid"]) return Status::Error(where + ".uuid: required");
  st = ReadString(e["uuid"], where + ".uuid", 56, &out->event.uuid);
  if (!st.ok()) return st;
  if (!uuids.count(out->event.uuid)) {
    return Status::Error(where + ".uuid: '" + out->event.uuid + "' is not one of the gpus");
  }
  if (!e["healthy"]) return Status::Error(where + ".healthy: required");
  st = ReadBool(e["healthy"], where + ".healthy", &out->event.healthy);
  if (!st.ok()) return st;
  if (e["reason"]) {
    st = ReadString(e["reason"], where + ".reason", 256, &out->event.reason);
    if (!st.ok()) return st;
  } else {
    out->event.reason = out->event.healthy ? "" : "simulated fault";
  }
  return Status::Ok();
}

}  // namespace

Status ParseSimSpec(const std::string& text, const std::string& source, SimSpec* out) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return Status::Error(source + ": not valid YAML/JSON: " + e.what());
  }
  if (!root.IsMap()) return Status::Error(source + ": top level must be a mapping with 'gpus'");
  Status st = CheckKeys(root, source, {"gpus", "events"});
  if (!st.ok()) return st;
  const YAML::Node gpus = root["gpus"];
  if (!gpus || !gpus.IsSequence() || gpus.size() == 0) {
    return Status::Error(source + ": gpus: must be a non-empty list");
  }
  if (gpus.size() > 64) return Status::Error(source + ": gpus: at most 64 GPUs per node");
  SimSpec spec;
  std::set<std::string> uuids;
  for (size_t i = 0; i < gpus.size(); ++i) {
    SimSpec::Gpu g;
    std::string where = source + ": gpus[" + std::to_string(i) + "]";
    st = ParseGpu(gpus[i], where, static_cast<int>(i), &g);
    if (!st.ok()) return st;
    if (!uuids.insert(g.info.uuid).second) {
      return Status::Error(where + ".uuid: '" + g.info.uuid + "' appears twice");
    }
    spec.gpus.push_back(std::move(g));
  }
  {
    std::vector<GpuInfo> infos;
    for (const auto& g : spec.gpus) infos.push_back(g.info);
    st = NormalizeLinks(&infos, source + ": gpus");
    if (!st.ok()) return st;
    for (size_t i = 0; i < infos.size(); ++i) spec.gpus[i].info.links = std::move(infos[i].links);
  }
  if (const YAML::Node events = root["events"]) {
    if (!events.IsSequence()) return Status::Error(source + ": events: must be a list");
    for (size_t i = 0; i < events.size(); ++i) {
      SimEvent ev;
      st = ParseEvent(events[i], source + ": events[" + std::to_string(i) + "]", uuids, &ev);
      if (!st.ok()) return st;
      spec.events.push_back(std::move(ev));
    }
    std::stable_sort(spec.events.begin(), spec.events.end(),
                     [](const SimEvent& a, const SimEvent& b) { return a.after < b.after; });
  }
  *out = std::move(spec);
  return Status::Ok();
}

namespace {
// A simulator file for thousands of GPUs is well below this.
constexpr size_t kMaxFileBytes = size_t{4} << 20;

// Reads the whole file, at most kMaxFileBytes: a device named by mistake (/dev/zero) fails at the limit.
Status ReadFile(const std::filesystem::path& path, std::string* text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error(path.string() + ": cannot open simulator file");
  text->clear();
  char buf[1 << 16];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    text->append(buf, static_cast<size_t>(in.gcount()));
    if (text->size() > kMaxFileBytes)
      return Status::Error(path.string() + ": larger than " + std::to_string(kMaxFileBytes >> 20) +
                           " MiB, the limit for a simulator file");
  }
  return Status::Ok();
}
}  // namespace

Status SimBackend::FromFile(const std::filesystem::path& path, std::unique_ptr<SimBackend>* out) {
  std::string text;
  Status st = ReadFile(path, &text);
  if (!st.ok()) return st;
  SimSpec spec;
  st = ParseSimSpec(text, path.string(), &spec);
  if (!st.ok()) return st;
  auto backend = std::make_unique<SimBackend>(std::move(spec), path);
  std::error_code ec;
  backend->mtime_ = std::filesystem::last_write_time(path, ec);
  *out = std::move(backend);
  return Status::Ok();
}

SimBackend::SimBackend(SimSpec spec, std::filesystem::path path)
    : spec_(std::move(spec)), path_(std::move(path)) {}

Status SimBackend::Init() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!initialised_) {
    initialised_ = true;
    started_ = std::chrono::steady_clock::now();
  }
  return Status::Ok();
}

Status SimBackend::Discover(std::vector<GpuInfo>* out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!initialised_) return Status::Error("sim backend: Discover before Init");
  out->clear();
  for (const auto& g : spec_.gpus) out->push_back(g.info);
  return Status::Ok();
}

SimSpec::Gpu* SimBackend::FindLocked(const std::string& uuid) {
  for (auto& g : spec_.gpus) {
    if (g.info.uuid == uuid) return &g;
  }
  return nullptr;
}

Status SimBackend::Usage(const std::string& uuid, GpuUsage* out) {
  std::lock_guard<std::mutex> lock(mu_);
  SimSpec::Gpu* g = FindLocked(uuid);
  if (!g) return Status::Error("sim backend: no GPU " + uuid);
  out->memory_total_bytes = g->info.memory_bytes;
  out->memory_used_bytes = g->memory_used_bytes;
  out->utilization_percent = g->utilization_percent;
  out->processes = g->processes;
  return Status::Ok();
}

Status SimBackend::Processes(const std::string& uuid, std::vector<ProcessUsage>* out) {
  std::lock_guard<std::mutex> lock(mu_);
  SimSpec::Gpu* g = FindLocked(uuid);
  if (!g) return Status::Error("sim backend: no GPU " + uuid);
  *out = g->processes;
  return Status::Ok();
}

Status SimBackend::SetProcesses(const std::string& uuid, std::vector<ProcessUsage> processes) {
  std::lock_guard<std::mutex> lock(mu_);
  SimSpec::Gpu* g = FindLocked(uuid);
  if (!g) return Status::Error("sim backend: no GPU " + uuid);
  g->processes = std::move(processes);
  return Status::Ok();
}

Status SimBackend::SetUsage(const std::string& uuid, uint64_t memory_used_bytes, int utilization_percent) {
  std::lock_guard<std::mutex> lock(mu_);
  SimSpec::Gpu* g = FindLocked(uuid);
  if (!g) return Status::Error("sim backend: no GPU " + uuid);
  if (memory_used_bytes > g->info.memory_bytes || utilization_percent < 0 || utilization_percent > 100) {
    return Status::Error("sim backend: usage out of range for " + uuid);
  }
  g->memory_used_bytes = memory_used_bytes;
  g->utilization_percent = utilization_percent;
  return Status::Ok();
}

void SimBackend::ApplyLocked(const HealthEvent& event) {
  SimSpec::Gpu* g = FindLocked(event.uuid);
  if (!g) return;
  g->info.healthy = event.healthy;
  g->info.health_reason = event.healthy ? "" : event.reason;
}

Status SimBackend::InjectHealthEvent(const HealthEvent& event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!FindLocked(event.uuid)) return Status::Error("sim backend: no GPU " + event.uuid);
    pending_.push_back(event);
  }
  cv_.notify_all();
  return Status::Ok();
}

Status SimBackend::ReloadIfChangedLocked() {
  if (path_.empty()) return Status::Ok();
  std::error_code ec;
  auto mtime = std::filesystem::last_write_time(path_, ec);
  if (ec || mtime == mtime_) return Status::Ok();
  mtime_ = mtime;
  std::string text;
  Status st = ReadFile(path_, &text);
  if (!st.ok()) return st;
  SimSpec fresh;
  st = ParseSimSpec(text, path_.string(), &fresh);
  if (!st.ok()) return Status::Error("reload ignored, keeping the previous GPUs: " + st.message());
  if (fresh.gpus.size() != spec_.gpus.size()) {
    return Status::Error(path_.string() + ": the set of GPUs changed; restart the agent to apply it");
  }
  for (size_t i = 0; i < fresh.gpus.size(); ++i) {
    SimSpec::Gpu& cur = spec_.gpus[i];
    const SimSpec::Gpu& now = fresh.gpus[i];
    if (cur.info.uuid != now.info.uuid) {
      return Status::Error(path_.string() + ": the set of GPUs changed; restart the agent to apply it");
    }
    cur.utilization_percent = now.utilization_percent;
    cur.memory_used_bytes = now.memory_used_bytes;
    cur.processes = now.processes;
    if (cur.info.healthy != now.info.healthy) {
      pending_.push_back(HealthEvent{now.info.uuid, now.info.healthy, now.info.health_reason});
    }
  }
  return Status::Ok();
}

Status SimBackend::WaitHealthEvent(std::chrono::milliseconds timeout, std::optional<HealthEvent>* event) {
  event->reset();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  if (!initialised_) return Status::Error("sim backend: WaitHealthEvent before Init");
  // File edits are noticed by polling the modification time: a short period keeps tests quick
  // without inotify plumbing for a test-only backend.
  constexpr auto kPoll = std::chrono::milliseconds(100);
  for (;;) {
    Status st = ReloadIfChangedLocked();
    if (!st.ok()) return st;
    auto now = std::chrono::steady_clock::now();
    while (next_scripted_ < spec_.events.size() && started_ + spec_.events[next_scripted_].after <= now) {
      pending_.push_back(spec_.events[next_scripted_].event);
      ++next_scripted_;
    }
    if (!pending_.empty()) {
      HealthEvent ev = pending_.front();
      pending_.pop_front();
      ApplyLocked(ev);
      *event = ev;
      return Status::Ok();
    }
    if (now >= deadline) return Status::Ok();
    auto wake = std::min(deadline, now + kPoll);
    if (next_scripted_ < spec_.events.size()) {
      wake = std::min(wake, started_ + spec_.events[next_scripted_].after);
    }
    cv_.wait_until(lock, wake);
  }
}

}  // namespace tessera::gpu
