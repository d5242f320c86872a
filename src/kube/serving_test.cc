// ServingGuard on real cpp-httplib servers: slow clients, connection caps, bearer-token auth.
#include "kube/serving.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "kube/test_cert.h"

namespace tessera::kube {
namespace {

std::string TempDir(const std::string& tag) {
  auto d = std::filesystem::temp_directory_path() / ("serving-test-" + tag + "-" + std::to_string(getpid()));
  std::filesystem::create_directories(d);
  return d.string();
}

// A TLS client on a raw socket, so the test decides when each byte goes out.
class RawTlsClient {
 public:
  explicit RawTlsClient(int port) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    handshake_ok_ = SSL_connect(ssl_) == 1;
  }
  ~RawTlsClient() {
    if (ssl_) SSL_free(ssl_);
    close(fd_);
    SSL_CTX_free(ctx_);
  }
  bool handshake_ok() const { return handshake_ok_; }
  bool Send(const std::string& s) { return handshake_ok_ && SSL_write(ssl_, s.data(), static_cast<int>(s.size())) > 0; }
  // True when the server has closed the connection (reads end without a response).
  bool Closed() {
    char b[256];
    return SSL_read(ssl_, b, sizeof b) <= 0;
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool handshake_ok_ = false;
};

struct TlsServer {
  explicit TlsServer(ServingGuard* guard, int threads) : dir(TempDir("tls")) {
    WriteSelfSignedCert(dir);
    srv = std::make_unique<httplib::SSLServer>((dir + "/tls.crt").c_str(), (dir + "/tls.key").c_str());
    srv->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    guard->Apply(*srv);
    srv->Post("/validate", guard->Wrap([](const httplib::Request& q, httplib::Response& r) {
      r.set_content("ok:" + q.body, "text/plain");
    }));
    port = srv->bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { srv->listen_after_bind(); });
  }
  ~TlsServer() {
    srv->stop();
    thread.join();
    std::filesystem::remove_all(dir);
  }
  httplib::Result Post(const std::string& body) {
    httplib::SSLClient c("127.0.0.1", port);
    c.enable_server_certificate_verification(false);
    c.set_read_timeout(10, 0);
    return c.Post("/validate", body, "text/plain");
  }
  std::string dir;
  std::unique_ptr<httplib::SSLServer> srv;
  int port = 0;
  std::thread thread;
};

// More clients trickling headers than the server has threads: without a whole-request deadline each holds a
// thread as long as it keeps sending a byte within the per-read timeout, and a real request waits behind
// them (the API server gives up on a webhook after 10 s). With it, they are cut and the request answers.
TEST(ServingGuardTest, SlowClientsTricklingHeadersAreCutAndARequestStillAnswers) {
  ServingLimits lim;
  lim.request_deadline_s = 1;
  lim.max_per_peer = 0;  // every client here comes from 127.0.0.1
  ServingGuard guard(lim);
  TlsServer s(&guard, 4);
  std::vector<std::unique_ptr<RawTlsClient>> slow;
  for (int i = 0; i < 6; ++i) {
    slow.push_back(std::make_unique<RawTlsClient>(s.port));
    ASSERT_TRUE(slow.back()->Send("POST /validate HTTP/1.1\r\nHost: x\r\n"));
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    // One header byte per 100 ms each: far inside the 5 s per-read timeout.
    while (!stop) {
      for (auto& c : slow) c->Send("X");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  auto t0 = std::chrono::steady_clock::now();
  auto r = s.Post("hello");
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  trickle.join();
  ASSERT_TRUE(r) << "request failed: " << httplib::to_string(r.error());
  EXPECT_EQ(r->body, "ok:hello");
  EXPECT_LT(secs, 10.0) << "answered only after the API server's webhook timeout";
  for (auto& c : slow) EXPECT_TRUE(c->Closed());
  EXPECT_GE(guard.stats().timed_out, 6u);
}

TEST(ServingGuardTest, ConnectionsBeyondThePerPeerCapAreClosedAtOnce) {
  ServingLimits lim;
  lim.max_per_peer = 2;
  ServingGuard guard(lim);
  TlsServer s(&guard, 8);
  RawTlsClient a(s.port), b(s.port);
  ASSERT_TRUE(a.handshake_ok());
  ASSERT_TRUE(b.handshake_ok());
  RawTlsClient c(s.port);
  EXPECT_FALSE(c.handshake_ok() && c.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n") && !c.Closed());
  EXPECT_EQ(guard.stats().refused, 1u);
  EXPECT_EQ(guard.stats().open, 2);
}

TEST(ServingGuardTest, BearerTokenGuardsEveryPathButHealthz) {
  std::string dir = TempDir("token");
  std::string file = dir + "/token";
  std::ofstream(file) << "s3cret\n";
  ServingGuard guard(ServingLimits{});
  guard.RequireBearerToken(file);
  httplib::Server srv;
  guard.Apply(srv);
  srv.Get("/metrics", [](const httplib::Request&, httplib::Response& r) { r.set_content("m 1\n", "text/plain"); });
  srv.Get("/healthz", [](const httplib::Request&, httplib::Response& r) { r.set_content("ok\n", "text/plain"); });
  int port = srv.bind_to_any_port("127.0.0.1");
  std::thread t([&] { srv.listen_after_bind(); });
  httplib::Client c("127.0.0.1", port);
  EXPECT_EQ(c.Get("/metrics")->status, 401);
  EXPECT_EQ(c.Get("/healthz")->status, 200);
  EXPECT_EQ(c.Get("/metrics", {{"Authorization", "Bearer wrong"}})->status, 401);
  EXPECT_EQ(c.Get("/metrics", {{"Authorization", "Bearer s3cret"}})->status, 200);
  // A rotated Secret: the new token is read, the old one no longer works.
  std::filesystem::remove(file);
  std::ofstream(file) << "n3w";
  EXPECT_EQ(c.Get("/metrics", {{"Authorization", "Bearer s3cret"}})->status, 401);
  EXPECT_EQ(c.Get("/metrics", {{"Authorization", "Bearer n3w"}})->status, 200);
  // An empty token file lets nobody in.
  std::ofstream(file, std::ios::trunc) << "";
  std::filesystem::last_write_time(file, std::filesystem::file_time_type::clock::now() + std::chrono::seconds(5));
  EXPECT_EQ(c.Get("/metrics", {{"Authorization", "Bearer "}})->status, 401);
  srv.stop();
  t.join();
  std::filesystem::remove_all(dir);
}

TEST(ServingGuardTest, LimitsOutOfRangeNameTheField) {
  ServingLimits l;
  EXPECT_EQ(ServingLimitsError(l), "");
  l.request_deadline_s = 0;
  EXPECT_NE(ServingLimitsError(l).find("request deadline"), std::string::npos);
  l = ServingLimits{};
  l.max_per_peer = -1;
  EXPECT_NE(ServingLimitsError(l).find("per peer"), std::string::npos);
}

}  // namespace
}  // namespace tessera::kube
