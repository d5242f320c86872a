#include "kube/file_read.h"

#include <cerrno>
#include <cstring>
#include <fstream>

namespace tessera::kube {

std::string ByteLimitText(size_t bytes) {
  if (bytes >= (size_t{1} << 20) && bytes % (size_t{1} << 20) == 0)
    return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " bytes";
}

bool ReadFileCapped(const std::string& path, size_t max_bytes, std::string_view what, std::string* out,
                    std::string* err) {
  out->clear();
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    *err = "cannot open " + path + ": " + std::strerror(errno);
    return false;
  }
  char buf[1 << 16];
  while (f.read(buf, sizeof(buf)) || f.gcount() > 0) {
    out->append(buf, static_cast<size_t>(f.gcount()));
    if (out->size() > max_bytes) {
      out->clear();
      *err = path + ": larger than " + ByteLimitText(max_bytes) + ", the limit for " + std::string(what);
      return false;
    }
  }
  if (f.bad()) {
    out->clear();
    *err = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace tessera::kube
