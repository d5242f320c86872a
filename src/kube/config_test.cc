#include "kube/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace tessera::kube {
namespace {

// "-----BEGIN CERTIFICATE-----\nabc\n" and "key-bytes" in base64.
const char* kCertB64 = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmFiYwo=";
const char* kKeyB64 = "a2V5LWJ5dGVz";

TEST(KubeconfigTest, ParsesInlineDataAndCurrentContext) {
  std::string y = std::string(R"(apiVersion: v1
kind: Config
current-context: b
clusters:
- name: c1
  cluster: {server: "https://10.0.0.1:6443/", certificate-authority-data: ")") + kCertB64 + R"("}
contexts:
- name: a
  context: {cluster: nope, user: u1}
- name: b
  context: {cluster: c1, user: u1, namespace: team}
users:
- name: u1
  user: {client-certificate-data: ")" + kCertB64 + R"(", client-key-data: ")" + kKeyB64 + R"(", token: abc}
)";
  auto c = ParseKubeconfig(y);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->server, "https://10.0.0.1:6443");
  EXPECT_EQ(c->ca_pem, "-----BEGIN CERTIFICATE-----\nabc\n");
  EXPECT_EQ(c->client_key_pem, "key-bytes");
  EXPECT_EQ(c->token, "abc");
  EXPECT_EQ(c->ns, "team");
  auto a = ParseKubeconfig(y, "a");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.error().message.find("cluster \"nope\" not found"), std::string::npos);
  auto missing = ParseKubeconfig(y, "zzz");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("context \"zzz\" not found"), std::string::npos);
}

TEST(KubeconfigTest, ReadsRelativeFilesAndTokenFile) {
  auto dir = std::filesystem::temp_directory_path() / ("kcfg-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "ca.pem") << "CA";
  std::ofstream(dir / "tok") << "secret\n";
  std::ofstream(dir / "config") << R"(current-context: x
clusters: [{name: c, cluster: {server: "http://127.0.0.1:8080", certificate-authority: ca.pem}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
users: [{name: u, user: {tokenFile: tok}}]
)";
  auto c = LoadKubeconfig((dir / "config").string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->ca_pem, "CA");
  EXPECT_EQ(c->token, "secret");
  EXPECT_EQ(c->ns, "default");
  std::filesystem::remove_all(dir);
}

TEST(KubeconfigTest, RejectsBrokenInput) {
  EXPECT_FALSE(ParseKubeconfig("{{{").ok());
  EXPECT_FALSE(ParseKubeconfig("clusters: []").ok());  // no current-context
  auto half = ParseKubeconfig(R"(current-context: x
clusters: [{name: c, cluster: {server: "https://h:1"}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
users: [{name: u, user: {client-certificate-data: YWJj}}]
)");
  ASSERT_FALSE(half.ok());
  EXPECT_NE(half.error().message.find("client-key"), std::string::npos);
  auto b64 = ParseKubeconfig(R"(current-context: x
clusters: [{name: c, cluster: {server: "https://h:1", certificate-authority-data: "!!!"}}]
contexts: [{name: x, context: {cluster: c}}]
)");
  ASSERT_FALSE(b64.ok());
  EXPECT_NE(b64.error().message.find("certificate-authority-data"), std::string::npos);
}

TEST(KubeconfigTest, InClusterReadsServiceAccountMount) {
  auto root = std::filesystem::temp_directory_path() / ("incluster-" + std::to_string(getpid()));
  auto sa = root / "var/run/secrets/kubernetes.io/serviceaccount";
  std::filesystem::create_directories(sa);
  std::ofstream(sa / "token") << "tkn";
  std::ofstream(sa / "ca.crt") << "CA";
  std::ofstream(sa / "namespace") << "kube-system";
  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto c = InClusterConfig(root.string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->server, "https://10.96.0.1:443");
  EXPECT_EQ(c->token, "tkn");
  EXPECT_EQ(c->ns, "kube-system");
  unsetenv("KUBERNETES_SERVICE_HOST");
  EXPECT_FALSE(InClusterConfig(root.string()).ok());
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace tessera::kube
