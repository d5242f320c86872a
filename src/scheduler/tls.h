// The serving certificate for the extender and webhook endpoint.
//
// When --tls-cert/--tls-key don't exist yet, the scheduler makes a self-signed certificate (ECDSA P-256,
// CA:TRUE so it is its own CA bundle) for the given DNS names and IP addresses and writes both files; the
// certificate PEM is then the caBundle for the webhook configurations and the kube-scheduler extender's
// caFile. No cert-manager needed. Plain functions; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "kube/result.h"

namespace tessera::scheduler {

struct CertPair {
  std::string cert_pem;
  std::string key_pem;
};

// `sans` entries that parse as IPv4/IPv6 addresses become IP SANs, the rest DNS SANs.
kube::Result<CertPair> MakeSelfSignedCert(const std::string& common_name, const std::vector<std::string>& sans,
                                          int valid_days = 365);

// Loads cert_path/key_path, or creates them (mode 0600 for the key) when both are absent.
kube::Result<CertPair> LoadOrCreateCert(const std::string& cert_path, const std::string& key_path,
                                        const std::vector<std::string>& sans);

}  // namespace tessera::scheduler
