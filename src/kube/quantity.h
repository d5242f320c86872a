// resource.Quantity: Kubernetes' exact decimal quantity ("100m", "1.5Gi", "2e3", "64").
//
// Used by the scheduler (requests, ResourceQuota, Node capacity), the node agent (publishing extended
// resources) and `tessera doctor`. The value is held as a signed count of nano-units in 128 bits, so every
// quantity Kubernetes can express with up to nine fractional digits is exact; anything finer is rounded up
// to the next nano-unit as the API server does, and a value too large to hold is refused, never wrapped. Formatting follows the API server's canonical form (the largest
// suffix of the quantity's own format that keeps the number an integer). Plain value type; not synchronised.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kube/result.h"

namespace tessera::kube {

class Quantity {
 public:
  enum class Format { kDecimalSI, kBinarySI, kDecimalExponent };

  Quantity() = default;
  static Quantity FromInt(int64_t units, Format f = Format::kDecimalSI);
  static Quantity FromMilli(int64_t milli, Format f = Format::kDecimalSI);

  // Parses the Kubernetes quantity grammar: sign, digits with an optional fraction, then a suffix from
  // {Ki, Mi, Gi, Ti, Pi, Ei}, {n, u, m, "", k, M, G, T, P, E} or an exponent (e3, E-2). Errors name the input.
  static Result<Quantity> Parse(std::string_view s);

  // Canonical string, as the API server would print it.
  std::string ToString() const;

  // Integer value rounded up (Kubernetes' Value()); MilliValue() likewise in thousandths. Both saturate at
  // the int64 limits rather than wrap.
  int64_t Value() const;
  int64_t MilliValue() const;
  bool IsInteger() const;  // no fractional part
  bool IsNegative() const { return nano_ < 0; }
  bool IsZero() const { return nano_ == 0; }
  Format format() const { return format_; }

  Quantity operator+(const Quantity& o) const;
  Quantity operator-(const Quantity& o) const;
  bool operator==(const Quantity& o) const { return nano_ == o.nano_; }
  auto operator<=>(const Quantity& o) const { return nano_ <=> o.nano_; }

 private:
  __int128 nano_ = 0;
  Format format_ = Format::kDecimalSI;
};

}  // namespace tessera::kube
