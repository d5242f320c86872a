#include "kube/serving.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <httplib.h>

#include <chrono>
#include <fstream>
#include <sstream>

namespace tessera::kube {

using Clock = std::chrono::steady_clock;

struct ServingGuard::Conn {
  ServingGuard* guard = nullptr;
  int fd = -1;
  std::string peer;
  Clock::time_point since;  // start of the part of the request still to arrive
  bool handling = false;    // the whole request is in; its handler (or the response) runs
  bool shut = false;
  bool counted = false;     // holds a place under the caps
  std::list<Conn*>::iterator it;
};

namespace {

std::string PeerOf(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
  else if (ss.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
  return buf;
}

void FreeConn(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  if (!ptr) return;
  auto* c = static_cast<ServingGuard::Conn*>(ptr);
  c->guard->Release(c);
  delete c;
}

int SslIndex() {
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeConn);
  return idx;
}
int CtxIndex() {
  static int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

// Called by OpenSSL on the server's worker thread as the connection's handshake starts: the first moment
// the socket is visible.
void InfoCallback(const SSL* ssl, int where, int) {
  if (!(where & SSL_CB_HANDSHAKE_START) || SSL_get_ex_data(ssl, SslIndex())) return;
  auto* g = static_cast<ServingGuard*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), CtxIndex()));
  if (!g) return;
  auto* c = new ServingGuard::Conn;
  c->guard = g;
  c->fd = SSL_get_fd(ssl);
  c->peer = PeerOf(c->fd);
  SSL_set_ex_data(const_cast<SSL*>(ssl), SslIndex(), c);
  g->Begin(c);
}

bool ConstantTimeEqual(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

std::string ServingLimitsError(const ServingLimits& l) {
  if (l.max_connections < 0 || l.max_connections > 1000000)
    return "max connections " + std::to_string(l.max_connections) + " is out of range (0 = no limit, up to 1000000)";
  if (l.max_per_peer < 0 || l.max_per_peer > 1000000)
    return "max connections per peer " + std::to_string(l.max_per_peer) + " is out of range (0 = no limit, up to 1000000)";
  if (!(l.request_deadline_s >= 0.1 && l.request_deadline_s <= 600))
    return "request deadline " + std::to_string(l.request_deadline_s) + " s is out of range (0.1..600 s)";
  if (l.read_timeout_s < 1 || l.read_timeout_s > 600)
    return "read timeout " + std::to_string(l.read_timeout_s) + " s is out of range (1..600 s)";
  if (l.keep_alive_s < 1 || l.keep_alive_s > 600)
    return "keep-alive " + std::to_string(l.keep_alive_s) + " s is out of range (1..600 s)";
  if (l.max_body_bytes < 1024) return "max body " + std::to_string(l.max_body_bytes) + " bytes is below 1024";
  return "";
}

ServingGuard::ServingGuard(ServingLimits limits) : limits_(limits) {
  (void)SslIndex();
  (void)CtxIndex();
  watchdog_ = std::thread([this] { Watch(); });
}

ServingGuard::~ServingGuard() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  watchdog_.join();
}

void ServingGuard::Begin(Conn* c) {
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.accepted;
  c->since = Clock::now();
  c->it = conns_.insert(conns_.end(), c);
  bool over = (limits_.max_connections > 0 && stats_.open >= limits_.max_connections) ||
              (limits_.max_per_peer > 0 && per_peer_[c->peer] >= limits_.max_per_peer);
  if (over) {
    // The handshake's next read fails; the server closes the socket.
    ++stats_.refused;
    c->shut = true;
    ::shutdown(c->fd, SHUT_RDWR);
    return;
  }
  c->counted = true;
  ++stats_.open;
  ++per_peer_[c->peer];
}

void ServingGuard::Release(Conn* c) {
  std::lock_guard<std::mutex> l(mu_);
  conns_.erase(c->it);
  if (!c->counted) return;
  --stats_.open;
  if (--per_peer_[c->peer] <= 0) per_peer_.erase(c->peer);
}

void ServingGuard::MarkHandling(const void* ssl) {
  if (!ssl) return;
  auto* c = static_cast<Conn*>(SSL_get_ex_data(static_cast<const SSL*>(ssl), SslIndex()));
  if (!c) return;
  std::lock_guard<std::mutex> l(mu_);
  c->handling = true;
}

void ServingGuard::MarkReading(const void* ssl) {
  if (!ssl) return;
  auto* c = static_cast<Conn*>(SSL_get_ex_data(static_cast<const SSL*>(ssl), SslIndex()));
  if (!c) return;
  std::lock_guard<std::mutex> l(mu_);
  c->handling = false;
  c->since = Clock::now();
}

void ServingGuard::Watch() {
  auto deadline = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(limits_.request_deadline_s));
  // A tenth of the deadline: a slow request is cut within 110% of it.
  auto tick = std::max<Clock::duration>(deadline / 10, std::chrono::milliseconds(10));
  std::unique_lock<std::mutex> l(mu_);
  while (!cv_.wait_for(l, tick, [this] { return stop_; })) {
    auto now = Clock::now();
    for (Conn* c : conns_) {
      if (c->shut || c->handling || now - c->since <= deadline) continue;
      // The worker blocked on this socket wakes with an error and closes it; the fd stays ours until then.
      c->shut = true;
      ++stats_.timed_out;
      ::shutdown(c->fd, SHUT_RDWR);
    }
  }
}

void ServingGuard::RequireBearerToken(const std::string& token_file) {
  std::lock_guard<std::mutex> l(mu_);
  token_file_ = token_file;
}

bool ServingGuard::Authorized(const httplib::Request& req) {
  std::string expected;
  {
    std::lock_guard<std::mutex> l(mu_);
    struct stat st {};
    int64_t mtime = stat(token_file_.c_str(), &st) == 0
                        ? static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec
                        : -2;
    if (mtime != token_mtime_ns_) {
      // Tokens are a few KiB: at most 64 KiB is read, so a device named by mistake cannot fill memory.
      std::ifstream f(token_file_, std::ios::binary);
      token_.assign(size_t{64} << 10, '\0');
      f.read(token_.data(), static_cast<std::streamsize>(token_.size()));
      token_.resize(static_cast<size_t>(f.gcount()));
      while (!token_.empty() && (token_.back() == '\n' || token_.back() == '\r' || token_.back() == ' '))
        token_.pop_back();
      token_mtime_ns_ = mtime;
    }
    expected = token_;
  }
  if (expected.empty()) return false;  // an unreadable or empty token file lets nobody in
  std::string h = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (h.compare(0, prefix.size(), prefix) != 0) return false;
  return ConstantTimeEqual(h.substr(prefix.size()), expected);
}

void ServingGuard::Apply(httplib::Server& s) {
  s.set_read_timeout(limits_.read_timeout_s, 0);
  s.set_write_timeout(limits_.read_timeout_s, 0);
  s.set_payload_max_length(limits_.max_body_bytes);
  s.set_keep_alive_timeout(limits_.keep_alive_s);
  s.set_logger([this](const httplib::Request& req, const httplib::Response&) { MarkReading(req.ssl); });
  bool auth;
  {
    std::lock_guard<std::mutex> l(mu_);
    auth = !token_file_.empty();
  }
  if (auth) {
    s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (req.path == "/healthz" || Authorized(req)) return httplib::Server::HandlerResponse::Unhandled;
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer");
      res.set_content("401 Unauthorized: this endpoint needs \"Authorization: Bearer <token>\"\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    });
  }
}

void ServingGuard::Apply(httplib::SSLServer& s) {
  SSL_CTX* ctx = s.ssl_context();
  if (ctx) {
    SSL_CTX_set_ex_data(ctx, CtxIndex(), this);
    SSL_CTX_set_info_callback(ctx, InfoCallback);
  }
  Apply(static_cast<httplib::Server&>(s));
}

std::function<void(const httplib::Request&, httplib::Response&)> ServingGuard::Wrap(
    std::function<void(const httplib::Request&, httplib::Response&)> handler) {
  return [this, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    MarkHandling(req.ssl);
    handler(req, res);
  };
}

ServingGuard::Stats ServingGuard::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

}  // namespace tessera::kube
