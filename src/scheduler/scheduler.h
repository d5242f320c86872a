// `tessera scheduler` as a library: wires the reflectors (Nodes, Pods, ResourceQuotas) into the
// ClusterView, the leader elector, the webhook on one HTTPS port, the extender on another (loopback or
// mutual TLS: only kube-scheduler may call it), and the metrics on a third, each behind a ServingGuard.
//
// cmd_scheduler.cc parses flags into SchedulerOptions and calls Run(), which blocks until Shutdown() (from
// a signal thread) and returns the process exit code. Tests construct it directly. Thread-safe where noted.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kube/client.h"
#include "kube/reflector.h"
#include "kube/serving.h"
#include "scheduler/extender.h"
#include "scheduler/leader.h"
#include "scheduler/metrics.h"
#include "scheduler/view.h"
#include "scheduler/webhook.h"

namespace httplib {
class Server;
}

namespace tessera::scheduler {

struct SchedulerOptions {
  std::string kubeconfig;                   // empty: $KUBECONFIG, in-cluster, ~/.kube/config
  std::string listen_host = "0.0.0.0";      // webhook (HTTPS): /mutate, /validate, /healthz
  int listen_port = 8443;
  // The extender verbs (/filter, /prioritize, /bind) on their own HTTPS port, for kube-scheduler only:
  // loopback (kube-scheduler in the same pod), or any address with mutual TLS (extender_client_ca).
  std::string extender_host = "127.0.0.1";
  int extender_port = 8444;
  std::string extender_client_ca;           // PEM CA file: clients must present a certificate it signed
  std::string metrics_host = "0.0.0.0";
  int metrics_port = 9395;
  std::string metrics_token_file;           // non-empty: /metrics needs "Authorization: Bearer <token>"
  std::string metrics_client_ca;            // non-empty: metrics over TLS, clients need a certificate it signed
  kube::ServingLimits limits;               // every server (webhook, extender, metrics)
  std::string tls_cert = "/var/run/tessera/tls.crt";
  std::string tls_key = "/var/run/tessera/tls.key";
  std::vector<std::string> tls_sans = {"localhost", "127.0.0.1"};
  std::string ca_bundle_out;                // also write the CA bundle here (for kube-scheduler's caFile)
  std::string scheduler_name = "tessera-scheduler";
  // Other spec.schedulerName values whose pods /bind accepts (kube-scheduler profiles sharing our extender).
  std::vector<std::string> extra_scheduler_names;
  ParseOptions parse;
  bool leader_elect = true;
  LeaderOptions leader;
  bool register_webhooks = false;           // create/update the webhook configurations at start-up
  WebhookRegistration webhook;
  int threads = 32;
  // Only Nodes matching this label selector are GPU candidates (empty: all). Lets several schedulers
  // partition one cluster, and keeps tests on a shared control plane apart.
  std::string node_label_selector;
  bool hami_metric_names = true;  // also export HAMi's camelCase gauges (dashboards keep working)
  // DRA mode (`--mode=dra`, Helm mode dra): only the webhooks (and metrics) are served; the mutating
  // webhook turns GPU requests into ResourceClaims (dra_claims.h) that kube-scheduler allocates. No
  // extender, no leader election, no Node/Pod/ResourceQuota watches: a ResourceSlice watch gives the GPU
  // kinds that percentages of memory are resolved against.
  bool dra = false;
  DraTranslateOptions dra_options;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions opts);
  ~Scheduler();
  int Run();        // blocks; 0 on clean shutdown, 1 if start-up failed
  void Shutdown();  // thread-safe, async-signal-unsafe (call from a normal thread)
  // True once listening and the view is synced (the /healthz answer).
  bool Ready() const { return ready_.load(); }
  // "" when the options are safe to serve, else why not, naming the flag (e.g. an extender reachable off
  // loopback without mutual TLS).
  static std::string OptionsError(const SchedulerOptions& o);

 private:
  SchedulerOptions opts_;
  std::shared_ptr<kube::Client> client_;
  std::unique_ptr<ClusterView> view_;
  Metrics metrics_;
  std::unique_ptr<LeaderElector> leader_;
  std::vector<std::unique_ptr<kube::Reflector>> reflectors_;
  struct DraSlices;  // DRA mode: the published GPU kinds
  std::shared_ptr<DraSlices> dra_slices_;
  std::unique_ptr<Extender> extender_;
  std::unique_ptr<Webhook> webhook_;
  std::unique_ptr<kube::ServingGuard> guard_;           // outlives the servers below
  std::unique_ptr<kube::ServingGuard> extender_guard_;  // no per-peer cap: one caller, kube-scheduler
  std::unique_ptr<httplib::Server> https_;
  std::unique_ptr<httplib::Server> extender_server_;
  std::unique_ptr<httplib::Server> metrics_server_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> last_call_ns_{0};  // steady_clock of the last extender call (trims wait for a lull)
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace tessera::scheduler
