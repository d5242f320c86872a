// Fuzz target (bench/fuzz): slice::ParseBytes, the byte quantities of `tessera run --memory` and the
// agent's flags. An accepted value is the number written times its unit, to within the nine fractional
// digits the parser keeps, and never wraps.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz_check.h"
#include "slice/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s = tessera::fuzz::Text(data, size);
  uint64_t v = 0;
  if (!tessera::slice::ParseBytes(s.c_str(), &v)) return 0;
  // The same number, independently: strtold over the digits, then the unit.
  const char* p = s.c_str();
  while (*p == ' ') ++p;
  char* end = nullptr;
  const long double number = strtold(p, &end);
  long double mult = 1;
  const char* suffix = end;
  const char c = static_cast<char>(*suffix | 0x20);  // lower case for letters
  const int exp = c == 'k' ? 1 : c == 'm' ? 2 : c == 'g' ? 3 : c == 't' ? 4 : 0;
  if (exp > 0) {
    const long double base = (suffix[1] | 0x20) == 'i' ? 1024.0L : 1000.0L;
    for (int i = 0; i < exp; ++i) mult *= base;
  }
  const long double want = number * mult;
  FUZZ_CHECK(want < 18446744073709551616.0L);
  // Fractions are cut after nine digits: at most one nano-unit of the unit below the exact value.
  const long double slack = mult * 1e-9L + want * 1e-15L + 1;
  FUZZ_CHECK(fabsl(static_cast<long double>(v) - want) <= slack);
  return 0;
}
