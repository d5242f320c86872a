// ResourceSlice building and ResourceClaim allocation reading for driver gpu.tessera.io.
#include "kube/resource_slice.h"

#include <gtest/gtest.h>

namespace tessera::kube {
namespace {

DraGpu Gpu(int index, const std::string& uuid, uint64_t mib) {
  DraGpu g;
  g.index = index;
  g.uuid = uuid;
  g.model = "NVIDIA H100 80GB HBM3";
  g.memory_bytes = mib << 20;
  g.numa_node = index % 2;
  g.compute_capability = "9.0";
  g.driver_version = "570.86.15";
  return g;
}

TEST(ResourceSlice, EachGpuIsOneSharedDeviceWithConsumableMemoryAndCores) {
  Json s = BuildResourceSlice("node-a", "uid-1", {Gpu(0, "GPU-AB12cd34-0000", 81559), Gpu(1, "GPU-ff", 40960)}, 7);
  EXPECT_EQ(s["apiVersion"], "resource.k8s.io/v1");
  EXPECT_EQ(s["metadata"]["name"], "node-a-gpu.tessera.io");
  EXPECT_EQ(s["metadata"]["ownerReferences"][0]["uid"], "uid-1");
  EXPECT_EQ(s["spec"]["driver"], "gpu.tessera.io");
  EXPECT_EQ(s["spec"]["nodeName"], "node-a");
  EXPECT_EQ(s["spec"]["pool"]["name"], "node-a");
  EXPECT_EQ(s["spec"]["pool"]["generation"], 7);
  ASSERT_EQ(s["spec"]["devices"].size(), 2u);
  const Json& d = s["spec"]["devices"][0];
  EXPECT_EQ(d["name"], "gpu-ab12cd34-0000");
  EXPECT_EQ(d["allowMultipleAllocations"], true);
  EXPECT_EQ(d["capacity"]["memory"]["value"], "81559Mi");
  EXPECT_EQ(d["capacity"]["memory"]["requestPolicy"]["default"], "81559Mi");
  EXPECT_EQ(d["capacity"]["memory"]["requestPolicy"]["validRange"]["step"], "1Mi");
  EXPECT_EQ(d["capacity"]["cores"]["value"], "100");
  EXPECT_EQ(d["capacity"]["cores"]["requestPolicy"]["default"], "100");
  EXPECT_EQ(d["capacity"]["cores"]["requestPolicy"]["validRange"]["max"], "100");
  EXPECT_EQ(d["attributes"]["uuid"]["string"], "GPU-AB12cd34-0000");
  EXPECT_EQ(d["attributes"]["model"]["string"], "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(d["attributes"]["memoryMiB"]["int"], 81559);
  EXPECT_EQ(d["attributes"]["numaNode"]["int"], 0);
  EXPECT_EQ(d["attributes"]["computeCapability"]["string"], "9.0");
  EXPECT_EQ(d["attributes"]["driverVersion"]["string"], "570.86.15");
  EXPECT_FALSE(d.contains("taints"));
  EXPECT_EQ(s["spec"]["devices"][1]["attributes"]["numaNode"]["int"], 1);
}

TEST(ResourceSlice, MemoryIsRoundedDownToWholeMiBAndUnknownAttributesAreLeftOut) {
  DraGpu g;
  g.uuid = "GPU-1";
  g.model = "sim";
  g.memory_bytes = (1024ull << 20) + 12345;
  Json d = BuildResourceSlice("n", "", {g}, 1)["spec"]["devices"][0];
  EXPECT_EQ(d["capacity"]["memory"]["value"], "1Gi");
  EXPECT_FALSE(d["attributes"].contains("numaNode"));
  EXPECT_FALSE(d["attributes"].contains("computeCapability"));
  EXPECT_FALSE(d["attributes"].contains("driverVersion"));
}

TEST(ResourceSlice, UnhealthyGpuIsTaintedNoScheduleWithTheReasonAsALabelValue) {
  DraGpu g = Gpu(0, "GPU-1", 1024);
  g.healthy = false;
  g.health_reason = "Xid 79 (GPU has fallen off the bus)";
  Json d = BuildResourceSlice("n", "", {g}, 1)["spec"]["devices"][0];
  ASSERT_EQ(d["taints"].size(), 1u);
  EXPECT_EQ(d["taints"][0]["key"], "gpu.tessera.io/unhealthy");
  EXPECT_EQ(d["taints"][0]["effect"], "NoSchedule");
  EXPECT_EQ(d["taints"][0]["value"], "Xid_79__GPU_has_fallen_off_the_bus");
}

TEST(ResourceSlice, DeviceNamesAreDnsLabels) {
  EXPECT_EQ(DraDeviceName("GPU-0a1B-xY"), "gpu-0a1b-xy");
  EXPECT_EQ(DraDeviceName("--"), "gpu");
  std::string long_uuid(100, 'a');
  EXPECT_LE(DraDeviceName(long_uuid).size(), 63u);
  EXPECT_LE(DraSliceName(std::string(300, 'n')).size(), 253u);
}

TEST(ResourceSlice, SameSliceDevicesIgnoresGenerationTaintTimesAndQuantitySpelling) {
  DraGpu g = Gpu(0, "GPU-1", 1024);
  g.healthy = false;
  Json a = BuildResourceSlice("n", "", {g}, 1);
  Json b = BuildResourceSlice("n", "", {g}, 9);
  b["spec"]["devices"][0]["taints"][0]["timeAdded"] = "2026-12-06T19:00:00Z";
  b["spec"]["devices"][0]["capacity"]["memory"]["value"] = "1073741824";
  EXPECT_TRUE(SameSliceDevices(a, b));
  g.healthy = true;
  EXPECT_FALSE(SameSliceDevices(a, BuildResourceSlice("n", "", {g}, 1)));
}

Json Claim(Json allocation) {
  return Json{{"metadata", {{"namespace", "ns"}, {"name", "c1"}, {"uid", "u1"}}},
              {"status", {{"allocation", std::move(allocation)}}}};
}

TEST(ClaimAllocation, ReadsOurDevicesConsumedCapacityShareIdAndConfig) {
  Json alloc = {
      {"devices",
       {{"results",
         {{{"request", "gpu"}, {"driver", "gpu.tessera.io"}, {"pool", "node-a"}, {"device", "gpu-1"},
           {"shareID", "s-1"}, {"consumedCapacity", {{"memory", "4Gi"}, {"cores", "30"}}}},
          {{"request", "nic"}, {"driver", "other.example.com"}, {"pool", "p"}, {"device", "d"}}}},
        {"config",
         {{{"source", "FromClass"}, {"opaque", {{"driver", "gpu.tessera.io"}, {"parameters", {{"capMode", "burst"}}}}}},
          {{"source", "FromClaim"},
           {"requests", {"gpu"}},
           {"opaque", {{"driver", "gpu.tessera.io"}, {"parameters", {{"apiVersion", "gpu.tessera.io/v1"}, {"kind", "SliceConfig"}, {"priority", 0}}}}}}}}}}};
  auto r = ParseClaimAllocation(Claim(alloc));
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->devices.size(), 1u);
  EXPECT_EQ(r->devices[0].device, "gpu-1");
  EXPECT_EQ(r->devices[0].pool, "node-a");
  EXPECT_EQ(r->devices[0].share_id, "s-1");
  EXPECT_EQ(r->devices[0].memory_bytes, 4ll << 30);
  EXPECT_EQ(r->devices[0].cores, 30);
  DraSliceConfig cfg = r->ConfigFor("gpu");
  EXPECT_EQ(cfg.priority, 0);
  EXPECT_TRUE(cfg.burst);  // the class's config still applies where the claim's does not override it
  EXPECT_EQ(r->ConfigFor("other").priority, 1);
}

TEST(ClaimAllocation, RefusesUnallocatedClaimsAndBadValuesNamingTheField) {
  Json unalloc = {{"metadata", {{"namespace", "ns"}, {"name", "c1"}}}, {"status", Json::object()}};
  auto r = ParseClaimAllocation(unalloc);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("ResourceClaim ns/c1: status.allocation"), std::string::npos);

  Json bad_cores = {{"devices",
                     {{"results",
                       {{{"request", "gpu"}, {"driver", "gpu.tessera.io"}, {"pool", "n"}, {"device", "d"},
                         {"consumedCapacity", {{"cores", "101"}}}}}}}}};
  r = ParseClaimAllocation(Claim(bad_cores));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("consumedCapacity.cores: must be 0..100"), std::string::npos);

  Json bad_cfg = {{"devices",
                   {{"results", Json::array()},
                    {"config",
                     {{{"opaque", {{"driver", "gpu.tessera.io"}, {"parameters", {{"priority", 5}}}}}}}}}}};
  r = ParseClaimAllocation(Claim(bad_cfg));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("config[0].opaque.parameters.priority: must be 0 (high) or 1"), std::string::npos);

  Json unknown = {{"devices",
                   {{"config", {{{"opaque", {{"driver", "gpu.tessera.io"}, {"parameters", {{"prio", 0}}}}}}}}}}};
  r = ParseClaimAllocation(Claim(unknown));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("parameters.prio: unknown field"), std::string::npos);
}

}  // namespace
}  // namespace tessera::kube
