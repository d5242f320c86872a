// How `tessera doctor` prints its findings: a readable report, or JSON for scripts. Pure functions.
#pragma once

#include <string>
#include <vector>

#include "cli/doctor_checks.h"

namespace tessera::cli {

struct DoctorSummary {
  size_t nodes = 0, gpu_nodes = 0, pods = 0, gpu_pods = 0, gpu_processes = 0;
  bool processes_scanned = false;
};

DoctorSummary Summarize(const DoctorInput& in, const DoctorOptions& opt);
std::string RenderFindings(const std::vector<Finding>& f, const DoctorSummary& s,
                           const std::vector<std::string>& warnings);
std::string RenderFindingsJson(const std::vector<Finding>& f, const DoctorSummary& s,
                               const std::vector<std::string>& warnings);
// 1 when any finding is an error, else 0.
int ExitCodeFor(const std::vector<Finding>& f);

}  // namespace tessera::cli
