// Fuzz target (bench/fuzz): the admission webhook (scheduler::Webhook::Mutate and Validate) on any
// AdmissionReview JSON, in the extender path's mode and in DRA mode (claim templates "created" by a hook
// that always succeeds). Every answer is an AdmissionReview response for the request's uid, and a patch it
// allows applies to the pod it came with.
// The HTTP server answers 500 to a handler that throws (cpp-httplib catches it; the API server then
// refuses the pod, failurePolicy Fail), so a json exception on a review of an odd shape is caught here as
// the server does: a refusal, not a crash.
#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "scheduler/webhook.h"

namespace sched = tessera::scheduler;
using nlohmann::json;

namespace {

std::string Unbase64(const std::string& in) {
  static const std::string kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const size_t v = kAlphabet.find(c);
    FUZZ_CHECK(v != std::string::npos);
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

void Check(const json& review, const json& answer) {
  FUZZ_CHECK(answer.is_object() && answer.value("kind", "") == "AdmissionReview");
  const json& resp = answer["response"];
  FUZZ_CHECK(resp.is_object() && resp.contains("allowed") && resp["allowed"].is_boolean());
  if (!resp["allowed"].get<bool>()) {
    FUZZ_CHECK(resp.contains("status") && !resp["status"].value("message", "").empty());
    return;
  }
  if (!resp.contains("patch")) return;
  FUZZ_CHECK(resp.value("patchType", "") == "JSONPatch");
  const json patch = json::parse(Unbase64(resp["patch"].get<std::string>()), nullptr, false);
  FUZZ_CHECK(patch.is_array() && !patch.empty());
  // The pod the patch is for (a review without one is answered as for an empty pod; nothing to apply to).
  if (!review.is_object() || !review.contains("request") || !review["request"].is_object() ||
      !review["request"].contains("object"))
    return;
  const json& pod = review["request"]["object"];
  try {
    pod.patch(patch);
  } catch (const json::exception& e) {
    std::fprintf(stderr, "patch %s does not apply: %s\n", patch.dump().c_str(), e.what());
    FUZZ_CHECK(!"the webhook's patch applies to the pod");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const json review = tessera::fuzz::Json(data, size);
  if (review.is_discarded()) return 0;
  static sched::Metrics metrics;
  for (bool dra : {false, true}) {
    sched::WebhookOptions opts;
    opts.dra = dra;
    sched::DraHooks hooks;
    hooks.gpu_kinds = [] {
      return std::vector<sched::DraGpuKind>{{"Tesla T4", 15360}, {"NVIDIA A100", 40960}};
    };
    hooks.ensure_template = [](const std::string&, const json&) {
      return tessera::kube::Status(tessera::kube::Ok{});
    };
    const sched::Webhook webhook(
        opts, [] { return int64_t{40960}; }, &metrics, hooks);
    try {
      Check(review, webhook.Mutate(review));
    } catch (const json::exception&) {
    }
    try {
      Check(review, webhook.Validate(review));
    } catch (const json::exception&) {
    }
  }
  return 0;
}
