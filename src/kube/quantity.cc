#include "kube/quantity.h"

#include <algorithm>
#include <limits>

namespace tessera::kube {
namespace {

using i128 = __int128;
constexpr i128 kNanoPerUnit = 1000000000;
// Beyond this a multiplication by 10 or 1024 could overflow; real quantities are far below it.
constexpr i128 kLimit = static_cast<i128>(1) << 120;

i128 Pow10(int n) {
  i128 r = 1;
  while (n-- > 0) r *= 10;
  return r;
}

std::string I128ToString(i128 v) {
  if (v == 0) return "0";
  bool neg = v < 0;
  if (neg) v = -v;
  std::string s;
  while (v > 0) {
    s.push_back(static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  }
  if (neg) s.push_back('-');
  std::reverse(s.begin(), s.end());
  return s;
}

// Ceiling division for a positive divisor (Kubernetes rounds quantities up).
i128 CeilDiv(i128 a, i128 b) {
  i128 q = a / b;
  if (a % b != 0 && a > 0) ++q;
  return q;
}

// Past int64 a value saturates: a cast would wrap "18446744073709551617" to 1.
int64_t Saturate(i128 v) {
  if (v > std::numeric_limits<int64_t>::max()) return std::numeric_limits<int64_t>::max();
  if (v < std::numeric_limits<int64_t>::min()) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

Error Bad(std::string_view s, const std::string& why) {
  return Error{0, "Invalid", "quantity \"" + std::string(s) + "\": " + why};
}

}  // namespace

Quantity Quantity::FromInt(int64_t units, Format f) {
  Quantity q;
  q.nano_ = static_cast<i128>(units) * kNanoPerUnit;
  q.format_ = f;
  return q;
}

Quantity Quantity::FromMilli(int64_t milli, Format f) {
  Quantity q;
  q.nano_ = static_cast<i128>(milli) * 1000000;
  q.format_ = f;
  return q;
}

Result<Quantity> Quantity::Parse(std::string_view s) {
  if (s.empty()) return Bad(s, "empty");
  size_t i = 0;
  bool neg = false;
  if (s[i] == '+' || s[i] == '-') {
    neg = s[i] == '-';
    ++i;
  }
  i128 mantissa = 0;
  int frac_digits = 0;
  int digits = 0;
  bool seen_dot = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c == '.') {
      if (seen_dot) return Bad(s, "more than one decimal point");
      seen_dot = true;
      continue;
    }
    if (c < '0' || c > '9') break;
    ++digits;
    // Digits past what 128 bits can hold only matter if non-zero; keep exactness or refuse.
    if (mantissa > kLimit / 10) return Bad(s, "too many digits");
    mantissa = mantissa * 10 + (c - '0');
    if (seen_dot) ++frac_digits;
  }
  if (digits == 0) return Bad(s, "no digits before the suffix");
  std::string_view suffix = s.substr(i);
  int exp10 = 0;
  int pow1024 = 0;
  Format format = Format::kDecimalSI;
  if (suffix.empty()) {
  } else if (suffix.size() == 2 && suffix[1] == 'i') {
    static const std::string_view kBin = "KMGTPE";
    size_t k = kBin.find(suffix[0]);
    if (k == std::string_view::npos) return Bad(s, "unknown suffix \"" + std::string(suffix) + "\"");
    pow1024 = static_cast<int>(k) + 1;
    format = Format::kBinarySI;
  } else if (suffix.size() == 1 && std::string_view("numkMGTPE").find(suffix[0]) != std::string_view::npos) {
    switch (suffix[0]) {
      case 'n': exp10 = -9; break;
      case 'u': exp10 = -6; break;
      case 'm': exp10 = -3; break;
      case 'k': exp10 = 3; break;
      case 'M': exp10 = 6; break;
      case 'G': exp10 = 9; break;
      case 'T': exp10 = 12; break;
      case 'P': exp10 = 15; break;
      case 'E': exp10 = 18; break;
    }
  } else if (suffix[0] == 'e' || suffix[0] == 'E') {
    std::string_view e = suffix.substr(1);
    bool eneg = false;
    if (!e.empty() && (e[0] == '+' || e[0] == '-')) {
      eneg = e[0] == '-';
      e.remove_prefix(1);
    }
    if (e.empty() || e.size() > 3) return Bad(s, "bad exponent \"" + std::string(suffix) + "\"");
    int v = 0;
    for (char c : e) {
      if (c < '0' || c > '9') return Bad(s, "bad exponent \"" + std::string(suffix) + "\"");
      v = v * 10 + (c - '0');
    }
    exp10 = eneg ? -v : v;
    format = Format::kDecimalExponent;
  } else {
    return Bad(s, "unknown suffix \"" + std::string(suffix) + "\"");
  }
  // value = mantissa * 10^(exp10 - frac_digits) * 1024^pow1024 units = ... * 10^(exp10 - frac_digits + 9) nano.
  i128 v = mantissa;
  for (int k = 0; k < pow1024; ++k) {
    if (v > kLimit / 1024) return Bad(s, "too large");
    v *= 1024;
  }
  int shift = exp10 - frac_digits + 9;
  if (shift >= 0) {
    for (int k = 0; k < shift; ++k) {
      if (v > kLimit / 10) return Bad(s, "too large");
      v *= 10;
    }
  } else {
    // Finer than a nano-unit: the API server rounds up to 1n.
    if (-shift > 38) {
      v = v == 0 ? 0 : 1;
    } else {
      v = CeilDiv(v, Pow10(-shift));
    }
  }
  Quantity q;
  q.nano_ = neg ? -v : v;
  q.format_ = format;
  return q;
}

std::string Quantity::ToString() const {
  if (nano_ == 0) return "0";
  bool neg = nano_ < 0;
  i128 a = neg ? -nano_ : nano_;
  std::string sign = neg ? "-" : "";
  if (format_ == Format::kBinarySI && a % kNanoPerUnit == 0 && a / kNanoPerUnit >= 1024) {
    i128 units = a / kNanoPerUnit;
    static const char* kBin[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    int k = 0;
    while (k < 6 && units % 1024 == 0) {
      units /= 1024;
      ++k;
    }
    return sign + I128ToString(units) + kBin[k];
  }
  // Largest power of 1000 (from 1e-9 to 1e18) dividing the value.
  int e = -9;
  while (e < 18 && a % Pow10(e + 3 + 9) == 0) e += 3;
  i128 m = a / Pow10(e + 9);
  if (format_ == Format::kDecimalExponent) {
    return sign + I128ToString(m) + (e == 0 ? "" : "e" + std::to_string(e));
  }
  const char* suffix = "";
  switch (e) {
    case -9: suffix = "n"; break;
    case -6: suffix = "u"; break;
    case -3: suffix = "m"; break;
    case 3: suffix = "k"; break;
    case 6: suffix = "M"; break;
    case 9: suffix = "G"; break;
    case 12: suffix = "T"; break;
    case 15: suffix = "P"; break;
    case 18: suffix = "E"; break;
    default: break;
  }
  return sign + I128ToString(m) + suffix;
}

int64_t Quantity::Value() const { return Saturate(CeilDiv(nano_, kNanoPerUnit)); }
int64_t Quantity::MilliValue() const { return Saturate(CeilDiv(nano_, 1000000)); }
bool Quantity::IsInteger() const { return nano_ % kNanoPerUnit == 0; }

Quantity Quantity::operator+(const Quantity& o) const {
  Quantity q = *this;
  q.nano_ += o.nano_;
  return q;
}

Quantity Quantity::operator-(const Quantity& o) const {
  Quantity q = *this;
  q.nano_ -= o.nano_;
  return q;
}

}  // namespace tessera::kube
