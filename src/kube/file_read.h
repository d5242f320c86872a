// Reading a whole small file that came from outside the process: a kubeconfig, a certificate, a state file
// a tenant or an operator may have replaced, a /proc entry. The read stops at a caller-given cap, so a
// device named by mistake (/dev/zero), a FIFO that never ends or a file grown huge fails with one line
// naming the file and the limit instead of filling memory. Stateless and thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tessera::kube {

// Reads PATH into *out, at most max_bytes. Returns false with *err set to
// "cannot open PATH: <reason>" or "PATH: larger than <limit>, the limit for <what>"; *out is then empty.
bool ReadFileCapped(const std::string& path, size_t max_bytes, std::string_view what, std::string* out,
                    std::string* err);

// The limit as a person reads it: "4 MiB", "64 KiB", "100 bytes".
std::string ByteLimitText(size_t bytes);

}  // namespace tessera::kube
