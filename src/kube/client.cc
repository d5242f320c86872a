#include "kube/client.h"

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <httplib.h>

#include <signal.h>

#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>

namespace tessera::kube {

struct Client::Conn {
  std::unique_ptr<httplib::ClientImpl> http;
  std::chrono::steady_clock::time_point returned;  // when it last went back to the pool
};

namespace {

std::string UrlEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

void AddQuery(std::string& path, const std::string& key, const std::string& value) {
  if (value.empty()) return;
  path += (path.find('?') == std::string::npos ? '?' : '&');
  path += key + "=" + UrlEncode(value);
}

// Turns an HTTP failure into an Error carrying the API server's Status reason and message.
Error HttpError(int status, const std::string& body, const std::string& what) {
  Error e{status, "", what};
  try {
    Json j = Json::parse(body);
    if (j.is_object() && j.value("kind", "") == "Status") {
      e.reason = j.value("reason", "");
      e.message = j.value("message", what);
      return e;
    }
  } catch (...) {
  }
  if (!body.empty()) e.message = what + ": " + body.substr(0, 512);
  return e;
}

X509_STORE* MakeStore(const std::string& pem) {
  X509_STORE* store = X509_STORE_new();
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, cert);
    X509_free(cert);
  }
  BIO_free(bio);
  return store;
}

std::string ReadTokenFile(const std::string& path) {
  // Tokens are a few KiB: at most 64 KiB is read, so a device named by mistake cannot fill memory.
  std::ifstream f(path, std::ios::binary);
  std::string t(size_t{64} << 10, '\0');
  f.read(t.data(), static_cast<std::streamsize>(t.size()));
  t.resize(static_cast<size_t>(f.gcount()));
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return t;
}

}  // namespace

std::string ResourcePath(const Resource& r, const std::string& ns, const std::string& name) {
  std::string p = r.api_prefix;
  if (r.namespaced && !ns.empty()) p += "/namespaces/" + ns;
  p += "/";
  p += r.plural;
  if (!name.empty()) p += "/" + name;
  return p;
}

const char* EventTypeName(EventType t) {
  switch (t) {
    case EventType::kAdded: return "ADDED";
    case EventType::kModified: return "MODIFIED";
    case EventType::kDeleted: return "DELETED";
    case EventType::kBookmark: return "BOOKMARK";
    case EventType::kError: return "ERROR";
  }
  return "?";
}

Result<WatchEvent> DecodeWatchEvent(const std::string& line) {
  Json j;
  try {
    j = Json::parse(line);
  } catch (const std::exception& e) {
    return Error{0, "Decode", std::string("watch event is not JSON: ") + e.what()};
  }
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string() || !j.contains("object"))
    return Error{0, "Decode", "watch event lacks type/object: " + line.substr(0, 200)};
  std::string t = j["type"];
  WatchEvent ev;
  if (t == "ADDED") ev.type = EventType::kAdded;
  else if (t == "MODIFIED") ev.type = EventType::kModified;
  else if (t == "DELETED") ev.type = EventType::kDeleted;
  else if (t == "BOOKMARK") ev.type = EventType::kBookmark;
  else if (t == "ERROR") ev.type = EventType::kError;
  else return Error{0, "Decode", "unknown watch event type \"" + t + "\""};
  ev.object = std::move(j["object"]);
  return ev;
}

Result<std::shared_ptr<Client>> Client::Create(const Config& config) {
  if (config.server.empty()) return Error{0, "Config", "no API server address"};
  // OpenSSL writes to sockets with write(2): a connection the API server has closed would kill the process
  // with SIGPIPE instead of failing one request. Only the default disposition is changed.
  static std::once_flag sigpipe_once;
  std::call_once(sigpipe_once, [] {
    struct sigaction old {};
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  });
  std::shared_ptr<Client> c(new Client(config));
  std::string s = config.server;
  if (s.rfind("https://", 0) == 0) {
    c->tls_ = true;
    s = s.substr(8);
  } else if (s.rfind("http://", 0) == 0) {
    s = s.substr(7);
  } else {
    return Error{0, "Config", "server \"" + config.server + "\" must start with https:// or http://"};
  }
  if (auto slash = s.find('/'); slash != std::string::npos) s = s.substr(0, slash);
  auto colon = s.rfind(':');
  if (colon != std::string::npos && s.find(']', colon) == std::string::npos) {
    c->host_ = s.substr(0, colon);
    c->port_ = std::atoi(s.c_str() + colon + 1);
  } else {
    c->host_ = s;
    c->port_ = c->tls_ ? 443 : 80;
  }
  if (!c->host_.empty() && c->host_.front() == '[') c->host_ = c->host_.substr(1, c->host_.size() - 2);
  if (c->port_ <= 0 || c->port_ > 65535) return Error{0, "Config", "server \"" + config.server + "\": bad port"};
  // Fail early on an unusable certificate rather than on the first request.
  if (c->tls_ && !config.client_cert_pem.empty()) {
    auto conn = c->NewConn(false);
    if (!conn || !conn->http->is_valid())
      return Error{0, "Config", "client certificate/key cannot be loaded (PEM expected)"};
  }
  return c;
}

Client::Client(Config config) : config_(std::move(config)) {}
Client::~Client() = default;

std::unique_ptr<Client::Conn> Client::NewConn(bool for_watch) {
  auto conn = std::make_unique<Conn>();
  if (tls_) {
    X509* cert = nullptr;
    EVP_PKEY* key = nullptr;
    if (!config_.client_cert_pem.empty()) {
      BIO* b = BIO_new_mem_buf(config_.client_cert_pem.data(), static_cast<int>(config_.client_cert_pem.size()));
      cert = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
      BIO_free(b);
      b = BIO_new_mem_buf(config_.client_key_pem.data(), static_cast<int>(config_.client_key_pem.size()));
      key = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
      BIO_free(b);
    }
    std::unique_ptr<httplib::SSLClient> ssl;
    if (cert && key) {
      ssl = std::make_unique<httplib::SSLClient>(host_, port_, cert, key);
    } else {
      ssl = std::make_unique<httplib::SSLClient>(host_, port_);
    }
    if (cert) X509_free(cert);
    if (key) EVP_PKEY_free(key);
    if (config_.insecure_skip_tls_verify) {
      ssl->enable_server_certificate_verification(false);
    } else if (!config_.ca_pem.empty()) {
      ssl->set_ca_cert_store(MakeStore(config_.ca_pem));
      ssl->enable_server_certificate_verification(true);
    } else {
      ssl->enable_server_certificate_verification(true);
    }
    conn->http = std::move(ssl);
  } else {
    conn->http = std::make_unique<httplib::ClientImpl>(host_, port_);
  }
  conn->http->set_keep_alive(true);
  conn->http->set_tcp_nodelay(true);
  conn->http->set_connection_timeout(5, 0);
  if (for_watch) {
    // A watch may sit idle between events for up to its timeout plus bookmark spacing.
    conn->http->set_read_timeout(600, 0);
  } else {
    auto t = static_cast<time_t>(config_.qps_timeout_s);
    conn->http->set_read_timeout(t, 0);
    conn->http->set_write_timeout(t, 0);
  }
  std::string token = config_.token_file.empty() ? config_.token : ReadTokenFile(config_.token_file);
  if (!token.empty()) conn->http->set_bearer_token_auth(token);
  return conn;
}

std::unique_ptr<Client::Conn> Client::Borrow(bool* pooled) {
  *pooled = false;
  std::vector<std::unique_ptr<Conn>> stale;  // closed outside the lock (a TLS shutdown writes)
  {
    std::lock_guard<std::mutex> l(mu_);
    // The newest is at the back. One idle longer than max_idle may have been closed by the server or a
    // middlebox without our noticing (a TLS close_notify reads as data, so the socket looks alive); all
    // the others are older still.
    if (!pool_.empty() &&
        std::chrono::steady_clock::now() - pool_.back()->returned <= std::chrono::duration<double>(config_.max_idle_s)) {
      auto c = std::move(pool_.back());
      pool_.pop_back();
      *pooled = true;
      return c;
    }
    stale.swap(pool_);
  }
  stale.clear();
  return NewConn(false);
}

void Client::Return(std::unique_ptr<Conn> c) {
  c->returned = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> l(mu_);
  if (pool_.size() < 32) pool_.push_back(std::move(c));
}

void Client::DropPool() {
  std::vector<std::unique_ptr<Conn>> old;
  {
    std::lock_guard<std::mutex> l(mu_);
    old.swap(pool_);
  }
}

Result<Json> Client::Request(const std::string& method, const std::string& path, const std::string& body,
                             const std::string& content_type) {
  httplib::Request req;
  req.method = method;
  req.path = path;
  req.headers.emplace("Accept", "application/json");
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    req.body = body;
    req.headers.emplace("Content-Type", content_type);
  }
  // A pooled keep-alive socket may have been closed by the server while it sat idle: then retry once, on a
  // socket opened for this request (never another pooled one, which likely went stale the same way), and
  // drop the rest of the pool. A failure on a fresh socket is the server's answer: no retry.
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool pooled = false;
    auto conn = attempt == 0 ? Borrow(&pooled) : NewConn(false);
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    bool sent = conn->http->send(req, res, err);
    if (!sent) {
      if (attempt == 0 && pooled) {
        retries_.fetch_add(1, std::memory_order_relaxed);
        DropPool();
        continue;
      }
      return Error{0, "Transport", method + " " + path + ": " + httplib::to_string(err)};
    }
    Return(std::move(conn));
    if (res.status < 200 || res.status >= 300)
      return HttpError(res.status, res.body, method + " " + path + " failed");
    if (res.body.empty()) return Json::object();
    try {
      return Json::parse(res.body);
    } catch (const std::exception& e) {
      return Error{res.status, "Decode", method + " " + path + ": response is not JSON: " + e.what()};
    }
  }
  return Error{0, "Transport", method + " " + path + ": unreachable"};
}

Result<Json> Client::Get(const Resource& r, const std::string& ns, const std::string& name) {
  return Request("GET", ResourcePath(r, ns, name));
}

Result<ListResult> Client::List(const Resource& r, const std::string& ns, const ListOptions& opts) {
  ListResult out;
  std::string cont;
  do {
    std::string path = ResourcePath(r, ns);
    AddQuery(path, "labelSelector", opts.label_selector);
    AddQuery(path, "fieldSelector", opts.field_selector);
    if (cont.empty()) AddQuery(path, "resourceVersion", opts.resource_version);
    if (opts.limit > 0) AddQuery(path, "limit", std::to_string(opts.limit));
    AddQuery(path, "continue", cont);
    auto res = Request("GET", path);
    if (!res) return res.error();
    Json& j = *res;
    if (j.contains("items") && j["items"].is_array()) {
      for (auto& item : j["items"]) out.items.push_back(std::move(item));
    }
    const Json& meta = j.contains("metadata") ? j["metadata"] : Json::object();
    out.resource_version = meta.value("resourceVersion", out.resource_version);
    cont = meta.value("continue", "");
  } while (!cont.empty());
  return out;
}

Result<Json> Client::Create(const Resource& r, const std::string& ns, const Json& obj) {
  return Request("POST", ResourcePath(r, ns), obj.dump());
}

Result<Json> Client::Update(const Resource& r, const std::string& ns, const std::string& name, const Json& obj) {
  return Request("PUT", ResourcePath(r, ns, name), obj.dump());
}

Result<Json> Client::UpdateStatus(const Resource& r, const std::string& ns, const std::string& name,
                                  const Json& obj) {
  return Request("PUT", ResourcePath(r, ns, name) + "/status", obj.dump());
}

static const char* PatchContentType(PatchType t) {
  switch (t) {
    case PatchType::kMerge: return "application/merge-patch+json";
    case PatchType::kStrategicMerge: return "application/strategic-merge-patch+json";
    case PatchType::kJson: return "application/json-patch+json";
  }
  return "application/merge-patch+json";
}

Result<Json> Client::Patch(const Resource& r, const std::string& ns, const std::string& name, const Json& patch,
                           PatchType type) {
  return Request("PATCH", ResourcePath(r, ns, name), patch.dump(), PatchContentType(type));
}

Result<Json> Client::PatchStatus(const Resource& r, const std::string& ns, const std::string& name,
                                 const Json& patch, PatchType type) {
  return Request("PATCH", ResourcePath(r, ns, name) + "/status", patch.dump(), PatchContentType(type));
}

Status Client::Delete(const Resource& r, const std::string& ns, const std::string& name) {
  auto res = Request("DELETE", ResourcePath(r, ns, name));
  if (!res) return res.error();
  return Ok{};
}

Status Client::Bind(const std::string& ns, const std::string& pod, const std::string& pod_uid,
                    const std::string& node, const Json& annotations, const std::string& resource_version) {
  Json b = {{"apiVersion", "v1"},
            {"kind", "Binding"},
            {"metadata", {{"name", pod}, {"namespace", ns}}},
            {"target", {{"apiVersion", "v1"}, {"kind", "Node"}, {"name", node}}}};
  if (!pod_uid.empty()) b["metadata"]["uid"] = pod_uid;
  if (!resource_version.empty()) b["metadata"]["resourceVersion"] = resource_version;
  if (annotations.is_object() && !annotations.empty()) b["metadata"]["annotations"] = annotations;
  auto res = Request("POST", ResourcePath(kPods, ns, pod) + "/binding", b.dump());
  if (!res) return res.error();
  return Ok{};
}

Status Client::RecordEvent(const Json& involved, const std::string& type, const std::string& reason,
                           const std::string& message, const std::string& component) {
  const Json& meta = involved.contains("metadata") ? involved["metadata"] : Json::object();
  std::string ns = meta.value("namespace", "default");
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  char ts[32];
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  Json ev = {{"apiVersion", "v1"},
             {"kind", "Event"},
             {"metadata", {{"generateName", meta.value("name", "tessera") + "."}, {"namespace", ns}}},
             {"involvedObject",
              {{"apiVersion", involved.value("apiVersion", "v1")},
               {"kind", involved.value("kind", "Pod")},
               {"name", meta.value("name", "")},
               {"namespace", ns},
               {"uid", meta.value("uid", "")}}},
             {"type", type},
             {"reason", reason},
             {"message", message},
             {"source", {{"component", component}}},
             {"firstTimestamp", ts},
             {"lastTimestamp", ts},
             {"count", 1}};
  auto res = Create(kEvents, ns, ev);
  if (!res) return res.error();
  return Ok{};
}

Status Client::Watch(const Resource& r, const std::string& ns, const WatchOptions& opts,
                     const std::function<bool(const WatchEvent&)>& on_event) {
  std::string path = ResourcePath(r, ns);
  AddQuery(path, "watch", "1");
  AddQuery(path, "labelSelector", opts.label_selector);
  AddQuery(path, "fieldSelector", opts.field_selector);
  AddQuery(path, "resourceVersion", opts.resource_version);
  if (opts.allow_bookmarks) AddQuery(path, "allowWatchBookmarks", "true");
  if (opts.timeout_seconds > 0) AddQuery(path, "timeoutSeconds", std::to_string(opts.timeout_seconds));

  auto conn = NewConn(true);
  uint64_t gen = stop_gen_.load();
  {
    std::lock_guard<std::mutex> l(mu_);
    watches_.push_back(conn.get());
  }
  std::string buf;
  bool callback_stopped = false;
  Error decode_error;
  bool decode_failed = false;
  int status = 0;
  std::string error_body;
  httplib::Request req;
  req.method = "GET";
  req.path = path;
  req.headers.emplace("Accept", "application/json");
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    if (status < 200 || status >= 300) {
      error_body.append(data, len);
      return error_body.size() < 65536;
    }
    buf.append(data, len);
    size_t start = 0;
    for (;;) {
      size_t nl = buf.find('\n', start);
      if (nl == std::string::npos) break;
      std::string line = buf.substr(start, nl - start);
      start = nl + 1;
      if (line.empty()) continue;
      auto ev = DecodeWatchEvent(line);
      if (!ev) {
        decode_error = ev.error();
        decode_failed = true;
        return false;
      }
      if (!on_event(*ev)) {
        callback_stopped = true;
        return false;
      }
    }
    buf.erase(0, start);
    return stop_gen_.load() == gen;
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  bool ok = false;
  if (stop_gen_.load() == gen) ok = conn->http->send(req, res, err);
  {
    std::lock_guard<std::mutex> l(mu_);
    std::erase(watches_, conn.get());
  }
  if (callback_stopped || stop_gen_.load() != gen) return Ok{};
  if (decode_failed) return decode_error;
  if (status != 0 && (status < 200 || status >= 300)) return HttpError(status, error_body, "watch " + path);
  if (!ok) return Error{0, "Transport", "watch " + path + ": " + httplib::to_string(err)};
  return Ok{};
}

void Client::StopWatches() {
  std::lock_guard<std::mutex> l(mu_);
  stop_gen_.fetch_add(1);
  for (Conn* c : watches_) c->http->stop();
}

std::string Name(const Json& obj) {
  if (!obj.contains("metadata")) return "";
  return obj["metadata"].value("name", "");
}
std::string Namespace(const Json& obj) {
  if (!obj.contains("metadata")) return "";
  return obj["metadata"].value("namespace", "");
}
std::string Uid(const Json& obj) {
  if (!obj.contains("metadata")) return "";
  return obj["metadata"].value("uid", "");
}
std::string ResourceVersionOf(const Json& obj) {
  if (!obj.contains("metadata")) return "";
  return obj["metadata"].value("resourceVersion", "");
}
std::string Annotation(const Json& obj, const std::string& key) {
  if (!obj.contains("metadata")) return "";
  const Json& m = obj["metadata"];
  if (!m.contains("annotations") || !m["annotations"].is_object()) return "";
  auto it = m["annotations"].find(key);
  if (it == m["annotations"].end() || !it->is_string()) return "";
  return it->get<std::string>();
}

}  // namespace tessera::kube
