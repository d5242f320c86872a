// Limits for Tessera's own HTTP(S) servers (the scheduler's webhook, extender and metrics; the agent's
// metrics), so that no client can hold a server's threads by sending slowly or opening many connections.
//
// A ServingGuard applies the limits to cpp-httplib servers. On a TLS server it also tracks every connection
// (through the TLS context: the library hands out sockets only there): a connection whose TLS handshake,
// request line, headers and body have not all arrived within `request_deadline_s` of its start (or of the end
// of its previous response, on keep-alive) is shut down; beyond `max_connections` open at once, or
// `max_per_peer` from one IP address, a new connection is closed at once. On a plain HTTP server only the
// per-read timeouts, the body cap and the keep-alive limit apply (say so where it matters: docs/security.md).
// Optionally requires a bearer token (RequireBearerToken) on every path but /healthz.
// Thread-safe. The guard must outlive the servers it is applied to (stop them first).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace httplib {
class Server;
class SSLServer;
struct Request;
struct Response;
}  // namespace httplib

namespace tessera::kube {

struct ServingLimits {
  int max_connections = 512;       // TLS: open connections at once; 0 = no limit
  int max_per_peer = 16;           // TLS: open connections from one IP address; 0 = no limit
  double request_deadline_s = 5;   // TLS: handshake + request (headers and body) must arrive within this
  int read_timeout_s = 5;          // every server: one read or write may wait this long
  size_t max_body_bytes = 8 << 20; // every server: a larger request body is refused (413)
  int keep_alive_s = 2;            // every server: an idle keep-alive connection is closed after this
};

// "" when the limits are usable, else the error naming the field and its allowed range.
std::string ServingLimitsError(const ServingLimits& l);

class ServingGuard {
 public:
  struct Stats {
    uint64_t accepted = 0;       // TLS connections seen
    uint64_t refused = 0;        // closed at once: over max_connections or max_per_peer
    uint64_t timed_out = 0;      // shut down: request not complete within request_deadline_s
    int open = 0;                // TLS connections open now
  };

  explicit ServingGuard(ServingLimits limits);
  ~ServingGuard();
  ServingGuard(const ServingGuard&) = delete;
  ServingGuard& operator=(const ServingGuard&) = delete;

  void Apply(httplib::SSLServer& server);
  void Apply(httplib::Server& server);  // plain HTTP: timeouts, body cap, keep-alive only
  // Wraps a handler so that the request counts as received (its deadline no longer runs) once the body is
  // in. Every route of a guarded TLS server should be registered through it.
  std::function<void(const httplib::Request&, httplib::Response&)> Wrap(
      std::function<void(const httplib::Request&, httplib::Response&)> handler);
  // Every route but /healthz answers 401 unless the request carries "Authorization: Bearer <token>" with
  // the token read from `token_file` (re-read when the file changes, so a rotated Secret is picked up).
  // Call before Apply.
  void RequireBearerToken(const std::string& token_file);

  Stats stats() const;
  const ServingLimits& limits() const { return limits_; }

  struct Conn;  // one tracked TLS connection (public for the OpenSSL callbacks)
  void Begin(Conn* c);
  void Release(Conn* c);
  void MarkHandling(const void* ssl);
  void MarkReading(const void* ssl);

 private:
  void Watch();
  bool Authorized(const httplib::Request& req);

  ServingLimits limits_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::list<Conn*> conns_;
  std::map<std::string, int> per_peer_;
  Stats stats_;
  std::string token_file_;
  std::string token_;
  int64_t token_mtime_ns_ = -1;
  std::thread watchdog_;
};

}  // namespace tessera::kube
