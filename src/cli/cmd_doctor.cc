// tessera doctor: checks a cluster (or one node) and names each problem with its fix.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/doctor_checks.h"
#include "cli/doctor_collect.h"
#include "cli/doctor_report.h"
#include "kube/client.h"
#include "kube/config.h"

namespace tessera::cli {

int DoctorCmd(int argc, char** argv) {
  CLI::App app{"Checks a cluster, or one node, for what breaks GPU isolation and names the fix for each problem: "
               "GPU nodes with no agent, GPU pods not under Tessera, pods bound but never allocated, GPU "
               "processes without the shim (--node), version skew, an unreachable webhook. Exit status 1 when "
               "a problem is found.",
               "tessera doctor"};
  std::string kubeconfig, context, node, proc_root = "/proc", device_prefix = "/dev/nvidia";
  std::string probe_ns = "default";
  bool json = false, no_probe = false;
  DoctorOptions opt;
  std::vector<std::string> names;
  std::vector<std::string> labels;
  app.add_option("--kubeconfig", kubeconfig, "kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)");
  app.add_option("--context", context, "kubeconfig context (default: the current one)");
  app.add_option("--node", node,
                 "check only this node and its pods, and scan this host's processes (run it on that node, as root)");
  app.add_option("--proc-root", proc_root, "where to read processes from with --node")->capture_default_str();
  app.add_option("--gpu-device-prefix", device_prefix, "device path prefix that marks a GPU process")
      ->capture_default_str();
  app.add_option("--allocation-grace", opt.allocation_grace_s,
                 "seconds a bound pod may wait for its allocation before it is reported (1..86400)")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  app.add_option("--scheduler-name", names, "scheduler names that mean Tessera (default tessera-scheduler, hami-scheduler)");
  app.add_option("--gpu-node-label", labels,
                 "KEY=VALUE label that marks a GPU node (repeatable; default nvidia.com/gpu.present=true and "
                 "feature.node.kubernetes.io/pci-10de.present=true)");
  app.add_option("--probe-namespace", probe_ns, "namespace of the dry-run GPU pod that probes the webhook")
      ->capture_default_str();
  app.add_flag("--no-probe", no_probe, "do not probe the webhook with a dry-run pod");
  app.add_flag("--json", json, "print the findings as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!names.empty()) opt.scheduler_names = names;
  if (!labels.empty()) {
    opt.gpu_node_labels.clear();
    for (const std::string& l : labels) {
      size_t eq = l.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == l.size()) {
        std::fprintf(stderr, "tessera doctor: --gpu-node-label %s: expected KEY=VALUE\n", l.c_str());
        return 2;
      }
      opt.gpu_node_labels.push_back({l.substr(0, eq), l.substr(eq + 1)});
    }
  }

  if (!context.empty() && kubeconfig.empty()) {
    const char* env = std::getenv("KUBECONFIG");
    const char* home = std::getenv("HOME");
    kubeconfig = env && *env ? env : std::string(home ? home : "") + "/.kube/config";
  }
  kube::Result<kube::Config> cfg =
      context.empty() ? kube::LoadDefaultConfig(kubeconfig) : kube::LoadKubeconfig(kubeconfig, context);
  if (!cfg) {
    std::fprintf(stderr, "tessera doctor: cannot find the cluster: %s\n", cfg.error().ToString().c_str());
    return 1;
  }
  auto client = kube::Client::Create(*cfg);
  if (!client) {
    std::fprintf(stderr, "tessera doctor: %s\n", client.error().ToString().c_str());
    return 1;
  }
  DoctorInput in;
  std::vector<std::string> warnings;
  CollectOptions co;
  co.node = node;
  co.probe_webhook = !no_probe;
  co.probe_namespace = probe_ns;
  kube::Status st = CollectCluster(**client, co, &in, &warnings);
  if (!st) {
    std::fprintf(stderr, "tessera doctor: cannot read the cluster at %s: %s\n", cfg->server.c_str(),
                 st.error().ToString().c_str());
    return 1;
  }
  if (!node.empty()) {
    in.gpu_processes = ScanGpuProcesses(proc_root, device_prefix, &warnings);
    in.scanned_processes = true;
  }
  std::vector<Finding> findings = RunChecks(in, opt);
  DoctorSummary sum = Summarize(in, opt);
  std::cout << (json ? RenderFindingsJson(findings, sum, warnings) : RenderFindings(findings, sum, warnings));
  return ExitCodeFor(findings);
}

}  // namespace tessera::cli
