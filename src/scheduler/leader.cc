#include "scheduler/leader.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace tessera::scheduler {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string NowMicroTime() {
  auto now = std::chrono::system_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000;
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  char b[40], out[64];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", std::gmtime(&t));
  std::snprintf(out, sizeof out, "%s.%06lldZ", b, static_cast<long long>(us));
  return out;
}

LeaderElector::LeaderElector(std::shared_ptr<kube::Client> client, LeaderOptions opts,
                             std::function<void(bool)> on_change)
    : client_(std::move(client)), opts_(std::move(opts)), on_change_(std::move(on_change)) {
  if (opts_.identity.empty()) {
    char h[256] = {0};
    gethostname(h, sizeof h - 1);
    opts_.identity = h;
  }
}

LeaderElector::~LeaderElector() { Stop(); }

void LeaderElector::SetLeader(bool v) {
  if (leader_.exchange(v) != v) {
    std::fprintf(stderr, "tessera scheduler: %s leadership (lease %s/%s, identity %s)\n", v ? "acquired" : "lost",
                 opts_.ns.c_str(), opts_.name.c_str(), opts_.identity.c_str());
    if (on_change_) on_change_(v);
  }
}

std::string LeaderElector::holder() const {
  std::lock_guard<std::mutex> l(mu_);
  return observed_holder_;
}

bool LeaderElector::Observe(const std::string& holder, const std::string& renew, int duration_s) {
  std::lock_guard<std::mutex> l(mu_);
  if (holder != observed_holder_ || renew != observed_renew_ || observed_at_ == Clock::time_point{}) {
    observed_holder_ = holder;
    observed_renew_ = renew;
    observed_at_ = Clock::now();
  }
  return Clock::now() > observed_at_ + std::chrono::seconds(duration_s);
}

bool LeaderElector::TryAcquireOrRenew() {
  std::string now = NowMicroTime();
  int duration = static_cast<int>(std::ceil(opts_.lease_duration_s));
  auto got = client_->Get(kube::kLeases, opts_.ns, opts_.name);
  if (!got) {
    if (!got.error().NotFound()) return false;
    json lease = {{"apiVersion", "coordination.k8s.io/v1"},
                  {"kind", "Lease"},
                  {"metadata", {{"name", opts_.name}, {"namespace", opts_.ns}}},
                  {"spec",
                   {{"holderIdentity", opts_.identity},
                    {"leaseDurationSeconds", duration},
                    {"acquireTime", now},
                    {"renewTime", now},
                    {"leaseTransitions", 0}}}};
    auto c = client_->Create(kube::kLeases, opts_.ns, lease);
    if (!c) return false;
    std::lock_guard<std::mutex> l(mu_);
    observed_holder_ = opts_.identity;
    observed_renew_ = now;
    observed_rv_ = kube::ResourceVersionOf(*c);
    observed_at_ = Clock::now();
    return true;
  }
  json lease = *got;
  json& spec = lease["spec"];
  std::string holder = spec.value("holderIdentity", "");
  std::string renew = spec.value("renewTime", "");
  int their_duration = spec.value("leaseDurationSeconds", duration);
  bool expired = Observe(holder, renew, their_duration);
  if (!holder.empty() && holder != opts_.identity && !expired) return false;
  if (holder != opts_.identity) {
    spec["acquireTime"] = now;
    spec["leaseTransitions"] = spec.value("leaseTransitions", 0) + 1;
  }
  spec["holderIdentity"] = opts_.identity;
  spec["leaseDurationSeconds"] = duration;
  spec["renewTime"] = now;
  auto u = client_->Update(kube::kLeases, opts_.ns, opts_.name, lease);  // resourceVersion: conditional
  if (!u) return false;
  std::lock_guard<std::mutex> l(mu_);
  observed_holder_ = opts_.identity;
  observed_renew_ = now;
  observed_rv_ = kube::ResourceVersionOf(*u);
  observed_at_ = Clock::now();
  return true;
}

bool LeaderElector::ObserveHeld() {
  auto got = client_->Get(kube::kLeases, opts_.ns, opts_.name);
  if (!got) return false;
  const json& spec = (*got)["spec"];
  std::string holder = spec.value("holderIdentity", "");
  std::string renew = spec.value("renewTime", "");
  int duration = spec.value("leaseDurationSeconds", static_cast<int>(std::ceil(opts_.lease_duration_s)));
  bool expired = Observe(holder, renew, duration);
  bool ours = holder == opts_.identity || holder.rfind(opts_.identity + "_", 0) == 0;
  return ours && !expired;
}

void LeaderElector::Start() {
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void LeaderElector::Loop() {
  while (!stop_) {
    if (opts_.follow) {
      SetLeader(ObserveHeld());
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, std::chrono::duration<double>(opts_.retry_period_s), [&] { return stop_.load(); });
      continue;
    }
    bool ok = TryAcquireOrRenew();
    auto now = Clock::now();
    if (ok) {
      last_renew_ = now;
      SetLeader(true);
    } else if (leader_.load() &&
               now - last_renew_ > std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(opts_.renew_deadline_s))) {
      SetLeader(false);
    } else if (!leader_.load()) {
      SetLeader(false);
    }
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::duration<double>(opts_.retry_period_s), [&] { return stop_.load(); });
  }
}

void LeaderElector::Stop() {
  if (stop_.exchange(true)) return;
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (leader_.load() && opts_.follow) {
    SetLeader(false);  // the Lease is not ours to release
  } else if (leader_.load()) {
    auto got = client_->Get(kube::kLeases, opts_.ns, opts_.name);
    if (got && (*got)["spec"].value("holderIdentity", "") == opts_.identity) {
      json lease = *got;
      lease["spec"]["holderIdentity"] = "";
      lease["spec"]["leaseDurationSeconds"] = 1;
      lease["spec"]["renewTime"] = NowMicroTime();
      (void)client_->Update(kube::kLeases, opts_.ns, opts_.name, lease);
    }
    SetLeader(false);
  }
}

}  // namespace tessera::scheduler
