// tessera scheduler: the kube-scheduler extender, admission webhook and metrics in one process.
// Flags only; the work is in src/scheduler (Scheduler::Run).
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <thread>

#include "cli/commands.h"
#ifdef TESSERA_HAVE_SCHEDULER
#include "scheduler/scheduler.h"
#endif

namespace tessera::cli {
#ifndef TESSERA_HAVE_SCHEDULER
int SchedulerCmd(int, char**) {
  std::fprintf(stderr, "tessera scheduler: not available in this build (tessera_scheduler needs tessera_placement)\n");
  return 1;
}
#else
namespace {

bool SplitHostPort(const std::string& s, std::string* host, int* port) {
  auto c = s.rfind(':');
  if (c == std::string::npos) return false;
  *host = s.substr(0, c);
  if (host->empty()) *host = "0.0.0.0";
  try {
    *port = std::stoi(s.substr(c + 1));
  } catch (...) {
    return false;
  }
  return *port > 0 && *port < 65536;
}

}  // namespace

int SchedulerCmd(int argc, char** argv) {
  scheduler::SchedulerOptions o;
  CLI::App app{"tessera scheduler: kube-scheduler extender (filter/prioritize/bind), admission webhook and metrics"};
  std::string listen = "0.0.0.0:8443";
  std::string node_policy = "binpack", gpu_policy = "spread";
  std::string webhook_service;
  std::string sans;
  app.add_option("--kubeconfig", o.kubeconfig, "kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)");
  std::string mode = "extender";
  app.add_option("--mode", mode,
                 "extender (the extender verbs + webhooks) or dra (webhooks only: GPU requests become ResourceClaims of "
                 "driver gpu.tessera.io that kube-scheduler allocates)")
      ->capture_default_str()
      ->check(CLI::IsMember({"extender", "dra"}));
  app.add_option("--dra-device-class", o.dra_options.device_class,
                 "with --mode=dra: the DeviceClass the generated claims name")
      ->capture_default_str();
  app.add_option("--dra-scheduler-name", o.dra_options.scheduler_name,
                 "with --mode=dra: the schedulerName the webhook sets on GPU pods (a kube-scheduler profile)")
      ->capture_default_str();
  app.add_option("--listen", listen, "host:port of the HTTPS webhook endpoint (/mutate, /validate)")->capture_default_str();
  std::string extender_listen = o.extender_host + ":" + std::to_string(o.extender_port);
  app.add_option("--extender-listen", extender_listen,
                 "host:port of the HTTPS extender endpoint (/filter, /prioritize, /bind), for kube-scheduler only: "
                 "loopback, or any address with --extender-client-ca")
      ->capture_default_str();
  app.add_option("--extender-client-ca", o.extender_client_ca,
                 "CA file (PEM): the extender requires client certificates it signed (mutual TLS)");
  app.add_option("--extra-scheduler-names", o.extra_scheduler_names,
                 "comma-separated schedulerNames besides --scheduler-name whose pods /bind accepts (kube-scheduler "
                 "profiles sharing the extender)")
      ->delimiter(',');
  app.add_option("--metrics-token-file", o.metrics_token_file,
                 "file holding a bearer token: /metrics then needs \"Authorization: Bearer <token>\" (re-read on change)");
  app.add_option("--metrics-client-ca", o.metrics_client_ca,
                 "CA file (PEM): serve metrics over TLS (the serving certificate) and require client certificates it signed");
  app.add_option("--max-connections", o.limits.max_connections, "open TLS connections per server (0: no limit)")
      ->capture_default_str()->check(CLI::Range(0, 1000000));
  app.add_option("--max-connections-per-peer", o.limits.max_per_peer,
                 "open TLS connections from one IP address to the webhook or metrics server (0: no limit)")
      ->capture_default_str()->check(CLI::Range(0, 1000000));
  app.add_option("--request-deadline", o.limits.request_deadline_s,
                 "seconds a TLS client has to send its whole request (handshake, headers, body)")
      ->capture_default_str()->check(CLI::Range(0.1, 600.0));
  app.add_option("--metrics-port", o.metrics_port, "port of the Prometheus metrics endpoint (plain HTTP)")
      ->capture_default_str()->check(CLI::Range(1, 65535));
  app.add_option("--metrics-address", o.metrics_host, "address the metrics endpoint binds")->capture_default_str();
  app.add_option("--tls-cert", o.tls_cert, "serving certificate (PEM); created self-signed if absent")->capture_default_str();
  app.add_option("--tls-key", o.tls_key, "its private key (PEM); created if absent")->capture_default_str();
  app.add_option("--tls-san", sans, "comma-separated DNS names / IPs for a generated certificate")
      ->default_str("localhost,127.0.0.1");
  app.add_option("--ca-bundle-out", o.ca_bundle_out, "write the CA bundle (PEM) here for kube-scheduler's caFile");
  app.add_option("--scheduler-name", o.scheduler_name, "schedulerName the webhook sets on GPU pods (hami-scheduler and default-scheduler are rewritten to it)")
      ->capture_default_str();
  app.add_option("--resource-gpu", o.parse.names.gpu, "resource name: GPUs per container")->capture_default_str();
  app.add_option("--resource-memory", o.parse.names.memory, "resource name: GPU memory MiB per GPU")->capture_default_str();
  app.add_option("--resource-memory-percentage", o.parse.names.memory_percent, "resource name: GPU memory % per GPU")
      ->capture_default_str();
  app.add_option("--resource-cores", o.parse.names.cores, "resource name: GPU cores % per GPU")->capture_default_str();
  app.add_option("--resource-priority", o.parse.names.priority, "resource name: task priority")->capture_default_str();
  app.add_option("--node-policy", node_policy,
                 "default node policy, one or a comma list of: " + scheduler::AllowedPolicyNames(scheduler::PolicyLevel::kNode))
      ->capture_default_str();
  app.add_option("--gpu-policy", gpu_policy,
                 "default GPU policy inside a node, one or a comma list of: " +
                     scheduler::AllowedPolicyNames(scheduler::PolicyLevel::kGpu))
      ->capture_default_str();
  app.add_flag("--spatial-share-namespaces", o.parse.spatial_share_namespaces,
               "spatial pods of different namespaces may share a GPU when each allows it (default for pods without "
               "tessera.dev/spatial-share-namespaces)");
  app.add_option("--leader-elect", o.leader_elect, "elect a leader on a Lease (only the leader binds)")->capture_default_str();
  app.add_flag("--follow-lease", o.leader.follow,
               "do not elect: report leadership from the Lease another component holds (e.g. the kube-scheduler in this "
               "pod, identity <leader-id>_<uuid>); implies --leader-elect=false");
  app.add_option("--lease-namespace", o.leader.ns, "namespace of the Lease")->capture_default_str();
  app.add_option("--lease-name", o.leader.name, "name of the Lease")->capture_default_str();
  app.add_option("--leader-id", o.leader.identity, "this replica's identity (default: hostname)");
  app.add_option("--lease-duration", o.leader.lease_duration_s, "seconds")->capture_default_str()->check(CLI::Range(1.0, 3600.0));
  app.add_option("--renew-deadline", o.leader.renew_deadline_s, "seconds")->capture_default_str()->check(CLI::Range(0.5, 3600.0));
  app.add_option("--retry-period", o.leader.retry_period_s, "seconds")->capture_default_str()->check(CLI::Range(0.1, 600.0));
  app.add_flag("--register-webhooks", o.register_webhooks, "create/update the Mutating/ValidatingWebhookConfigurations (caBundle = our certificate)");
  app.add_option("--webhook-name", o.webhook.name, "name of both webhook configurations")->capture_default_str();
  app.add_option("--webhook-url", o.webhook.url, "base URL the API server calls (e.g. https://127.0.0.1:8443)");
  app.add_option("--webhook-service", webhook_service, "namespace/name[:port] of the Service in front of us (instead of --webhook-url)");
  app.add_option("--node-label-selector", o.node_label_selector, "only Nodes matching this label selector are GPU candidates");
  app.add_option("--webhook-namespace-selector", o.webhook.namespace_selector, "key=value: the webhooks apply only to namespaces with this label")
      ->check([](const std::string& v) { return v.find('=') == std::string::npos ? std::string("expected key=value") : std::string(); });
  app.add_option("--webhook-exempt-namespace", o.webhook.exempt_namespace,
                 "namespace whose pods may set NVIDIA_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES, LD_PRELOAD, TESSERA_* "
                 "(Tessera's own; empty: none)");
  app.add_option("--webhook-trusted-users", o.webhook.trusted_users,
                 "usernames that may change Tessera's pod annotations on UPDATE (the scheduler's and the agent's "
                 "identities, e.g. system:serviceaccount:<ns>:<name>); comma-separated or repeated")
      ->delimiter(',')
      ->capture_default_str();
  bool no_hami = false;
  app.add_flag("--no-hami-metric-names", no_hami, "drop HAMi's camelCase gauges (GPUDevice*, vGPU*, QuotaUsed) from /metrics");
  app.add_option("--threads", o.threads, "HTTPS worker threads")->capture_default_str()->check(CLI::Range(2, 1024));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (o.leader.follow) o.leader_elect = false;
  o.dra = mode == "dra";
  if (std::string e = scheduler::TrustedUsersError(o.webhook.trusted_users); !e.empty()) {
    std::fprintf(stderr, "tessera scheduler: %s\n", e.c_str());
    return 2;
  }
  if (!SplitHostPort(listen, &o.listen_host, &o.listen_port)) {
    std::fprintf(stderr, "tessera scheduler: --listen=%s: expected host:port with port 1..65535\n", listen.c_str());
    return 2;
  }
  if (!SplitHostPort(extender_listen, &o.extender_host, &o.extender_port)) {
    std::fprintf(stderr, "tessera scheduler: --extender-listen=%s: expected host:port with port 1..65535\n",
                 extender_listen.c_str());
    return 2;
  }
  if (std::string e = scheduler::Scheduler::OptionsError(o); !e.empty()) {
    std::fprintf(stderr, "tessera scheduler: %s\n", e.c_str());
    return 2;
  }
  auto np = scheduler::ParsePolicyChoice("--node-policy", node_policy, scheduler::PolicyLevel::kNode,
                                         o.parse.default_node_policy);
  if (!np) {
    std::fprintf(stderr, "tessera scheduler: %s\n", np.error().message.c_str());
    return 2;
  }
  auto gp = scheduler::ParsePolicyChoice("--gpu-policy", gpu_policy, scheduler::PolicyLevel::kGpu,
                                         o.parse.default_gpu_policy);
  if (!gp) {
    std::fprintf(stderr, "tessera scheduler: %s\n", gp.error().message.c_str());
    return 2;
  }
  o.hami_metric_names = !no_hami;
  o.parse.default_node_policy = *np;
  o.parse.default_gpu_policy = *gp;
  if (!sans.empty()) {
    o.tls_sans.clear();
    std::stringstream ss(sans);
    std::string s;
    while (std::getline(ss, s, ',')) if (!s.empty()) o.tls_sans.push_back(s);
  }
  if (!webhook_service.empty()) {
    auto slash = webhook_service.find('/');
    if (slash == std::string::npos) {
      std::fprintf(stderr, "tessera scheduler: --webhook-service=%s: expected namespace/name[:port]\n", webhook_service.c_str());
      return 2;
    }
    o.webhook.service_namespace = webhook_service.substr(0, slash);
    std::string rest = webhook_service.substr(slash + 1);
    if (auto c = rest.find(':'); c != std::string::npos) {
      o.webhook.service_port = std::atoi(rest.c_str() + c + 1);
      rest = rest.substr(0, c);
    }
    o.webhook.service_name = rest;
  }
  if (o.register_webhooks && o.webhook.url.empty() && o.webhook.service_name.empty()) {
    std::fprintf(stderr, "tessera scheduler: --register-webhooks needs --webhook-url or --webhook-service\n");
    return 2;
  }
  if (o.scheduler_name == "hami-scheduler" || o.scheduler_name == "default-scheduler") {
    std::fprintf(stderr, "tessera scheduler: --scheduler-name=%s is rewritten by the webhook; pick our own name (default tessera-scheduler)\n",
                 o.scheduler_name.c_str());
    return 2;
  }

  // Signals go to a dedicated thread so Shutdown() runs in normal context.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  scheduler::Scheduler s(o);
  std::thread sig([&] {
    int got = 0;
    sigwait(&set, &got);
    s.Shutdown();
  });
  int rc = s.Run();
  if (sig.joinable()) {
    pthread_kill(sig.native_handle(), SIGTERM);
    sig.join();
  }
  return rc;
}
#endif  // TESSERA_HAVE_SCHEDULER

}  // namespace tessera::cli
