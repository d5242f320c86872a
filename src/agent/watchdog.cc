#include "agent/watchdog.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "slice/config.h"
#include "slice/host_pid.h"
#include "slice/region.h"
#include "slice/roots.h"

namespace tessera::agent {

namespace fs = std::filesystem;
using gpu::Status;

namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr int kMaxAncestors = 64;

// A small file read whole (bounded: /proc files and roots are short; a hostile file cannot grow memory).
bool ReadSmallFile(const std::string& path, std::string* out, size_t max = 64 * 1024) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out->append(buf, static_cast<size_t>(n));
    if (out->size() >= max) break;
  }
  ::close(fd);
  return true;
}

// ppid and start time from the text of /proc/<pid>/stat (fields 4 and 22, after the parenthesised name).
bool ParseStat(const std::string& text, int* ppid, uint64_t* start) {
  if (!slice::ParseStatStartTicks(text.c_str(), start)) return false;
  size_t close = text.rfind(')');
  if (close == std::string::npos) return false;
  char state = 0;
  return std::sscanf(text.c_str() + close + 1, " %c %d", &state, ppid) == 2;
}

bool IsHex(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isxdigit(c); });
}

// "3f1c0a52-..." or "3f1c0a52_..." (32 hex digits and 4 separators) at the start of s → dashed form.
bool TakeUid(const std::string& s, std::string* uid) {
  if (s.size() < 36) return false;
  std::string u = s.substr(0, 36);
  for (size_t i = 0; i < u.size(); ++i) {
    const bool sep = i == 8 || i == 13 || i == 18 || i == 23;
    if (sep) {
      if (u[i] != '-' && u[i] != '_') return false;
      u[i] = '-';
    } else if (!std::isxdigit(static_cast<unsigned char>(u[i]))) {
      return false;
    }
  }
  *uid = u;
  return true;
}

std::string Mib(uint64_t b) { return std::to_string((b + kMiB / 2) / kMiB) + " MiB"; }

}  // namespace

bool ParseWatchdogAction(const std::string& text, WatchdogAction* out) {
  if (text == "off") *out = WatchdogAction::kOff;
  else if (text == "report") *out = WatchdogAction::kReport;
  else if (text == "kill") *out = WatchdogAction::kKill;
  else return false;
  return true;
}

const char* WatchdogActionName(WatchdogAction a) {
  switch (a) {
    case WatchdogAction::kOff: return "off";
    case WatchdogAction::kReport: return "report";
    case WatchdogAction::kKill: return "kill";
  }
  return "?";
}

Status ValidateWatchdogOptions(const WatchdogOptions& o) {
  if (!(o.period_s >= 0.01 && o.period_s <= 10)) {
    return Status::Error("--watchdog-period-ms: " + std::to_string(static_cast<long long>(o.period_s * 1000)) +
                         " is out of range [10, 10000]");
  }
  if (o.slack_bytes > (1ull << 40)) {
    return Status::Error("--watchdog-slack: " + std::to_string(o.slack_bytes) + " bytes is out of range [0, 1 TiB]");
  }
  if (o.proc_root.empty()) return Status::Error("--proc-root: required");
  return Status::Ok();
}

PodCgroup ParsePodCgroup(const std::string& text) {
  PodCgroup best;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    // "<id>:<controllers>:<path>"
    size_t c1 = line.find(':');
    size_t c2 = c1 == std::string::npos ? c1 : line.find(':', c1 + 1);
    if (c2 == std::string::npos) continue;
    const std::string path = line.substr(c2 + 1);
    std::vector<std::string> parts;
    for (size_t p = 0; p <= path.size();) {
      size_t slash = path.find('/', p);
      if (slash == std::string::npos) slash = path.size();
      if (slash > p) parts.push_back(path.substr(p, slash - p));
      p = slash + 1;
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      // The pod's cgroup: "pod<uid>" (cgroupfs) or "kubepods[-<qos>]-pod<uid_>.slice" (systemd).
      const std::string& comp = parts[i];
      size_t at = comp.rfind("pod");
      std::string uid;
      if (at == std::string::npos || !TakeUid(comp.substr(at + 3), &uid)) continue;
      if (comp.size() != at + 3 + 36 && comp.substr(at + 3 + 36) != ".slice") continue;
      PodCgroup found;
      found.pod_uid = uid;
      if (i + 1 < parts.size()) {
        // The container's cgroup: "<id>" or "<runtime>-<id>.scope" (cri-containerd-, crio-, docker-).
        std::string c = parts[i + 1];
        if (c.size() > 6 && c.compare(c.size() - 6, 6, ".scope") == 0) c.resize(c.size() - 6);
        size_t dash = c.rfind('-');
        if (dash != std::string::npos) c = c.substr(dash + 1);
        if (IsHex(c) && c.size() >= 12) found.container_id = c;
      }
      // The line that also names the container wins (v1 lists one line per hierarchy).
      if (best.pod_uid.empty() || (best.container_id.empty() && !found.container_id.empty())) best = found;
      break;
    }
  }
  return best;
}

std::vector<WatchedSlice> ListStandaloneSlices(const fs::path& dir) {
  std::vector<WatchedSlice> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path conf = it->path() / "slice.conf";
    slice::SliceConfig cfg;
    char err[256];
    if (!slice::LoadSliceConfig(conf.c_str(), false, &cfg, err, sizeof(err))) continue;
    WatchedSlice s;
    s.name = cfg.name;
    s.region = cfg.region;
    for (int g = 0; g < cfg.gpu_count; ++g) s.limits[cfg.gpus[g].uuid] = cfg.gpus[g].memory_bytes;
    std::string roots;
    if (ReadSmallFile((it->path() / slice::kRootsFile).string(), &roots, 1 << 20)) {
      size_t p = 0;
      while (p < roots.size() && s.roots.size() < 4096) {
        size_t eol = roots.find('\n', p);
        if (eol == std::string::npos) eol = roots.size();
        int pid = 0;
        unsigned long long start = 0;
        if (std::sscanf(roots.substr(p, eol - p).c_str(), "%d %llu", &pid, &start) == 2 && pid > 0) {
          s.roots.emplace_back(pid, start);
        }
        p = eol + 1;
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

bool KillProcess(const std::string& proc_root, int pid, uint64_t start_ticks, std::string* why) {
  auto same_process = [&] {
    std::string stat;
    int ppid = 0;
    uint64_t start = 0;
    return ReadSmallFile(proc_root + "/" + std::to_string(pid) + "/stat", &stat) &&
           ParseStat(stat, &ppid, &start) && start == start_ticks;
  };
#ifdef SYS_pidfd_open
  // The pidfd holds on to this very process: once its start time checks out, the signal cannot reach a
  // new process that reused the pid.
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd >= 0) {
    if (!same_process()) {
      ::close(fd);
      *why = "it exited";
      return false;
    }
    int rc = static_cast<int>(::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0));
    int e = errno;
    ::close(fd);
    if (rc == 0) return true;
    *why = std::string("pidfd_send_signal: ") + std::strerror(e);
    return false;
  }
  if (errno == ESRCH) {
    *why = "it exited";
    return false;
  }
#endif
  // No pidfds (kernel before 5.3): the window between check and kill is one syscall.
  if (!same_process()) {
    *why = "it exited";
    return false;
  }
  if (::kill(pid, SIGKILL) == 0) return true;
  *why = std::string("kill: ") + std::strerror(errno);
  return false;
}

// What the watchdog reads about one process.
struct Watchdog::Proc {
  int pid = 0;
  int ppid = 0;
  uint64_t start = 0;
  PodCgroup pod;
  std::string comm;
};

Watchdog::Watchdog(WatchdogOptions opts, gpu::Backend* backend, WatchdogHooks hooks)
    : opts_(std::move(opts)), backend_(backend), hooks_(std::move(hooks)) {
  if (!hooks_.kill) {
    const std::string root = opts_.proc_root;
    hooks_.kill = [root](int pid, uint64_t start, std::string* why) { return KillProcess(root, pid, start, why); };
  }
}

Watchdog::~Watchdog() { Stop(); }

void Watchdog::Log(const std::string& line) const {
  if (hooks_.log) {
    hooks_.log(line);
  } else {
    std::fprintf(stderr, "tessera-watchdog: %s\n", line.c_str());
  }
}

void Watchdog::SetGpus(std::vector<std::string> uuids) {
  std::lock_guard<std::mutex> lock(mu_);
  gpus_ = std::move(uuids);
}

WatchdogStats Watchdog::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Watchdog::Start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] {
    while (!stopping_) {
      PollOnce();
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, std::chrono::duration<double>(opts_.period_s), [this] { return stopping_.load(); });
    }
  });
}

void Watchdog::Stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Watchdog::ReadProc(int pid, Proc* out) const {
  const std::string base = opts_.proc_root + "/" + std::to_string(pid);
  std::string text;
  if (!ReadSmallFile(base + "/stat", &text) || !ParseStat(text, &out->ppid, &out->start)) return false;
  out->pid = pid;
  if (ReadSmallFile(base + "/cgroup", &text)) out->pod = ParsePodCgroup(text);
  if (ReadSmallFile(base + "/comm", &text, 64)) {
    while (!text.empty() && text.back() == '\n') text.pop_back();
    out->comm = text;
  }
  return true;
}

std::vector<WatchdogFinding> Watchdog::PollOnce() {
  std::lock_guard<std::mutex> poll_guard(poll_mu_);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<WatchdogFinding> findings;
  std::vector<std::string> gpus;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gpus = gpus_;
  }
  // The driver's process lists first: when no GPU has a process holding memory there is nothing to
  // judge, and the slices (a directory listing and two files read per slice) are not read at all. The
  // watchdog polls ten times a second on every node, mostly on idle GPUs.
  uint64_t failures = 0;
  std::vector<std::pair<std::string, std::vector<gpu::ProcessUsage>>> lists;
  bool any_process = false;
  for (const std::string& uuid : gpus) {
    std::vector<gpu::ProcessUsage> list;
    if (!backend_->Processes(uuid, &list).ok()) {
      ++failures;
      continue;
    }
    for (const auto& u : list) any_process |= u.used_known && u.used_bytes > 0;
    lists.emplace_back(uuid, std::move(list));
  }
  const std::vector<WatchedSlice> slices =
      any_process && hooks_.slices ? hooks_.slices() : std::vector<WatchedSlice>{};
  std::map<std::string, std::vector<size_t>> by_pod;        // pod UID → slices
  std::map<std::pair<int, uint64_t>, size_t> by_root;       // standalone root → slice
  std::set<std::string> hosting;                            // GPUs some slice lives on
  for (size_t i = 0; i < slices.size(); ++i) {
    if (!slices[i].pod_uid.empty()) by_pod[slices[i].pod_uid].push_back(i);
    for (const auto& r : slices[i].roots) by_root[r] = i;
    for (const auto& [uuid, limit] : slices[i].limits) hosting.insert(uuid);
  }
  // Region rows of a slice, read at most once per poll and only when needed: (pid, pidns) and host pids of
  // the processes the shim accounts.
  std::map<size_t, std::pair<std::set<std::pair<int, uint64_t>>, std::set<int>>> rows;
  auto rows_of = [&](size_t i) -> const std::pair<std::set<std::pair<int, uint64_t>>, std::set<int>>& {
    auto it = rows.find(i);
    if (it != rows.end()) return it->second;
    auto& r = rows[i];
    slice::Region region;
    char err[256];
    if (slice::OpenRegion(slices[i].region.c_str(), false, &region, err, sizeof(err))) {
      std::vector<slice::ProcUsage> procs(slice::kRegionMaxProcs);
      const int n = slice::ReadProcs(region.hdr, procs.data(), slice::kRegionMaxProcs);
      for (int k = 0; k < n; ++k) {
        r.first.insert({procs[k].pid, procs[k].pidns});
        if (procs[k].host_pid > 0) r.second.insert(procs[k].host_pid);
      }
      slice::CloseRegion(&region);
    }
    return r;
  };
  auto pidns_of = [&](int pid) -> uint64_t {
    char link[64] = {};
    const std::string path = opts_.proc_root + "/" + std::to_string(pid) + "/ns/pid";
    ssize_t n = ::readlink(path.c_str(), link, sizeof(link) - 1);
    return n > 0 ? slice::ParsePidNamespaceLink(link) : 0;
  };
  auto accounted = [&](size_t i, int pid) {
    const auto& r = rows_of(i);
    if (r.second.count(pid)) return true;
    const uint64_t ns = pidns_of(pid);
    return ns != 0 && r.first.count({pid, ns}) > 0;
  };

  // Which slice a process belongs to on GPU uuid; -1 none.
  auto slice_of = [&](const Proc& p, const std::string& uuid) -> long {
    if (!p.pod.pod_uid.empty()) {
      auto it = by_pod.find(p.pod.pod_uid);
      if (it == by_pod.end()) return -1;
      const auto& cands = it->second;
      if (cands.size() == 1) return static_cast<long>(cands[0]);
      if (hooks_.container_name && !p.pod.container_id.empty()) {
        const std::string name = hooks_.container_name(p.pod.pod_uid, p.pod.container_id);
        for (size_t i : cands) {
          if (!name.empty() && slices[i].container == name) return static_cast<long>(i);
        }
      }
      for (size_t i : cands) {
        if (rows_of(i).second.count(p.pid)) return static_cast<long>(i);
      }
      long on_gpu = -1;
      for (size_t i : cands) {
        if (!slices[i].limits.count(uuid)) continue;
        if (on_gpu >= 0) return -1;  // several containers of the pod on this GPU and nothing tells them apart
        on_gpu = static_cast<long>(i);
      }
      return on_gpu;
    }
    // Not in a pod: a standalone slice whose root is the process or one of its ancestors.
    Proc cur = p;
    for (int depth = 0; depth < kMaxAncestors && !by_root.empty(); ++depth) {
      auto it = by_root.find({cur.pid, cur.start});
      if (it != by_root.end()) return static_cast<long>(it->second);
      if (cur.ppid <= 1) break;
      Proc parent;
      if (!ReadProc(cur.ppid, &parent)) break;
      cur = parent;
    }
    for (size_t i = 0; i < slices.size(); ++i) {
      if (slices[i].pod_uid.empty() && !slices[i].roots.empty() && accounted(i, p.pid)) return static_cast<long>(i);
    }
    return -1;
  };

  struct Member {
    Proc proc;
    uint64_t bytes;
  };
  std::map<std::string, std::pair<int, uint64_t>> unknown_now;
  std::vector<MeasuredSliceGpu> measured;
  std::set<std::string> over_now;
  std::set<std::pair<int, uint64_t>> unknown_seen;
  uint64_t kills = 0, reports = 0, kill_failures = 0, unknown_kills = 0, unknown_reports = 0;
  for (const auto& [uuid, list] : lists) {
    std::map<size_t, std::vector<Member>> members;
    std::vector<Member> strangers;
    for (const auto& u : list) {
      if (!u.used_known || u.used_bytes == 0) continue;
      Proc p;
      if (!ReadProc(static_cast<int>(u.pid), &p)) continue;  // gone: the driver is freeing its memory
      const long s = slice_of(p, uuid);
      if (s >= 0) {
        members[static_cast<size_t>(s)].push_back({p, u.used_bytes});
      } else {
        strangers.push_back({p, u.used_bytes});
      }
    }
    for (auto& [i, ms] : members) {
      const WatchedSlice& sl = slices[i];
      uint64_t total = 0;
      for (const auto& m : ms) total += m.bytes;
      measured.push_back({sl.name, uuid, total});
      auto lim = sl.limits.find(uuid);
      const uint64_t limit = lim == sl.limits.end() ? 0 : lim->second;
      const std::string key = sl.name + "/" + uuid;
      if (total <= limit + opts_.slack_bytes || opts_.over_limit == WatchdogAction::kOff) continue;
      over_now.insert(key);
      const std::string who = sl.pod_uid.empty() ? "standalone slice " + sl.name
                                                 : sl.namespace_ + "/" + sl.pod + " container " + sl.container +
                                                       " (slice " + sl.name + ")";
      const std::string where = lim == sl.limits.end() ? uuid + ", a GPU outside the slice," : uuid;
      if (opts_.over_limit == WatchdogAction::kReport) {
        if (reported_over_.count(key)) continue;
        ++reports;
        const std::string msg = "holds " + Mib(total) + " on " + where + " against its wall of " + Mib(limit) +
                                " (driver's per-process figures; report only)";
        Log(who + " " + msg);
        if (hooks_.event && !sl.pod_uid.empty()) hooks_.event(sl, "TesseraOverMemoryLimit", "slice " + sl.name + " " + msg);
        for (const auto& m : ms) findings.push_back({WatchdogFinding::kOverLimit, sl.name, uuid, m.proc.pid, m.bytes, total, limit, false});
        continue;
      }
      // Kill: processes the shim does not account first (they are the ones past its wall), largest first.
      std::vector<std::pair<bool, Member>> order;
      for (const auto& m : ms) order.push_back({accounted(i, m.proc.pid), m});
      std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
        if (a.first != b.first) return !a.first;
        return a.second.bytes > b.second.bytes;
      });
      uint64_t left = total;
      for (const auto& [acc, m] : order) {
        if (left <= limit + opts_.slack_bytes) break;
        std::string why;
        WatchdogFinding f{WatchdogFinding::kOverLimit, sl.name, uuid, m.proc.pid, m.bytes, total, limit, false};
        f.killed = hooks_.kill(m.proc.pid, m.proc.start, &why);
        const std::string what = "process " + std::to_string(m.proc.pid) + " (" + m.proc.comm + ", " +
                                 (acc ? "accounted by the shim" : "not accounted by the shim") + ") holding " +
                                 Mib(m.bytes) + " on " + where + ": the slice held " + Mib(total) +
                                 " against its wall of " + Mib(limit);
        if (f.killed) {
          ++kills;
          left -= std::min(left, m.bytes);
          Log(who + ": killed " + what);
          if (hooks_.event && !sl.pod_uid.empty()) hooks_.event(sl, "TesseraOverMemoryLimitKilled", "killed " + what);
        } else {
          ++kill_failures;
          Log(who + ": could not kill " + what + " (" + why + ")");
        }
        findings.push_back(f);
      }
    }
    // Processes of no slice, on a GPU that is shared.
    if (!opts_.all_gpus_shared && !hosting.count(uuid)) continue;
    for (const auto& m : strangers) {
      // The MPS server holds its clients' memory; the clients themselves are listed and judged.
      if (m.proc.comm.rfind("nvidia-cuda-mps", 0) == 0) continue;
      auto& [n, bytes] = unknown_now[uuid];
      ++n;
      bytes += m.bytes;
      const std::pair<int, uint64_t> id{m.proc.pid, m.proc.start};
      unknown_seen.insert(id);
      if (opts_.unknown == WatchdogAction::kOff) continue;
      const std::string what = "process " + std::to_string(m.proc.pid) + " (" + m.proc.comm + ") holds " +
                               Mib(m.bytes) + " on shared GPU " + uuid + " and belongs to no slice" +
                               (m.proc.pod.pod_uid.empty() ? "" : " (pod " + m.proc.pod.pod_uid + ")");
      WatchdogFinding f{WatchdogFinding::kUnknown, "", uuid, m.proc.pid, m.bytes, 0, 0, false};
      if (opts_.unknown == WatchdogAction::kKill) {
        std::string why;
        f.killed = hooks_.kill(m.proc.pid, m.proc.start, &why);
        if (f.killed) ++unknown_kills; else ++kill_failures;
        Log(f.killed ? "killed " + what : what + "; could not kill it (" + why + ")");
      } else if (!reported_unknown_.count(id)) {
        ++unknown_reports;
        reported_unknown_.insert(id);
        Log(what);
      }
      findings.push_back(f);
    }
  }
  // An excursion ends when the slice is back under its wall; a process is forgotten when it is gone.
  for (auto it = reported_over_.begin(); it != reported_over_.end();) {
    it = over_now.count(*it) ? std::next(it) : reported_over_.erase(it);
  }
  if (opts_.over_limit == WatchdogAction::kReport) reported_over_.insert(over_now.begin(), over_now.end());
  for (auto it = reported_unknown_.begin(); it != reported_unknown_.end();) {
    it = unknown_seen.count(*it) ? std::next(it) : reported_unknown_.erase(it);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.polls;
  stats_.poll_failures += failures;
  stats_.last_poll_seconds = secs;
  stats_.over_limit_kills += kills;
  stats_.over_limit_reports += reports;
  stats_.kill_failures += kill_failures;
  stats_.unknown_kills += unknown_kills;
  stats_.unknown_reports += unknown_reports;
  stats_.unknown_now = std::move(unknown_now);
  stats_.measured = std::move(measured);
  return findings;
}

}  // namespace tessera::agent
