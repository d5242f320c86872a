// gpu::Status: the error value every backend call returns.
//
// Backends never throw: a failed NVML call, a bad simulator file or an injected fault becomes a Status
// whose message names what failed and, where it helps, what to do about it. Plain value type; copy
// freely between threads.
#pragma once

#include <string>
#include <utility>

namespace tessera::gpu {

class Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message)); }

  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }

 private:
  explicit Status(std::string message) : failed_(true), message_(std::move(message)) {}
  bool failed_ = false;
  std::string message_;
};

}  // namespace tessera::gpu
