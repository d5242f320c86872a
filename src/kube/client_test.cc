// Client and Reflector against a local httplib server that speaks just enough of the API server's protocol.
#include "kube/client.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "kube/reflector.h"
#include "kube/test_cert.h"

namespace tessera::kube {
namespace {

class FakeApiServer {
 public:
  FakeApiServer() {
    port_ = srv_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { srv_.listen_after_bind(); });
    // The socket is already listening, so clients queue in the backlog until listen_after_bind accepts.
  }
  ~FakeApiServer() {
    srv_.stop();
    thread_.join();
  }
  httplib::Server& srv() { return srv_; }
  std::shared_ptr<Client> NewClient() {
    Config c;
    c.server = "http://127.0.0.1:" + std::to_string(port_);
    c.token = "t0k";
    return *Client::Create(c);
  }

 private:
  httplib::Server srv_;
  int port_ = 0;
  std::thread thread_;
};

std::string Pod(const std::string& name, const std::string& rv) {
  return Json{{"kind", "Pod"}, {"metadata", {{"name", name}, {"namespace", "default"}, {"resourceVersion", rv}}}}
      .dump();
}

TEST(WatchDecodeTest, DecodesEveryEventType) {
  auto ev = DecodeWatchEvent(R"({"type":"MODIFIED","object":{"metadata":{"name":"p","resourceVersion":"7"}}})");
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->type, EventType::kModified);
  EXPECT_EQ(ResourceVersionOf(ev->object), "7");
  EXPECT_EQ(DecodeWatchEvent(R"({"type":"BOOKMARK","object":{}})")->type, EventType::kBookmark);
  auto gone = DecodeWatchEvent(R"({"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}})");
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->type, EventType::kError);
  EXPECT_EQ(gone->object["code"], 410);
  EXPECT_FALSE(DecodeWatchEvent("not json").ok());
  EXPECT_FALSE(DecodeWatchEvent(R"({"type":"WHAT","object":{}})").ok());
  EXPECT_FALSE(DecodeWatchEvent(R"({"object":{}})").ok());
}

TEST(ClientTest, PathsAndVerbs) {
  EXPECT_EQ(ResourcePath(kPods, "ns1", "p"), "/api/v1/namespaces/ns1/pods/p");
  EXPECT_EQ(ResourcePath(kPods, ""), "/api/v1/pods");
  EXPECT_EQ(ResourcePath(kNodes, "ignored", "n1"), "/api/v1/nodes/n1");
  EXPECT_EQ(ResourcePath(kLeases, "kube-system", "l"), "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l");

  FakeApiServer api;
  std::string seen_auth, seen_ct, seen_body;
  api.srv().Get("/api/v1/namespaces/default/pods/p1", [&](const httplib::Request& req, httplib::Response& res) {
    seen_auth = req.get_header_value("Authorization");
    res.set_content(Pod("p1", "5"), "application/json");
  });
  api.srv().Patch("/api/v1/namespaces/default/pods/p1", [&](const httplib::Request& req, httplib::Response& res) {
    seen_ct = req.get_header_value("Content-Type");
    seen_body = req.body;
    res.status = 409;
    res.set_content(R"({"kind":"Status","reason":"Conflict","message":"the object has been modified"})",
                    "application/json");
  });
  api.srv().Post("/api/v1/namespaces/default/pods/p1/binding", [&](const httplib::Request& req, httplib::Response& res) {
    seen_body = req.body;
    res.status = 201;
    res.set_content("{}", "application/json");
  });
  auto c = api.NewClient();
  auto pod = c->Get(kPods, "default", "p1");
  ASSERT_TRUE(pod.ok()) << pod.error().ToString();
  EXPECT_EQ(Name(*pod), "p1");
  EXPECT_EQ(seen_auth, "Bearer t0k");
  auto patched = c->Patch(kPods, "default", "p1", Json{{"metadata", {{"annotations", {{"a", "b"}}}}}},
                          PatchType::kStrategicMerge);
  ASSERT_FALSE(patched.ok());
  EXPECT_TRUE(patched.error().Conflict());
  EXPECT_EQ(patched.error().message, "the object has been modified");
  EXPECT_EQ(seen_ct, "application/strategic-merge-patch+json");
  EXPECT_EQ(Json::parse(seen_body)["metadata"]["annotations"]["a"], "b");
  ASSERT_TRUE(c->Bind("default", "p1", "uid-1", "node-a").ok());
  auto b = Json::parse(seen_body);
  EXPECT_EQ(b["kind"], "Binding");
  EXPECT_EQ(b["target"]["name"], "node-a");
  auto missing = c->Get(kPods, "default", "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.error().NotFound());
}

TEST(ClientTest, ListFollowsContinueTokens) {
  FakeApiServer api;
  api.srv().Get("/api/v1/nodes", [&](const httplib::Request& req, httplib::Response& res) {
    std::string cont = req.get_param_value("continue");
    Json j = {{"kind", "NodeList"}, {"metadata", {{"resourceVersion", "42"}}}, {"items", Json::array()}};
    if (cont.empty()) {
      j["items"].push_back(Json::parse(Pod("n1", "1")));
      j["metadata"]["continue"] = "page2";
    } else {
      EXPECT_EQ(cont, "page2");
      j["items"].push_back(Json::parse(Pod("n2", "2")));
    }
    res.set_content(j.dump(), "application/json");
  });
  auto c = api.NewClient();
  ListOptions lo;
  lo.limit = 1;
  auto l = c->List(kNodes, "", lo);
  ASSERT_TRUE(l.ok()) << l.error().ToString();
  ASSERT_EQ(l->items.size(), 2u);
  EXPECT_EQ(Name(l->items[1]), "n2");
  EXPECT_EQ(l->resource_version, "42");
}

// The reflector lists, watches, sees a 410, relists and keeps going from the new resourceVersion.
TEST(ReflectorTest, RelistsAfterGone) {
  // State the handlers touch is declared before the server, so it outlives the server's worker threads: a watch
  // the reflector opened just before Stop() may still be served while the test body unwinds.
  std::atomic<int> lists{0}, watches{0};
  std::mutex mu;
  std::vector<std::string> watch_rvs;
  FakeApiServer api;
  api.srv().Get("/api/v1/pods", [&](const httplib::Request& req, httplib::Response& res) {
    if (req.get_param_value("watch") != "1") {
      int n = ++lists;
      Json j = {{"metadata", {{"resourceVersion", n == 1 ? "10" : "20"}}}, {"items", Json::array()}};
      j["items"].push_back(Json::parse(Pod(n == 1 ? "a" : "b", n == 1 ? "10" : "20")));
      res.set_content(j.dump(), "application/json");
      return;
    }
    int w = ++watches;
    {
      std::lock_guard<std::mutex> l(mu);
      watch_rvs.push_back(req.get_param_value("resourceVersion"));
    }
    std::string body;
    if (w == 1) {
      body = Json{{"type", "ADDED"}, {"object", Json::parse(Pod("c", "11"))}}.dump() + "\n" +
             Json{{"type", "BOOKMARK"}, {"object", {{"metadata", {{"resourceVersion", "12"}}}}}}.dump() + "\n" +
             Json{{"type", "ERROR"}, {"object", {{"kind", "Status"}, {"code", 410}, {"reason", "Expired"}}}}.dump() + "\n";
    } else {
      body = Json{{"type", "DELETED"}, {"object", Json::parse(Pod("b", "21"))}}.dump() + "\n";
    }
    res.set_chunked_content_provider("application/json", [body](size_t, httplib::DataSink& sink) {
      sink.write(body.data(), body.size());
      sink.done();
      return true;
    });
  });
  auto c = api.NewClient();
  std::vector<std::string> log;
  std::mutex log_mu;
  std::condition_variable cv;
  ReflectorHandler h;
  h.on_replace = [&](const std::vector<Json>& items) {
    std::lock_guard<std::mutex> l(log_mu);
    log.push_back("replace:" + Name(items.at(0)));
    cv.notify_all();
  };
  h.on_event = [&](EventType t, const Json& o) {
    std::lock_guard<std::mutex> l(log_mu);
    log.push_back(std::string(EventTypeName(t)) + ":" + Name(o));
    cv.notify_all();
  };
  Reflector r(c, kPods, ReflectorOptions{}, h);
  r.Start();
  ASSERT_TRUE(r.WaitSynced(5));
  {
    std::unique_lock<std::mutex> l(log_mu);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(10), [&] { return log.size() >= 4; }));
    EXPECT_EQ(log[0], "replace:a");
    EXPECT_EQ(log[1], "ADDED:c");
    EXPECT_EQ(log[2], "replace:b");
    EXPECT_EQ(log[3], "DELETED:b");
  }
  r.Stop();
  EXPECT_GE(r.relists(), 1u);
  std::lock_guard<std::mutex> l(mu);
  ASSERT_GE(watch_rvs.size(), 2u);
  EXPECT_EQ(watch_rvs[0], "10");
  EXPECT_EQ(watch_rvs[1], "20");
  if (watch_rvs.size() >= 3) {
    EXPECT_EQ(watch_rvs[2], "21");  // a clean end resumes from the last event, no relist
  }
}

// A 504 "Too large resource version" means the API server already waited for its watch cache and gave up:
// the reflector asks again at once instead of adding its own back-off (here 60 s, longer than the test waits).
TEST(ReflectorTest, RetriesAtOnceWhenTheWatchCacheLags) {
  std::atomic<int> lists{0};
  FakeApiServer api;
  api.srv().Get("/api/v1/pods", [&](const httplib::Request& req, httplib::Response& res) {
    if (req.get_param_value("watch") == "1") {
      res.status = 200;
      res.set_content("", "application/json");
      return;
    }
    if (++lists <= 2) {
      res.status = 504;
      Json st = {{"kind", "Status"},
                 {"status", "Failure"},
                 {"reason", "Timeout"},
                 {"code", 504},
                 {"message", "Timeout: Too large resource version: 5092, current: 4844"}};
      res.set_content(st.dump(), "application/json");
      return;
    }
    Json j = {{"metadata", {{"resourceVersion", "30"}}}, {"items", Json::array()}};
    res.set_content(j.dump(), "application/json");
  });
  ReflectorOptions o;
  o.retry_backoff_s = 60;
  Reflector r(api.NewClient(), kPods, o, ReflectorHandler{});
  r.Start();
  EXPECT_TRUE(r.WaitSynced(10)) << lists.load() << " lists";
  r.Stop();
  EXPECT_GE(lists.load(), 3);
}

// The API server (or a load balancer in front of it) closes keep-alive connections that sit idle; over TLS
// it sends close_notify first, so the socket still looks alive to the client. The next call must not fail:
// it is retried on a fresh socket, not on a second pooled one that went stale the same way.
TEST(ClientTest, CallAfterTheServerClosedEveryIdleConnectionSucceeds) {
  std::string dir = (std::filesystem::temp_directory_path() / ("kube-client-test-" + std::to_string(getpid()))).string();
  std::filesystem::create_directories(dir);
  WriteSelfSignedCert(dir);
  httplib::SSLServer srv((dir + "/tls.crt").c_str(), (dir + "/tls.key").c_str());
  ASSERT_TRUE(srv.is_valid());
  srv.set_keep_alive_timeout(1);  // the server drops a connection idle for 1 s
  // Two calls in flight at once leave two pooled connections: the first two requests meet here.
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  std::atomic<int> served{0};
  srv.Get("/api/v1/namespaces/default/pods/p", [&](const httplib::Request&, httplib::Response& res) {
    {
      std::unique_lock<std::mutex> l(mu);
      ++arrived;
      cv.notify_all();
      cv.wait_for(l, std::chrono::seconds(5), [&] { return arrived >= 2; });
    }
    ++served;
    res.set_content(Pod("p", "1"), "application/json");
  });
  int port = srv.bind_to_any_port("127.0.0.1");
  std::thread t([&] { srv.listen_after_bind(); });
  Config c;
  c.server = "https://127.0.0.1:" + std::to_string(port);
  std::ifstream ca(dir + "/tls.crt");
  c.ca_pem.assign(std::istreambuf_iterator<char>(ca), {});
  c.max_idle_s = 3600;  // keep every pooled connection: only the retry may save the call
  auto client = *Client::Create(c);
  std::thread other([&] { EXPECT_TRUE(client->Get(kPods, "default", "p").ok()); });
  EXPECT_TRUE(client->Get(kPods, "default", "p").ok());
  other.join();
  ASSERT_EQ(served.load(), 2);
  // Past the server's idle timeout: both pooled sockets are closed at the other end.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto r = client->Get(kPods, "default", "p");
  EXPECT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(served.load(), 3);
  EXPECT_EQ(client->stale_retries(), 1u);
  srv.stop();
  t.join();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tessera::kube
