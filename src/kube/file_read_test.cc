#include "kube/file_read.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace tessera::kube {
namespace {

namespace fs = std::filesystem;

class FileReadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tessera-file-read-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& body) {
    std::ofstream(dir_ / name, std::ios::binary) << body;
    return (dir_ / name).string();
  }
  fs::path dir_;
};

TEST_F(FileReadTest, ReadsAFileUpToTheCapExactly) {
  const std::string body(4096, 'x');
  std::string out, err;
  ASSERT_TRUE(ReadFileCapped(Write("a", body), 4096, "a test file", &out, &err)) << err;
  EXPECT_EQ(out, body);
}

TEST_F(FileReadTest, OneByteOverTheCapIsRefusedWithFileAndLimit) {
  const std::string path = Write("b", std::string(4097, 'x'));
  std::string out = "stale", err;
  EXPECT_FALSE(ReadFileCapped(path, 4096, "a test file", &out, &err));
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(err, path + ": larger than 4 KiB, the limit for a test file");
}

TEST_F(FileReadTest, AnEndlessDeviceStopsAtTheCap) {
  std::string out, err;
  EXPECT_FALSE(ReadFileCapped("/dev/zero", size_t{1} << 20, "a kubeconfig", &out, &err));
  EXPECT_EQ(err, "/dev/zero: larger than 1 MiB, the limit for a kubeconfig");
}

TEST_F(FileReadTest, AMissingFileSaysWhy) {
  std::string out, err;
  EXPECT_FALSE(ReadFileCapped((dir_ / "none").string(), 10, "x", &out, &err));
  EXPECT_NE(err.find("cannot open " + (dir_ / "none").string() + ": No such file"), std::string::npos) << err;
}

TEST_F(FileReadTest, AnEmptyFileReadsAsEmpty) {
  std::string out = "stale", err;
  EXPECT_TRUE(ReadFileCapped(Write("e", ""), 10, "x", &out, &err));
  EXPECT_TRUE(out.empty());
}

TEST(ByteLimitText, NamesTheLargestWholeUnit) {
  EXPECT_EQ(ByteLimitText(size_t{64} << 20), "64 MiB");
  EXPECT_EQ(ByteLimitText(65536), "64 KiB");
  EXPECT_EQ(ByteLimitText(1500), "1500 bytes");
}

}  // namespace
}  // namespace tessera::kube
