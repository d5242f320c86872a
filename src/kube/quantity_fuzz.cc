// Fuzz target (bench/fuzz): kube::Quantity::Parse on any text. A parsed quantity prints canonically and
// parses back to itself, and its rounded values are the ceiling they claim (or saturate, never wrap).
#include <cstdint>
#include <limits>

#include "fuzz_check.h"
#include "kube/quantity.h"

using tessera::kube::Quantity;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto q = Quantity::Parse(tessera::fuzz::Text(data, size));
  if (!q.ok()) return 0;
  const std::string canonical = q->ToString();
  auto back = Quantity::Parse(canonical);
  FUZZ_CHECK(back.ok());
  FUZZ_CHECK(*back == *q);
  FUZZ_CHECK(back->ToString() == canonical);
  FUZZ_CHECK(q->IsNegative() == (*q < Quantity()));
  FUZZ_CHECK(q->IsZero() == (*q == Quantity()));

  // Value() and MilliValue() round up; outside int64 they saturate.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max(), kMin = std::numeric_limits<int64_t>::min();
  const int64_t v = q->Value(), m = q->MilliValue();
  const Quantity vq = Quantity::FromInt(v), mq = Quantity::FromMilli(m);
  FUZZ_CHECK(vq >= *q || v == kMax);
  FUZZ_CHECK(vq - *q < Quantity::FromInt(1) || v == kMin);
  FUZZ_CHECK(mq >= *q || m == kMax);
  FUZZ_CHECK(mq - *q < Quantity::FromMilli(1) || m == kMin);
  FUZZ_CHECK(!q->IsInteger() || vq == *q || v == kMax || v == kMin);
  return 0;
}
