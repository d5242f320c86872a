// Error values for the Kubernetes client.
//
// Every call into the API server returns a Result<T>: either the value or an Error that carries the HTTP
// status, the API server's machine-readable reason (e.g. "Conflict", "NotFound", "Expired") and a message a
// person can act on. No exceptions cross the library boundary. Plain value types; not synchronised.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace tessera::kube {

struct Error {
  int http_status = 0;  // 0 when the request never reached the server (connect/TLS/parse failure)
  std::string reason;   // Status.reason from the API server, or a local tag ("Transport", "Decode", "Config")
  std::string message;

  bool NotFound() const { return http_status == 404; }
  bool Conflict() const { return http_status == 409; }
  bool AlreadyExists() const { return http_status == 409 && reason == "AlreadyExists"; }
  bool Gone() const { return http_status == 410; }
  std::string ToString() const;
};

template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}      // NOLINT(google-explicit-constructor)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
struct Ok {};
using Status = Result<Ok>;

}  // namespace tessera::kube
