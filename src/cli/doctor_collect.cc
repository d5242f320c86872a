#include "cli/doctor_collect.h"

#include "kube/file_read.h"

#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>

namespace tessera::cli {
namespace {

// A /proc entry read whole, at most max_bytes (empty when unreadable or larger: the check is skipped).
std::string ReadFile(const std::string& path, size_t max_bytes) {
  std::string out, err;
  kube::ReadFileCapped(path, max_bytes, "a /proc entry", &out, &err);
  return out;
}

// Whether the file holds needle, read in chunks (a large process's maps need not be held whole), at most
// max_bytes of it.
bool FileContains(const std::string& path, std::string_view needle, size_t max_bytes) {
  std::ifstream f(path, std::ios::binary);
  std::string window;
  char buf[1 << 16];
  size_t seen = 0;
  while (seen < max_bytes && (f.read(buf, sizeof(buf)) || f.gcount() > 0)) {
    seen += static_cast<size_t>(f.gcount());
    window.append(buf, static_cast<size_t>(f.gcount()));
    if (window.find(needle) != std::string::npos) return true;
    // Keep the tail a match could start in.
    if (window.size() > needle.size()) window.erase(0, window.size() - needle.size());
  }
  return false;
}

bool AllDigits(const char* s) {
  if (!*s) return false;
  for (; *s; ++s) {
    if (!std::isdigit(static_cast<unsigned char>(*s))) return false;
  }
  return true;
}

// GET a collection path; items or an error.
kube::Result<std::vector<Json>> ListPath(kube::Client& client, const std::string& path) {
  auto r = client.Request("GET", path);
  if (!r) return r.error();
  std::vector<Json> items;
  if (r->contains("items") && (*r)["items"].is_array()) {
    for (Json& it : (*r)["items"]) items.push_back(std::move(it));
  }
  return items;
}

}  // namespace

void ParseCgroup(const std::string& text, std::string* pod_uid, std::string* container_id) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t at = line.find("pod");
    // "kubepods/burstable/pod<uid>/<cid>" or "kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<cid>.scope"
    while (at != std::string::npos) {
      std::string uid;
      size_t i = at + 3;
      while (i < line.size() && (std::isxdigit(static_cast<unsigned char>(line[i])) || line[i] == '-' || line[i] == '_')) {
        uid += line[i] == '_' ? '-' : line[i];
        ++i;
      }
      if (uid.size() == 36 && line.find("kubepods") != std::string::npos) {
        *pod_uid = uid;
        std::string rest = line.substr(i);
        size_t slash = rest.rfind('/');
        std::string last = slash == std::string::npos ? "" : rest.substr(slash + 1);
        for (const char* pre : {"cri-containerd-", "crio-", "docker-", "containerd-"}) {
          if (last.rfind(pre, 0) == 0) last = last.substr(std::string(pre).size());
        }
        if (last.size() > 6 && last.compare(last.size() - 6, 6, ".scope") == 0) last.resize(last.size() - 6);
        if (last.size() == 64) *container_id = last;
        return;
      }
      at = line.find("pod", at + 3);
    }
  }
}

std::vector<GpuProcess> ScanGpuProcesses(const std::string& proc_root, const std::string& device_prefix,
                                         std::vector<std::string>* warnings) {
  std::vector<GpuProcess> out;
  DIR* d = ::opendir(proc_root.c_str());
  if (!d) {
    warnings->push_back("cannot read " + proc_root + ": process checks skipped");
    return out;
  }
  int unreadable = 0;
  while (struct dirent* e = ::readdir(d)) {
    if (!AllDigits(e->d_name)) continue;
    std::string dir = proc_root + "/" + e->d_name;
    DIR* fds = ::opendir((dir + "/fd").c_str());
    if (!fds) {
      ++unreadable;
      continue;
    }
    bool gpu = false;
    while (struct dirent* f = ::readdir(fds)) {
      if (!AllDigits(f->d_name)) continue;
      char target[512];
      ssize_t n = ::readlink((dir + "/fd/" + f->d_name).c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = 0;
      if (std::string(target).rfind(device_prefix, 0) == 0) {
        gpu = true;
        break;
      }
    }
    ::closedir(fds);
    if (!gpu) continue;
    GpuProcess p;
    p.pid = std::atoi(e->d_name);
    p.comm = ReadFile(dir + "/comm", 4096);
    while (!p.comm.empty() && p.comm.back() == '\n') p.comm.pop_back();
    p.shim_loaded = FileContains(dir + "/maps", "libtessera.so", size_t{256} << 20);
    ParseCgroup(ReadFile(dir + "/cgroup", size_t{64} << 10), &p.pod_uid, &p.container_id);
    out.push_back(std::move(p));
  }
  ::closedir(d);
  if (unreadable > 0 && ::geteuid() != 0) {
    warnings->push_back(std::to_string(unreadable) + " processes could not be inspected: run as root for the "
                        "container-without-shim check");
  }
  return out;
}

kube::Status CollectCluster(kube::Client& client, const CollectOptions& opt, DoctorInput* in,
                            std::vector<std::string>* warnings) {
  in->now_unix = static_cast<int64_t>(::time(nullptr));
  // Nodes and pods are the heart of every check: failing to read them is an error, not a warning.
  auto nodes = client.List(kube::kNodes, "");
  if (!nodes) return nodes.error();
  for (Json& n : nodes->items) {
    if (opt.node.empty() || kube::Name(n) == opt.node) in->nodes.push_back(std::move(n));
  }
  if (!opt.node.empty() && in->nodes.empty()) {
    return kube::Error{404, "NotFound", "node \"" + opt.node + "\" does not exist"};
  }
  kube::ListOptions lo;
  if (!opt.node.empty()) lo.field_selector = "spec.nodeName=" + opt.node;
  auto pods = client.List(kube::kPods, "", lo);
  if (!pods) return pods.error();
  in->pods = std::move(pods->items);
  // With --node the agent pods of other nodes are not needed, but the Tessera workloads are (versions).
  const std::string sel = "?labelSelector=app.kubernetes.io%2Fpart-of%3Dtessera";
  if (!opt.node.empty()) {
    auto comp = ListPath(client, "/api/v1/pods" + sel);
    if (comp) {
      std::set<std::string> have;
      for (const Json& p : in->pods) have.insert(kube::Uid(p));
      for (Json& p : *comp) {
        if (!have.count(kube::Uid(p)) && IsTesseraComponent(p, "scheduler")) in->pods.push_back(std::move(p));
      }
    }
  }
  auto ds = ListPath(client, "/apis/apps/v1/daemonsets" + sel);
  if (ds) in->daemonsets = std::move(*ds);
  else warnings->push_back("daemonsets: " + ds.error().ToString());
  auto deps = ListPath(client, "/apis/apps/v1/deployments" + sel);
  if (deps) in->deployments = std::move(*deps);
  else warnings->push_back("deployments: " + deps.error().ToString());
  auto mw = client.List(kube::kMutatingWebhooks, "");
  if (mw) in->mutating_webhooks = std::move(mw->items);
  else warnings->push_back("mutatingwebhookconfigurations: " + mw.error().ToString());
  auto vw = client.List(kube::kValidatingWebhooks, "");
  if (vw) in->validating_webhooks = std::move(vw->items);
  else warnings->push_back("validatingwebhookconfigurations: " + vw.error().ToString());

  // The Services the webhooks call.
  std::set<std::pair<std::string, std::string>> refs;
  for (const auto* list : {&in->mutating_webhooks, &in->validating_webhooks}) {
    for (const Json& cfg : *list) {
      if (!cfg.contains("webhooks") || !cfg["webhooks"].is_array()) continue;
      for (const Json& h : cfg["webhooks"]) {
        const Json& svc = h.value("clientConfig", Json::object()).value("service", Json());
        if (svc.is_object()) refs.insert({svc.value("namespace", ""), svc.value("name", "")});
      }
    }
  }
  for (const auto& [ns, name] : refs) {
    auto s = client.Request("GET", "/api/v1/namespaces/" + ns + "/services/" + name);
    if (s) in->services.push_back(std::move(*s));
    else if (!s.error().NotFound()) warnings->push_back("service " + ns + "/" + name + ": " + s.error().ToString());
  }

  if (opt.probe_webhook) {
    // What a HAMi manifest looks like: a GPU limit and no scheduler name. The API server runs the webhooks
    // on it and persists nothing (dryRun=All).
    Json pod = {{"apiVersion", "v1"},
                {"kind", "Pod"},
                {"metadata", {{"name", "tessera-doctor-probe"}, {"namespace", opt.probe_namespace}}},
                {"spec",
                 {{"containers",
                   {{{"name", "probe"},
                     {"image", "registry.k8s.io/pause:3.10"},
                     {"resources", {{"limits", {{opt.gpu_resource, "1"}}}}}}}}}}};
    auto r = client.Request("POST", "/api/v1/namespaces/" + opt.probe_namespace + "/pods?dryRun=All", pod.dump());
    in->webhook_probed = true;
    if (!r) {
      const std::string& msg = r.error().message;
      // A denial means the webhook answered; only a failed call means it is unreachable.
      if (msg.find("failed calling webhook") != std::string::npos) {
        in->webhook_probe_error = msg;
      } else if (r.error().http_status == 0) {
        return r.error();
      }
    }
  }
  return kube::Ok{};
}

}  // namespace tessera::cli
