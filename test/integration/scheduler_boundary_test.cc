// The control plane's trust boundary (issue 15), attacked on a real API server: a caller of /bind who lies
// about the pod or picks a node the pod may not use, slow clients at the webhook, a tenant rewriting the
// allocation through pods/status. No kube-scheduler runs here: the test is the only caller of the extender,
// as an attacker who reached it would be.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <thread>

#include "scheduler_env.h"

namespace tessera::itest {
namespace {

#define NEED_KUBE(env) \
  if (!(env).available()) GTEST_SKIP() << "TESSERA_KUBECONFIG unset (run under ctest, fixture kube)"

// POST to the scheduler over TLS (verified against its certificate) on `port`.
httplib::Result Post(const SchedulerEnv& env, int port, const std::string& path, const Json& body) {
  httplib::SSLClient c("127.0.0.1", port);
  c.set_ca_cert_path(env.ca_file().c_str());
  c.enable_server_certificate_verification(true);
  c.set_read_timeout(30, 0);
  return c.Post(path.c_str(), body.dump(), "application/json");
}

Json BindArgs(const Json& pod, const std::string& node) {
  return {{"PodName", kube::Name(pod)}, {"PodNamespace", kube::Namespace(pod)}, {"PodUID", kube::Uid(pod)}, {"Node", node}};
}

struct BoundaryEnv {
  SchedulerEnv env;
  void Start() {
    SchedulerEnv::Options o;
    o.kube_scheduler = false;
    env.Start(o);
  }
  // Waits until the scheduler's view has the node (its metrics name it).
  bool WaitNode(const std::string& node) {
    return env.WaitPods([&](const std::vector<Json>&) {
      return env.Metrics().find("nodeid=\"" + node + "\"") != std::string::npos;
    }, 20);
  }
};

// The issue's row: POST /filter with a forged pod body (same uid, a whole card), then /bind. /bind re-reads
// the pod: the slice placed is the pod's real 1,000 MiB / 10 %, not 16 GiB / 100 %.
TEST(SchedulerBoundary, ForgedFilterBodyThenBindPlacesOnlyThePodsRealRequest) {
  BoundaryEnv b;
  NEED_KUBE(b.env);
  ASSERT_NO_FATAL_FAILURE(b.Start());
  std::string node = b.env.AddNode("card", {SimGpu{"T4", 16384, 0}});
  ASSERT_TRUE(b.WaitNode(node));
  auto created = b.env.CreatePod(
      SchedulerEnv::GpuPod("small", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "1000"}, {"nvidia.com/gpucores", "10"}}));
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  Json forged = *created;
  forged["spec"]["containers"][0]["resources"]["limits"] = {
      {"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "16384"}, {"nvidia.com/gpucores", "100"}};
  auto f = Post(b.env, b.env.extender_port(), "/filter", {{"Pod", forged}, {"NodeNames", {node}}});
  ASSERT_TRUE(f) << httplib::to_string(f.error());
  auto r = Post(b.env, b.env.extender_port(), "/bind", BindArgs(*created, node));
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(Json::parse(r->body).value("Error", "?"), "") << r->body;
  Json pod = b.env.GetPod("small");
  auto slices = Slices(pod);
  ASSERT_EQ(slices.size(), 1u) << pod.dump();
  EXPECT_EQ(slices[0].memory_mib, 1000);
  EXPECT_EQ(slices[0].cores, 10);
}

// Another team's pending pod (another scheduler's), and a pod of ours onto a NoSchedule control-plane node:
// both refused with the reason, both left unbound. The extender's verbs are not on the webhook's port.
TEST(SchedulerBoundary, BindRefusesAnotherSchedulersPodAndAnUntoleratedTaint) {
  BoundaryEnv b;
  NEED_KUBE(b.env);
  ASSERT_NO_FATAL_FAILURE(b.Start());
  std::string node = b.env.AddNode("cp", {SimGpu{"T4", 16384, 0}});
  auto taint = b.env.client().Patch(kube::kNodes, "", node,
                                    {{"spec", {{"taints", {{{"key", "node-role.kubernetes.io/control-plane"},
                                                            {"effect", "NoSchedule"}}}}}}});
  ASSERT_TRUE(taint.ok()) << taint.error().ToString();
  ASSERT_TRUE(b.WaitNode(node));
  // Team B's pod: no GPU, its own (absent) scheduler, so neither our webhook nor any scheduler touches it.
  Json theirs = {{"apiVersion", "v1"},
                 {"kind", "Pod"},
                 {"metadata", {{"name", "team-b"}}},
                 {"spec", {{"schedulerName", "team-b-scheduler"},
                           {"containers", Json::array({{{"name", "c"}, {"image", "busybox"}}})}}}};
  auto other = b.env.CreatePod(theirs);
  ASSERT_TRUE(other.ok()) << other.error().ToString();
  auto r = Post(b.env, b.env.extender_port(), "/bind", BindArgs(*other, node));
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("spec.schedulerName team-b-scheduler"), std::string::npos) << r->body;

  auto ours = b.env.CreatePod(SchedulerEnv::GpuPod("ours", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "10"}}));
  ASSERT_TRUE(ours.ok()) << ours.error().ToString();
  r = Post(b.env, b.env.extender_port(), "/bind", BindArgs(*ours, node));
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("taint node-role.kubernetes.io/control-plane:NoSchedule"), std::string::npos) << r->body;
  // A uid that is not the pod's (it was replaced): refused too.
  Json wrong = BindArgs(*ours, node);
  wrong["PodUID"] = "00000000-0000-0000-0000-000000000000";
  r = Post(b.env, b.env.extender_port(), "/bind", wrong);
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("not 00000000-0000-0000-0000-000000000000"), std::string::npos) << r->body;

  // The webhook's port (the one behind a Service) has no extender verbs.
  r = Post(b.env, b.env.webhook_port(), "/bind", BindArgs(*ours, node));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  for (const char* name : {"team-b", "ours"})
    EXPECT_EQ(b.env.GetPod(name)["spec"].value("nodeName", ""), "") << name << " was bound";
}

// A TLS client that sends its request one byte at a time.
class Trickler {
 public:
  explicit Trickler(int port) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    ok_ = SSL_connect(ssl_) == 1 && Send("POST /validate HTTP/1.1\r\nHost: x\r\n");
  }
  ~Trickler() {
    if (ssl_) SSL_free(ssl_);
    close(fd_);
    SSL_CTX_free(ctx_);
  }
  bool Send(const std::string& s) { return SSL_write(ssl_, s.data(), static_cast<int>(s.size())) > 0; }
  bool ok() const { return ok_; }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool ok_ = false;
};

// Six clients trickling headers at the webhook/extender server. The API server calls the webhook with a
// timeout (5 s as registered here, at most 10 s in the chart) and refuses the GPU pod when it passes; the pod
// must still be admitted, and /validate answer directly, well inside that.
TEST(SchedulerBoundary, SixSlowClientsDoNotStallTheWebhook) {
  BoundaryEnv b;
  NEED_KUBE(b.env);
  ASSERT_NO_FATAL_FAILURE(b.Start());
  std::vector<std::unique_ptr<Trickler>> slow;
  std::atomic<bool> stop{false};
  std::atomic<int> reconnects{0};
  for (int i = 0; i < 6; ++i) slow.push_back(std::make_unique<Trickler>(b.env.webhook_port()));
  // Each keeps a byte flowing every 200 ms (inside any per-read timeout) and reconnects when cut.
  std::thread trickle([&] {
    while (!stop) {
      for (auto& c : slow)
        if (!c->ok() || !c->Send("X")) {
          c = std::make_unique<Trickler>(b.env.webhook_port());
          ++reconnects;
        }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  struct Stop {
    std::atomic<bool>* s;
    std::thread* t;
    ~Stop() {
      *s = true;
      t->join();
    }
  } stopper{&stop, &trickle};
  // Let the slow clients hold their connections past the server's request deadline first.
  std::this_thread::sleep_for(std::chrono::seconds(6));
  auto t0 = std::chrono::steady_clock::now();
  auto created = b.env.CreatePod(SchedulerEnv::GpuPod("admitted", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpucores", "10"}}));
  double create_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(created.ok()) << created.error().ToString();
  Json review = {{"apiVersion", "admission.k8s.io/v1"},
                 {"kind", "AdmissionReview"},
                 {"request", {{"uid", "r1"}, {"operation", "CREATE"}, {"namespace", b.env.ns()},
                              {"object", SchedulerEnv::GpuPod("x", {{"nvidia.com/gpu", "1"}})}}}};
  t0 = std::chrono::steady_clock::now();
  auto v = Post(b.env, b.env.webhook_port(), "/validate", review);
  double validate_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(v) << httplib::to_string(v.error());
  EXPECT_EQ(Json::parse(v->body)["response"].value("allowed", false), true) << v->body;
  std::printf("with 6 slow clients: pod created in %.2f s, /validate answered in %.2f s, %d slow reconnects\n",
              create_s, validate_s, reconnects.load());
  EXPECT_LT(validate_s, 5.0);
  // The slow clients were cut by the server's request deadline (5 s), not left holding threads.
  EXPECT_GE(reconnects.load(), 6);
}

// A tenant rewrites tessera.dev/devices through the status subresource (the webhook's rules used to list only
// pods): refused, naming the annotation; the assignment stays.
TEST(SchedulerBoundary, PatchingTheAllocationThroughPodsStatusIsRefused) {
  BoundaryEnv b;
  NEED_KUBE(b.env);
  ASSERT_NO_FATAL_FAILURE(b.Start());
  std::string node = b.env.AddNode("st", {SimGpu{"T4", 16384, 0}});
  ASSERT_TRUE(b.WaitNode(node));
  auto created = b.env.CreatePod(
      SchedulerEnv::GpuPod("victim", {{"nvidia.com/gpu", "1"}, {"nvidia.com/gpumem", "1000"}, {"nvidia.com/gpucores", "10"}}));
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  auto r = Post(b.env, b.env.extender_port(), "/bind", BindArgs(*created, node));
  ASSERT_TRUE(r);
  ASSERT_EQ(Json::parse(r->body).value("Error", "?"), "") << r->body;
  std::string before = kube::Annotation(b.env.GetPod("victim"), kube::kAnnoDevices);
  ASSERT_FALSE(before.empty());
  std::string forged = R"([[{"uuid":"GPU-)" + node + R"(-0","memory_mib":16384,"cores":100}]])";
  Json patch = {{"metadata", {{"annotations", {{kube::kAnnoDevices, forged}, {kube::kAnnoAllocationState, "allocated"}}}}}};
  // As a tenant "mallory" (with every permission, so only the webhook stands in the way).
  const char* bin = std::getenv("TESSERA_KUBE_BIN");
  const char* kc = std::getenv("TESSERA_KUBECONFIG");
  ASSERT_TRUE(bin && kc);
  std::string out = ::testing::TempDir() + "/status-patch-" + b.env.id() + ".out";
  std::string cmd = std::string(bin) + "/kubectl --kubeconfig " + kc + " --as=mallory --as-group=system:masters -n " +
                    b.env.ns() + " patch pod victim --subresource=status --type=merge -p '" + patch.dump() + "' >" +
                    out + " 2>&1";
  int rc = std::system(cmd.c_str());
  std::string msg;
  {
    FILE* f = std::fopen(out.c_str(), "r");
    char buf[4096];
    size_t n = f ? std::fread(buf, 1, sizeof buf, f) : 0;
    if (f) std::fclose(f);
    msg.assign(buf, n);
  }
  EXPECT_NE(rc, 0) << msg;
  EXPECT_NE(msg.find("annotation tessera.dev/devices is written only by Tessera"), std::string::npos) << msg;
  EXPECT_EQ(kube::Annotation(b.env.GetPod("victim"), kube::kAnnoDevices), before);
  // Setting the variables that pick GPUs is refused for any pod, GPU or not, naming container and variable.
  Json plain = {{"apiVersion", "v1"},
                {"kind", "Pod"},
                {"metadata", {{"name", "all-gpus"}}},
                {"spec", {{"containers", Json::array({{{"name", "c"}, {"image", "busybox"},
                                                        {"env", {{{"name", "NVIDIA_VISIBLE_DEVICES"}, {"value", "all"}}}}}})}}}};
  auto refused = b.env.CreatePod(plain);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("spec.containers \"c\" sets env NVIDIA_VISIBLE_DEVICES"), std::string::npos)
      << refused.error().ToString();
}

}  // namespace
}  // namespace tessera::itest
