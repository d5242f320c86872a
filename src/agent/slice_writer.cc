#include "agent/slice_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kube/file_read.h"
#include "slice/agent_rows.h"
#include "slice/config.h"
#include "slice/fs.h"
#include "slice/node_region.h"

namespace tessera::agent {

namespace fs = std::filesystem;
using gpu::Status;

std::string SliceNameForDevices(const std::vector<std::string>& device_ids) {
  std::vector<std::string> sorted(device_ids);
  std::sort(sorted.begin(), sorted.end());
  std::string first = sorted.empty() ? "none" : sorted.front();
  std::string out;
  for (size_t i = 0; i < first.size(); ++i) {
    char c = static_cast<char>(std::tolower(static_cast<unsigned char>(first[i])));
    if (first.compare(i, 2, "::") == 0) {
      out += '-';
      ++i;
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_') {
      out += c;
    } else {
      out += '_';
    }
  }
  if (out.empty() || !std::isalnum(static_cast<unsigned char>(out[0]))) out = "s" + out;
  if (out.size() > 63) out = out.substr(out.size() - 63);  // keep the distinguishing tail (the "-k")
  if (!std::isalnum(static_cast<unsigned char>(out[0]))) out[0] = 's';
  return out;
}

SliceWriter::SliceWriter(Options opts) : opts_(std::move(opts)) {}

namespace {

// The agent writes its per-slice files (config, owner) at a few hundred bytes; a file past this was not
// written by it.
constexpr size_t kMaxSmallFileBytes = size_t{64} << 10;

Status MakeDir(const fs::path& dir, mode_t mode) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::Error("cannot create " + dir.string() + ": " + ec.message());
  ::chmod(dir.c_str(), mode);
  return Status::Ok();
}

// The node-wide priority files of one GPU, created (and, when damaged, rebuilt) by the agent, 0666 so
// that a container of any uid can write the file it gets mounted read-write.
Status PrepareNodeFiles(const fs::path& node_dir, const std::string& uuid) {
  for (const std::string& path : {slice::NodeRegion::PathFor(uuid, node_dir.string()),
                                  slice::NodeRegion::HighPathFor(uuid, node_dir.string())}) {
    std::string err;
    if (!slice::NodeRegion::Prepare(path, &err)) return Status::Error(err);
  }
  return Status::Ok();
}

}  // namespace

Status WriteFileAtomic(const fs::path& path, const std::string& text, mode_t mode) {
  const slice::Fs& io = slice::CurrentFs();
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(getpid());
  int fd = io.open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Status::Error("cannot create " + tmp.string() + ": " + std::strerror(errno));
  auto fail = [&](const char* what) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return Status::Error(std::string(what) + " " + tmp.string() + ": " + std::strerror(e));
  };
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = io.write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = ENOSPC;
      return fail("cannot write");
    }
    done += static_cast<size_t>(n);
  }
  ::fchmod(fd, mode);
  if (io.fsync(fd) != 0) return fail("cannot sync");
  ::close(fd);
  if (io.rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return Status::Error("cannot rename " + tmp.string() + ": " + std::strerror(e));
  }
  return Status::Ok();
}

Status SliceWriter::Prepare() {
  Status st = MakeDir(opts_.state_dir, 0755);
  if (!st.ok()) return st;
  st = MakeDir(slices_dir(), 0755);
  if (!st.ok()) return st;
  if (!opts_.node_region_dir.empty()) {
    // The agent's alone: it creates each GPU's files (Write) and mounts them one by one.
    st = MakeDir(opts_.node_region_dir, 0755);
    if (!st.ok()) return st;
  }
  st = WriteFileAtomic(opts_.state_dir / "ld.so.preload", std::string(kCtrShim) + "\n", 0644);
  if (!st.ok()) return st;
  for (const auto& dir : ListSlices()) {
    slice::SliceConfig cfg;
    char err[256];
    std::string e;
    if (!slice::LoadSliceConfig((dir / "slice.conf").c_str(), false, &cfg, err, sizeof(err)) ||
        !broker_->Add((dir / "region").string(), cfg, &e)) {
      continue;  // its container is served again once the slice is rewritten
    }
  }
  broker_->Start();
  return Status::Ok();
}

Status SliceWriter::Write(const ContainerAssignment& a, const std::vector<std::string>& device_ids,
                          const std::map<std::string, uint64_t>& gpu_memory_bytes, ContainerSlice* out) {
  const fs::path dir = slices_dir() / SliceNameForDevices(device_ids);
  std::error_code ec;
  const bool existed = fs::exists(dir, ec);
  bool mps_acquired = false;
  Status st = WriteFiles(a, device_ids, gpu_memory_bytes, out, &mps_acquired);
  if (!st.ok() && !existed) {
    // A slice that could not be written whole is not left for a container or a restarted agent to find.
    broker_->Remove((dir / "region").string());
    fs::remove_all(dir, ec);
    if (mps_acquired) opts_.mps->Release(dir.filename().string());
  }
  return st;
}

Status SliceWriter::WriteFiles(const ContainerAssignment& a, const std::vector<std::string>& device_ids,
                               const std::map<std::string, uint64_t>& gpu_memory_bytes, ContainerSlice* out,
                               bool* mps_acquired) {
  if (a.grants.empty()) return Status::Error("container " + a.Key() + " has no GPU grants");
  if (a.grants.size() > static_cast<size_t>(slice::kMaxGpus)) {
    return Status::Error("container " + a.Key() + ": at most " + std::to_string(slice::kMaxGpus) +
                         " GPUs per slice");
  }
  const std::string name = SliceNameForDevices(device_ids);
  const fs::path dir = slices_dir() / name;
  Status st = MakeDir(dir, 0755);
  if (!st.ok()) return st;
  // The agent's books: read-only in the container (slice/agent_rows.h).
  st = MakeDir(dir / "region", 0755);
  if (!st.ok()) return st;

  slice::SliceConfig cfg;
  slice::InitSliceConfig(&cfg);
  std::snprintf(cfg.name, sizeof(cfg.name), "%s", name.c_str());
  std::snprintf(cfg.region, sizeof(cfg.region), "%s", kCtrRegionFile);
  std::snprintf(cfg.agent, sizeof(cfg.agent), "%s/%s", kCtrRegionDir, slice::kAgentSocketName);
  cfg.priority = a.priority;
  cfg.cap_mode = a.burst ? slice::CapMode::kBurst : slice::CapMode::kHard;
  cfg.gpu_count = 0;
  for (const auto& g : a.grants) {
    auto& limit = cfg.gpus[cfg.gpu_count++];
    std::snprintf(limit.uuid, sizeof(limit.uuid), "%s", g.uuid.c_str());
    uint64_t bytes = static_cast<uint64_t>(g.memory_mib) << 20;
    if (g.memory_mib == 0) {
      auto it = gpu_memory_bytes.find(g.uuid);
      if (it == gpu_memory_bytes.end()) {
        return Status::Error("container " + a.Key() + ": GPU " + g.uuid + " is not on this node");
      }
      bytes = it->second;
    }
    limit.memory_bytes = bytes;
    limit.cores = g.cores <= 0 || g.cores > 100 ? 100 : g.cores;
  }
  char err[256] = {};
  // The region first (the socket the config names must answer by the time a process reads it).
  std::string berr;
  if (!broker_->Add((dir / "region").string(), cfg, &berr)) {
    return Status::Error("slice " + name + ": accounting region: " + berr);
  }
  const fs::path conf = dir / "slice.conf";
  std::string pipe_dir;
  if (a.spatial) {
    // One MPS server per GPU, and a process talks to one server: a spatial slice has one GPU.
    if (a.grants.size() != 1)
      return Status::Error("container " + a.Key() + ": a spatial slice has exactly one GPU (got " +
                           std::to_string(a.grants.size()) + ")");
    if (!opts_.mps)
      return Status::Error("container " + a.Key() +
                           ": tessera.dev/compute-mode=spatial but this agent runs without spatial mode (--mps-dir)");
    st = opts_.mps->Acquire(a.grants[0].uuid, name, &pipe_dir);
    if (!st.ok()) return st;
    *mps_acquired = true;
    if (pipe_dir.empty() || pipe_dir[0] != '/' || pipe_dir.size() >= sizeof(cfg.mps_pipe))
      return Status::Error("container " + a.Key() + ": MPS pipe directory '" + pipe_dir +
                           "' is not an absolute path shorter than " + std::to_string(sizeof(cfg.mps_pipe)));
    std::snprintf(cfg.mps_pipe, sizeof(cfg.mps_pipe), "%s", pipe_dir.c_str());
    std::lock_guard<std::mutex> l(sms_mu_);
    auto it = sms_.find(a.grants[0].uuid);
    if (it != sms_.end() && it->second > 0 && it->second <= 4096) cfg.mps_sms = it->second;
  }
  // One schema, one writer (slice/config.h): the spatial keys are fields of the config like the rest.
  if (!slice::WriteSliceConfig(conf.c_str(), cfg, err, sizeof(err))) {
    return Status::Error("writing " + conf.string() + ": " + err);
  }
  std::vector<std::string> node_files;
  if (!opts_.node_region_dir.empty()) {
    for (const auto& g : a.grants) {
      st = PrepareNodeFiles(opts_.node_region_dir, g.uuid);
      if (!st.ok()) return st;
      node_files.push_back(g.uuid);
    }
  }

  SliceOwner owner{a.namespace_, a.pod_name, a.pod_uid, a.container, device_ids, a.grants, false};
  st = WriteOwner(dir, owner);
  if (!st.ok()) return st;

  out->slice = name;
  out->dir = dir;
  std::string uuids;
  for (const auto& g : a.grants) uuids += (uuids.empty() ? "" : ",") + g.uuid;
  out->envs = {{"NVIDIA_VISIBLE_DEVICES", uuids},
               {"CUDA_VISIBLE_DEVICES", uuids},
               {"TESSERA_SLICE_CONFIG", kCtrSliceConf}};
  out->mounts = {{kCtrSliceConf, conf.string(), true},
                 {kCtrRegionDir, (dir / "region").string(), true},
                 {kCtrShim, opts_.shim_path.string(), true},
                 {kCtrPreload, (opts_.state_dir / "ld.so.preload").string(), true}};
  for (const auto& uuid : node_files) {
    const fs::path best_effort = slice::NodeRegion::PathFor(uuid, opts_.node_region_dir.string());
    const fs::path high = slice::NodeRegion::HighPathFor(uuid, opts_.node_region_dir.string());
    out->mounts.push_back({slice::NodeRegion::PathFor(uuid, kCtrNodeDir), best_effort.string(), false});
    // Only a high-priority slice may write the high-priority participants' file.
    out->mounts.push_back({slice::NodeRegion::HighPathFor(uuid, kCtrNodeDir), high.string(), a.priority != 0});
  }
  // The client directory (only the daemon's unprivileged control socket), read-only, where the config
  // says the pipe directory is.
  if (!pipe_dir.empty()) out->mounts.push_back({pipe_dir, opts_.mps->ClientDir(a.grants[0].uuid), true});
  return Status::Ok();
}

void SliceWriter::SetSmCounts(std::map<std::string, int> sms) {
  std::lock_guard<std::mutex> l(sms_mu_);
  sms_ = std::move(sms);
}

namespace {
// The GPU of a spatial slice (its config names an MPS pipe), empty when not spatial or unreadable.
std::string SpatialGpuOf(const fs::path& dir) {
  slice::SliceConfig cfg;
  char err[256];
  if (!slice::LoadSliceConfig((dir / "slice.conf").c_str(), false, &cfg, err, sizeof(err))) return "";
  return cfg.mps_pipe[0] != '\0' && cfg.gpu_count > 0 ? std::string(cfg.gpus[0].uuid) : "";
}
}  // namespace

void SliceWriter::AdoptSpatialSlices() {
  if (!opts_.mps) return;
  for (const auto& dir : ListSlices()) {
    std::string gpu = SpatialGpuOf(dir);
    if (!gpu.empty()) opts_.mps->Adopt(gpu, dir.filename().string());
  }
}

Status SliceWriter::WriteOwner(const fs::path& dir, const SliceOwner& o) {
  nlohmann::json j = {{"namespace", o.namespace_},  {"pod", o.pod},
                      {"pod_uid", o.pod_uid},       {"container", o.container},
                      {"device_ids", o.device_ids}, {"verified", o.verified}};
  j["grants"] = nlohmann::json::array();
  for (const auto& g : o.grants) {
    j["grants"].push_back({{"uuid", g.uuid}, {"memory_mib", g.memory_mib}, {"cores", g.cores}});
  }
  return WriteFileAtomic(dir / "owner.json", j.dump() + "\n", 0644);
}

Status SliceWriter::ReadOwner(const fs::path& dir, SliceOwner* o) {
  std::string text, err;
  if (!kube::ReadFileCapped((dir / "owner.json").string(), kMaxSmallFileBytes, "a slice's owner file", &text, &err))
    return Status::Error(err);
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Error((dir / "owner.json").string() + ": not JSON");
  }
  try {
    o->namespace_ = j.at("namespace").get<std::string>();
    o->pod = j.at("pod").get<std::string>();
    o->pod_uid = j.at("pod_uid").get<std::string>();
    o->container = j.at("container").get<std::string>();
    o->device_ids = j.at("device_ids").get<std::vector<std::string>>();
    o->verified = j.value("verified", false);
    o->grants.clear();
    for (const auto& g : j.at("grants")) {
      o->grants.push_back(Grant{g.at("uuid").get<std::string>(), g.at("memory_mib").get<int64_t>(),
                                g.at("cores").get<int>()});
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Error((dir / "owner.json").string() + ": " + e.what());
  }
  return Status::Ok();
}

std::vector<fs::path> SliceWriter::ListSlices() const {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(slices_dir(), ec)) {
    if (e.is_directory() && fs::exists(e.path() / "owner.json")) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status SliceWriter::Remove(const fs::path& dir) {
  broker_->Remove((dir / "region").string());
  const bool spatial = opts_.mps && !SpatialGpuOf(dir).empty();
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (spatial) opts_.mps->Release(dir.filename().string());
  if (ec) return Status::Error("cannot remove " + dir.string() + ": " + ec.message());
  return Status::Ok();
}

}  // namespace tessera::agent
