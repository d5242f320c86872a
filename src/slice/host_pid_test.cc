#include "slice/host_pid.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace tessera::slice {
namespace {

constexpr uint64_t kNsA = 4026532000;  // a container
constexpr uint64_t kNsB = 4026532999;  // another container
constexpr uint64_t kNsHost = 4026531836;

// A /proc lookalike: <root>/<host pid>/{ns/pid -> "pid:[ns]", status with NSpid, stat with start time}.
class HostPidTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(mkdtemp(dir_), nullptr);
    proc_ = std::string(dir_) + "/proc";
    mkdir(proc_.c_str(), 0755);
    InitSliceConfig(&cfg_);
    snprintf(cfg_.name, sizeof(cfg_.name), "hp");
    snprintf(cfg_.region, sizeof(cfg_.region), "%s/region", dir_);
    cfg_.gpu_count = 1;
    snprintf(cfg_.gpus[0].uuid, kUuidMax, "GPU-00000000-0000-0000-0000-000000000000");
    cfg_.gpus[0].memory_bytes = 1ull << 30;
    cfg_.gpus[0].cores = 100;
    char err[256];
    ASSERT_TRUE(OpenRegionForSlice(cfg_, &region_, err, sizeof(err))) << err;
  }
  void TearDown() override {
    CloseRegion(&region_);
    ASSERT_EQ(system(("rm -rf " + std::string(dir_)).c_str()), 0);
  }
  void Process(int host, uint64_t ns, const std::string& nspid, uint64_t start) {
    const std::string d = proc_ + "/" + std::to_string(host);
    mkdir(d.c_str(), 0755);
    mkdir((d + "/ns").c_str(), 0755);
    ASSERT_EQ(symlink(("pid:[" + std::to_string(ns) + "]").c_str(), (d + "/ns/pid").c_str()), 0);
    Write(d + "/status", "Name:\tpython3\nTgid:\t" + std::to_string(host) + "\nNSpid:\t" + nspid + "\nNSpgid:\t1\n");
    std::string stat = std::to_string(host) + " (python3) S";
    for (int f = 4; f <= 21; ++f) stat += " 0";
    Write(d + "/stat", stat + " " + std::to_string(start) + " 0 0\n");
  }
  static void Write(const std::string& path, const std::string& text) {
    FILE* f = fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs(text.c_str(), f);
    fclose(f);
  }
  // A row owned by (pid, start) in namespace ns, as ClaimRow would leave it for that process.
  int Row(int pid, uint64_t start, uint64_t ns) {
    RegionHeader* h = region_.hdr;
    const int i = static_cast<int>(h->rows_high_water.load());
    h->rows[i].owner.store(PackOwner(pid, start));
    h->rows[i].pidns.store(ns);
    h->rows_high_water.store(i + 1);
    return i;
  }
  char dir_[64] = "/tmp/tessera-hostpid-XXXXXX";
  std::string proc_;
  SliceConfig cfg_;
  Region region_;
};

TEST_F(HostPidTest, ContainerProcessesGetTheirHostPids) {
  Process(1, kNsHost, "1", 10);
  Process(200, kNsA, "200\t7", 6000);
  Process(201, kNsA, "201\t8", 7000);
  Process(300, kNsB, "300\t7", 6000);  // the same inner pid and start time in another container
  const int a7 = Row(7, 6000, kNsA), a8 = Row(8, 7000, kNsA), b7 = Row(7, 6000, kNsB);
  const int host = Row(1, 10, kNsHost);
  HostPidPass p = PublishHostPids(region_.hdr, proc_.c_str(), kNsHost);
  EXPECT_EQ(p.pending, 3);
  EXPECT_EQ(p.published, 3);
  EXPECT_EQ(p.unresolved_count, 0);
  EXPECT_EQ(RowHostPid(region_.hdr, a7), 200);
  EXPECT_EQ(RowHostPid(region_.hdr, a8), 201);
  EXPECT_EQ(RowHostPid(region_.hdr, b7), 300);
  EXPECT_EQ(RowHostPid(region_.hdr, host), 0);  // the agent's own namespace: its pid is the driver's already

  // Nothing pending: no walk of /proc at all.
  p = PublishHostPids(region_.hdr, proc_.c_str(), kNsHost);
  EXPECT_EQ(p.pending, 0);
  EXPECT_EQ(p.scanned, 0);

  ProcUsage procs[8];
  ASSERT_EQ(ReadProcs(region_.hdr, procs, 8), 4);
  EXPECT_EQ(procs[0].pid, 7);
  EXPECT_EQ(procs[0].host_pid, 200);
}

TEST_F(HostPidTest, ReusedInnerPidOrMissingProcessIsNotPublished) {
  Process(200, kNsA, "200\t7", 6000);
  const int reused = Row(7, 5999, kNsA);  // pid 7 of that container, but started at another time
  const int gone = Row(9, 6000, kNsA);
  HostPidPass p = PublishHostPids(region_.hdr, proc_.c_str(), kNsHost);
  EXPECT_EQ(p.pending, 2);
  EXPECT_EQ(p.published, 0);
  ASSERT_EQ(p.unresolved_count, 2);
  EXPECT_EQ(p.unresolved[0], PackOwner(7, 5999));
  EXPECT_EQ(RowHostPid(region_.hdr, reused), 0);
  EXPECT_EQ(RowHostPid(region_.hdr, gone), 0);
}

TEST_F(HostPidTest, ARowThatChangesHandsForgetsTheOldHostPid) {
  Process(200, kNsA, "200\t7", 6000);
  Process(201, kNsA, "201\t8", 7000);
  const int row = Row(7, 6000, kNsA);
  ASSERT_EQ(PublishHostPids(region_.hdr, proc_.c_str(), kNsHost).published, 1);
  ASSERT_EQ(RowHostPid(region_.hdr, row), 200);
  // The owner dies and pid 8 of the container claims the row (ClaimRow clears the host fields, but even
  // before it does, the old host pid no longer matches the owner).
  region_.hdr->rows[row].owner.store(PackOwner(8, 7000));
  EXPECT_EQ(RowHostPid(region_.hdr, row), 0);
  EXPECT_FALSE(PublishHostPid(region_.hdr, row, PackOwner(7, 6000), 200));  // too late for the old owner
  EXPECT_EQ(PublishHostPids(region_.hdr, proc_.c_str(), kNsHost).published, 1);
  EXPECT_EQ(RowHostPid(region_.hdr, row), 201);
}

TEST(PidNamespaceLink, ParsesOnlyTheKernelsForm) {
  EXPECT_EQ(ParsePidNamespaceLink("pid:[4026531836]"), 4026531836u);
  EXPECT_EQ(ParsePidNamespaceLink("pid:[]"), 0u);
  EXPECT_EQ(ParsePidNamespaceLink("net:[4026531836]"), 0u);
  EXPECT_EQ(ParsePidNamespaceLink("pid:[12x]"), 0u);
  EXPECT_EQ(ParsePidNamespaceLink("pid:[12]extra"), 0u);
  EXPECT_EQ(ParsePidNamespaceLink(nullptr), 0u);
}

}  // namespace
}  // namespace tessera::slice
