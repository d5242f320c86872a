// tessera top: a live table of GPUs and slices, from this host's slice regions or a node agent's metrics.
#include <signal.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/top_fetch.h"
#include "cli/top_local.h"
#include "cli/top_model.h"
#include "cli/top_prom.h"
#include "cli/top_render.h"

namespace tessera::cli {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

int TerminalWidth() {
  struct winsize ws;
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 120;
}

std::string Clock() {
  std::time_t t = std::time(nullptr);
  struct tm tm;
  localtime_r(&t, &tm);
  char b[16];
  std::strftime(b, sizeof b, "%H:%M:%S", &tm);
  return b;
}

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Sleeps up to `seconds`, waking early on Ctrl-C.
void Pause(double seconds) {
  auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!g_stop && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace

int TopCmd(int argc, char** argv) {
  CLI::App app{"Live table of GPUs and slices: memory used/limit, compute cap and measured share, priority, "
               "processes. Reads this host's slice regions, or a node agent's metrics with --endpoint.",
               "tessera top"};
  std::string endpoint;
  std::vector<std::string> dirs;
  bool once = false, json = false, no_color = false;
  double interval = 2.0;
  int iterations = 0;
  app.add_option("--endpoint", endpoint, "node agent metrics endpoint, e.g. http://node1:9394 (NodePort 31992)");
  app.add_option("--slices-dir", dirs,
                 "directory of slices to read (repeatable; default /run/tessera/slices and /var/lib/tessera/slices)");
  app.add_flag("--once", once, "print one table and exit");
  app.add_flag("--json", json, "print JSON instead of a table (implies --once unless -n is given)");
  app.add_option("--interval", interval, "seconds between refreshes (0.1..3600)")->check(CLI::Range(0.1, 3600.0));
  app.add_option("-n,--iterations", iterations, "stop after this many refreshes (0 = until Ctrl-C)")
      ->check(CLI::Range(0, 1000000));
  app.add_flag("--no-color", no_color, "no ANSI colour or screen clearing");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (dirs.empty()) dirs = DefaultSliceDirs();
  if (json && iterations == 0) once = true;
  if (once) iterations = 1;

  std::string url;
  if (!endpoint.empty()) {
    std::string err;
    if (!NormalizeMetricsUrl(endpoint, &url, &err)) {
      std::fprintf(stderr, "tessera top: %s\n", err.c_str());
      return 2;
    }
  }

  // Measured share from local regions needs two readings; take the first one now so the first table has it.
  TopSnapshot prev;
  std::vector<std::string> warnings;
  if (url.empty()) {
    prev = ReadLocalSnapshot(dirs, &warnings);
    Pause(std::min(interval, 0.5));
  }

  bool live = isatty(STDOUT_FILENO) && !json && !no_color;
  ::signal(SIGINT, OnSignal);
  ::signal(SIGTERM, OnSignal);
  for (int i = 0; !g_stop && (iterations == 0 || i < iterations); ++i) {
    if (i > 0) Pause(interval);
    if (g_stop) break;
    TopSnapshot snap;
    warnings.clear();
    if (!url.empty()) {
      std::string body, err;
      std::vector<PromSample> samples;
      if (!FetchText(url, 5.0, &body, &err) || !ParsePromText(body, &samples, &err)) {
        std::fprintf(stderr, "tessera top: %s\n", err.c_str());
        if (iterations == 1) return 1;
        continue;
      }
      snap = SnapshotFromMetrics(samples, url);
      snap.time_ms = NowMs();
    } else {
      snap = ReadLocalSnapshot(dirs, &warnings);
      ApplyRates(prev, &snap);
      prev = snap;
    }
    if (json) {
      std::cout << RenderJson(snap) << std::flush;
      continue;
    }
    RenderOptions opt;
    opt.color = live;
    opt.width = TerminalWidth();
    opt.clock = Clock();
    std::string table = RenderTable(snap, opt);
    for (const std::string& w : warnings) table += "warning: " + w + "\n";
    if (live) std::cout << "\x1b[H\x1b[2J";  // home + clear, like top
    std::cout << table << std::flush;
  }
  return 0;
}

}  // namespace tessera::cli
