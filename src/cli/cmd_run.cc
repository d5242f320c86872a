// tessera run (not built yet: its owner replaces this file).
#include <cstdio>

#include "cli/commands.h"

namespace tessera::cli {

int RunCmd(int, char**) {
  std::fprintf(stderr, "tessera run: not available in this build\n");
  return 1;
}

}  // namespace tessera::cli
