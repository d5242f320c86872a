// The node agent's side of agent rows: layout and modes, row hand-out, reclaim of dead owners, rebuild of
// a damaged region, and disk faults through the file-system seam. The shim's side (registration over the
// socket, a read-only mount, hostile processes) is tested end to end in src/shim/testing/shim_test.cc.
#include "slice/agent_rows.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "slice/fs.h"

namespace tessera::slice {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

class AgentRowsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(mkdtemp(dir_), nullptr);
    InitSliceConfig(&cfg_);
    snprintf(cfg_.name, sizeof(cfg_.name), "agent-test");
    snprintf(cfg_.region, sizeof(cfg_.region), "%s/slice.region", dir_);
    snprintf(cfg_.agent, sizeof(cfg_.agent), "%s/agent.sock", dir_);
    cfg_.gpu_count = 1;
    snprintf(cfg_.gpus[0].uuid, kUuidMax, "GPU-00000000-0000-0000-0000-000000000000");
    cfg_.gpus[0].memory_bytes = 1000 * kMiB;
    cfg_.gpus[0].cores = 100;
  }
  void TearDown() override {
    SetFsForTesting(nullptr);
    ASSERT_EQ(system(("rm -rf " + std::string(dir_)).c_str()), 0);
  }
  void Prepare(bool* rebuilt = nullptr) {
    bool r = false;
    char err[256];
    ASSERT_TRUE(PrepareAgentRegion(dir_, cfg_, &r, err, sizeof(err))) << err;
    if (rebuilt) *rebuilt = r;
  }
  Region OpenAsAgent() {
    Region r;
    char err[256];
    EXPECT_TRUE(OpenRegion(cfg_.region, true, &r, err, sizeof(err))) << err;
    return r;
  }
  mode_t Mode(const std::string& name) {
    struct stat st;
    return stat((std::string(dir_) + "/" + name).c_str(), &st) == 0 ? st.st_mode & 07777 : 0;
  }
  char dir_[64] = "/tmp/tessera-agentrows-XXXXXX";
  SliceConfig cfg_;
};

TEST_F(AgentRowsTest, NothingTheAgentWritesIsWritableByOthers) {
  Prepare();
  EXPECT_EQ(Mode(""), 0755u);
  EXPECT_EQ(Mode("rows"), 0755u);
  EXPECT_EQ(Mode("slice.region"), 0644u);
  EXPECT_EQ(Mode("live"), 0644u);
  Region r = OpenAsAgent();
  ASSERT_NE(r.hdr, nullptr);
  EXPECT_TRUE(r.agent_rows);
  EXPECT_EQ(r.hdr->limits[0].limit_bytes, 1000 * kMiB);
  int slot = -1, row_fd = -1, live_fd = -1;
  char err[256];
  ASSERT_TRUE(AssignAgentRow(&r, getpid(), &slot, &row_fd, &live_fd, err, sizeof(err))) << err;
  EXPECT_EQ(Mode("rows/" + std::to_string(slot)), 0644u);
  EXPECT_EQ(r.hdr->slot_owner[slot].load(), PackOwner(getpid(), ProcessStartTicks(getpid())));
  close(row_fd);
  close(live_fd);
  CloseRegion(&r);
}

// What a process writes through the row descriptor it was handed is what everyone's sum sees; the agent's
// view (rows mapped from their files) adds them up like a process of the slice would.
TEST_F(AgentRowsTest, HandedRowsAreSummedByEveryView) {
  Prepare();
  Region agent = OpenAsAgent();
  int slot = -1, row_fd = -1, live_fd = -1;
  char err[256];
  ASSERT_TRUE(AssignAgentRow(&agent, getpid(), &slot, &row_fd, &live_fd, err, sizeof(err))) << err;
  // A member's view: header read-only, its row read-write from the descriptor.
  Region member;
  ASSERT_TRUE(OpenRegion(cfg_.region, false, &member, err, sizeof(err))) << err;
  ASSERT_TRUE(MapFdAt(&member, row_fd, kRegionRowsOffset + slot * kRegionPage, kRegionPage, true, err, sizeof(err)));
  ASSERT_TRUE(MapFdAt(&member, live_fd, kRegionLiveOffset, kRegionLiveSize, true, err, sizeof(err)));
  member.own_row = slot;
  EXPECT_EQ(TryCharge(member.hdr, slot, 0, 600 * kMiB, false).result, ChargeResult::kOk);
  EXPECT_EQ(ReadGpuUsage(agent.hdr, 0).charged_bytes, 600 * kMiB);
  EXPECT_EQ(ReadGpuUsage(agent.hdr, 0).peak_bytes, 600 * kMiB);  // the live part is shared
  EXPECT_EQ(TryCharge(member.hdr, slot, 0, 500 * kMiB, false).result, ChargeResult::kOverLimit);
  close(row_fd);
  close(live_fd);
  CloseRegion(&member);
  CloseRegion(&agent);
}

TEST_F(AgentRowsTest, RowsOfDeadProcessesAreReclaimedWhateverTheirNamespace) {
  Prepare();
  Region agent = OpenAsAgent();
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t kid = fork();
  if (kid == 0) {
    char c;
    close(go[1]);
    while (read(go[0], &c, 1) > 0) {
    }
    _exit(0);
  }
  close(go[0]);
  int slot = -1, row_fd = -1, live_fd = -1;
  char err[256];
  ASSERT_TRUE(AssignAgentRow(&agent, kid, &slot, &row_fd, &live_fd, err, sizeof(err))) << err;
  agent.hdr->rows[slot].bytes[0].store(700 * kMiB);  // what the process held
  EXPECT_EQ(ReclaimAgentRows(&agent), 0);            // alive: kept
  close(go[1]);
  waitpid(kid, nullptr, 0);
  EXPECT_EQ(ReclaimAgentRows(&agent), 1);
  EXPECT_EQ(agent.hdr->slot_owner[slot].load(), 0u);
  EXPECT_EQ(ReadGpuUsage(agent.hdr, 0).used_bytes, 0u);
  EXPECT_EQ(Mode("rows/" + std::to_string(slot)), 0u);  // unlinked: a kept descriptor writes nowhere
  // The descriptor the dead process held still works, and counts for nothing.
  void* m = mmap(nullptr, kRegionPage, PROT_READ | PROT_WRITE, MAP_SHARED, row_fd, 0);
  ASSERT_NE(m, MAP_FAILED);
  static_cast<RegionRow*>(m)->bytes[0].store(900 * kMiB);
  RefreshRows(&agent);
  EXPECT_EQ(ReadGpuUsage(agent.hdr, 0).used_bytes, 0u);
  munmap(m, kRegionPage);
  close(row_fd);
  close(live_fd);
  CloseRegion(&agent);
}

TEST_F(AgentRowsTest, CorruptOrTruncatedRegionIsRebuiltWithANewGeneration) {
  Prepare();
  uint64_t gen0;
  {
    Region r = OpenAsAgent();
    gen0 = r.hdr->generation.load();
    CloseRegion(&r);
  }
  // A stray write into the limits (the checksum no longer matches).
  int fd = open(cfg_.region, O_RDWR);
  ASSERT_GE(fd, 0);
  uint64_t junk = 99999 * kMiB;
  ASSERT_EQ(pwrite(fd, &junk, sizeof(junk), offsetof(RegionHeader, limits) + offsetof(RegionGpuLimit, limit_bytes)),
            static_cast<ssize_t>(sizeof(junk)));
  close(fd);
  Region bad;
  char err[256];
  EXPECT_FALSE(OpenRegion(cfg_.region, false, &bad, err, sizeof(err)));
  EXPECT_NE(std::string(err).find("checksum"), std::string::npos) << err;
  bool rebuilt = false;
  Prepare(&rebuilt);
  EXPECT_TRUE(rebuilt);
  uint64_t gen1;
  {
    Region r = OpenAsAgent();
    EXPECT_EQ(r.hdr->limits[0].limit_bytes, 1000 * kMiB);
    EXPECT_EQ(r.hdr->rebuilds.load(), 1u);
    gen1 = r.hdr->generation.load();
    EXPECT_NE(gen1, gen0);
    CloseRegion(&r);
  }
  // Truncated (a disk fault on the host).
  ASSERT_EQ(truncate(cfg_.region, 100), 0);
  Prepare(&rebuilt);
  EXPECT_TRUE(rebuilt);
  Region r = OpenAsAgent();
  EXPECT_EQ(r.hdr->limits[0].limit_bytes, 1000 * kMiB);
  EXPECT_NE(r.hdr->generation.load(), gen1);
  CloseRegion(&r);
}

// Disk faults through the seam: a full disk while the agent writes a slice config leaves the old one in
// place and says which file; one while it sizes a row file hands out no row.
ssize_t FullWrite(int, const void*, size_t) {
  errno = ENOSPC;
  return -1;
}
int FullTruncate(int, off_t) {
  errno = ENOSPC;
  return -1;
}

TEST_F(AgentRowsTest, DiskFullLeavesTheOldFilesAndNamesThem) {
  const std::string conf = std::string(dir_) + "/slice.conf";
  char err[256];
  ASSERT_TRUE(WriteSliceConfig(conf.c_str(), cfg_, err, sizeof(err))) << err;
  Fs full = PosixFs();
  full.write = &FullWrite;
  full.ftruncate = &FullTruncate;
  SetFsForTesting(&full);
  SliceConfig bigger = cfg_;
  bigger.gpus[0].memory_bytes = 2000 * kMiB;
  EXPECT_FALSE(WriteSliceConfig(conf.c_str(), bigger, err, sizeof(err)));
  EXPECT_NE(std::string(err).find("slice.conf"), std::string::npos) << err;
  SetFsForTesting(nullptr);
  SliceConfig back;
  ASSERT_TRUE(LoadSliceConfig(conf.c_str(), false, &back, err, sizeof(err))) << err;
  EXPECT_EQ(back.gpus[0].memory_bytes, 1000 * kMiB);  // nothing half-applied

  Prepare();
  Region r = OpenAsAgent();
  SetFsForTesting(&full);
  int slot = -1, row_fd = -1, live_fd = -1;
  EXPECT_FALSE(AssignAgentRow(&r, getpid(), &slot, &row_fd, &live_fd, err, sizeof(err)));
  EXPECT_NE(std::string(err).find("rows/0"), std::string::npos) << err;
  SetFsForTesting(nullptr);
  EXPECT_EQ(r.hdr->slot_owner[0].load(), 0u);  // no row given
  CloseRegion(&r);
  // A region that cannot be created at all.
  const std::string other = std::string(dir_) + "/other";
  SetFsForTesting(&full);
  bool rebuilt = false;
  EXPECT_FALSE(PrepareAgentRegion(other.c_str(), cfg_, &rebuilt, err, sizeof(err)));
  EXPECT_NE(std::string(err).find("live"), std::string::npos) << err;
}

}  // namespace
}  // namespace tessera::slice
