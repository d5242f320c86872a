#include "agent/row_broker.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "slice/agent_rows.h"

namespace tessera::agent {
namespace {

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Binds a SOCK_SEQPACKET socket at dir/agent.sock (through /proc/self/fd so that a long host path
// still fits sun_path), mode 0666: any uid of the container may connect; the directory stays read-only.
int Listen(const std::string& dir, std::string* err) {
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    *err = dir + ": " + std::strerror(errno);
    return -1;
  }
  const std::string short_path = "/proc/self/fd/" + std::to_string(dfd) + "/" + slice::kAgentSocketName;
  unlinkat(dfd, slice::kAgentSocketName, 0);
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", short_path.c_str());
  if (s < 0 || bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(s, 64) != 0) {
    *err = dir + "/" + slice::kAgentSocketName + ": " + std::strerror(errno);
    if (s >= 0) close(s);
    close(dfd);
    return -1;
  }
  fchmodat(dfd, slice::kAgentSocketName, 0666, 0);
  close(dfd);
  return s;
}

void Reply(int fd, const slice::RowReply& r, int row_fd, int live_fd) {
  iovec iov{const_cast<slice::RowReply*>(&r), sizeof(r)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))];
  if (row_fd >= 0 && live_fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    const int fds[2] = {row_fd, live_fd};
    std::memcpy(CMSG_DATA(c), fds, sizeof(fds));
  }
  (void)sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

RowBroker::~RowBroker() {
  Stop();
  for (auto& [dir, s] : slices_) {
    if (s.listen_fd >= 0) close(s.listen_fd);
    slice::CloseRegion(&s.region);
  }
  for (auto& p : pending_) close(p.fd);
}

bool RowBroker::OpenLocked(Slice* s, std::string* err) {
  char e[256] = {};
  bool rebuilt = false;
  if (!slice::PrepareAgentRegion(s->dir.c_str(), s->cfg, &rebuilt, e, sizeof(e))) {
    *err = e;
    return false;
  }
  if (rebuilt) rebuilds_.fetch_add(1);
  slice::CloseRegion(&s->region);
  const std::string path = s->dir + "/slice.region";
  if (!slice::OpenRegion(path.c_str(), true, &s->region, e, sizeof(e))) {
    *err = e;
    return false;
  }
  return true;
}

bool RowBroker::Add(const std::string& dir, const slice::SliceConfig& cfg, std::string* err) {
  std::lock_guard<std::mutex> lock(mu_);
  Slice& s = slices_[dir];
  s.dir = dir;
  s.cfg = cfg;
  if (!OpenLocked(&s, err)) {
    slices_.erase(dir);
    return false;
  }
  if (s.listen_fd < 0) s.listen_fd = Listen(dir, err);
  if (s.listen_fd < 0) {
    slice::CloseRegion(&s.region);
    slices_.erase(dir);
    return false;
  }
  return true;
}

void RowBroker::Remove(const std::string& dir) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slices_.find(dir);
  if (it == slices_.end()) return;
  if (it->second.listen_fd >= 0) close(it->second.listen_fd);
  slice::CloseRegion(&it->second.region);
  slices_.erase(it);
}

int RowBroker::SweepLocked(Slice* s) {
  char why[160];
  if (s->region.hdr == nullptr || !slice::ValidateRegion(s->region.hdr, why, sizeof(why))) {
    std::string err;
    if (!OpenLocked(s, &err)) return 0;
  } else {
    struct stat st;
    const std::string path = s->dir + "/slice.region";
    if (stat(path.c_str(), &st) != 0 || static_cast<size_t>(st.st_size) != slice::kRegionFileSize) {
      std::string err;
      if (!OpenLocked(s, &err)) return 0;
    }
  }
  slice::RefreshRows(&s->region);
  return slice::ReclaimAgentRows(&s->region);
}

int RowBroker::Sweep() {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (auto& [dir, s] : slices_) n += SweepLocked(&s);
  return n;
}

void RowBroker::Serve(Pending* p) {
  slice::RowRequest req{};
  const ssize_t n = recv(p->fd, &req, sizeof(req), MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // not yet
  slice::RowReply r{};
  r.magic = slice::kRowReplyMagic;
  r.slot = -1;
  ucred cred{};
  socklen_t len = sizeof(cred);
  auto it = slices_.find(p->dir);
  if (n != static_cast<ssize_t>(sizeof(req)) || req.magic != slice::kRowRequestMagic || req.version != 1) {
    r.status = EPROTO;
    std::snprintf(r.message, sizeof(r.message), "malformed request");
  } else if (getsockopt(p->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0) {
    r.status = EPERM;
    std::snprintf(r.message, sizeof(r.message), "cannot tell who is asking");
  } else if (it == slices_.end() || it->second.region.hdr == nullptr) {
    r.status = ENOENT;
    std::snprintf(r.message, sizeof(r.message), "the slice is gone");
  } else if (req.op == static_cast<uint32_t>(slice::RowOp::kReclaim)) {
    r.slot = SweepLocked(&it->second);
  } else if (req.op == static_cast<uint32_t>(slice::RowOp::kRegister)) {
    SweepLocked(&it->second);
    int slot = -1, row_fd = -1, live_fd = -1;
    char e[160] = {};
    if (slice::AssignAgentRow(&it->second.region, cred.pid, &slot, &row_fd, &live_fd, e, sizeof(e))) {
      r.slot = slot;
      r.generation = it->second.region.hdr->generation.load();
      Reply(p->fd, r, row_fd, live_fd);
      close(row_fd);
      close(live_fd);
      close(p->fd);
      p->fd = -1;
      return;
    }
    r.status = ENOSPC;
    std::snprintf(r.message, sizeof(r.message), "%s", e);
  } else {
    r.status = EINVAL;
    std::snprintf(r.message, sizeof(r.message), "unknown request %u", req.op);
  }
  Reply(p->fd, r, -1, -1);
  close(p->fd);
  p->fd = -1;
}

void RowBroker::Loop() {
  int64_t next_sweep = NowMs() + kSweepMs;
  while (!stop_.load()) {
    std::vector<pollfd> fds;
    std::vector<std::string> dirs;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [dir, s] : slices_) {
        fds.push_back({s.listen_fd, POLLIN, 0});
        dirs.push_back(dir);
      }
      for (auto& p : pending_) fds.push_back({p.fd, POLLIN, 0});
    }
    const int64_t now = NowMs();
    const int wait = static_cast<int>(next_sweep > now ? next_sweep - now : 0);
    poll(fds.data(), fds.size(), wait);
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < dirs.size(); ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      int waiting = 0;
      for (auto& p : pending_) waiting += p.dir == dirs[i];
      for (;;) {
        int c = accept4(fds[i].fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) break;
        if (waiting >= kMaxPendingPerSlice) {
          close(c);  // this slice's own flood; other slices are served as before
          continue;
        }
        ++waiting;
        pending_.push_back({c, dirs[i], NowMs() + kRequestDeadlineMs});
      }
    }
    const int64_t t = NowMs();
    for (auto& p : pending_) {
      if (p.fd >= 0) Serve(&p);
      if (p.fd >= 0 && t > p.deadline_ms) {
        close(p.fd);
        p.fd = -1;
      }
    }
    std::erase_if(pending_, [](const Pending& p) { return p.fd < 0; });
    if (t >= next_sweep) {
      for (auto& [dir, s] : slices_) SweepLocked(&s);
      next_sweep = t + kSweepMs;
    }
  }
}

void RowBroker::Start() {
  if (thread_.joinable()) return;
  stop_.store(false);
  thread_ = std::thread([this] { Loop(); });
}

void RowBroker::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace tessera::agent
