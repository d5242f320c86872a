#include <dlfcn.h>
#include <gtest/gtest.h>

#include "gpu/backend.h"

namespace tessera::gpu {
namespace {

TEST(NvmlBackend, MissingLibraryIsAClearError) {
  auto b = MakeNvmlBackend("libnvidia-ml-does-not-exist.so.1");
  Status st = b->Init();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("libnvidia-ml-does-not-exist.so.1"), std::string::npos);
  EXPECT_NE(st.message().find("driver"), std::string::npos);
  std::vector<GpuInfo> gpus;
  EXPECT_FALSE(b->Discover(&gpus).ok());
}

TEST(NvmlBackend, LibraryWithoutNvmlSymbolsIsRejected) {
  // libc is loadable but is not NVML: every required symbol is missing.
  auto b = MakeNvmlBackend("libc.so.6");
  Status st = b->Init();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("nvmlInit_v2"), std::string::npos);
}

// On a GPU machine: discovery must find every card with a UUID, a model and memory.
TEST(NvmlBackend, DiscoversRealGpus) {
  void* probe = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!probe) GTEST_SKIP() << "no NVIDIA driver on this machine";
  dlclose(probe);
  auto b = MakeNvmlBackend();
  Status st = b->Init();
  ASSERT_TRUE(st.ok()) << st.message();
  std::vector<GpuInfo> gpus;
  st = b->Discover(&gpus);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_FALSE(gpus.empty());
  for (const auto& g : gpus) {
    EXPECT_EQ(g.uuid.rfind("GPU-", 0), 0u) << g.uuid;
    EXPECT_FALSE(g.model.empty());
    EXPECT_GT(g.memory_bytes, 0u);
    GpuUsage u;
    ASSERT_TRUE(b->Usage(g.uuid, &u).ok());
    EXPECT_EQ(u.memory_total_bytes, g.memory_bytes);
    std::printf("gpu %d %s %s %llu MiB numa=%d bus=%s healthy=%d util=%d%%\n", g.index, g.uuid.c_str(),
                g.model.c_str(), static_cast<unsigned long long>(g.memory_bytes >> 20), g.numa_node,
                g.pci_bus_id.c_str(), g.healthy, u.utilization_percent);
  }
  std::optional<HealthEvent> ev;
  EXPECT_TRUE(b->WaitHealthEvent(std::chrono::milliseconds(10), &ev).ok());
}

}  // namespace
}  // namespace tessera::gpu
