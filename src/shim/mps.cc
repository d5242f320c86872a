#include "shim/mps.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace tessera::shim {

namespace {

bool MkdirP(const std::string& dir, mode_t mode) {
  std::string cur;
  size_t i = 0;
  while (i <= dir.size()) {
    size_t j = dir.find('/', i);
    if (j == std::string::npos) j = dir.size();
    cur = dir.substr(0, j);
    if (!cur.empty() && mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) return false;
    i = j + 1;
  }
  return true;
}

// Runs nvidia-cuda-mps-control with the daemon's directories; feeds `input` to its stdin when
// `daemonize` is false and returns what it printed.
bool RunControl(const MpsPaths& paths, const char* gpu, bool daemonize, const std::string& input,
                std::string* out, std::string* err) {
  int in_pipe[2], out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0) {
    *err = std::string("pipe: ") + std::strerror(errno);
    return false;
  }
  pid_t pid = fork();
  if (pid < 0) {
    *err = std::string("fork: ") + std::strerror(errno);
    return false;
  }
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(out_pipe[1], 2);
    setenv("CUDA_MPS_PIPE_DIRECTORY", paths.pipe_dir.c_str(), 1);
    setenv("CUDA_MPS_LOG_DIRECTORY", paths.log_dir.c_str(), 1);
    if (gpu) setenv("CUDA_VISIBLE_DEVICES", gpu, 1);
    // The daemon itself must not run under the shim (it is not part of any slice).
    unsetenv("LD_PRELOAD");
    unsetenv("TESSERA_SLICE_CONFIG");
    if (daemonize) {
      execlp("nvidia-cuda-mps-control", "nvidia-cuda-mps-control", "-d", static_cast<char*>(nullptr));
    } else {
      execlp("nvidia-cuda-mps-control", "nvidia-cuda-mps-control", static_cast<char*>(nullptr));
    }
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  if (!input.empty()) {
    ssize_t off = 0;
    while (off < static_cast<ssize_t>(input.size())) {
      ssize_t w = write(in_pipe[1], input.data() + off, input.size() - off);
      if (w <= 0) break;
      off += w;
    }
  }
  close(in_pipe[1]);
  std::string text;
  char buf[512];
  for (;;) {
    ssize_t n = read(out_pipe[0], buf, sizeof(buf));
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  close(out_pipe[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (out) *out = text;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *err = "nvidia-cuda-mps-control exited with " +
           std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) +
           (text.empty() ? "" : ": " + text);
    return false;
  }
  return true;
}

}  // namespace

MpsPaths MpsPathsFor(const std::string& gpu_uuid, const std::string& base) {
  return MpsPaths{base + "/" + gpu_uuid + "/pipe", base + "/" + gpu_uuid + "/log"};
}

bool MpsControl(const MpsPaths& paths, const std::string& command, std::string* reply, std::string* err) {
  return RunControl(paths, nullptr, false, command + "\n", reply, err);
}

bool StartMpsDaemon(const std::string& gpu_uuid, const MpsPaths& paths, std::string* err) {
  std::string reply, ignored;
  struct stat st;
  if (stat((paths.pipe_dir + "/control").c_str(), &st) == 0 &&
      MpsControl(paths, "get_server_list", &reply, &ignored)) {
    return true;  // already ours and answering
  }
  if (!MkdirP(paths.pipe_dir, 0755) || !MkdirP(paths.log_dir, 0755)) {
    *err = "cannot create " + paths.pipe_dir + ": " + std::strerror(errno);
    return false;
  }
  if (!RunControl(paths, gpu_uuid.c_str(), true, "", &reply, err)) return false;
  // The daemon creates its control socket shortly after the launcher returns.
  for (int i = 0; i < 200; ++i) {
    if (stat((paths.pipe_dir + "/control").c_str(), &st) == 0) return true;
    usleep(10'000);
  }
  *err = "MPS control daemon did not create " + paths.pipe_dir + "/control";
  return false;
}

bool StopMpsDaemon(const MpsPaths& paths, std::string* err) {
  std::string reply;
  return MpsControl(paths, "quit", &reply, err);
}

int MpsGrantedSms(int pct, int sm_count) {
  if (pct <= 0 || sm_count <= 0) return 0;
  const int sms = static_cast<int>(static_cast<int64_t>(pct) * sm_count / 100);
  return sms / 2 * 2;
}

int MpsPartitionPercent(int cores, int priority, int override_pct, bool high_priority_present, int sm_count) {
  int pct = cores;
  if (override_pct >= 1 && override_pct <= 100) {
    pct = override_pct;
  } else if (priority != 0 && high_priority_present) {
    pct = cores - kMpsBestEffortGuardPct;
  } else if (sm_count > 0 && cores >= 1 && cores < 100) {
    // At least cores % of the SMs: ceil(cores × N / 100), up to an even count.
    int want = static_cast<int>((static_cast<int64_t>(cores) * sm_count + 99) / 100);
    want += want % 2;
    if (want > sm_count) want = sm_count;
    while (pct < 100 && MpsGrantedSms(pct, sm_count) < want) ++pct;
  }
  return pct < 1 ? 1 : (pct > 100 ? 100 : pct);
}

int64_t SpatialChargePpm(int granted_sms, int sm_count, int asked_pct) {
  if (granted_sms > 0 && sm_count > 0) {
    const int64_t ppm = static_cast<int64_t>(granted_sms) * 1'000'000 / sm_count;
    return ppm > 1'000'000 ? 1'000'000 : ppm;
  }
  asked_pct = asked_pct < 1 ? 1 : (asked_pct > 100 ? 100 : asked_pct);
  return static_cast<int64_t>(asked_pct) * 10'000;
}

void MpsApplyClientEnv(const std::string& pipe_dir, int pct, int priority) {
  setenv("CUDA_MPS_PIPE_DIRECTORY", pipe_dir.c_str(), 1);
  pct = pct < 1 ? 1 : (pct > 100 ? 100 : pct);
  setenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", std::to_string(pct).c_str(), 1);
  // Best-effort clients yield to normal-priority ones inside the MPS server's scheduler.
  setenv("CUDA_MPS_CLIENT_PRIORITY", priority == 0 ? "0" : "1", 1);
}

}  // namespace tessera::shim
