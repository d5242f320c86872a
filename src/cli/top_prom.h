// Parser for the Prometheus text exposition format (version 0.0.4), as served by the agent's and the
// scheduler's /metrics endpoints.
//
// `tessera top --endpoint` and `tessera doctor` read a node agent's metrics with it; the tests use it to
// check what the endpoints export. It keeps samples only (HELP/TYPE lines are checked for shape and
// skipped), in file order. Pure functions on strings; thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace tessera::cli {

struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;

  // Label value or "" when absent.
  const std::string& Label(const std::string& key) const;
};

// Parses `text`. On a malformed line returns false and sets *err to "line N: <problem>"; *out then holds
// the samples before that line.
bool ParsePromText(const std::string& text, std::vector<PromSample>* out, std::string* err);

}  // namespace tessera::cli
