// Entry point of the `tessera` binary: dispatches to a subcommand (see commands.h).
#include <cstdio>
#include <cstring>

#include "cli/commands.h"

#ifndef TESSERA_VERSION
#define TESSERA_VERSION "dev"
#endif

namespace {

using tessera::cli::Command;

const Command kCommands[] = {
    {"run", "run a command inside a GPU slice (memory wall, compute cap, priority)", tessera::cli::RunCmd},
    {"slices", "list the GPU slices on this host with memory used/limit per GPU and process",
     tessera::cli::SlicesCmd},
    {"sim", "replay a cluster trace through the placement engine", tessera::cli::SimCmd},
    {"scheduler", "run the scheduler extender, admission webhook and metrics", tessera::cli::SchedulerCmd},
    {"agent", "run the node agent: device plugin, slice monitor, metrics", tessera::cli::AgentCmd},
    {"top", "live table of GPUs and slices", tessera::cli::TopCmd},
    {"doctor", "diagnose a node or a cluster and name each fix", tessera::cli::DoctorCmd},
};

void Usage(FILE* out) {
  std::fprintf(out, "usage: tessera <command> [flags]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "  %-10s %s\n", "version", "print the version");
  std::fprintf(out, "\n`tessera <command> --help` shows a command's flags.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    Usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "version") || !std::strcmp(argv[1], "--version")) {
    std::printf("tessera %s\n", TESSERA_VERSION);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (!std::strcmp(argv[1], c.name)) return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "tessera: unknown command '%s'\n\n", argv[1]);
  Usage(stderr);
  return 2;
}
