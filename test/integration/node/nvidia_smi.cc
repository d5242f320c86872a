// nvidia-smi stand-in of the worker image (the real one is NVIDIA's and not redistributable): asks NVML
// what nvidia-smi asks it — device count, name, UUID, memory used and total — through libnvidia-ml.so.1
// (the test's fake NVML in the image; the driver's on a GPU node), so inside a slice it shows what the
// shim's NVML hooks report: the slice's wall as total. Output: a short table, or with
//   --query-gpu=uuid,name,memory.total,memory.used --format=csv,noheader,nounits
// (the only query it answers) one CSV line per GPU, as nvidia-smi prints it.
#include <nvml.h>

#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  bool csv = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--query-gpu=uuid,name,memory.total,memory.used") == 0) {
      csv = true;
    } else if (std::strcmp(argv[i], "--format=csv,noheader,nounits") != 0) {
      std::fprintf(stderr,
                   "nvidia-smi (Tessera test stand-in): unknown argument '%s'; allowed: none, or "
                   "--query-gpu=uuid,name,memory.total,memory.used --format=csv,noheader,nounits\n",
                   argv[i]);
      return 2;
    }
  }
  nvmlReturn_t r = nvmlInit_v2();
  if (r != NVML_SUCCESS) {
    std::printf("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver (NVML error %d)\n",
                static_cast<int>(r));
    return 9;
  }
  unsigned int count = 0;
  if ((r = nvmlDeviceGetCount_v2(&count)) != NVML_SUCCESS) {
    std::printf("nvmlDeviceGetCount failed: %d\n", static_cast<int>(r));
    return 9;
  }
  char driver[96] = "?";
  nvmlSystemGetDriverVersion(driver, sizeof(driver));
  if (!csv) {
    std::printf("+-----------------------------------------------------------------------------------+\n");
    std::printf("| NVIDIA-SMI (Tessera test stand-in)        Driver Version: %-24s|\n", driver);
    std::printf("| GPU  Name                  UUID                                      Memory-Usage |\n");
    std::printf("+-----------------------------------------------------------------------------------+\n");
  }
  int rc = 0;
  for (unsigned int i = 0; i < count; ++i) {
    nvmlDevice_t d;
    char name[96] = "?", uuid[96] = "?";
    nvmlMemory_t mem{};
    if (nvmlDeviceGetHandleByIndex_v2(i, &d) != NVML_SUCCESS || nvmlDeviceGetMemoryInfo(d, &mem) != NVML_SUCCESS) {
      std::printf("GPU %u: NVML query failed\n", i);
      rc = 9;
      continue;
    }
    nvmlDeviceGetName(d, name, sizeof(name));
    nvmlDeviceGetUUID(d, uuid, sizeof(uuid));
    const unsigned long long total = mem.total >> 20, used = mem.used >> 20;
    if (csv) {
      std::printf("%s, %s, %llu, %llu\n", uuid, name, total, used);
    } else {
      std::printf("| %3u  %-20.20s  %-40.40s %6lluMiB / %6lluMiB |\n", i, name, uuid, used, total);
    }
  }
  if (!csv) std::printf("+-----------------------------------------------------------------------------------+\n");
  nvmlShutdown();
  return rc;
}
