#include "agent/mps_supervisor.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "shim/mps.h"

namespace tessera::agent {

namespace fs = std::filesystem;

MpsSupervisor::MpsSupervisor(Options opts) : opts_(std::move(opts)) {}

MpsSupervisor::~MpsSupervisor() { Stop(); }

void MpsSupervisor::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> l(stop_mu_);
    while (!stopping_) {
      stop_cv_.wait_for(l, opts_.check_period, [this] { return stopping_.load(); });
      if (stopping_) break;
      l.unlock();
      Check();
      l.lock();
    }
  });
}

void MpsSupervisor::Stop() {
  {
    std::lock_guard<std::mutex> l(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string MpsSupervisor::PipeDir(const std::string& uuid) const {
  return shim::MpsPathsFor(uuid, opts_.base_dir).pipe_dir;
}

std::string MpsSupervisor::ClientDir(const std::string& uuid) const {
  return (fs::path(PipeDir(uuid)).parent_path() / "client").string();
}

gpu::Status MpsSupervisor::LinkClientDir(const std::string& uuid) {
  const std::string control = PipeDir(uuid) + "/control", dir = ClientDir(uuid);
  const std::string link = dir + "/control", tmp = dir + "/.control.tmp";
  struct stat want {}, have {};
  if (stat(control.c_str(), &want) != 0)
    return gpu::Status::Error("MPS daemon of " + uuid + ": no control socket " + control + ": " + std::strerror(errno));
  if (stat(link.c_str(), &have) == 0 && have.st_ino == want.st_ino && have.st_dev == want.st_dev)
    return gpu::Status::Ok();
  std::error_code ec;
  fs::create_directories(dir, ec);
  chmod(dir.c_str(), 0755);
  unlink(tmp.c_str());
  // A hard link, not a symlink: inside the container the daemon's real path does not exist.
  if (::link(control.c_str(), tmp.c_str()) != 0 || rename(tmp.c_str(), link.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    unlink(tmp.c_str());
    return gpu::Status::Error("MPS daemon of " + uuid + ": cannot link " + control + " into " + dir + ": " + why);
  }
  return gpu::Status::Ok();
}

gpu::Status MpsSupervisor::Acquire(const std::string& uuid, const std::string& slice, std::string* pipe_dir) {
  std::lock_guard<std::mutex> l(mu_);
  const shim::MpsPaths paths = shim::MpsPathsFor(uuid, opts_.base_dir);
  std::string err;
  // StartMpsDaemon returns at once when the daemon already answers.
  if (!shim::StartMpsDaemon(uuid, paths, &err))
    return gpu::Status::Error("spatial slice " + slice + ": cannot start the MPS control daemon of " + uuid + " (" +
                              err + ")");
  gpu::Status st = LinkClientDir(uuid);
  if (!st.ok()) return gpu::Status::Error("spatial slice " + slice + ": " + st.message());
  users_[uuid].insert(slice);
  *pipe_dir = paths.pipe_dir;
  return gpu::Status::Ok();
}

void MpsSupervisor::Adopt(const std::string& uuid, const std::string& slice) {
  std::lock_guard<std::mutex> l(mu_);
  users_[uuid].insert(slice);
}

void MpsSupervisor::Release(const std::string& slice) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = users_.begin(); it != users_.end();) {
    it->second.erase(slice);
    if (!it->second.empty()) {
      ++it;
      continue;
    }
    const shim::MpsPaths paths = shim::MpsPathsFor(it->first, opts_.base_dir);
    std::string err;
    if (!shim::StopMpsDaemon(paths, &err))
      std::fprintf(stderr, "tessera agent: MPS daemon of %s did not answer quit: %s\n", it->first.c_str(), err.c_str());
    std::error_code ec;
    fs::remove_all(fs::path(paths.pipe_dir).parent_path(), ec);
    it = users_.erase(it);
  }
}

void MpsSupervisor::Check() {
  std::map<std::string, std::set<std::string>> users;
  {
    std::lock_guard<std::mutex> l(mu_);
    users = users_;
  }
  for (const auto& [uuid, slices] : users) {
    const shim::MpsPaths paths = shim::MpsPathsFor(uuid, opts_.base_dir);
    std::string reply, err;
    if (shim::MpsControl(paths, "get_server_list", &reply, &err)) {
      // Healthy; if the daemon was restarted by someone else, its socket is new: relink.
      std::lock_guard<std::mutex> l(mu_);
      if (!users_.count(uuid)) continue;
      gpu::Status st = LinkClientDir(uuid);
      if (!st.ok() && opts_.on_restart) opts_.on_restart(uuid, st.message());
      continue;
    }
    std::lock_guard<std::mutex> l(mu_);
    if (!users_.count(uuid)) continue;  // released meanwhile
    std::string why = "control daemon did not answer (" + err + ")";
    std::string start_err;
    if (shim::StartMpsDaemon(uuid, paths, &start_err)) {
      ++restarts_;
      gpu::Status st = LinkClientDir(uuid);
      if (!st.ok()) why += "; " + st.message();
    } else {
      why += "; restart failed: " + start_err;
    }
    if (opts_.on_restart) opts_.on_restart(uuid, why);
  }
}

std::map<std::string, std::set<std::string>> MpsSupervisor::Users() const {
  std::lock_guard<std::mutex> l(mu_);
  return users_;
}

}  // namespace tessera::agent
