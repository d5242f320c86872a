// SetErr: formats an error message into a caller's fixed buffer. Shared by the slice config parser and
// the region code, which run inside applications through the shim and so report errors without heap or
// exceptions. Safe to call from any thread; a null or empty buffer is ignored.
#pragma once

#include <cstdarg>
#include <cstddef>
#include <cstdio>

namespace tessera::slice::internal {

inline void SetErr(char* err, size_t errlen, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
inline void SetErr(char* err, size_t errlen, const char* fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

}  // namespace tessera::slice::internal
