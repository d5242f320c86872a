#include "cli/doctor_checks.h"

#include <time.h>

#include <algorithm>
#include <map>
#include <set>

namespace tessera::cli {
namespace {

const Json kNull;

const Json& At(const Json& j, std::initializer_list<const char*> path) {
  const Json* cur = &j;
  for (const char* k : path) {
    if (!cur->is_object() || !cur->contains(k)) return kNull;
    cur = &(*cur)[k];
  }
  return *cur;
}

std::string Str(const Json& j, std::initializer_list<const char*> path) {
  const Json& v = At(j, path);
  return v.is_string() ? v.get<std::string>() : "";
}

std::string Anno(const Json& obj, const std::string& key) {
  const Json& a = At(obj, {"metadata", "annotations"});
  if (!a.is_object() || !a.contains(key) || !a[key].is_string()) return "";
  return a[key].get<std::string>();
}

std::string LabelOf(const Json& obj, const std::string& key) {
  const Json& a = At(obj, {"metadata", "labels"});
  if (!a.is_object() || !a.contains(key) || !a[key].is_string()) return "";
  return a[key].get<std::string>();
}

std::string PodRef(const Json& pod) { return "pod/" + Str(pod, {"metadata", "namespace"}) + "/" + Str(pod, {"metadata", "name"}); }

bool Terminated(const Json& pod) {
  std::string phase = Str(pod, {"status", "phase"});
  return phase == "Succeeded" || phase == "Failed";
}

bool Ready(const Json& pod) {
  if (Str(pod, {"status", "phase"}) != "Running") return false;
  const Json& conds = At(pod, {"status", "conditions"});
  if (!conds.is_array()) return false;
  for (const Json& c : conds) {
    if (c.value("type", "") == "Ready") return c.value("status", "") == "True";
  }
  return false;
}

// Seconds since the epoch of an RFC 3339 UTC time ("2026-01-02T03:04:05Z", fraction allowed); -1 if not one.
int64_t ParseTime(const std::string& s) {
  struct tm tm = {};
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end) return -1;
  if (*end == '.') {
    ++end;
    while (*end >= '0' && *end <= '9') ++end;
  }
  if (*end != 'Z' || end[1] != '\0') return -1;
  return static_cast<int64_t>(timegm(&tm));
}

std::string Describe(const Json& pod) {
  std::string phase = Str(pod, {"status", "phase"});
  if (phase.empty()) phase = "Pending";
  const Json& st = At(pod, {"status", "containerStatuses"});
  if (st.is_array()) {
    for (const Json& c : st) {
      std::string reason = Str(c, {"state", "waiting", "reason"});
      if (!reason.empty()) return phase + " (" + reason + ")";
    }
  }
  return Ready(pod) ? phase : phase + ", not ready";
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

struct Context {
  const DoctorInput& in;
  const DoctorOptions& opt;
  std::vector<Finding>* out;
  std::map<std::string, std::vector<const Json*>> agent_pods_by_node;
  std::vector<const Json*> agent_daemonsets;

  void Add(const char* check, const char* severity, const std::string& object, const std::string& problem,
           const std::string& fix) {
    out->push_back({check, severity, object, problem, fix});
  }

  // A ready agent pod on the node, or (no agent DaemonSet anywhere) an agent run outside Kubernetes that has
  // published the node's GPUs, as in the local demo.
  bool AgentServes(const std::string& node_name, const Json* node) const {
    auto it = agent_pods_by_node.find(node_name);
    if (it != agent_pods_by_node.end()) {
      for (const Json* p : it->second) {
        if (Ready(*p)) return true;
      }
    }
    return agent_daemonsets.empty() && node && !Anno(*node, "tessera.dev/gpus").empty();
  }
};

std::string SelectorText(const DoctorOptions& opt) {
  std::vector<std::string> v;
  for (const auto& [k, val] : opt.gpu_node_labels) v.push_back(k + "=" + val);
  return Join(v, " or ");
}

void CheckNodes(Context& c) {
  for (const Json& node : c.in.nodes) {
    if (!IsGpuNode(node, c.opt)) continue;
    std::string name = Str(node, {"metadata", "name"});
    if (c.AgentServes(name, &node)) continue;
    std::string obj = "node/" + name;
    bool labelled = false;
    for (const auto& [k, v] : c.opt.gpu_node_labels) labelled = labelled || LabelOf(node, k) == v;
    auto it = c.agent_pods_by_node.find(name);
    if (it != c.agent_pods_by_node.end() && !it->second.empty()) {
      const Json& p = *it->second.front();
      c.Add("gpu-node-without-agent", "error", obj,
            "the Tessera agent on this GPU node is not ready: " + PodRef(p) + " is " + Describe(p) +
                "; pods placed here will wait for their slice",
            "kubectl -n " + Str(p, {"metadata", "namespace"}) + " logs " + Str(p, {"metadata", "name"}) +
                " (and kubectl describe pod) to see why it does not start");
    } else if (c.agent_daemonsets.empty()) {
      c.Add("gpu-node-without-agent", "error", obj,
            "this node has GPUs but no Tessera agent runs in the cluster: nothing gives its pods a memory wall",
            "install the chart: helm install tessera deploy/helm/tessera -n tessera-system --create-namespace");
    } else if (!labelled) {
      c.Add("gpu-node-without-agent", "error", obj,
            "this node has GPUs but none of the labels the agent DaemonSet selects (" + SelectorText(c.opt) +
                "), so no agent runs here",
            "install NVIDIA GPU feature discovery (GPU Operator) or Node Feature Discovery, which set these labels; "
            "or add the label your discovery sets to agent.gpuNodeLabels in the chart values. No manual label is "
            "needed");
    } else {
      const Json& ds = *c.agent_daemonsets.front();
      c.Add("gpu-node-without-agent", "error", obj,
            "the agent DaemonSet selects this node but no agent pod exists on it",
            "kubectl -n " + Str(ds, {"metadata", "namespace"}) + " describe daemonset " +
                Str(ds, {"metadata", "name"}) + " (a taint the agent does not tolerate, or the node is not ready)");
    }
  }
}

void CheckPods(Context& c) {
  std::set<std::string> ours(c.opt.scheduler_names.begin(), c.opt.scheduler_names.end());
  std::map<std::string, const Json*> nodes;
  for (const Json& n : c.in.nodes) nodes[Str(n, {"metadata", "name"})] = &n;
  for (const Json& pod : c.in.pods) {
    if (Terminated(pod) || !PodAsksForGpu(pod, c.opt)) continue;
    std::string sched = Str(pod, {"spec", "schedulerName"});
    if (sched.empty()) sched = "default-scheduler";
    std::string node = Str(pod, {"spec", "nodeName"});
    bool assigned = !Anno(pod, "tessera.dev/devices").empty() || !Anno(pod, "hami.io/vgpu-devices-allocated").empty();
    if (!ours.count(sched)) {
      c.Add("gpu-pod-not-isolated", "error", PodRef(pod),
            "asks for a GPU but is scheduled by \"" + sched + "\", not Tessera: it gets no memory wall or compute cap" +
                (node.empty() ? "" : " on node " + node),
            "the admission webhook sets the scheduler name on GPU pods, so it was missing or bypassed when this pod "
            "was created: fix the webhook findings, then recreate the pod (kubectl delete pod; its controller "
            "recreates it)");
      continue;
    }
    if (!node.empty() && !assigned) {
      c.Add("gpu-pod-not-isolated", "error", PodRef(pod),
            "runs on node " + node + " with no Tessera assignment (tessera.dev/devices): it was bound without the "
            "extender (spec.nodeName set by hand or by another binder), so it has no slice",
            "do not set spec.nodeName on GPU pods; use nodeSelector/affinity and recreate the pod");
      continue;
    }
    std::string state = Anno(pod, "tessera.dev/allocation-state");
    bool pending = state == "pending" || (state.empty() && Anno(pod, "hami.io/bind-phase") == "allocating");
    if (node.empty() || !pending) continue;
    int64_t since = ParseTime(Anno(pod, "tessera.dev/bind-time"));
    if (since < 0) since = ParseTime(Str(pod, {"metadata", "creationTimestamp"}));
    int64_t age = since < 0 ? -1 : c.in.now_unix - since;
    if (age >= 0 && age < c.opt.allocation_grace_s) continue;
    auto nit = nodes.find(node);
    bool agent = c.AgentServes(node, nit == nodes.end() ? nullptr : nit->second);
    std::string age_text = age < 0 ? "" : " " + std::to_string(age) + " s ago";
    c.Add("bound-not-allocated", "error", PodRef(pod),
          "bound to node " + node + age_text + " but never allocated (allocation-state pending): " +
              (agent ? "the agent there runs but the kubelet has not asked it for this pod's devices"
                     : "no ready Tessera agent runs on that node"),
          (agent ? "check that the agent is registered with the kubelet (kubectl describe node " + node +
                       " shows nvidia.com/gpu capacity) and read its logs"
                 : "start the agent on " + node + " (see the gpu-node-without-agent finding)") +
              std::string("; the kubelet allocates when it starts the pod's containers. If the pod already failed "
                          "admission (reason UnexpectedAdmissionError), delete it and its controller recreates it"));
  }
}

void CheckProcesses(Context& c) {
  if (!c.in.scanned_processes) return;
  std::map<std::string, const Json*> pods_by_uid;
  for (const Json& p : c.in.pods) pods_by_uid[Str(p, {"metadata", "uid"})] = &p;
  for (const GpuProcess& proc : c.in.gpu_processes) {
    // Host processes (drivers, persistence daemon) and pods that do not ask for a GPU (the agent, exporters
    // reading NVML) legitimately use the device without the shim; a GPU pod's process must not.
    if (proc.shim_loaded || proc.pod_uid.empty()) continue;
    auto it = pods_by_uid.find(proc.pod_uid);
    if (it != pods_by_uid.end() && (!PodAsksForGpu(*it->second, c.opt) || IsTesseraComponent(*it->second, "agent"))) {
      continue;
    }
    std::string who = it == pods_by_uid.end() ? "pod uid " + proc.pod_uid : PodRef(*it->second);
    c.Add("container-without-shim", "error", it == pods_by_uid.end() ? "process/" + std::to_string(proc.pid) : who,
          "process " + std::to_string(proc.pid) + " (" + proc.comm + ") of " + who +
              (proc.container_id.empty() ? "" : " container " + proc.container_id.substr(0, 12)) +
              " uses the GPU without libtessera.so loaded: its memory and compute are not limited",
          "the container's /etc/ld.so.preload must name /usr/local/lib/tessera/libtessera.so (the agent mounts it): "
          "an image that replaces that file, a statically linked binary, or a pod not scheduled by Tessera bypasses "
          "it. Recreate the pod through Tessera; do not mount over /etc/ld.so.preload");
  }
}

void CheckVersions(Context& c) {
  // version -> where it was seen
  std::map<std::string, std::vector<std::string>> seen;
  auto note = [&](const std::string& v, const std::string& where) {
    if (!v.empty() && v != "latest") seen[v].push_back(where);
  };
  auto images = [&](const Json& podspec, const std::string& where, const std::string& needle) {
    const Json& ctrs = At(podspec, {"containers"});
    if (!ctrs.is_array()) return;
    for (const Json& ct : ctrs) {
      std::string img = ct.value("image", "");
      if (img.find(needle) != std::string::npos) note(ImageTag(img), where + " image " + img);
    }
  };
  for (const Json& d : c.in.deployments) {
    if (!IsTesseraComponent(d, "scheduler")) continue;
    std::string ref = "deployment/" + Str(d, {"metadata", "namespace"}) + "/" + Str(d, {"metadata", "name"});
    std::string chart = LabelOf(d, "helm.sh/chart");
    if (chart.rfind("tessera-", 0) == 0) note(chart.substr(8), ref + " chart " + chart);
    images(At(d, {"spec", "template", "spec"}), ref, "tessera");
  }
  for (const Json& ds : c.in.daemonsets) {
    if (!IsTesseraComponent(ds, "agent")) continue;
    std::string ref = "daemonset/" + Str(ds, {"metadata", "namespace"}) + "/" + Str(ds, {"metadata", "name"});
    std::string chart = LabelOf(ds, "helm.sh/chart");
    if (chart.rfind("tessera-", 0) == 0) note(chart.substr(8), ref + " chart " + chart);
    images(At(ds, {"spec", "template", "spec"}), ref, "tessera");
  }
  // Each agent stamps its own version on its Node: this also covers agents run outside the chart.
  for (const Json& n : c.in.nodes) note(Anno(n, "tessera.dev/agent-version"), "node/" + Str(n, {"metadata", "name"}) + " agent");
  // Running pods show a rollout that has not finished (old agents left on some nodes).
  for (const Json& p : c.in.pods) {
    if (Terminated(p)) continue;
    for (const char* comp : {"agent", "scheduler"}) {
      if (IsTesseraComponent(p, comp)) images(At(p, {"spec"}), PodRef(p), "tessera");
    }
  }
  if (seen.size() <= 1) return;
  std::vector<std::string> parts;
  for (const auto& [v, where] : seen) parts.push_back(v + " (" + Join(where, ", ") + ")");
  c.Add("version-skew", "error", "tessera",
        "the chart, scheduler and agent are not the same version: " + Join(parts, "; "),
        "upgrade everything from one chart release (helm upgrade tessera deploy/helm/tessera, leaving image.tag "
        "empty so it follows the chart) and let the agent DaemonSet finish rolling out");
}

bool OurWebhookName(const std::string& n) {
  return n.size() > 12 && n.compare(n.size() - 12, 12, ".tessera.dev") == 0;
}

void CheckWebhooks(Context& c) {
  bool tessera_installed = !c.agent_daemonsets.empty();
  for (const Json& d : c.in.deployments) tessera_installed = tessera_installed || IsTesseraComponent(d, "scheduler");
  std::set<std::string> services;
  for (const Json& s : c.in.services) services.insert(Str(s, {"metadata", "namespace"}) + "/" + Str(s, {"metadata", "name"}));

  int found = 0;
  auto inspect = [&](const Json& cfg, const char* kind) {
    const Json& hooks = At(cfg, {"webhooks"});
    if (!hooks.is_array()) return;
    std::string ref = std::string(kind) + "/" + Str(cfg, {"metadata", "name"});
    for (const Json& h : hooks) {
      std::string name = h.value("name", "");
      if (!OurWebhookName(name)) continue;
      ++found;
      if (h.value("failurePolicy", "Fail") == "Ignore") {
        c.Add("webhook-unreachable", "warning", ref,
              "webhook " + name + " has failurePolicy Ignore: while it is down GPU pods are admitted without isolation",
              "set webhook.failurePolicy=Fail (the chart default); only GPU pods are affected by it");
      }
      const Json& svc = At(h, {"clientConfig", "service"});
      if (svc.is_object()) {
        std::string key = svc.value("namespace", "") + "/" + svc.value("name", "");
        if (!services.count(key)) {
          c.Add("webhook-unreachable", "error", ref,
                "webhook " + name + " calls service " + key + ", which does not exist",
                "reinstall the chart (the scheduler Service serves the webhook), or delete this stale configuration");
        }
        if (Str(h, {"clientConfig", "caBundle"}).empty()) {
          c.Add("webhook-unreachable", "error", ref,
                "webhook " + name + " has no caBundle yet: the API server cannot trust the scheduler's certificate",
                "tessera scheduler writes its CA here when it starts: check that the scheduler pod runs "
                "(kubectl -n <namespace> logs deploy/<release>-scheduler -c tessera-scheduler)");
        }
      }
    }
  };
  for (const Json& m : c.in.mutating_webhooks) inspect(m, "mutatingwebhookconfiguration");
  for (const Json& v : c.in.validating_webhooks) inspect(v, "validatingwebhookconfiguration");
  if (found == 0 && tessera_installed) {
    c.Add("webhook-unreachable", "error", "tessera",
          "Tessera is installed but its admission webhook is not: a GPU pod that does not name the scheduler goes "
          "to the default scheduler with no isolation",
          "helm upgrade tessera deploy/helm/tessera --reuse-values --set webhook.enabled=true");
  }
  if (c.in.webhook_probed && !c.in.webhook_probe_error.empty() && found > 0) {
    c.Add("webhook-unreachable", "error", "tessera",
          "the API server could not call the webhook for a GPU pod (dry run): " + c.in.webhook_probe_error +
              ". GPU pods are refused until it answers",
          "check the scheduler pods and their Service endpoints (kubectl get endpointslices -l "
          "kubernetes.io/service-name=<release>-scheduler); a network policy must let the API server reach port "
          "9444");
  }
}

}  // namespace

bool PodAsksForGpu(const Json& pod, const DoctorOptions& opt) {
  for (const char* list : {"containers", "initContainers"}) {
    const Json& ctrs = At(pod, {"spec", list});
    if (!ctrs.is_array()) continue;
    for (const Json& ct : ctrs) {
      for (const char* kind : {"limits", "requests"}) {
        const Json& r = At(ct, {"resources", kind});
        if (!r.is_object()) continue;
        for (const std::string& name : opt.gpu_resources) {
          if (r.contains(name)) return true;
        }
      }
    }
  }
  return false;
}

bool IsGpuNode(const Json& node, const DoctorOptions& opt) {
  for (const auto& [k, v] : opt.gpu_node_labels) {
    if (LabelOf(node, k) == v) return true;
  }
  if (!Anno(node, "tessera.dev/gpus").empty()) return true;
  // Another device plugin (NVIDIA's own) advertising GPUs: still a GPU node.
  const Json& cap = At(node, {"status", "capacity"});
  if (cap.is_object() && !opt.gpu_resources.empty() && cap.contains(opt.gpu_resources[0])) {
    const Json& q = cap[opt.gpu_resources[0]];
    return q.is_string() && q.get<std::string>() != "0";
  }
  return false;
}

bool IsTesseraComponent(const Json& obj, const std::string& component) {
  return LabelOf(obj, "app.kubernetes.io/component") == component &&
         (LabelOf(obj, "app.kubernetes.io/part-of") == "tessera" || LabelOf(obj, "app.kubernetes.io/name") == "tessera");
}

std::string ImageTag(const std::string& image) {
  std::string ref = image.substr(0, image.find('@'));
  size_t slash = ref.rfind('/');
  size_t colon = ref.rfind(':');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) return "";
  return ref.substr(colon + 1);
}

std::vector<Finding> RunChecks(const DoctorInput& in, const DoctorOptions& opt) {
  std::vector<Finding> out;
  Context c{in, opt, &out, {}, {}};
  for (const Json& p : in.pods) {
    if (IsTesseraComponent(p, "agent") && !Terminated(p)) c.agent_pods_by_node[Str(p, {"spec", "nodeName"})].push_back(&p);
  }
  for (const Json& ds : in.daemonsets) {
    if (IsTesseraComponent(ds, "agent")) c.agent_daemonsets.push_back(&ds);
  }
  CheckNodes(c);
  CheckPods(c);
  CheckProcesses(c);
  CheckVersions(c);
  CheckWebhooks(c);
  return out;
}

}  // namespace tessera::cli
