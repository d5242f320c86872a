// Where the API server is and how to authenticate to it.
//
// Loaded from a kubeconfig file (the current context, or a named one: server, CA, client certificate and key
// as files or inline base64 data, bearer token or token file) or from the in-cluster service-account mount.
// Used by every component that talks to the API server (scheduler, agent, doctor). Plain value type.
#pragma once

#include <string>

#include "kube/result.h"

namespace tessera::kube {

struct Config {
  std::string server;           // https://host:port (or http:// for tests)
  std::string ca_pem;           // PEM bundle to verify the server; empty: system roots
  std::string client_cert_pem;  // client certificate (mTLS), PEM
  std::string client_key_pem;   // its private key, PEM
  std::string token;            // bearer token
  std::string token_file;       // re-read on each new connection when set (projected tokens rotate)
  std::string ns = "default";   // namespace of the context (or the pod's namespace in-cluster)
  bool insecure_skip_tls_verify = false;
  double qps_timeout_s = 30;    // per-request read timeout for non-watch calls
  double max_idle_s = 30;       // a pooled connection idle longer than this is closed, not reused
};

// Parses kubeconfig text. `context` empty means current-context. Relative file paths resolve against
// `base_dir` (the kubeconfig's directory).
Result<Config> ParseKubeconfig(const std::string& yaml_text, const std::string& context = "",
                               const std::string& base_dir = ".");
Result<Config> LoadKubeconfig(const std::string& path, const std::string& context = "");

// In-cluster: KUBERNETES_SERVICE_HOST/PORT and /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}.
// `root` prefixes the mount path (tests).
Result<Config> InClusterConfig(const std::string& root = "");

// The usual order: explicit path, then $KUBECONFIG, then in-cluster, then ~/.kube/config.
Result<Config> LoadDefaultConfig(const std::string& explicit_path);

}  // namespace tessera::kube
