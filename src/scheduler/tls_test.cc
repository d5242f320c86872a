#include "scheduler/tls.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace tessera::scheduler {
namespace {

namespace fs = std::filesystem;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tessera-tls-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const char* name) { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(TlsTest, BothAbsentCreatesAPairAndLoadsItBack) {
  auto made = LoadOrCreateCert(Path("tls.crt"), Path("tls.key"),
                               {"tessera-scheduler.tessera-system.svc", "127.0.0.1"});
  ASSERT_TRUE(made.ok()) << made.error().message;
  struct stat st {};
  ASSERT_EQ(stat(Path("tls.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = LoadOrCreateCert(Path("tls.crt"), Path("tls.key"), {});
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->cert_pem, made->cert_pem);
  EXPECT_EQ(loaded->key_pem, made->key_pem);
}

TEST_F(TlsTest, OnlyOneOfThePairIsAnError) {
  std::ofstream(Path("tls.crt")) << "x";
  auto r = LoadOrCreateCert(Path("tls.crt"), Path("tls.key"), {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("must both exist or both be absent"), std::string::npos)
      << r.error().message;
}

TEST_F(TlsTest, ACertificateThatNeverEndsIsRefusedAtTheLimit) {
  fs::create_symlink("/dev/zero", dir_ / "tls.crt");
  std::ofstream(Path("tls.key")) << "key";
  auto r = LoadOrCreateCert(Path("tls.crt"), Path("tls.key"), {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find(Path("tls.crt") + ": larger than 1 MiB, the limit for a TLS certificate"),
            std::string::npos)
      << r.error().message;
}

TEST_F(TlsTest, AFileWithoutACertificateIsRefused) {
  std::ofstream(Path("tls.crt")) << "not a certificate";
  std::ofstream(Path("tls.key")) << "key";
  auto r = LoadOrCreateCert(Path("tls.crt"), Path("tls.key"), {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("no PEM certificate"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace tessera::scheduler
