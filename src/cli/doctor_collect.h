// Fills a DoctorInput for `tessera doctor`: lists what the checks need from the API server, probes the
// admission webhook with a dry-run GPU pod, and (on a node) finds the processes that use a GPU.
//
// Only reads, plus one dryRun=All create that the API server never persists. Errors reaching the API
// server are returned; a resource the caller may not list is a warning (that check then sees nothing).
// Thread-compatible: one collector call at a time per Client is not required (Client is thread-safe).
#pragma once

#include <string>
#include <vector>

#include "cli/doctor_checks.h"
#include "kube/client.h"

namespace tessera::cli {

struct CollectOptions {
  std::string node;                     // only this node and the pods bound to it; "" = whole cluster
  bool probe_webhook = true;
  std::string probe_namespace = "default";
  std::string gpu_resource = "nvidia.com/gpu";
};

kube::Status CollectCluster(kube::Client& client, const CollectOptions& opt, DoctorInput* in,
                            std::vector<std::string>* warnings);

// Scans <proc_root>/<pid>/ for processes with a GPU device (a path under `device_prefix`, i.e. /dev/nvidia*)
// open, whether libtessera.so is mapped, and the pod/container from the cgroup path.
std::vector<GpuProcess> ScanGpuProcesses(const std::string& proc_root, const std::string& device_prefix,
                                         std::vector<std::string>* warnings);

// Pod UID and container ID from the lines of /proc/<pid>/cgroup (cgroupfs and systemd drivers, v1 and v2).
void ParseCgroup(const std::string& text, std::string* pod_uid, std::string* container_id);

}  // namespace tessera::cli
