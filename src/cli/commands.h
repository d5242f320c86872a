// The `tessera` binary's subcommands.
//
// main.cc only picks a subcommand by name and hands it the remaining arguments; each subcommand lives
// in its own cmd_<name>.cc, parses its own flags and returns the process exit code (0 success,
// 1 runtime failure, 2 bad usage). Subcommands never throw out of their entry point.
#pragma once

namespace tessera::cli {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);  // argv[0] is the subcommand name
};

int RunCmd(int argc, char** argv);       // tessera run: start a command inside a slice
int SlicesCmd(int argc, char** argv);    // tessera slices: list slices on this host
int SimCmd(int argc, char** argv);       // tessera sim: replay a placement trace
int SchedulerCmd(int argc, char** argv); // tessera scheduler: extender + webhook + metrics
int AgentCmd(int argc, char** argv);     // tessera agent: node agent (device plugin, metrics)
int TopCmd(int argc, char** argv);       // tessera top: live view of GPUs and slices
int DoctorCmd(int argc, char** argv);    // tessera doctor: diagnose a node or cluster

}  // namespace tessera::cli
