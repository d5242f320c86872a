// The device plugin server: serving the kubelet's gRPC API on our socket, registering, following kubelet
// restarts (inotify on the device plugin directory) and streaming the device list (ListAndWatch).
#include <poll.h>
#include <sys/stat.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "agent/agent.h"
#include "agent/agent_internal.h"
#include "agent/inventory.h"

namespace tessera::agent {

namespace fs = std::filesystem;
using gpu::Status;

namespace {
// (inode, ctime ns) of a socket file, {0, 0} when it is absent.
std::pair<uint64_t, int64_t> SocketIdentity(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return {0, 0};
  return {static_cast<uint64_t>(st.st_ino), static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec};
}
}  // namespace

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

  // Taken before registering: if the kubelet restarts in between, the next loop sees a new socket and
  // registers once more, which is harmless; the other order could miss a restart.
  const auto kubelet_id = SocketIdentity(kubelet_socket());
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
    registered_kubelet_ = kubelet_id;
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
    pollfd p{fd, POLLIN, 0};
    int n = fd >= 0 && wd >= 0 ? ::poll(&p, 1, 200) : (::usleep(200000), 0);
    if (n > 0) {
      // The events only wake us; what to do is decided on the state of the sockets below.
      alignas(inotify_event) char buf[4096];
      ssize_t len;
      while ((len = ::read(fd, buf, sizeof(buf))) > 0) {
        for (char* q = buf; q < buf + len;) {
          auto* ev = reinterpret_cast<inotify_event*>(q);
          if (ev->mask & IN_IGNORED) wd = -1;  // the directory itself went away
          q += sizeof(inotify_event) + ev->len;
        }
      }
    }
    if (stopping_) break;
    // Our own unlink/recreate and a restart's delete+create arrive as events in any grouping; the
    // socket's identity says whether the kubelet we registered with is still the one listening.
    std::error_code ec;
    const bool ours_missing = !fs::exists(plugin_socket(), ec);
    const auto kubelet_id = SocketIdentity(kubelet_socket());
    const bool kubelet_up = kubelet_id.first != 0;
    std::pair<uint64_t, int64_t> registered_with;
    {
      std::lock_guard<std::mutex> l(mu_);
      registered_with = registered_kubelet_;
    }
    if (registered_ && kubelet_up && kubelet_id != registered_with) {
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

}  // namespace tessera::agent
