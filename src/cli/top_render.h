// Turns a TopSnapshot into what `tessera top` prints: a fixed-width table (optionally with ANSI colour,
// for the live view) or JSON for scripts. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "cli/top_model.h"

namespace tessera::cli {

struct RenderOptions {
  bool color = false;  // ANSI bold headers, red memory at >= 90 % of the limit
  int width = 120;     // terminal columns; long names are shortened to fit
  std::string clock;   // shown in the title line, e.g. "16:04:05"
};

std::string RenderTable(const TopSnapshot& snap, const RenderOptions& opt);

// {"source", "time_ms", "gpus": [...], "slices": [...]}; unknown values are null.
std::string RenderJson(const TopSnapshot& snap);

// "512 B", "1.5 KiB", "8.0 GiB".
std::string FormatBytes(uint64_t bytes);

}  // namespace tessera::cli
