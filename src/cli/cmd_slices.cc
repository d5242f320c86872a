// tessera slices (not built yet: its owner replaces this file).
#include <cstdio>

#include "cli/commands.h"

namespace tessera::cli {

int SlicesCmd(int, char**) {
  std::fprintf(stderr, "tessera slices: not available in this build\n");
  return 1;
}

}  // namespace tessera::cli
