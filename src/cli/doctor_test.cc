// Table tests of `tessera doctor`'s checks on hand-made cluster snapshots (the integration tests in
// test/integration/obs_doctor* make the same broken states on a real API server), plus the /proc scan.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "cli/doctor_checks.h"
#include "cli/doctor_collect.h"
#include "cli/doctor_report.h"

namespace tessera::cli {
namespace {

namespace fs = std::filesystem;

const int64_t kNow = 1'800'000'000;  // 2027-01-15T08:00:00Z

Json Node(const std::string& name, Json labels = Json::object(), Json annotations = Json::object()) {
  return {{"metadata", {{"name", name}, {"labels", labels}, {"annotations", annotations}}},
          {"status", {{"capacity", Json::object()}}}};
}

Json ChartLabels(const std::string& component, const std::string& chart = "tessera-0.1.0") {
  return {{"app.kubernetes.io/name", "tessera"},
          {"app.kubernetes.io/part-of", "tessera"},
          {"app.kubernetes.io/component", component},
          {"helm.sh/chart", chart}};
}

Json AgentPod(const std::string& node, bool ready, const std::string& image = "ghcr.io/tessera-gpu/tessera-agent:0.1.0") {
  Json p = {{"metadata", {{"name", "tessera-agent-" + node}, {"namespace", "tessera-system"}, {"uid", "agent-" + node},
                          {"labels", ChartLabels("agent")}}},
            {"spec", {{"nodeName", node}, {"containers", {{{"name", "agent"}, {"image", image}}}}}},
            {"status", {{"phase", ready ? "Running" : "Pending"},
                        {"conditions", {{{"type", "Ready"}, {"status", ready ? "True" : "False"}}}}}}};
  if (!ready) p["status"]["containerStatuses"] = {{{"name", "agent"}, {"state", {{"waiting", {{"reason", "CrashLoopBackOff"}}}}}}};
  return p;
}

Json AgentDaemonSet(const std::string& tag = "0.1.0") {
  return {{"metadata", {{"name", "tessera-agent"}, {"namespace", "tessera-system"}, {"labels", ChartLabels("agent")}}},
          {"spec", {{"template", {{"spec", {{"containers", {{{"name", "agent"},
                                                               {"image", "ghcr.io/tessera-gpu/tessera-agent:" + tag}}}}}}}}}}};
}

Json SchedulerDeployment(const std::string& tag = "0.1.0", const std::string& chart = "tessera-0.1.0") {
  return {{"metadata", {{"name", "tessera-scheduler"}, {"namespace", "tessera-system"},
                        {"labels", ChartLabels("scheduler", chart)}}},
          {"spec", {{"template", {{"spec", {{"containers", {{{"name", "kube-scheduler"},
                                                               {"image", "registry.k8s.io/kube-scheduler:v1.36.3"}},
                                                              {{"name", "tessera-scheduler"},
                                                               {"image", "ghcr.io/tessera-gpu/tessera-scheduler:" + tag}}}}}}}}}}};
}

Json GpuPod(const std::string& name, const std::string& scheduler, const std::string& node = "",
            Json annotations = Json::object()) {
  Json p = {{"metadata", {{"name", name}, {"namespace", "default"}, {"uid", "uid-" + name}, {"annotations", annotations},
                          {"creationTimestamp", "2027-01-15T07:00:00Z"}}},
            {"spec", {{"schedulerName", scheduler},
                      {"containers", {{{"name", "w"}, {"image", "x"},
                                       {"resources", {{"limits", {{"nvidia.com/gpucores", "25"}}}}}}}}}},
            {"status", {{"phase", node.empty() ? "Pending" : "Running"}}}};
  if (!node.empty()) p["spec"]["nodeName"] = node;
  return p;
}

std::vector<Finding> Only(const std::vector<Finding>& all, const std::string& check) {
  std::vector<Finding> out;
  for (const Finding& f : all) {
    if (f.check == check) out.push_back(f);
  }
  return out;
}

DoctorInput Healthy() {
  DoctorInput in;
  in.now_unix = kNow;
  in.nodes.push_back(Node("gpu-1", {{"nvidia.com/gpu.present", "true"}}));
  in.nodes.push_back(Node("cpu-1"));
  in.pods.push_back(AgentPod("gpu-1", true));
  in.daemonsets.push_back(AgentDaemonSet());
  in.deployments.push_back(SchedulerDeployment());
  Json hook = {{"name", "mutate.pods.tessera.dev"},
               {"failurePolicy", "Fail"},
               {"clientConfig", {{"service", {{"name", "tessera-scheduler"}, {"namespace", "tessera-system"}}},
                                 {"caBundle", "LS0tLS1CRUdJTg=="}}}};
  in.mutating_webhooks.push_back({{"metadata", {{"name", "tessera-webhook"}}}, {"webhooks", {hook}}});
  hook["name"] = "validate.pods.tessera.dev";
  in.validating_webhooks.push_back({{"metadata", {{"name", "tessera-webhook"}}}, {"webhooks", {hook}}});
  in.services.push_back({{"metadata", {{"name", "tessera-scheduler"}, {"namespace", "tessera-system"}}}});
  in.webhook_probed = true;
  in.pods.push_back(GpuPod("ok", "tessera-scheduler", "gpu-1",
                           {{"tessera.dev/devices", "[[{\"uuid\":\"GPU-1\",\"memory_mib\":100,\"cores\":25}]]"},
                            {"tessera.dev/allocation-state", "allocated"}}));
  in.pods.push_back(GpuPod("waiting", "tessera-scheduler"));  // not bound yet: fine
  return in;
}

TEST(DoctorChecks, HealthyClusterHasNoFindings) {
  DoctorInput in = Healthy();
  std::vector<Finding> f = RunChecks(in, {});
  for (const Finding& x : f) ADD_FAILURE() << x.check << " " << x.object << ": " << x.problem;
  EXPECT_EQ(ExitCodeFor(f), 0);
}

TEST(DoctorChecks, GpuNodeWithoutAgent) {
  DoctorInput in = Healthy();
  in.nodes.push_back(Node("gpu-2", {{"feature.node.kubernetes.io/pci-10de.present", "true"}}));
  // GPUs advertised by another device plugin, but none of the labels the agent selects (gotcha 2).
  Json unlabelled = Node("gpu-3");
  unlabelled["status"]["capacity"]["nvidia.com/gpu"] = "4";
  in.nodes.push_back(unlabelled);
  in.nodes.push_back(Node("gpu-4", {{"nvidia.com/gpu.present", "true"}}));
  in.pods.push_back(AgentPod("gpu-4", false));
  std::vector<Finding> f = Only(RunChecks(in, {}), "gpu-node-without-agent");
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].object, "node/gpu-2");
  EXPECT_NE(f[0].problem.find("no agent pod exists"), std::string::npos) << f[0].problem;
  EXPECT_EQ(f[1].object, "node/gpu-3");
  EXPECT_NE(f[1].problem.find("none of the labels"), std::string::npos) << f[1].problem;
  EXPECT_NE(f[1].fix.find("Node Feature Discovery"), std::string::npos);
  EXPECT_NE(f[1].fix.find("No manual label"), std::string::npos);
  EXPECT_EQ(f[2].object, "node/gpu-4");
  EXPECT_NE(f[2].problem.find("CrashLoopBackOff"), std::string::npos) << f[2].problem;
  EXPECT_NE(f[2].fix.find("kubectl -n tessera-system logs tessera-agent-gpu-4"), std::string::npos) << f[2].fix;

  // No agent DaemonSet at all: the fix is to install the chart.
  in.daemonsets.clear();
  in.pods.clear();
  f = Only(RunChecks(in, {}), "gpu-node-without-agent");
  ASSERT_FALSE(f.empty());
  EXPECT_NE(f[0].fix.find("helm install"), std::string::npos);
}

TEST(DoctorChecks, AgentOutsideKubernetesCountsWhenItPublishedTheNode) {
  DoctorInput in;
  in.now_unix = kNow;
  in.nodes.push_back(Node("sim-1", {{"tessera.dev/gpu-node", "true"}}, {{"tessera.dev/gpus", "[]"}}));
  EXPECT_TRUE(Only(RunChecks(in, {}), "gpu-node-without-agent").empty());
}

TEST(DoctorChecks, GpuPodNotIsolated) {
  DoctorInput in = Healthy();
  in.pods.push_back(GpuPod("by-default", "default-scheduler", "gpu-1"));
  in.pods.push_back(GpuPod("hand-bound", "tessera-scheduler", "gpu-1"));
  Json done = GpuPod("finished", "default-scheduler", "gpu-1");
  done["status"]["phase"] = "Succeeded";
  in.pods.push_back(done);
  Json cpu = GpuPod("cpu-only", "default-scheduler", "cpu-1");
  cpu["spec"]["containers"][0]["resources"] = {{"limits", {{"cpu", "1"}}}};
  in.pods.push_back(cpu);
  std::vector<Finding> f = Only(RunChecks(in, {}), "gpu-pod-not-isolated");
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].object, "pod/default/by-default");
  EXPECT_NE(f[0].problem.find("scheduled by \"default-scheduler\""), std::string::npos);
  EXPECT_NE(f[0].fix.find("webhook"), std::string::npos);
  EXPECT_EQ(f[1].object, "pod/default/hand-bound");
  EXPECT_NE(f[1].problem.find("no Tessera assignment"), std::string::npos);
}

TEST(DoctorChecks, InitContainerAndRequestsCountAsAskingForGpu) {
  Json p = GpuPod("p", "x");
  p["spec"]["containers"][0]["resources"] = Json::object();
  EXPECT_FALSE(PodAsksForGpu(p, {}));
  p["spec"]["initContainers"] = {{{"name", "i"}, {"resources", {{"requests", {{"nvidia.com/gpumem", "100"}}}}}}};
  EXPECT_TRUE(PodAsksForGpu(p, {}));
}

TEST(DoctorChecks, BoundButNeverAllocated) {
  DoctorInput in = Healthy();
  in.nodes.push_back(Node("gpu-9", {{"nvidia.com/gpu.present", "true"}}));  // no agent
  Json dev = "[[{\"uuid\":\"GPU-1\",\"memory_mib\":100,\"cores\":25}]]";
  in.pods.push_back(GpuPod("stuck", "tessera-scheduler", "gpu-9",
                           {{"tessera.dev/devices", dev}, {"tessera.dev/allocation-state", "pending"},
                            {"tessera.dev/bind-time", "2027-01-15T07:50:00Z"}}));
  in.pods.push_back(GpuPod("stuck-agent-up", "tessera-scheduler", "gpu-1",
                           {{"tessera.dev/devices", dev}, {"tessera.dev/allocation-state", "pending"},
                            {"tessera.dev/bind-time", "2027-01-15T07:58:59.5Z"}}));
  in.pods.push_back(GpuPod("just-bound", "tessera-scheduler", "gpu-1",
                           {{"tessera.dev/devices", dev}, {"tessera.dev/allocation-state", "pending"},
                            {"tessera.dev/bind-time", "2027-01-15T07:59:30Z"}}));
  in.pods.push_back(GpuPod("hami-stuck", "hami-scheduler", "gpu-9",
                           {{"hami.io/vgpu-devices-allocated", "GPU-1,NVIDIA,100,25:;"},
                            {"hami.io/bind-phase", "allocating"}}));
  std::vector<Finding> f = Only(RunChecks(in, {}), "bound-not-allocated");
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].object, "pod/default/stuck");
  EXPECT_NE(f[0].problem.find("600 s ago"), std::string::npos) << f[0].problem;
  EXPECT_NE(f[0].problem.find("no ready Tessera agent"), std::string::npos);
  EXPECT_EQ(f[1].object, "pod/default/stuck-agent-up");
  EXPECT_NE(f[1].problem.find("kubelet has not asked"), std::string::npos);
  EXPECT_EQ(f[2].object, "pod/default/hami-stuck");

  DoctorOptions longer;
  longer.allocation_grace_s = 7200;
  EXPECT_TRUE(Only(RunChecks(in, longer), "bound-not-allocated").empty());
}

TEST(DoctorChecks, ContainerWithoutShim) {
  DoctorInput in = Healthy();
  in.scanned_processes = true;
  in.gpu_processes.push_back({101, "python3", false, "uid-ok", "abc"});       // the GPU pod, no shim
  in.gpu_processes.push_back({102, "python3", true, "uid-ok", ""});           // shim loaded
  in.gpu_processes.push_back({103, "nvidia-persiste", false, "", ""});        // host process
  in.gpu_processes.push_back({104, "tessera", false, "agent-gpu-1", ""});     // the agent (NVML)
  std::vector<Finding> f = Only(RunChecks(in, {}), "container-without-shim");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].object, "pod/default/ok");
  EXPECT_NE(f[0].problem.find("process 101 (python3)"), std::string::npos) << f[0].problem;
  EXPECT_NE(f[0].fix.find("/etc/ld.so.preload"), std::string::npos);
}

TEST(DoctorChecks, VersionSkew) {
  DoctorInput in = Healthy();
  EXPECT_TRUE(Only(RunChecks(in, {}), "version-skew").empty());
  in.daemonsets[0] = AgentDaemonSet("0.0.9");
  std::vector<Finding> f = Only(RunChecks(in, {}), "version-skew");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].problem.find("0.0.9 (daemonset/tessera-system/tessera-agent image"), std::string::npos)
      << f[0].problem;
  EXPECT_NE(f[0].problem.find("0.1.0 ("), std::string::npos);
  // An agent that stamped an older version on its Node is skew too.
  in = Healthy();
  in.nodes[0]["metadata"]["annotations"]["tessera.dev/agent-version"] = "0.0.7";
  f = Only(RunChecks(in, {}), "version-skew");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].problem.find("0.0.7 (node/gpu-1 agent)"), std::string::npos) << f[0].problem;
  in.nodes[0]["metadata"]["annotations"]["tessera.dev/agent-version"] = "0.1.0";
  EXPECT_TRUE(Only(RunChecks(in, {}), "version-skew").empty());
  // An agent pod still on the old image after the DaemonSet moved on is skew too.
  in = Healthy();
  in.pods.push_back(AgentPod("gpu-2", true, "ghcr.io/tessera-gpu/tessera-agent:0.0.8"));
  f = Only(RunChecks(in, {}), "version-skew");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].problem.find("pod/tessera-system/tessera-agent-gpu-2"), std::string::npos);
}

TEST(DoctorChecks, WebhookUnreachable) {
  DoctorInput in = Healthy();
  in.webhook_probe_error = "Internal error occurred: failed calling webhook \"mutate.pods.tessera.dev\": connection refused";
  std::vector<Finding> f = Only(RunChecks(in, {}), "webhook-unreachable");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].problem.find("connection refused"), std::string::npos);

  in = Healthy();
  in.services.clear();
  in.mutating_webhooks[0]["webhooks"][0]["clientConfig"].erase("caBundle");
  in.validating_webhooks[0]["webhooks"][0]["failurePolicy"] = "Ignore";
  f = Only(RunChecks(in, {}), "webhook-unreachable");
  ASSERT_EQ(f.size(), 4u);
  EXPECT_NE(f[0].problem.find("does not exist"), std::string::npos);
  EXPECT_NE(f[1].problem.find("no caBundle"), std::string::npos);
  EXPECT_EQ(f[2].severity, "warning");
  EXPECT_NE(f[2].problem.find("failurePolicy Ignore"), std::string::npos);
  EXPECT_NE(f[3].problem.find("does not exist"), std::string::npos);

  in = Healthy();
  in.mutating_webhooks.clear();
  in.validating_webhooks.clear();
  f = Only(RunChecks(in, {}), "webhook-unreachable");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_NE(f[0].problem.find("webhook is not"), std::string::npos);
}

TEST(DoctorHelpers, ImageTag) {
  EXPECT_EQ(ImageTag("ghcr.io/tessera-gpu/tessera-agent:0.1.0"), "0.1.0");
  EXPECT_EQ(ImageTag("localhost:5000/tessera-agent"), "");
  EXPECT_EQ(ImageTag("localhost:5000/tessera-agent:1.2@sha256:abcd"), "1.2");
  EXPECT_EQ(ImageTag("tessera"), "");
}

TEST(DoctorHelpers, ParseCgroup) {
  std::string uid, cid;
  ParseCgroup("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/"
              "cri-containerd-" + std::string(64, 'a') + ".scope\n",
              &uid, &cid);
  EXPECT_EQ(uid, "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b");
  EXPECT_EQ(cid, std::string(64, 'a'));
  uid.clear();
  cid.clear();
  ParseCgroup("12:memory:/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/" + std::string(64, 'b') + "\n",
              &uid, &cid);
  EXPECT_EQ(uid, "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b");
  EXPECT_EQ(cid, std::string(64, 'b'));
  uid.clear();
  ParseCgroup("0::/user.slice/user-0.slice/session-1.scope\n", &uid, &cid);
  EXPECT_EQ(uid, "");
}

TEST(DoctorHelpers, ScanGpuProcessesInAFakeProcTree) {
  char tmpl[] = "/tmp/tessera-doctor-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string root = tmpl;
  auto proc = [&](int pid, const std::string& comm, const std::string& dev, const std::string& maps,
                  const std::string& cgroup) {
    std::string d = root + "/" + std::to_string(pid);
    fs::create_directories(d + "/fd");
    std::ofstream(d + "/comm") << comm << "\n";
    std::ofstream(d + "/maps") << maps;
    std::ofstream(d + "/cgroup") << cgroup;
    fs::create_symlink(dev, d + "/fd/3");
  };
  std::string cg = "0::/kubepods/pod0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/" + std::string(64, 'c') + "\n";
  proc(10, "python3", "/dev/nvidia0", "7f00 r-xp /usr/lib/libcuda.so\n", cg);
  proc(11, "python3", "/dev/nvidiactl", "7f00 r-xp /usr/local/lib/tessera/libtessera.so\n", cg);
  proc(12, "bash", "/dev/pts/0", "", cg);
  fs::create_directories(root + "/self");
  std::vector<std::string> warnings;
  std::vector<GpuProcess> ps = ScanGpuProcesses(root, "/dev/nvidia", &warnings);
  std::sort(ps.begin(), ps.end(), [](const GpuProcess& a, const GpuProcess& b) { return a.pid < b.pid; });
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].pid, 10);
  EXPECT_EQ(ps[0].comm, "python3");
  EXPECT_FALSE(ps[0].shim_loaded);
  EXPECT_EQ(ps[0].pod_uid, "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b");
  EXPECT_TRUE(ps[1].shim_loaded);
  fs::remove_all(root);
}

TEST(DoctorReport, TextAndJson) {
  DoctorInput in = Healthy();
  std::vector<Finding> f = {{"version-skew", "error", "tessera", "p", "x"}, {"webhook-unreachable", "warning", "w", "q", "y"}};
  std::string t = RenderFindings(f, Summarize(in, {}), {"a note"});
  EXPECT_NE(t.find("tessera doctor: 1 problem, 1 warning"), std::string::npos) << t;
  EXPECT_NE(t.find("ERROR  version-skew  tessera\n  problem: p\n  fix:     x"), std::string::npos) << t;
  EXPECT_NE(t.find("note: a note"), std::string::npos);
  EXPECT_NE(t.find("checked: 2 nodes (1 with GPUs), 3 pods (2 asking for GPUs)"), std::string::npos) << t;
  Json j = Json::parse(RenderFindingsJson(f, Summarize(in, {}), {}));
  EXPECT_EQ(j["findings"][1]["check"], "webhook-unreachable");
  EXPECT_EQ(j["checked"]["gpu_nodes"], 1);
  EXPECT_EQ(ExitCodeFor(f), 1);
  EXPECT_EQ(ExitCodeFor({f[1]}), 0);
  EXPECT_NE(RenderFindings({}, {}, {}).find("no problems found"), std::string::npos);
}

}  // namespace
}  // namespace tessera::cli
