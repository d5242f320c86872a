#include "scheduler/tls.h"

#include "kube/file_read.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

namespace tessera::scheduler {
namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using CertPtr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

kube::Error TlsError(const std::string& m) { return kube::Error{0, "TLS", m}; }

std::string BioString(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  return std::string(data, static_cast<size_t>(n));
}

bool AddExt(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return false;
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return true;
}

bool IsIp(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

}  // namespace

kube::Result<CertPair> MakeSelfSignedCert(const std::string& cn, const std::vector<std::string>& sans,
                                          int valid_days) {
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return TlsError("cannot generate an EC key");
  CertPtr cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 60L * 60 * 24 * valid_days);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("tessera"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  std::string san;
  for (const auto& s : sans) {
    if (!san.empty()) san += ",";
    san += (IsIp(s) ? "IP:" : "DNS:") + s;
  }
  if (san.empty()) san = "DNS:" + cn;
  if (!AddExt(cert.get(), NID_subject_alt_name, san) || !AddExt(cert.get(), NID_basic_constraints, "critical,CA:TRUE") ||
      !AddExt(cert.get(), NID_key_usage, "critical,digitalSignature,keyCertSign") ||
      !AddExt(cert.get(), NID_ext_key_usage, "serverAuth"))
    return TlsError("cannot add certificate extensions (SANs: " + san + ")");
  if (!X509_sign(cert.get(), key.get(), EVP_sha256())) return TlsError("cannot sign the certificate");
  CertPair out;
  BioPtr cb(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(cb.get(), cert.get());
  out.cert_pem = BioString(cb.get());
  BioPtr kb(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  out.key_pem = BioString(kb.get());
  return out;
}

kube::Result<CertPair> LoadOrCreateCert(const std::string& cert_path, const std::string& key_path,
                                        const std::vector<std::string>& sans) {
  struct stat st;
  bool have_cert = stat(cert_path.c_str(), &st) == 0;
  bool have_key = stat(key_path.c_str(), &st) == 0;
  if (have_cert != have_key)
    return TlsError("--tls-cert and --tls-key must both exist or both be absent (" + cert_path + ", " + key_path + ")");
  if (have_cert) {
    CertPair p;
    for (const std::string* f : {&cert_path, &key_path}) {
      if (access(f->c_str(), R_OK) != 0)
        return TlsError(*f + ": cannot read (" + std::strerror(errno) + "; uid " + std::to_string(getuid()) +
                        "): mount the Secret readable by this user, e.g. fsGroup");
    }
    // A certificate chain or key is a few KiB; a Secret holds at most 1 MiB.
    std::string err;
    if (!kube::ReadFileCapped(cert_path, size_t{1} << 20, "a TLS certificate", &p.cert_pem, &err) ||
        !kube::ReadFileCapped(key_path, size_t{1} << 20, "a TLS key", &p.key_pem, &err))
      return TlsError(err);
    if (p.cert_pem.find("BEGIN CERTIFICATE") == std::string::npos) return TlsError(cert_path + ": no PEM certificate");
    return p;
  }
  auto p = MakeSelfSignedCert("tessera-scheduler", sans);
  if (!p) return p;
  {
    std::ofstream k(key_path, std::ios::trunc);
    if (!k) return TlsError("cannot write " + key_path);
    k << p->key_pem;
  }
  chmod(key_path.c_str(), 0600);
  std::ofstream c(cert_path, std::ios::trunc);
  if (!c) return TlsError("cannot write " + cert_path);
  c << p->cert_pem;
  return p;
}

}  // namespace tessera::scheduler
