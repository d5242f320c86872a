// tessera slices: the slices on this host with memory used/limit per GPU and per process.
//
//   tessera slices [--json] [--state-dir DIR]
//
// Reads every <state dir>/<name>/slice.conf and its region. Rows of processes that have died are
// reclaimed on the way (when the region is writable), so what is shown is what live processes hold.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "slice/config.h"
#include "slice/region.h"

namespace tessera::cli {
namespace {

constexpr const char* kUsage =
    "usage: tessera slices [--json] [--state-dir DIR]\n"
    "  --json          machine-readable output\n"
    "  --state-dir DIR where slices live (default $TESSERA_STATE_DIR or /run/tessera/slices)\n";

std::string Mib(uint64_t b) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.0f MiB", static_cast<double>(b) / (1 << 20));
  return buf;
}

std::string JsonStr(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o + "\"";
}

}  // namespace

int SlicesCmd(int argc, char** argv) {
  bool json = false;
  const char* state_arg = nullptr;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--state-dir" && i + 1 < argc) {
      state_arg = argv[++i];
    } else if (a.rfind("--state-dir=", 0) == 0) {
      state_arg = argv[i] + 12;
    } else if (a == "-h" || a == "--help") {
      fputs(kUsage, stdout);
      return 0;
    } else {
      fprintf(stderr, "tessera slices: unexpected argument '%s'\n\n%s", argv[i], kUsage);
      return 2;
    }
  }
  std::string state = state_arg ? state_arg : (getenv("TESSERA_STATE_DIR") ? getenv("TESSERA_STATE_DIR") : "/run/tessera/slices");
  std::vector<std::string> names;
  if (DIR* d = opendir(state.c_str())) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    closedir(d);
  }
  std::sort(names.begin(), names.end());

  std::string out = json ? "[" : "";
  if (!json) {
    char line[256];
    snprintf(line, sizeof(line), "%-24s %-42s %12s %12s %10s %8s\n", "SLICE", "GPU", "USED", "LIMIT", "REFUSALS", "PROCS");
    out += line;
  }
  int shown = 0;
  for (const std::string& name : names) {
    std::string conf = state + "/" + name + "/slice.conf";
    slice::SliceConfig cfg;
    char err[512];
    if (!slice::LoadSliceConfig(conf.c_str(), false, &cfg, err, sizeof(err))) continue;  // not a slice dir
    slice::Region r;
    bool have = slice::OpenRegion(cfg.region, true, &r, err, sizeof(err)) ||
                slice::OpenRegion(cfg.region, false, &r, err, sizeof(err));
    if (have && r.writable) slice::ReclaimDead(r.hdr);
    std::vector<slice::ProcUsage> procs;
    if (have) {
      procs.resize(slice::kRegionMaxProcs);
      procs.resize(static_cast<size_t>(slice::ReadProcs(r.hdr, procs.data(), slice::kRegionMaxProcs)));
    }
    if (json) {
      out += std::string(shown ? "," : "") + "{\"slice\":" + JsonStr(cfg.name) + ",\"config\":" + JsonStr(conf) +
             ",\"region\":" + JsonStr(cfg.region) + ",\"priority\":" + std::to_string(cfg.priority);
      if (!have) out += ",\"error\":" + JsonStr(err);
      out += ",\"gpus\":[";
      for (int g = 0; g < cfg.gpu_count; ++g) {
        slice::GpuUsage u{};
        int rg = have ? slice::FindRegionGpu(r.hdr, cfg.gpus[g].uuid) : -1;
        if (rg >= 0) u = slice::ReadGpuUsage(r.hdr, rg);
        out += std::string(g ? "," : "") + "{\"uuid\":" + JsonStr(cfg.gpus[g].uuid) +
               ",\"limit_bytes\":" + std::to_string(cfg.gpus[g].memory_bytes) +
               ",\"used_bytes\":" + std::to_string(u.used_bytes) + ",\"charged_bytes\":" + std::to_string(u.charged_bytes) +
               ",\"overhead_bytes\":" + std::to_string(u.overhead_bytes) + ",\"peak_bytes\":" + std::to_string(u.peak_bytes) +
               ",\"wall_refusals\":" + std::to_string(u.wall_refusals) + ",\"cores\":" + std::to_string(cfg.gpus[g].cores) + "}";
      }
      out += "],\"processes\":[";
      for (size_t i = 0; i < procs.size(); ++i) {
        out += std::string(i ? "," : "") + "{\"pid\":" + std::to_string(procs[i].pid);
        if (procs[i].host_pid != 0) out += ",\"host_pid\":" + std::to_string(procs[i].host_pid);
        out += ",\"bytes\":[";
        for (int g = 0; g < cfg.gpu_count; ++g) out += std::string(g ? "," : "") + std::to_string(procs[i].bytes[g]);
        out += "]}";
      }
      out += "]}";
    } else {
      for (int g = 0; g < cfg.gpu_count; ++g) {
        slice::GpuUsage u{};
        int rg = have ? slice::FindRegionGpu(r.hdr, cfg.gpus[g].uuid) : -1;
        if (rg >= 0) u = slice::ReadGpuUsage(r.hdr, rg);
        char line[320];
        snprintf(line, sizeof(line), "%-24s %-42s %12s %12s %10llu %8zu\n", g ? "" : cfg.name, cfg.gpus[g].uuid,
                 have ? Mib(u.used_bytes).c_str() : "?", Mib(cfg.gpus[g].memory_bytes).c_str(),
                 static_cast<unsigned long long>(u.wall_refusals), procs.size());
        out += line;
      }
      for (const slice::ProcUsage& p : procs) {
        std::string per;
        for (int g = 0; g < cfg.gpu_count; ++g) per += (g ? ", " : "") + Mib(p.bytes[g]);
        const std::string host = p.host_pid != 0 ? " (host pid " + std::to_string(p.host_pid) + ")" : "";
        out += "    pid " + std::to_string(p.pid) + host + ": " + per + "\n";
      }
      if (!have) out += std::string("    region unreadable: ") + err + "\n";
    }
    if (have) slice::CloseRegion(&r);
    ++shown;
  }
  if (json) {
    out += "]\n";
  } else if (shown == 0) {
    out = "no slices under " + state + "\n";
  }
  fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace tessera::cli
