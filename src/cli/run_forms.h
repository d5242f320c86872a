// The value forms of `tessera run`'s flags: --memory (bytes, a share of the GPU, or per GPU) and --cores.
//
// Used by cmd_run.cc; in a header of their own so the fuzz target beside them (run_forms_fuzz.cc) and
// tests reach them. Inline (cmd_run.cc is compiled alone into some tests). Pure functions; thread-safe.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <string>
#include <vector>

#include "slice/config.h"

namespace tessera::cli {

inline constexpr const char* kMemoryForms =
    "forms: 2GiB, 1500MiB, 8G, 2147483648 or 1%..100% of the GPU, e.g. 20%, for every GPU; "
    "or GPU=SIZE|PCT per GPU, e.g. 0=2GiB,1=6GiB or 0=25%,GPU-...=50%";

// One limit of --memory: for every GPU (gpu empty) or for the GPU named by an NVML index or UUID.
struct MemoryLimit {
  std::string gpu;
  uint64_t bytes = 0;
  int percent = 0;  // set instead of bytes for a share of the GPU's memory
};

inline bool ParseLimit(const std::string& v, MemoryLimit* out) {
  if (v.size() > 1 && v.back() == '%') {
    char* end = nullptr;
    long p = strtol(v.c_str(), &end, 10);
    if (end != v.c_str() + v.size() - 1 || p < 1 || p > 100) return false;
    out->percent = static_cast<int>(p);
    return true;
  }
  return slice::ParseBytes(v.c_str(), &out->bytes) && out->bytes > 0;
}

inline std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  for (;;) {
    size_t comma = s.find(',', pos);
    out.push_back(s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    if (comma == std::string::npos) return out;
    pos = comma + 1;
  }
}

// --memory: one limit for every GPU, or GPU=limit pairs. False with a message naming the accepted forms.
inline bool ParseMemory(const char* arg, std::vector<MemoryLimit>* out, std::string* err) {
  std::string a = arg;
  if (a.find('=') == std::string::npos) {
    MemoryLimit m;
    if (ParseLimit(a, &m)) {
      out->push_back(m);
      return true;
    }
    *err = "--memory '" + a + "' not understood (" + kMemoryForms + ")";
    return false;
  }
  for (const std::string& item : SplitCommas(a)) {
    size_t eq = item.find('=');
    MemoryLimit m;
    if (eq == std::string::npos || eq == 0) {
      *err = "--memory '" + a + "': '" + item + "' is not GPU=SIZE (" + kMemoryForms + ")";
      return false;
    }
    m.gpu = item.substr(0, eq);
    if (!ParseLimit(item.substr(eq + 1), &m)) {
      *err = "--memory '" + a + "': '" + item.substr(eq + 1) + "' for GPU " + m.gpu + " not understood (" +
             kMemoryForms + ")";
      return false;
    }
    for (const MemoryLimit& o : *out)
      if (o.gpu == m.gpu) {
        *err = "--memory '" + a + "': GPU " + m.gpu + " given twice";
        return false;
      }
    out->push_back(m);
  }
  return true;
}

// --cores: the compute cap per GPU in percent, 1..100.
inline bool ParseCores(const char* arg, int* cores) {
  char* end = nullptr;
  long v = strtol(arg, &end, 10);
  if (!*arg || *end || v < 1 || v > 100) return false;
  *cores = static_cast<int>(v);
  return true;
}

}  // namespace tessera::cli
