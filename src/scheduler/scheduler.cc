#include "scheduler/scheduler.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

#include "kube/resource_slice.h"
#include "scheduler/tls.h"

namespace tessera::scheduler {

using nlohmann::json;

namespace {

// Runs `fn` on the request body as JSON and times it under `verb`.
template <typename F>
void JsonHandler(Metrics* m, Metrics::Verb verb, const httplib::Request& req, httplib::Response& res, F fn) {
  auto t0 = std::chrono::steady_clock::now();
  json in;
  try {
    in = json::parse(req.body);
  } catch (const std::exception& e) {
    res.status = 400;
    res.set_content(json{{"error", std::string("request body is not JSON: ") + e.what()}}.dump(), "application/json");
    return;
  }
  json out = fn(in);
  res.set_content(out.dump(), "application/json");
  m->ObserveLatency(verb, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

// DRA mode: the GPU kinds the webhook resolves memory percentages against.
std::string DraKindsMetric(const std::vector<DraGpuKind>& kinds) {
  auto esc = [](const std::string& v) {
    std::string o;
    for (char c : v) {
      if (c == '\\' || c == '"') o += '\\';
      if (c == '\n') {
        o += "\\n";
        continue;
      }
      o += c;
    }
    return o;
  };
  std::string out =
      "# HELP tessera_dra_gpu_kind GPU kinds (model, memory) in ResourceSlices of gpu.tessera.io; the DRA webhook "
      "turns gpumem-percentage into memory per kind\n# TYPE tessera_dra_gpu_kind gauge\n";
  for (const auto& k : kinds)
    out += "tessera_dra_gpu_kind{model=\"" + esc(k.model) + "\",memory_mib=\"" + std::to_string(k.memory_mib) + "\"} 1\n";
  return out;
}

}  // namespace

namespace {
bool IsLoopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}
}  // namespace

// The GPU kinds of the gpu.tessera.io ResourceSlices (DRA mode), recomputed when a slice changes.
struct Scheduler::DraSlices {
  std::mutex mu;
  std::map<std::string, json> slices;  // by name
  std::vector<DraGpuKind> kinds;
  void Recompute() {
    std::vector<json> v;
    for (const auto& [_, s] : slices) v.push_back(s);
    kinds = DraGpuKinds(v);
  }
  void Replace(const std::vector<json>& items) {
    std::lock_guard<std::mutex> l(mu);
    slices.clear();
    for (const auto& s : items) slices[s["metadata"].value("name", "")] = s;
    Recompute();
  }
  void On(kube::EventType t, const json& s) {
    std::lock_guard<std::mutex> l(mu);
    const std::string name = s.contains("metadata") ? s["metadata"].value("name", "") : "";
    if (t == kube::EventType::kDeleted) slices.erase(name);
    else slices[name] = s;
    Recompute();
  }
  std::vector<DraGpuKind> Kinds() {
    std::lock_guard<std::mutex> l(mu);
    return kinds;
  }
  int64_t MaxMemoryMib() {
    std::lock_guard<std::mutex> l(mu);
    int64_t m = 0;
    for (const auto& k : kinds) m = std::max(m, k.memory_mib);
    return m;
  }
};

std::string Scheduler::OptionsError(const SchedulerOptions& o) {
  if (!IsLoopback(o.extender_host) && o.extender_client_ca.empty())
    return "--extender-listen=" + o.extender_host + ":" + std::to_string(o.extender_port) +
           " is reachable off this host, and anyone who reaches /bind can place pods: listen on loopback "
           "(127.0.0.1, kube-scheduler in the same pod) or require client certificates (--extender-client-ca)";
  if (o.extender_host == o.listen_host && o.extender_port == o.listen_port)
    return "--extender-listen and --listen are both " + o.listen_host + ":" + std::to_string(o.listen_port) +
           ": the extender needs its own port";
  if (std::string e = kube::ServingLimitsError(o.limits); !e.empty()) return e;
  return "";
}

Scheduler::Scheduler(SchedulerOptions opts) : opts_(std::move(opts)) {}

Scheduler::~Scheduler() { Shutdown(); }

void Scheduler::Shutdown() {
  stop_ = true;
  cv_.notify_all();
}

int Scheduler::Run() {
  // A few arenas are plenty for this workload and keep fragmentation (and RSS) bounded.
  mallopt(M_ARENA_MAX, 4);
  if (std::string e = OptionsError(opts_); !e.empty()) {
    std::fprintf(stderr, "tessera scheduler: %s\n", e.c_str());
    return 1;
  }
  auto cfg = kube::LoadDefaultConfig(opts_.kubeconfig);
  if (!cfg) {
    std::fprintf(stderr, "tessera scheduler: %s\n", cfg.error().ToString().c_str());
    return 1;
  }
  auto client = kube::Client::Create(*cfg);
  if (!client) {
    std::fprintf(stderr, "tessera scheduler: %s\n", client.error().ToString().c_str());
    return 1;
  }
  client_ = *client;
  auto cert = LoadOrCreateCert(opts_.tls_cert, opts_.tls_key, opts_.tls_sans);
  if (!cert) {
    std::fprintf(stderr, "tessera scheduler: %s\n", cert.error().ToString().c_str());
    return 1;
  }
  if (!opts_.ca_bundle_out.empty()) {
    std::ofstream f(opts_.ca_bundle_out, std::ios::trunc);
    f << cert->cert_pem;
    if (!f) {
      std::fprintf(stderr, "tessera scheduler: cannot write --ca-bundle-out %s\n", opts_.ca_bundle_out.c_str());
      return 1;
    }
  }

  view_ = std::make_unique<ClusterView>(opts_.parse);
  auto add_reflector = [&](kube::Resource r, const std::string& selector, void (ClusterView::*replace)(const std::vector<json>&),
                           void (ClusterView::*on)(kube::EventType, const json&)) {
    kube::ReflectorHandler h;
    ClusterView* v = view_.get();
    h.on_replace = [v, replace](const std::vector<json>& items) { (v->*replace)(items); };
    h.on_event = [v, on](kube::EventType t, const json& o) { (v->*on)(t, o); };
    kube::ReflectorOptions ro;
    ro.label_selector = selector;
    reflectors_.push_back(std::make_unique<kube::Reflector>(client_, r, ro, std::move(h)));
    reflectors_.back()->Start();
  };
  if (!opts_.dra) {
    add_reflector(kube::kNodes, opts_.node_label_selector, &ClusterView::ReplaceNodes, &ClusterView::OnNode);
    add_reflector(kube::kPods, "", &ClusterView::ReplacePods, &ClusterView::OnPod);
    add_reflector(kube::kResourceQuotas, "", &ClusterView::ReplaceQuotas, &ClusterView::OnQuota);
  } else {
    dra_slices_ = std::make_shared<DraSlices>();
    kube::ReflectorHandler h;
    auto ds = dra_slices_;
    h.on_replace = [ds](const std::vector<json>& items) { ds->Replace(items); };
    h.on_event = [ds](kube::EventType t, const json& o) { ds->On(t, o); };
    kube::ReflectorOptions ro;
    ro.field_selector = std::string("spec.driver=") + kube::kDraDriver;
    reflectors_.push_back(std::make_unique<kube::Reflector>(client_, kube::kResourceSlices, ro, std::move(h)));
    reflectors_.back()->Start();
  }

  if (opts_.dra) {
    metrics_.SetLeader(true);  // stateless: every replica serves
  } else if (opts_.leader_elect || opts_.leader.follow) {
    leader_ = std::make_unique<LeaderElector>(client_, opts_.leader, [this](bool v) { metrics_.SetLeader(v); });
  } else {
    metrics_.SetLeader(true);
  }
  ExtenderOptions eo;
  eo.parse = opts_.parse;
  eo.component = opts_.scheduler_name;
  eo.scheduler_names = {opts_.scheduler_name};
  for (const auto& n : opts_.extra_scheduler_names) eo.scheduler_names.push_back(n);
  // Binding waits for a synced view: a new leader must see every existing assignment first.
  auto can_bind = [this] {
    for (const auto& r : reflectors_)
      if (!r->Synced()) return false;
    // Following kube-scheduler's Lease, that kube-scheduler already decided it leads when it calls bind; our
    // read of the Lease may lag a takeover by a retry period, so it only feeds the metric, never refuses.
    return leader_ && !opts_.leader.follow ? leader_->IsLeader() : true;
  };
  extender_ = std::make_unique<Extender>(eo, view_.get(), client_, &metrics_, can_bind);
  WebhookOptions wo;
  wo.parse = opts_.parse;
  wo.scheduler_name = opts_.scheduler_name;
  wo.trusted_users = opts_.webhook.trusted_users;
  wo.exempt_namespace = opts_.webhook.exempt_namespace;
  wo.dra = opts_.dra;
  wo.dra_options = opts_.dra_options;
  ClusterView* v = view_.get();
  if (opts_.dra) {
    auto ds = dra_slices_;
    std::shared_ptr<kube::Client> c = client_;
    DraHooks hooks;
    hooks.gpu_kinds = [ds] { return ds->Kinds(); };
    hooks.ensure_template = [c](const std::string& ns, const json& t) -> kube::Status {
      auto r = c->Create(kube::kResourceClaimTemplates, ns, t);
      if (!r && !r.error().AlreadyExists()) return r.error();
      return kube::Ok{};
    };
    webhook_ = std::make_unique<Webhook>(wo, [ds] { return ds->MaxMemoryMib(); }, &metrics_, std::move(hooks));
  } else {
    webhook_ = std::make_unique<Webhook>(wo, [v] { return v->MaxGpuMemoryMib(); }, &metrics_);
  }

  guard_ = std::make_unique<kube::ServingGuard>(opts_.limits);
  kube::ServingLimits ext_limits = opts_.limits;
  ext_limits.max_per_peer = 0;  // its one caller (kube-scheduler) opens as many connections as it schedules in parallel
  extender_guard_ = std::make_unique<kube::ServingGuard>(ext_limits);
  int threads = opts_.threads;
  // httplib's default also sets SO_REUSEPORT, which would let a second scheduler share our port silently.
  auto reuse_addr_only = [](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  };
  auto make_tls = [&](const std::string& client_ca, const char* what) -> std::unique_ptr<httplib::Server> {
    auto srv = std::make_unique<httplib::SSLServer>(opts_.tls_cert.c_str(), opts_.tls_key.c_str(),
                                                    client_ca.empty() ? nullptr : client_ca.c_str());
    if (!srv->is_valid()) {
      std::fprintf(stderr, "tessera scheduler: %s: cannot load TLS certificate %s / key %s%s%s\n", what,
                   opts_.tls_cert.c_str(), opts_.tls_key.c_str(), client_ca.empty() ? "" : " / client CA ",
                   client_ca.c_str());
      return nullptr;
    }
    srv->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    srv->set_keep_alive_max_count(100000);
    srv->set_tcp_nodelay(true);
    srv->set_socket_options(reuse_addr_only);
    return srv;
  };
  https_ = make_tls("", "webhook (--listen)");
  if (!opts_.dra) extender_server_ = make_tls(opts_.extender_client_ca, "extender (--extender-listen)");
  if (!https_ || (!opts_.dra && !extender_server_)) return 1;
  guard_->Apply(static_cast<httplib::SSLServer&>(*https_));
  // The webhook answers every request with "Connection: close". A server that closes an idle keep-alive
  // connection races the API server reusing it: the API server's write then fails ("broken pipe"), it does not
  // retry a POST, and, failing closed, it refuses the pod (a 1,000-pod burst under CPU load: 60 failed
  // webhook calls, 48 of them broken pipe). One TLS handshake per admission is the price.
  https_->set_keep_alive_max_count(1);
  // Short: httplib only notices stop() between requests, so this bounds how long a shutdown waits on
  // idle kube-scheduler connections; a reconnect costs one TLS handshake.
  https_->set_keep_alive_timeout(2);
  if (extender_server_) {
    extender_guard_->Apply(static_cast<httplib::SSLServer&>(*extender_server_));
    extender_server_->set_keep_alive_timeout(2);
  }
  Metrics* m = &metrics_;
  Extender* ext = extender_.get();
  Webhook* wh = webhook_.get();
  std::atomic<int64_t>* last_call = &last_call_ns_;
  auto touch = [last_call](std::chrono::steady_clock::time_point t) {
    last_call->store(t.time_since_epoch().count(), std::memory_order_relaxed);
  };
  kube::ServingGuard* eg = extender_guard_.get();
  kube::ServingGuard* g = guard_.get();
  // The extender's verbs only on the extender's port: the webhook's port (behind a Service every pod can
  // reach) answers them 404.
  if (extender_server_) {
  extender_server_->Post("/filter", eg->Wrap([m, ext, touch](const httplib::Request& q, httplib::Response& r) {
    auto t0 = std::chrono::steady_clock::now();
    touch(t0);
    r.set_content(ext->FilterBody(q.body), "application/json");
    m->ObserveLatency(Metrics::kFilter, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }));
  extender_server_->Post("/prioritize", eg->Wrap([m, ext, touch](const httplib::Request& q, httplib::Response& r) {
    auto t0 = std::chrono::steady_clock::now();
    touch(t0);
    r.set_content(ext->PrioritizeBody(q.body), "application/json");
    m->ObserveLatency(Metrics::kPrioritize, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }));
  extender_server_->Post("/bind", eg->Wrap([m, ext, touch](const httplib::Request& q, httplib::Response& r) {
    touch(std::chrono::steady_clock::now());
    JsonHandler(m, Metrics::kBind, q, r, [ext](const json& in) { return ext->Bind(in); });
  }));
  }
  https_->Post("/mutate", g->Wrap([m, wh](const httplib::Request& q, httplib::Response& r) {
    JsonHandler(m, Metrics::kMutate, q, r, [wh](const json& in) { return wh->Mutate(in); });
  }));
  https_->Post("/validate", g->Wrap([m, wh](const httplib::Request& q, httplib::Response& r) {
    JsonHandler(m, Metrics::kValidate, q, r, [wh](const json& in) { return wh->Validate(in); });
  }));
  auto health = [this](const httplib::Request&, httplib::Response& r) {
    r.status = ready_ ? 200 : 503;
    r.set_content(ready_ ? "ok\n" : "syncing\n", "text/plain");
  };
  https_->Get("/healthz", g->Wrap(health));
  if (extender_server_) extender_server_->Get("/healthz", eg->Wrap(health));

  if (!opts_.metrics_token_file.empty()) guard_->RequireBearerToken(opts_.metrics_token_file);
  if (opts_.metrics_client_ca.empty()) {
    metrics_server_ = std::make_unique<httplib::Server>();
    metrics_server_->set_socket_options(reuse_addr_only);
    guard_->Apply(*metrics_server_);
  } else {
    metrics_server_ = make_tls(opts_.metrics_client_ca, "metrics (--metrics-client-ca)");
    if (!metrics_server_) return 1;
    guard_->Apply(static_cast<httplib::SSLServer&>(*metrics_server_));
  }
  bool hami = opts_.hami_metric_names;
  auto ds = dra_slices_;
  metrics_server_->Get("/metrics", g->Wrap([m, v, hami, ds](const httplib::Request&, httplib::Response& r) {
    std::string body = m->Render(*v, hami);
    if (ds) body += DraKindsMetric(ds->Kinds());
    r.set_content(body, "text/plain; version=0.0.4; charset=utf-8");
  }));
  metrics_server_->Get("/healthz", g->Wrap(health));

  if (!https_->bind_to_port(opts_.listen_host.c_str(), opts_.listen_port)) {
    std::fprintf(stderr, "tessera scheduler: cannot listen on %s:%d (--listen)\n", opts_.listen_host.c_str(),
                 opts_.listen_port);
    return 1;
  }
  if (extender_server_ && !extender_server_->bind_to_port(opts_.extender_host.c_str(), opts_.extender_port)) {
    std::fprintf(stderr, "tessera scheduler: cannot listen on %s:%d (--extender-listen)\n", opts_.extender_host.c_str(),
                 opts_.extender_port);
    return 1;
  }
  if (!metrics_server_->bind_to_port(opts_.metrics_host.c_str(), opts_.metrics_port)) {
    std::fprintf(stderr, "tessera scheduler: cannot listen on %s:%d (--metrics-port)\n", opts_.metrics_host.c_str(),
                 opts_.metrics_port);
    return 1;
  }
  std::thread https_thread([this] { https_->listen_after_bind(); });
  std::thread extender_thread([this] {
    if (extender_server_) extender_server_->listen_after_bind();
  });
  std::thread metrics_thread([this] { metrics_server_->listen_after_bind(); });

  for (auto& r : reflectors_) {
    while (!stop_ && !r->WaitSynced(1.0)) {
    }
  }
  if (opts_.register_webhooks && !stop_) {
    WebhookRegistration reg = opts_.webhook;
    reg.ca_bundle_pem = cert->cert_pem;
    reg.dra = opts_.dra;
    auto st = RegisterWebhooks(*client_, reg, opts_.parse.names);
    if (!st) std::fprintf(stderr, "tessera scheduler: registering webhooks: %s\n", st.error().ToString().c_str());
  }
  if (leader_) leader_->Start();
  ready_ = true;
  if (opts_.dra)
    std::fprintf(stderr,
                 "tessera scheduler: DRA mode: serving the webhook on https://%s:%d (GPU requests become ResourceClaims "
                 "of class %s for %s), metrics on :%d (%zu GPU kinds published)\n",
                 opts_.listen_host.c_str(), opts_.listen_port, opts_.dra_options.device_class.c_str(),
                 opts_.dra_options.scheduler_name.c_str(), opts_.metrics_port, dra_slices_->Kinds().size());
  else
    std::fprintf(stderr,
                 "tessera scheduler: serving the webhook on https://%s:%d, the extender on https://%s:%d%s, metrics on "
                 ":%d (%zu nodes, %zu pods)\n",
                 opts_.listen_host.c_str(), opts_.listen_port, opts_.extender_host.c_str(), opts_.extender_port,
                 opts_.extender_client_ca.empty() ? "" : " (client certificates required)", opts_.metrics_port,
                 view_->node_count(), view_->pod_count());
  {
    // Bursts of JSON on many HTTPS threads leave freed memory in per-thread malloc arenas; hand it back to
    // the OS now and then so the resident size tracks the live state (nodes, pods) rather than the peak.
    // Not in the middle of a burst: malloc_trim holds each arena's lock while it walks it (which can take
    // milliseconds with a large heap), stalling the extender calls that allocate meanwhile. So: every 10 s once 2 s
    // have passed without an extender call, and at the latest every 60 s.
    using Clock = std::chrono::steady_clock;
    std::unique_lock<std::mutex> l(mu_);
    auto last_trim = Clock::now();
    while (!cv_.wait_for(l, std::chrono::seconds(1), [this] { return stop_.load(); })) {
      auto now = Clock::now();
      bool idle = now - Clock::time_point(Clock::duration(last_call_ns_.load())) > std::chrono::seconds(2);
      if ((idle && now - last_trim >= std::chrono::seconds(10)) || now - last_trim >= std::chrono::seconds(60)) {
        malloc_trim(0);
        last_trim = Clock::now();
      }
    }
  }
  ready_ = false;
  if (leader_) leader_->Stop();
  https_->stop();
  if (extender_server_) extender_server_->stop();
  metrics_server_->stop();
  https_thread.join();
  extender_thread.join();
  metrics_thread.join();
  for (auto& r : reflectors_) r->Stop();
  return 0;
}

}  // namespace tessera::scheduler
