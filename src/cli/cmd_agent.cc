// tessera agent: the node agent. Parses flags, picks the GPU backend, connects to the API server and
// runs agent::Agent until SIGTERM/SIGINT. Everything else lives in src/agent and src/gpu.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <httplib.h>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "agent/agent.h"
#include "agent/dra_driver.h"
#include "cli/commands.h"
#include "gpu/fault_backend.h"
#include "gpu/sim_backend.h"
#include "kube/client.h"
#include "kube/config.h"
#include "kube/serving.h"
#include "slice/config.h"

#ifndef TESSERA_VERSION
#define TESSERA_VERSION "dev"
#endif

namespace tessera::cli {

namespace {

// --mode dra: the DRA driver instead of the device plugin (same slices, shim and mounts).
// /healthz (200 once the kubelet accepted the registration) and /metrics on the metrics port.
int RunDra(const agent::AgentOptions& o, const std::string& cdi_dir, std::unique_ptr<gpu::Backend> gpus,
           std::shared_ptr<kube::Client> client, sigset_t signals) {
  agent::DraOptions d;
  d.node = o.node;
  d.kubelet_dir = o.kubelet_dir;
  d.cdi_dir = cdi_dir;
  d.slices = o.slices;
  agent::DraDriver driver(d, std::move(gpus), agent::MakeKubeDraApi(std::move(client)));
  if (gpu::Status st = driver.Start(); !st.ok()) {
    std::fprintf(stderr, "tessera agent: %s\n", st.message().c_str());
    return 1;
  }
  kube::ServingGuard guard{kube::ServingLimits{}};  // outlives the server: declared first
  httplib::Server http;
  std::thread http_thread;
  if (o.metrics_port != 0) {
    if (!o.metrics_token_file.empty()) guard.RequireBearerToken(o.metrics_token_file);
    guard.Apply(http);
    http.Get("/healthz", [&](const httplib::Request&, httplib::Response& res) {
      const bool ok = driver.registered();
      res.status = ok ? 200 : 503;
      res.set_content(ok ? "ok\n" : "not registered with the kubelet\n", "text/plain");
    });
    http.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
      res.set_content("# HELP tessera_dra_prepared_claims ResourceClaims prepared on this node.\n"
                      "# TYPE tessera_dra_prepared_claims gauge\ntessera_dra_prepared_claims " +
                          std::to_string(driver.Prepared().size()) + "\n",
                      "text/plain; version=0.0.4");
    });
    if (!http.bind_to_port(o.metrics_address, o.metrics_port)) {
      std::fprintf(stderr, "tessera agent: --metrics-port: cannot listen on %s:%d\n", o.metrics_address.c_str(),
                   o.metrics_port);
      return 1;
    }
    http_thread = std::thread([&] { http.listen_after_bind(); });
  }
  std::fprintf(stderr, "tessera agent: DRA driver gpu.tessera.io serving node %s\n", o.node.c_str());
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "tessera agent: signal %d, stopping\n", sig);
  http.stop();
  if (http_thread.joinable()) http_thread.join();
  driver.Stop();
  return 0;
}

}  // namespace

int AgentCmd(int argc, char** argv) {
  CLI::App app{"tessera agent: the node agent (kubelet device plugin for GPU slices, health, metrics)"};
  app.option_defaults()->always_capture_default();
  agent::AgentOptions o;
  o.version = TESSERA_VERSION;
  o.slices.node_region_dir = "/run/tessera/node";
  const char* env_node = std::getenv("NODE_NAME");
  o.node = env_node ? env_node : "";
  std::string kubeconfig, backend = "nvml", sim_config, faults, state_dir = "/var/lib/tessera",
                          kubelet_dir = "/var/lib/kubelet", shim, node_region_dir = "/run/tessera/node",
                          mode = "device-plugin", cdi_dir = "/var/run/cdi";
  app.add_option("--mode", mode,
                 "device-plugin (the extender path: kubelet device plugin) or dra (DRA driver gpu.tessera.io: "
                 "ResourceSlices + kubelet DRA plugin, see docs/dra.md)")
      ->check(CLI::IsMember({"device-plugin", "dra"}));
  app.add_option("--cdi-dir", cdi_dir, "with --mode dra: where CDI spec files for prepared claims go");
  app.add_option("--node", o.node, "Node this agent serves (default: $NODE_NAME)");
  app.add_option("--kubeconfig", kubeconfig,
                 "kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)");
  app.add_option("--backend", backend, "GPU discovery: nvml (libnvidia-ml.so.1) or sim (a file)")
      ->check(CLI::IsMember({"nvml", "sim"}));
  app.add_option("--sim-config", sim_config, "YAML/JSON file of simulated GPUs (with --backend sim)");
  app.add_option("--gpu-faults", faults, "inject GPU backend faults, e.g. init=1,usage=3 (testing)");
  app.add_option("--kubelet-dir", kubelet_dir, "the kubelet's root (device-plugins/, pod-resources/ below)");
  app.add_option("--state-dir", state_dir, "host directory for slices and ld.so.preload");
  app.add_option("--shim", shim, "host path of libtessera.so, mounted into every GPU container")->required();
  app.add_option("--node-region-dir", node_region_dir,
                 "host directory for node-wide priority files, mounted at /run/tessera/node (empty: none)");
  app.add_option("--split", o.split, "devices advertised per GPU (max containers sharing one GPU), 1..64");
  app.add_option("--resource", o.resource, "extended resource name of the device plugin");
  app.add_option("--metrics-port", o.metrics_port, "HTTP port for /metrics and /healthz (0: off)");
  app.add_option("--metrics-address", o.metrics_address, "address the metrics server listens on");
  app.add_option("--metrics-token-file", o.metrics_token_file,
                 "file holding a bearer token that /metrics requires (re-read when it changes; /healthz stays open)")
      ->check(CLI::ExistingFile);
  app.add_flag(
      "--hami-metric-names,!--no-hami-metric-names", o.hami_metric_names,
      "also serve HAMi's metric names (vGPU_device_memory_usage_in_bytes, HostCoreUtilization, ...)");
  std::string watchdog = "kill", watchdog_unknown = "report", watchdog_slack = "0",
              standalone_dir = o.standalone_slices_dir.string();
  double watchdog_period_ms = o.watchdog.period_s * 1000;
  app.add_option("--watchdog", watchdog,
                 "slices over their memory wall by the driver's figures: kill the offending process, report "
                 "(log, event, metric) or off")
      ->check(CLI::IsMember({"kill", "report", "off"}));
  app.add_option("--watchdog-unknown", watchdog_unknown,
                 "GPU processes of no slice on a shared GPU: report, kill or off")
      ->check(CLI::IsMember({"kill", "report", "off"}));
  app.add_option("--watchdog-period-ms", watchdog_period_ms, "watchdog poll interval in ms, 10..10000");
  app.add_option("--watchdog-slack", watchdog_slack,
                 "memory a slice may hold above its wall before the watchdog acts (e.g. 0, 64MiB)");
  app.add_option("--proc-root", o.proc_root, "the host's /proc (the agent runs with hostPID)");
  app.add_option("--standalone-slices-dir", standalone_dir,
                 "where `tessera run` keeps standalone slices, also watched (empty: none)");
  std::string compute_mode = "time-sliced", node_config, mps_dir;
  app.add_option("--memory-scaling", o.memory_scaling,
                 "GPU memory published per GPU = real x this, 0.1..16 (> 1 overcommits; see docs/configuration.md)");
  app.add_option("--core-scaling", o.core_scaling, "GPU cores published per GPU = 100 x this, 0.1..16");
  app.add_option("--compute-mode", compute_mode, "default compute mode of this node's GPUs: time-sliced or spatial")
      ->check(CLI::IsMember({"time-sliced", "spatial"}));
  app.add_option("--node-config", node_config,
                 "per-node settings file (HAMi's device-plugin config.json: nodeconfig[]), reread while running");
  app.add_option("--mps-dir", mps_dir,
                 "host directory of the MPS daemons of spatial slices (e.g. /run/tessera/mps; empty: spatial off)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.kubelet_dir = kubelet_dir;
  o.slices.state_dir = state_dir;
  o.slices.shim_path = shim;
  o.slices.node_region_dir = node_region_dir;
  agent::ParseWatchdogAction(watchdog, &o.watchdog.over_limit);
  agent::ParseWatchdogAction(watchdog_unknown, &o.watchdog.unknown);
  o.watchdog.period_s = watchdog_period_ms / 1000.0;
  if (!slice::ParseBytes(watchdog_slack.c_str(), &o.watchdog.slack_bytes)) {
    std::fprintf(stderr, "tessera agent: --watchdog-slack: '%s' is not a size (e.g. 0, 64MiB, 1G)\n",
                 watchdog_slack.c_str());
    return 2;
  }
  o.standalone_slices_dir = standalone_dir;
  o.spatial_default = compute_mode == "spatial";
  o.node_config = node_config;
  o.mps_dir = mps_dir;
  if (gpu::Status st = agent::ValidateOptions(o); !st.ok()) {
    std::fprintf(stderr, "tessera agent: %s\n", st.message().c_str());
    return 2;
  }

  std::unique_ptr<gpu::Backend> gpus;
  if (backend == "sim") {
    if (sim_config.empty()) {
      std::fprintf(stderr, "tessera agent: --sim-config: required with --backend sim\n");
      return 2;
    }
    std::unique_ptr<gpu::SimBackend> sim;
    if (gpu::Status st = gpu::SimBackend::FromFile(sim_config, &sim); !st.ok()) {
      std::fprintf(stderr, "tessera agent: --sim-config: %s\n", st.message().c_str());
      return 2;
    }
    gpus = std::move(sim);
  } else {
    gpus = gpu::MakeNvmlBackend();
    o.dev_root = "/dev";  // real GPUs: hand their device nodes to containers
  }
  if (!faults.empty()) {
    gpu::FaultPlan plan;
    if (gpu::Status st = gpu::ParseFaultPlan(faults, &plan); !st.ok()) {
      std::fprintf(stderr, "tessera agent: --gpu-faults: %s\n", st.message().c_str());
      return 2;
    }
    gpus = std::make_unique<gpu::FaultBackend>(std::move(gpus), plan);
  }

  auto config = kube::LoadDefaultConfig(kubeconfig);
  if (!config.ok()) {
    std::fprintf(stderr, "tessera agent: --kubeconfig: %s\n", config.error().ToString().c_str());
    return 2;
  }
  auto client = kube::Client::Create(*config);
  if (!client.ok()) {
    std::fprintf(stderr, "tessera agent: %s\n", client.error().ToString().c_str());
    return 1;
  }

  // Signals are taken synchronously by this thread; every other thread inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (mode == "dra") return RunDra(o, cdi_dir, std::move(gpus), *client, signals);
  agent::Agent a(o, std::move(gpus), agent::MakeKubeCluster(*client, o.node));
  if (gpu::Status st = a.Start(); !st.ok()) {
    std::fprintf(stderr, "tessera agent: %s\n", st.message().c_str());
    return 1;
  }
  std::fprintf(stderr, "tessera agent: serving node %s (metrics on :%d)\n", o.node.c_str(), a.metrics_port());
  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "tessera agent: signal %d, stopping\n", sig);
  a.Stop();
  return 0;
}

}  // namespace tessera::cli
