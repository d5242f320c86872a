// tessera doctor (not built yet: its owner replaces this file).
#include <cstdio>

#include "cli/commands.h"

namespace tessera::cli {

int DoctorCmd(int, char**) {
  std::fprintf(stderr, "tessera doctor: not available in this build\n");
  return 1;
}

}  // namespace tessera::cli
