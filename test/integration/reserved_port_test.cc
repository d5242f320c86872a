// ReservedPort against the HTTP server library our agent and scheduler listen with, with each one's socket
// options: the port is ours (nobody else may bind it) yet our server binds it, serves, and binds it again
// after a restart.
#include "reserved_port.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

namespace tessera::itest {
namespace {

int PlainBind(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);  // no SO_REUSE*: what any other program does
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 ? 0 : errno;
  close(fd);
  return rc;
}

// One server life: bind the reserved port, answer one request, stop. reuse_addr_only: the tessera
// scheduler's socket options (it refuses SO_REUSEPORT); else httplib's default (the agent's).
void ServeOnce(int port, bool reuse_addr_only) {
  httplib::Server srv;
  if (reuse_addr_only) {
    srv.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
  }
  srv.Get("/ping",
          [](const httplib::Request&, httplib::Response& res) { res.set_content("pong", "text/plain"); });
  ASSERT_TRUE(srv.bind_to_port("127.0.0.1", port)) << "the server cannot bind the reserved port " << port;
  std::thread t([&] { srv.listen_after_bind(); });
  httplib::Client c("127.0.0.1", port);
  auto r = c.Get("/ping");
  srv.stop();
  t.join();
  ASSERT_TRUE(r) << "no answer on the reserved port";
  EXPECT_EQ(r->body, "pong");
}

TEST(ReservedPort, OthersCannotBindItOurServersCanAcrossRestarts) {
  for (bool reuse_addr_only : {false, true}) {
    SCOPED_TRACE(reuse_addr_only ? "scheduler's socket options" : "httplib's default (agent)");
    ReservedPort p;
    ASSERT_GT(p.port(), 0);
    EXPECT_EQ(PlainBind(p.port()), EADDRINUSE);
    ASSERT_NO_FATAL_FAILURE(ServeOnce(p.port(), reuse_addr_only));
    EXPECT_EQ(PlainBind(p.port()), EADDRINUSE) << "free again once the server stopped";
    ASSERT_NO_FATAL_FAILURE(ServeOnce(p.port(), reuse_addr_only));  // a restarted server gets it back
  }
}

TEST(ReservedPort, MovedReservationKeepsThePort) {
  ReservedPort a;
  int port = a.port();
  ReservedPort b(std::move(a));
  EXPECT_EQ(a.port(), 0);
  EXPECT_EQ(b.port(), port);
  EXPECT_EQ(PlainBind(port), EADDRINUSE);
  b = ReservedPort();
  EXPECT_NE(b.port(), port);
  EXPECT_EQ(PlainBind(port), 0) << "released with its last owner";
}

}  // namespace
}  // namespace tessera::itest
