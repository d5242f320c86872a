#include "kube/config.h"

#include "kube/file_read.h"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace tessera::kube {
namespace {

Error ConfigError(const std::string& msg) { return Error{0, "Config", msg}; }

// Kubeconfigs, CA bundles, certificates, keys and tokens are all far below this.
constexpr size_t kMaxFileBytes = size_t{4} << 20;

Result<std::string> ReadFile(const std::string& path) {
  std::string out, err;
  if (!ReadFileCapped(path, kMaxFileBytes, "a kubeconfig, certificate or token file", &out, &err))
    return ConfigError(err);
  return out;
}

Result<std::string> Base64Decode(const std::string& in, const std::string& field) {
  std::string clean;
  for (char c : in)
    if (c != '\n' && c != '\r' && c != ' ') clean.push_back(c);
  if (clean.size() % 4 != 0) return ConfigError(field + ": not valid base64");
  std::string out(clean.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(clean.data()), static_cast<int>(clean.size()));
  if (n < 0) return ConfigError(field + ": not valid base64");
  size_t pad = 0;
  if (!clean.empty() && clean.back() == '=') ++pad;
  if (clean.size() > 1 && clean[clean.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

std::string Resolve(const std::string& base, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  return base + "/" + p;
}

// Reads `<key>-data` (inline base64) or `<key>` (a file path) from a kubeconfig map.
Result<std::string> DataOrFile(const YAML::Node& m, const std::string& key, const std::string& base,
                               const std::string& where) {
  if (m[key + "-data"]) return Base64Decode(m[key + "-data"].as<std::string>(), where + "." + key + "-data");
  if (m[key]) return ReadFile(Resolve(base, m[key].as<std::string>()));
  return std::string();
}

YAML::Node FindNamed(const YAML::Node& list, const std::string& name) {
  if (!list || !list.IsSequence()) return YAML::Node();
  for (const auto& e : list)
    if (e["name"] && e["name"].as<std::string>() == name) return e;
  return YAML::Node();
}

}  // namespace

Result<Config> ParseKubeconfig(const std::string& text, const std::string& context, const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const std::exception& e) {
    return ConfigError(std::string("kubeconfig is not valid YAML: ") + e.what());
  }
  try {
    std::string ctx_name = context;
    if (ctx_name.empty() && root["current-context"]) ctx_name = root["current-context"].as<std::string>();
    if (ctx_name.empty()) return ConfigError("kubeconfig has no current-context and none was given");
    YAML::Node ctx = FindNamed(root["contexts"], ctx_name);
    if (!ctx || !ctx["context"]) return ConfigError("kubeconfig: context \"" + ctx_name + "\" not found");
    YAML::Node c = ctx["context"];
    Config cfg;
    if (c["namespace"]) cfg.ns = c["namespace"].as<std::string>();
    std::string cluster_name = c["cluster"] ? c["cluster"].as<std::string>() : "";
    YAML::Node cl = FindNamed(root["clusters"], cluster_name);
    if (!cl || !cl["cluster"]) return ConfigError("kubeconfig: cluster \"" + cluster_name + "\" not found");
    YAML::Node cluster = cl["cluster"];
    if (!cluster["server"]) return ConfigError("kubeconfig: cluster \"" + cluster_name + "\" has no server");
    cfg.server = cluster["server"].as<std::string>();
    while (!cfg.server.empty() && cfg.server.back() == '/') cfg.server.pop_back();
    if (cluster["insecure-skip-tls-verify"]) cfg.insecure_skip_tls_verify = cluster["insecure-skip-tls-verify"].as<bool>();
    auto ca = DataOrFile(cluster, "certificate-authority", base_dir, "clusters[" + cluster_name + "]");
    if (!ca) return ca.error();
    cfg.ca_pem = *ca;
    std::string user_name = c["user"] ? c["user"].as<std::string>() : "";
    YAML::Node us = FindNamed(root["users"], user_name);
    if (us && us["user"]) {
      YAML::Node u = us["user"];
      std::string where = "users[" + user_name + "]";
      auto cert = DataOrFile(u, "client-certificate", base_dir, where);
      if (!cert) return cert.error();
      auto key = DataOrFile(u, "client-key", base_dir, where);
      if (!key) return key.error();
      cfg.client_cert_pem = *cert;
      cfg.client_key_pem = *key;
      if (cfg.client_cert_pem.empty() != cfg.client_key_pem.empty())
        return ConfigError(where + ": client-certificate and client-key must be given together");
      if (u["token"]) cfg.token = u["token"].as<std::string>();
      if (u["tokenFile"]) {
        cfg.token_file = Resolve(base_dir, u["tokenFile"].as<std::string>());
        auto t = ReadFile(cfg.token_file);
        if (!t) return t.error();
        cfg.token = *t;
      }
    } else if (!user_name.empty()) {
      return ConfigError("kubeconfig: user \"" + user_name + "\" not found");
    }
    while (!cfg.token.empty() && (cfg.token.back() == '\n' || cfg.token.back() == '\r')) cfg.token.pop_back();
    return cfg;
  } catch (const std::exception& e) {
    return ConfigError(std::string("kubeconfig: unexpected shape: ") + e.what());
  }
}

Result<Config> LoadKubeconfig(const std::string& path, const std::string& context) {
  auto text = ReadFile(path);
  if (!text) return text.error();
  std::string dir = ".";
  if (auto slash = path.rfind('/'); slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
  return ParseKubeconfig(*text, context, dir);
}

Result<Config> InClusterConfig(const std::string& root) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !port || !*host || !*port)
    return ConfigError("not in a cluster: KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are unset");
  std::string dir = root + "/var/run/secrets/kubernetes.io/serviceaccount";
  Config cfg;
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";  // IPv6
  cfg.server = "https://" + h + ":" + port;
  cfg.token_file = dir + "/token";
  auto tok = ReadFile(cfg.token_file);
  if (!tok) return tok.error();
  cfg.token = *tok;
  while (!cfg.token.empty() && (cfg.token.back() == '\n' || cfg.token.back() == '\r')) cfg.token.pop_back();
  auto ca = ReadFile(dir + "/ca.crt");
  if (!ca) return ca.error();
  cfg.ca_pem = *ca;
  if (auto ns = ReadFile(dir + "/namespace"); ns.ok() && !ns->empty()) cfg.ns = *ns;
  return cfg;
}

Result<Config> LoadDefaultConfig(const std::string& explicit_path) {
  if (!explicit_path.empty()) return LoadKubeconfig(explicit_path);
  if (const char* env = std::getenv("KUBECONFIG"); env && *env) {
    std::string first = env;
    if (auto c = first.find(':'); c != std::string::npos) first = first.substr(0, c);
    return LoadKubeconfig(first);
  }
  if (auto in = InClusterConfig(); in.ok()) return in;
  if (const char* home = std::getenv("HOME")) {
    std::string p = std::string(home) + "/.kube/config";
    if (std::ifstream(p)) return LoadKubeconfig(p);
  }
  return ConfigError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or run in a cluster");
}

}  // namespace tessera::kube
