// Fuzz target (bench/fuzz): kube::ParseKubeconfig on any text (the file `--kubeconfig`, $KUBECONFIG or
// ~/.kube/config names). It returns a config or an error, never throws; a config has a server.
// Files the text names are read (bounded) relative to an empty directory.
#include <cstdint>

#include "fuzz_check.h"
#include "kube/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto cfg = tessera::kube::ParseKubeconfig(tessera::fuzz::Text(data, size), "", "/nonexistent");
  if (cfg.ok()) FUZZ_CHECK(cfg->server.empty() || cfg->server.back() != '/');
  auto named = tessera::kube::ParseKubeconfig(tessera::fuzz::Text(data, size), "fuzz", "/nonexistent");
  (void)named;
  return 0;
}
