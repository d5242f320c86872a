// tessera run: create (or join) a GPU slice on this host and run a command inside it.
//
//   tessera run --memory 2GiB|20%|0=2GiB,1=6GiB [--gpu 0,1|GPU-uuid,...] [--slice NAME] [--cores N]
//               [--priority high|best-effort] [--state-dir DIR] [--shim PATH] -- cmd args...
//
// The slice lives in <state dir>/<name>/{slice.conf,region} (state dir: --state-dir, else
// $TESSERA_STATE_DIR, else /run/tessera/slices). The command is exec'ed with LD_PRELOAD=libtessera.so,
// TESSERA_SLICE_CONFIG=<config> and CUDA_VISIBLE_DEVICES=<the slice's GPU UUIDs>, after its pid and start
// time are appended to <dir>/roots (the watchdog's tie from process to slice, slice/roots.h). GPUs are
// found through NVML (dlopen'ed, so the binary runs on hosts without a driver for the other subcommands).
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/run_forms.h"
#include "slice/config.h"
#include "slice/region.h"
#include "slice/roots.h"

namespace tessera::cli {
namespace {

constexpr const char* kUsage =
    "usage: tessera run --memory SIZE [--gpu LIST] [--slice NAME] [--cores N] [--priority high|best-effort]\n"
    "                   [--state-dir DIR] [--shim PATH] -- COMMAND [ARGS...]\n"
    "  --memory SIZE   memory wall per GPU: bytes, or with K/M/G/T (x1000) or KiB/MiB/GiB/TiB (x1024),\n"
    "                  e.g. 2GiB, 1500MiB, 8G; or a share of each GPU's memory, 1%..100%, e.g. 20%.\n"
    "                  Per GPU: GPU=SIZE|PCT,... with GPU an NVML index or UUID, e.g. 0=2GiB,1=6GiB or\n"
    "                  0=25%,GPU-...=50%; the listed GPUs make the slice unless --gpu lists the same ones.\n"
    "                  Required when creating a slice; optional when joining an existing one.\n"
    "  --gpu LIST      GPUs of the slice: NVML indices or UUIDs, comma separated (default 0, or the\n"
    "                  GPUs named by a per-GPU --memory)\n"
    "  --slice NAME    create or join this slice ([a-z0-9][a-z0-9._-]{0,62}; default run-<pid>)\n"
    "  --cores N       compute cap per GPU in percent, 1..100 (default 100)\n"
    "  --priority P    high or best-effort (default best-effort)\n"
    "  --state-dir DIR where slices live (default $TESSERA_STATE_DIR or /run/tessera/slices)\n"
    "  --shim PATH     libtessera.so to preload (default: next to the tessera binary, ../lib, or\n"
    "                  /usr/local/lib/tessera/libtessera.so)\n";

int Bad(const char* fmt, const char* arg) {
  fprintf(stderr, "tessera run: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n\n%s", kUsage);
  return 2;
}

struct Gpu {
  std::string uuid;
  uint64_t total = 0;
};

// Index in `all` of a GPU named by NVML index or UUID; -1 when this host has no such GPU.
int ResolveGpu(const std::string& item, const std::vector<Gpu>& all) {
  if (item.rfind("GPU-", 0) == 0 || item.rfind("MIG-", 0) == 0) {
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i].uuid == item) return static_cast<int>(i);
    return -1;
  }
  char* end = nullptr;
  long v = strtol(item.c_str(), &end, 10);
  if (!item.empty() && !*end && v >= 0 && v < static_cast<long>(all.size())) return static_cast<int>(v);
  return -1;
}

std::string NotAGpu(const char* flag, const std::string& item, size_t count) {
  return std::string(flag) + ": '" + item + "' is not a GPU of this host (indices 0.." +
         std::to_string(static_cast<int>(count) - 1) + " or GPU-... UUIDs)";
}

// GPU list from NVML, in NVML index order.
bool DiscoverGpus(std::vector<Gpu>* out, std::string* err) {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    *err = std::string("cannot load libnvidia-ml.so.1 (") + dlerror() + "): is the NVIDIA driver installed?";
    return false;
  }
  using Init = int (*)();
  using Count = int (*)(unsigned*);
  using Handle = int (*)(unsigned, void**);
  using Uuid = int (*)(void*, char*, unsigned);
  struct Mem {
    unsigned long long total, free, used;
  };
  using MemInfo = int (*)(void*, Mem*);
  auto init = reinterpret_cast<Init>(dlsym(lib, "nvmlInit_v2"));
  auto count = reinterpret_cast<Count>(dlsym(lib, "nvmlDeviceGetCount_v2"));
  auto handle = reinterpret_cast<Handle>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  auto uuid = reinterpret_cast<Uuid>(dlsym(lib, "nvmlDeviceGetUUID"));
  auto mem = reinterpret_cast<MemInfo>(dlsym(lib, "nvmlDeviceGetMemoryInfo"));
  if (!init || !count || !handle || !uuid || !mem) {
    *err = "libnvidia-ml.so.1 lacks the calls tessera run needs (driver too old?)";
    return false;
  }
  if (init() != 0) {
    *err = "nvmlInit_v2 failed: no usable NVIDIA driver";
    return false;
  }
  unsigned n = 0;
  if (count(&n) != 0) {
    *err = "nvmlDeviceGetCount_v2 failed";
    return false;
  }
  for (unsigned i = 0; i < n; ++i) {
    void* h = nullptr;
    char u[96];
    Mem m{};
    if (handle(i, &h) != 0 || uuid(h, u, sizeof(u)) != 0 || mem(h, &m) != 0) {
      *err = "NVML could not describe GPU " + std::to_string(i);
      return false;
    }
    out->push_back({u, m.total});
  }
  return true;
}

std::string FindShim(const char* flag) {
  if (flag) return flag;
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  std::vector<std::string> candidates;
  if (n > 0) {
    exe[n] = '\0';
    std::string dir(exe);
    dir = dir.substr(0, dir.rfind('/'));
    candidates.push_back(dir + "/libtessera.so");
    candidates.push_back(dir + "/../lib/libtessera.so");
    candidates.push_back(dir + "/../lib/tessera/libtessera.so");
    candidates.push_back(dir + "/../../lib/libtessera.so");  // a build tree: build/src/cli/tessera, build/lib
  }
  candidates.push_back("/usr/local/lib/tessera/libtessera.so");
  for (const std::string& c : candidates)
    if (access(c.c_str(), R_OK) == 0) {
      char real[PATH_MAX];
      return realpath(c.c_str(), real) ? real : c;
    }
  return "";
}

bool MkdirP(const std::string& path) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) return false;
    }
    if (i < path.size()) cur += path[i];
  }
  return true;
}

}  // namespace

int RunCmd(int argc, char** argv) {
  const char* memory = nullptr;
  const char* gpus_arg = nullptr;
  const char* name_arg = nullptr;
  const char* cores_arg = nullptr;
  const char* priority_arg = nullptr;
  const char* state_arg = nullptr;
  const char* shim_arg = nullptr;
  int cmd_at = -1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      cmd_at = i + 1;
      break;
    }
    if (a == "-h" || a == "--help") {
      fputs(kUsage, stdout);
      return 0;
    }
    const char** slot = a == "--memory"      ? &memory
                        : a == "--gpu"       ? &gpus_arg
                        : a == "--slice"     ? &name_arg
                        : a == "--cores"     ? &cores_arg
                        : a == "--priority"  ? &priority_arg
                        : a == "--state-dir" ? &state_arg
                        : a == "--shim"      ? &shim_arg
                                             : nullptr;
    if (!slot) {
      size_t eq = a.find('=');
      if (a.rfind("--", 0) == 0 && eq != std::string::npos) {  // --flag=value
        std::string flag = a.substr(0, eq);
        argv[i] += eq + 1;
        slot = flag == "--memory"      ? &memory
               : flag == "--gpu"       ? &gpus_arg
               : flag == "--slice"     ? &name_arg
               : flag == "--cores"     ? &cores_arg
               : flag == "--priority"  ? &priority_arg
               : flag == "--state-dir" ? &state_arg
               : flag == "--shim"      ? &shim_arg
                                       : nullptr;
        if (!slot) return Bad("unknown flag '%s'", flag.c_str());
        *slot = argv[i];
        continue;
      }
      return Bad("unexpected argument '%s' (put the command after --)", argv[i]);
    }
    if (i + 1 >= argc) return Bad("%s needs a value", argv[i]);
    *slot = argv[++i];
  }
  if (cmd_at < 0 || cmd_at >= argc)
    return Bad("%s", "no command given (tessera run [flags] -- COMMAND [ARGS...])");

  // Where the slice lives.
  std::string state =
      state_arg ? state_arg
                : (getenv("TESSERA_STATE_DIR") ? getenv("TESSERA_STATE_DIR") : "/run/tessera/slices");
  std::string name = name_arg ? name_arg : "run-" + std::to_string(getpid());
  if (!slice::ValidSliceName(name.c_str()))
    return Bad("--slice '%s' is not a valid name (allowed [a-z0-9][a-z0-9._-]{0,62})", name.c_str());
  std::string dir = state + "/" + name;
  std::string conf_path = dir + "/slice.conf";

  int cores = 100;
  if (cores_arg && !ParseCores(cores_arg, &cores))
    return Bad("--cores '%s' out of range (allowed 1..100)", cores_arg);
  int priority = 1;
  if (priority_arg) {
    std::string p = priority_arg;
    if (p == "high" || p == "0")
      priority = 0;
    else if (p == "best-effort" || p == "1")
      priority = 1;
    else
      return Bad("--priority '%s' not understood (allowed high, best-effort)", priority_arg);
  }
  // Memory: bytes or a percentage, for every GPU or per GPU.
  std::vector<MemoryLimit> limits;
  if (memory) {
    std::string why;
    if (!ParseMemory(memory, &limits, &why)) return Bad("%s", why.c_str());
  }
  bool per_gpu = !limits.empty() && !limits[0].gpu.empty();

  char err[512];
  slice::SliceConfig cfg;
  struct stat st;
  bool join = stat(conf_path.c_str(), &st) == 0;
  if (join) {
    if (!slice::LoadSliceConfig(conf_path.c_str(), true, &cfg, err, sizeof(err))) {
      fprintf(stderr, "tessera run: slice %s exists but its config is unusable: %s\n", name.c_str(), err);
      return 1;
    }
    if (memory || gpus_arg || cores_arg || priority_arg)
      fprintf(stderr, "tessera run: joining existing slice %s; its limits stay as configured (%s)\n",
              name.c_str(), conf_path.c_str());
  } else {
    if (!memory) return Bad("--memory is required to create slice '%s'", name.c_str());
    std::vector<Gpu> all;
    std::string why;
    if (!DiscoverGpus(&all, &why)) {
      fprintf(stderr, "tessera run: %s\n", why.c_str());
      return 1;
    }
    // The slice's GPUs: --gpu, else the GPUs a per-GPU --memory names, else GPU 0.
    std::vector<int> chosen;
    std::vector<std::string> items;
    if (gpus_arg) {
      items = SplitCommas(gpus_arg);
    } else if (per_gpu) {
      for (const MemoryLimit& m : limits) items.push_back(m.gpu);
    } else {
      items.push_back("0");
    }
    for (const std::string& item : items) {
      const char* flag = gpus_arg ? "--gpu" : "--memory";
      int idx = ResolveGpu(item, all);
      if (idx < 0) return Bad("%s", NotAGpu(flag, item, all.size()).c_str());
      for (int c : chosen)
        if (c == idx)
          return Bad("%s", (std::string(flag) + ": '" + item + "' names a GPU listed twice").c_str());
      chosen.push_back(idx);
    }
    // Per GPU: each GPU of the slice has exactly one limit.
    std::vector<const MemoryLimit*> limit_of(chosen.size(), per_gpu ? nullptr : &limits[0]);
    if (per_gpu) {
      for (const MemoryLimit& m : limits) {
        int idx = ResolveGpu(m.gpu, all);
        if (idx < 0) return Bad("%s", NotAGpu("--memory", m.gpu, all.size()).c_str());
        size_t k = 0;
        while (k < chosen.size() && chosen[k] != idx) ++k;
        if (k == chosen.size())
          return Bad("--memory: GPU %s is not in --gpu (list the same GPUs in both)", m.gpu.c_str());
        if (limit_of[k]) return Bad("--memory: GPU %s is given twice (by index and by UUID)", m.gpu.c_str());
        limit_of[k] = &m;
      }
      for (size_t k = 0; k < chosen.size(); ++k)
        if (!limit_of[k])
          return Bad("--memory gives no limit for GPU '%s' of --gpu (list the same GPUs in both)",
                     items[k].c_str());
    }
    if (chosen.size() > static_cast<size_t>(slice::kMaxGpus)) return Bad("--gpu: at most %s GPUs", "16");
    slice::InitSliceConfig(&cfg);
    snprintf(cfg.name, sizeof(cfg.name), "%s", name.c_str());
    if (dir.size() + 8 >= sizeof(cfg.region)) return Bad("--state-dir '%s' is too long", state.c_str());
    snprintf(cfg.region, sizeof(cfg.region), "%s/region", dir.c_str());
    cfg.priority = priority;
    for (size_t k = 0; k < chosen.size(); ++k) {
      int idx = chosen[k];
      const MemoryLimit& m = *limit_of[k];
      slice::GpuLimit& g = cfg.gpus[cfg.gpu_count++];
      snprintf(g.uuid, sizeof(g.uuid), "%s", all[idx].uuid.c_str());
      g.memory_bytes =
          m.percent ? static_cast<uint64_t>(static_cast<unsigned __int128>(all[idx].total) * m.percent / 100)
                    : m.bytes;
      if (g.memory_bytes > all[idx].total) {
        fprintf(stderr, "tessera run: --memory %s asks more than GPU %d has (%llu bytes)\n", memory, idx,
                static_cast<unsigned long long>(all[idx].total));
        return 2;
      }
      g.cores = cores;
    }
    if (!MkdirP(dir)) {
      fprintf(stderr, "tessera run: cannot create %s: %s\n", dir.c_str(), strerror(errno));
      return 1;
    }
    if (!slice::WriteSliceConfig(conf_path.c_str(), cfg, err, sizeof(err))) {
      fprintf(stderr, "tessera run: %s\n", err);
      return 1;
    }
  }
  // Create the region now so a bad state dir fails here, not inside the application.
  slice::Region region;
  if (!slice::OpenRegionForSlice(cfg, &region, err, sizeof(err))) {
    fprintf(stderr, "tessera run: %s\n", err);
    return 1;
  }
  slice::CloseRegion(&region);

  std::string shim = FindShim(shim_arg);
  if (shim.empty() || access(shim.c_str(), R_OK) != 0) {
    fprintf(stderr, "tessera run: libtessera.so not found%s%s; pass --shim PATH\n", shim_arg ? " at " : "",
            shim_arg ? shim_arg : "");
    return 1;
  }
  std::string preload = shim;
  if (const char* old = getenv("LD_PRELOAD"); old && *old) preload += std::string(":") + old;
  std::string visible;
  for (int i = 0; i < cfg.gpu_count; ++i) visible += (i ? "," : "") + std::string(cfg.gpus[i].uuid);
  setenv("LD_PRELOAD", preload.c_str(), 1);
  setenv("TESSERA_SLICE_CONFIG", conf_path.c_str(), 1);
  setenv("CUDA_VISIBLE_DEVICES", visible.c_str(), 1);
  // The exec keeps this pid and start time: the node agent's watchdog counts this process and all its
  // descendants as the slice's, shim or no shim (slice/roots.h).
  if (!slice::AppendSliceRoot(dir.c_str(), getpid(), slice::ProcessStartTicks(getpid())))
    fprintf(stderr, "tessera run: cannot record this process in %s/roots (%s); the watchdog will not see "
            "processes that drop the shim\n", dir.c_str(), strerror(errno));
  execvp(argv[cmd_at], argv + cmd_at);
  fprintf(stderr, "tessera run: cannot run %s: %s\n", argv[cmd_at], strerror(errno));
  return errno == ENOENT ? 127 : 126;
}

}  // namespace tessera::cli
