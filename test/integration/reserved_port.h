// ReservedPort: a TCP port on 127.0.0.1 held for a test harness's whole life, so the server it hands the
// port to (a `tessera agent`'s metrics, a `tessera scheduler`'s HTTPS and metrics) can bind it at start and
// again after a restart without another process taking it in between.
//
// Picking a free port, closing it and passing the number on is a race: until the server binds, any
// process may get that port, including as the local end of an outgoing connection, and the server then
// exits with "cannot listen". Instead the harness keeps a socket bound to the port (SO_REUSEADDR and
// SO_REUSEPORT, never listening): the kernel hands the port to no one else, neither for a bind to port 0
// nor for a connect, and refuses an explicit bind without those options, while our servers may still bind
// it: the agent's (httplib's default sets SO_REUSEPORT, same user) and the scheduler's (SO_REUSEADDR only:
// Linux lets it share a port with sockets that do not listen). Connections go to the server's listening
// socket only. Movable, not copyable, not thread-safe.
#pragma once

namespace tessera::itest {

class ReservedPort {
 public:
  ReservedPort();  // port() == 0 when no port could be reserved
  ~ReservedPort();
  ReservedPort(ReservedPort&& o) noexcept : fd_(o.fd_), port_(o.port_) { o.fd_ = -1, o.port_ = 0; }
  ReservedPort& operator=(ReservedPort&& o) noexcept;
  ReservedPort(const ReservedPort&) = delete;
  ReservedPort& operator=(const ReservedPort&) = delete;

  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace tessera::itest
