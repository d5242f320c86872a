#include "cli/doctor_report.h"

namespace tessera::cli {

DoctorSummary Summarize(const DoctorInput& in, const DoctorOptions& opt) {
  DoctorSummary s;
  s.nodes = in.nodes.size();
  for (const Json& n : in.nodes) s.gpu_nodes += IsGpuNode(n, opt) ? 1 : 0;
  s.pods = in.pods.size();
  for (const Json& p : in.pods) s.gpu_pods += PodAsksForGpu(p, opt) ? 1 : 0;
  s.processes_scanned = in.scanned_processes;
  s.gpu_processes = in.gpu_processes.size();
  return s;
}

std::string RenderFindings(const std::vector<Finding>& f, const DoctorSummary& s,
                           const std::vector<std::string>& warnings) {
  std::string out;
  size_t errors = 0;
  for (const Finding& x : f) errors += x.severity == "error" ? 1 : 0;
  if (f.empty()) {
    out += "tessera doctor: no problems found\n";
  } else {
    out += "tessera doctor: " + std::to_string(errors) + " problem" + (errors == 1 ? "" : "s") + ", " +
           std::to_string(f.size() - errors) + " warning" + (f.size() - errors == 1 ? "" : "s") + "\n";
  }
  for (const Finding& x : f) {
    out += "\n" + std::string(x.severity == "error" ? "ERROR" : "WARN ") + "  " + x.check + "  " + x.object + "\n";
    out += "  problem: " + x.problem + "\n";
    out += "  fix:     " + x.fix + "\n";
  }
  for (const std::string& w : warnings) out += "\nnote: " + w + "\n";
  out += "\nchecked: " + std::to_string(s.nodes) + " nodes (" + std::to_string(s.gpu_nodes) + " with GPUs), " +
         std::to_string(s.pods) + " pods (" + std::to_string(s.gpu_pods) + " asking for GPUs)";
  if (s.processes_scanned) out += ", " + std::to_string(s.gpu_processes) + " GPU processes on this host";
  out += "\n";
  return out;
}

std::string RenderFindingsJson(const std::vector<Finding>& f, const DoctorSummary& s,
                               const std::vector<std::string>& warnings) {
  Json j;
  j["findings"] = Json::array();
  for (const Finding& x : f) {
    j["findings"].push_back(
        {{"check", x.check}, {"severity", x.severity}, {"object", x.object}, {"problem", x.problem}, {"fix", x.fix}});
  }
  j["warnings"] = warnings;
  j["checked"] = {{"nodes", s.nodes}, {"gpu_nodes", s.gpu_nodes}, {"pods", s.pods}, {"gpu_pods", s.gpu_pods}};
  if (s.processes_scanned) j["checked"]["gpu_processes"] = s.gpu_processes;
  return j.dump(2) + "\n";
}

int ExitCodeFor(const std::vector<Finding>& f) {
  for (const Finding& x : f) {
    if (x.severity == "error") return 1;
  }
  return 0;
}

}  // namespace tessera::cli
