// Reads the slices on this host for `tessera top` (and `tessera slices`-like views) straight from their
// config files and accounting regions, without asking the agent.
//
// Looks in each given directory for <slice>/slice.conf (both layouts: standalone /run/tessera/slices and
// the node agent's /var/lib/tessera/slices). Read-only: never rebuilds or reclaims a region, so it is safe
// next to running workloads. A slice that cannot be read is skipped with a warning. Thread-safe (no state).
#pragma once

#include <string>
#include <vector>

#include "cli/top_model.h"

namespace tessera::cli {

// The default directories: standalone slices, then the node agent's.
std::vector<std::string> DefaultSliceDirs();

// One snapshot of every readable slice under `dirs`, time_ms set from CLOCK_MONOTONIC.
TopSnapshot ReadLocalSnapshot(const std::vector<std::string>& dirs, std::vector<std::string>* warnings);

}  // namespace tessera::cli
