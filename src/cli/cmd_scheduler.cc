// tessera scheduler (not built yet: its owner replaces this file).
#include <cstdio>

#include "cli/commands.h"

namespace tessera::cli {

int SchedulerCmd(int, char**) {
  std::fprintf(stderr, "tessera scheduler: not available in this build\n");
  return 1;
}

}  // namespace tessera::cli
