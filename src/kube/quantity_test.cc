#include "kube/quantity.h"

#include <gtest/gtest.h>

namespace tessera::kube {
namespace {

std::string Canon(const char* s) {
  auto q = Quantity::Parse(s);
  EXPECT_TRUE(q.ok()) << s << ": " << (q.ok() ? "" : q.error().message);
  return q.ok() ? q->ToString() : "<error>";
}

TEST(QuantityTest, CanonicalFormsMatchTheApiServer) {
  EXPECT_EQ(Canon("0"), "0");
  EXPECT_EQ(Canon("100m"), "100m");
  EXPECT_EQ(Canon("1000m"), "1");
  EXPECT_EQ(Canon("1.5"), "1500m");
  EXPECT_EQ(Canon("0.1"), "100m");
  EXPECT_EQ(Canon(".5"), "500m");
  EXPECT_EQ(Canon("1500"), "1500");
  EXPECT_EQ(Canon("2000"), "2k");
  EXPECT_EQ(Canon("1Gi"), "1Gi");
  EXPECT_EQ(Canon("1024Mi"), "1Gi");
  EXPECT_EQ(Canon("1.5Gi"), "1536Mi");
  EXPECT_EQ(Canon("0.5Ki"), "512");
  EXPECT_EQ(Canon("1e3"), "1e3");
  EXPECT_EQ(Canon("1.5e3"), "1500");
  EXPECT_EQ(Canon("1E6"), "1e6");
  EXPECT_EQ(Canon("-2Gi"), "-2Gi");
  EXPECT_EQ(Canon("+7"), "7");
  EXPECT_EQ(Canon("1n"), "1n");
  EXPECT_EQ(Canon("1u"), "1u");
  EXPECT_EQ(Canon("3E"), "3E");
  EXPECT_EQ(Canon("81920"), "81920");
}

TEST(QuantityTest, ValuesAreExactAndRoundUp) {
  EXPECT_EQ(Quantity::Parse("16Gi")->Value(), int64_t{16} << 30);
  EXPECT_EQ(Quantity::Parse("1500m")->Value(), 2);  // Value() rounds up, as in Kubernetes
  EXPECT_EQ(Quantity::Parse("1500m")->MilliValue(), 1500);
  EXPECT_EQ(Quantity::Parse("1n")->MilliValue(), 1);
  EXPECT_EQ(Quantity::Parse("0.0000000001")->ToString(), "1n");  // finer than 1n rounds up
  EXPECT_EQ(Quantity::Parse("123456789012345678")->Value(), 123456789012345678);
  EXPECT_TRUE(Quantity::Parse("2")->IsInteger());
  EXPECT_FALSE(Quantity::Parse("2.5")->IsInteger());
  EXPECT_TRUE(Quantity::Parse("-1")->IsNegative());
}

TEST(QuantityTest, Arithmetic) {
  auto a = *Quantity::Parse("1Gi");
  auto b = *Quantity::Parse("512Mi");
  EXPECT_EQ((a + b).ToString(), "1536Mi");
  EXPECT_EQ((a - b).ToString(), "512Mi");
  EXPECT_LT(b, a);
  EXPECT_EQ(Quantity::FromInt(3), *Quantity::Parse("3000m"));
  EXPECT_EQ(Quantity::FromMilli(250).ToString(), "250m");
}

TEST(QuantityTest, RejectsMalformedInputWithTheInputNamed) {
  for (const char* bad : {"", "abc", "1.2.3", "1Zi", "1x", "1e", "1e+", "Gi", "1 Gi", "1e9999", "--1"}) {
    auto q = Quantity::Parse(bad);
    ASSERT_FALSE(q.ok()) << bad;
    EXPECT_NE(q.error().message.find("quantity \"" + std::string(bad) + "\""), std::string::npos)
        << q.error().message;
  }
  EXPECT_FALSE(Quantity::Parse("999999999999999999999999999999999999999999E").ok());
}

}  // namespace
}  // namespace tessera::kube
