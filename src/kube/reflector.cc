#include "kube/reflector.h"

#include <chrono>
#include <cstdio>

namespace tessera::kube {

Reflector::Reflector(std::shared_ptr<Client> client, Resource resource, ReflectorOptions opts,
                     ReflectorHandler handler)
    : client_(std::move(client)), resource_(resource), opts_(std::move(opts)), handler_(std::move(handler)) {
  auto wc = Client::Create(client_->config());
  watch_client_ = wc.ok() ? *wc : client_;
}

Reflector::~Reflector() { Stop(); }

void Reflector::Start() {
  stop_ = false;
  done_ = false;
  thread_ = std::thread([this] {
    Loop();
    std::lock_guard<std::mutex> l(mu_);
    done_ = true;
    cv_.notify_all();
  });
}

void Reflector::Stop() {
  stop_ = true;
  cv_.notify_all();
  if (!thread_.joinable()) return;
  // A stop can land between registering a watch and its socket connecting, where there is nothing to
  // shut down yet; keep knocking until the loop has noticed.
  std::unique_lock<std::mutex> l(mu_);
  while (!done_) {
    l.unlock();
    watch_client_->StopWatches();
    l.lock();
    cv_.wait_for(l, std::chrono::milliseconds(50), [&] { return done_; });
  }
  l.unlock();
  thread_.join();
}

bool Reflector::WaitSynced(double timeout_s) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, std::chrono::duration<double>(timeout_s), [&] { return synced_.load() || stop_.load(); });
  return synced_.load();
}

std::string Reflector::last_resource_version() const {
  std::lock_guard<std::mutex> l(mu_);
  return rv_;
}

bool Reflector::ListOnce(bool* retry_now) {
  *retry_now = false;
  ListOptions lo;
  lo.label_selector = opts_.label_selector;
  lo.field_selector = opts_.field_selector;
  lo.limit = opts_.page_size;
  auto res = client_->List(resource_, opts_.ns, lo);
  if (!res) {
    std::fprintf(stderr, "reflector %s: list failed: %s\n", resource_.plural, res.error().ToString().c_str());
    // 504 "Too large resource version": the API server already waited (about 3 s) for its watch cache to
    // catch up with etcd and gave up. Asking again at once is the way through; backing off only adds
    // our own wait to the server's.
    *retry_now = res.error().http_status == 504 &&
                 res.error().message.find("Too large resource version") != std::string::npos;
    return false;
  }
  if (handler_.on_replace) handler_.on_replace(res->items);
  {
    std::lock_guard<std::mutex> l(mu_);
    rv_ = res->resource_version;
    if (synced_) relists_.fetch_add(1);
    synced_ = true;
  }
  cv_.notify_all();
  return true;
}

void Reflector::Loop() {
  double backoff = opts_.retry_backoff_s;
  bool need_list = true;
  while (!stop_) {
    if (need_list) {
      bool retry_now = false;
      if (!ListOnce(&retry_now)) {
        if (retry_now) continue;
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait_for(l, std::chrono::duration<double>(backoff), [&] { return stop_.load(); });
        backoff = std::min(backoff * 2, 8.0);
        continue;
      }
      need_list = false;
    }
    WatchOptions wo;
    wo.label_selector = opts_.label_selector;
    wo.field_selector = opts_.field_selector;
    wo.resource_version = last_resource_version();
    wo.timeout_seconds = opts_.watch_timeout_seconds;
    bool gone = false;
    bool any_event = false;
    auto st = watch_client_->Watch(resource_, opts_.ns, wo, [&](const WatchEvent& ev) {
      if (stop_) return false;
      if (ev.type == EventType::kError) {
        // 410 Gone: our resourceVersion was compacted away; only a relist can recover the full state.
        gone = ev.object.value("code", 0) == 410;
        if (!gone)
          std::fprintf(stderr, "reflector %s: watch error: %s\n", resource_.plural, ev.object.dump().c_str());
        return false;
      }
      any_event = true;
      std::string rv = ResourceVersionOf(ev.object);
      if (ev.type != EventType::kBookmark && handler_.on_event) handler_.on_event(ev.type, ev.object);
      if (!rv.empty()) {
        std::lock_guard<std::mutex> l(mu_);
        rv_ = rv;
      }
      return true;
    });
    if (stop_) break;
    if (gone || (!st.ok() && st.error().Gone())) {
      need_list = true;
      continue;
    }
    if (!st.ok()) {
      std::fprintf(stderr, "reflector %s: watch failed: %s\n", resource_.plural, st.error().ToString().c_str());
      // A broken stream may have lost events we can't see: relist after a pause.
      need_list = true;
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, std::chrono::duration<double>(backoff), [&] { return stop_.load(); });
      backoff = std::min(backoff * 2, 8.0);
      continue;
    }
    if (any_event) backoff = opts_.retry_backoff_s;
    // A clean end (server-side timeout) resumes from the last resourceVersion without a relist.
  }
}

}  // namespace tessera::kube
