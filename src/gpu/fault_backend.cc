#include "gpu/fault_backend.h"

#include <algorithm>
#include <sstream>

namespace tessera::gpu {

Status ParseFaultPlan(const std::string& text, FaultPlan* out) {
  FaultPlan plan;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos) {
      return Status::Error("fault plan: '" + item +
                           "' must be key=value (keys: init, discover, usage, wait, processes, hide)");
    }
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "hide") {
      std::stringstream vs(value);
      std::string uuid;
      while (std::getline(vs, uuid, ';')) {
        if (!uuid.empty()) plan.hidden.insert(uuid);
      }
      continue;
    }
    int* field = key == "init"       ? &plan.fail_init
                 : key == "discover" ? &plan.fail_discover
                 : key == "usage"    ? &plan.fail_usage
                 : key == "wait"     ? &plan.fail_wait
                 : key == "processes" ? &plan.fail_processes
                                     : nullptr;
    if (!field) {
      return Status::Error("fault plan: unknown key '" + key + "' (keys: init, discover, usage, wait, processes, hide)");
    }
    if (value.empty() || value.size() > 6 ||
        !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return Status::Error("fault plan: " + key + "='" + value + "' must be a count in [0, 999999]");
    }
    *field = std::stoi(value);
  }
  *out = std::move(plan);
  return Status::Ok();
}

FaultBackend::FaultBackend(std::unique_ptr<Backend> inner, FaultPlan plan)
    : inner_(std::move(inner)), plan_(std::move(plan)) {}

void FaultBackend::SetPlan(FaultPlan plan) {
  std::lock_guard<std::mutex> lock(mu_);
  plan_ = std::move(plan);
}

FaultPlan FaultBackend::plan() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plan_;
}

bool FaultBackend::Take(int FaultPlan::*counter) {
  std::lock_guard<std::mutex> lock(mu_);
  if (plan_.*counter <= 0) return false;
  --(plan_.*counter);
  return true;
}

Status FaultBackend::Init() {
  if (Take(&FaultPlan::fail_init)) return Status::Error("injected fault: Init failed");
  return inner_->Init();
}

Status FaultBackend::Discover(std::vector<GpuInfo>* out) {
  if (Take(&FaultPlan::fail_discover)) return Status::Error("injected fault: Discover failed");
  Status st = inner_->Discover(out);
  if (!st.ok()) return st;
  std::set<std::string> hidden;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hidden = plan_.hidden;
  }
  out->erase(
      std::remove_if(out->begin(), out->end(), [&](const GpuInfo& g) { return hidden.count(g.uuid) > 0; }),
      out->end());
  return Status::Ok();
}

Status FaultBackend::Usage(const std::string& uuid, GpuUsage* out) {
  if (Take(&FaultPlan::fail_usage)) return Status::Error("injected fault: Usage failed for " + uuid);
  return inner_->Usage(uuid, out);
}

Status FaultBackend::Processes(const std::string& uuid, std::vector<ProcessUsage>* out) {
  if (Take(&FaultPlan::fail_processes)) return Status::Error("injected fault: Processes failed for " + uuid);
  return inner_->Processes(uuid, out);
}

Status FaultBackend::WaitHealthEvent(std::chrono::milliseconds timeout, std::optional<HealthEvent>* event) {
  event->reset();
  if (Take(&FaultPlan::fail_wait)) return Status::Error("injected fault: event wait failed");
  return inner_->WaitHealthEvent(timeout, event);
}

}  // namespace tessera::gpu
