// tessera agent: the node agent. Parses flags, picks the GPU backend, connects to the API server and
// runs agent::Agent until SIGTERM/SIGINT. Everything else lives in src/agent and src/gpu.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "agent/agent.h"
#include "cli/commands.h"
#include "gpu/fault_backend.h"
#include "gpu/sim_backend.h"
#include "kube/client.h"
#include "kube/config.h"

#ifndef TESSERA_VERSION
#define TESSERA_VERSION "dev"
#endif

namespace tessera::cli {

int AgentCmd(int argc, char** argv) {
  CLI::App app{"tessera agent: the node agent (kubelet device plugin for GPU slices, health, metrics)"};
  app.option_defaults()->always_capture_default();
  agent::AgentOptions o;
  o.version = TESSERA_VERSION;
  o.slices.node_region_dir = "/run/tessera/node";
  const char* env_node = std::getenv("NODE_NAME");
  o.node = env_node ? env_node : "";
  std::string kubeconfig, backend = "nvml", sim_config, faults, state_dir = "/var/lib/tessera",
                          kubelet_dir = "/var/lib/kubelet", shim, node_region_dir = "/run/tessera/node";
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
  app.add_flag(
      "--hami-metric-names,!--no-hami-metric-names", o.hami_metric_names,
      "also serve HAMi's metric names (vGPU_device_memory_usage_in_bytes, HostCoreUtilization, ...)");
  std::string mode = "time-sliced", node_config, mps_dir;
  app.add_option("--memory-scaling", o.memory_scaling,
                 "GPU memory published per GPU = real x this, 0.1..16 (> 1 overcommits; see docs/configuration.md)");
  app.add_option("--core-scaling", o.core_scaling, "GPU cores published per GPU = 100 x this, 0.1..16");
  app.add_option("--compute-mode", mode, "default compute mode of this node's GPUs: time-sliced or spatial")
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
  o.spatial_default = mode == "spatial";
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
