// What the fuzz targets beside the code (src/**/*_fuzz.cc) share: FUZZ_CHECK for the invariants they
// assert, and the input as text or as JSON.
//
// A failed FUZZ_CHECK prints the condition and aborts, which libFuzzer (bench/fuzz/run) and the replay
// driver (ctest's fuzz_*_corpus) both report as a crash of that input. Header-only; no state.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#define FUZZ_CHECK(cond)                                                                \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

namespace tessera::fuzz {

inline std::string Text(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// The input as JSON, or a discarded value (is_discarded()) when it is not JSON.
inline nlohmann::json Json(const uint8_t* data, size_t size) {
  return nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
}

}  // namespace tessera::fuzz
