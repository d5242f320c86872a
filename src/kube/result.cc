#include "kube/result.h"

namespace tessera::kube {

std::string Error::ToString() const {
  std::string s;
  if (http_status) s += "HTTP " + std::to_string(http_status) + " ";
  if (!reason.empty()) s += reason + ": ";
  return s + message;
}

}  // namespace tessera::kube
