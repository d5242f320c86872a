// tessera agent (not built yet: its owner replaces this file).
#include <cstdio>

#include "cli/commands.h"

namespace tessera::cli {

int AgentCmd(int, char**) {
  std::fprintf(stderr, "tessera agent: not available in this build\n");
  return 1;
}

}  // namespace tessera::cli
