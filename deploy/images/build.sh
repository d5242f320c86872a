#!/bin/sh
# Builds `tessera` and libtessera.so inside an image's build stage: build.sh <source dir> <output root>.
# Installs the same Debian packages scripts/setup does and the CUDA/NVML headers (PyPI wheels, headers
# only), then installs the two artefacts under <output root>/usr/local/.
set -eu
src=$1
out=$2
apt-get update
apt-get install -y --no-install-recommends \
  build-essential cmake ninja-build pkg-config ca-certificates python3 python3-pip unzip \
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
  nlohmann-json3-dev libcpp-httplib-dev libssl-dev libcurl4-openssl-dev libyaml-cpp-dev libspdlog-dev \
  libcli11-dev zlib1g-dev
cuda=/opt/cuda/include
mkdir -p "$cuda" /tmp/wheels
python3 -m pip download --quiet --no-deps -d /tmp/wheels \
  nvidia-cuda-runtime==13.0.96 nvidia-nvml-dev==13.0.87
for w in /tmp/wheels/*.whl; do unzip -q -o "$w" -d /tmp/wheels/x; done
cp -r /tmp/wheels/x/nvidia/cu13/include/. "$cuda"/
cmake -S "$src" -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_BUILD_TESTS=OFF \
  -DTESSERA_CUDA_INCLUDE="$cuda"
cmake --build /tmp/build --target tessera tessera_shim
install -D -m 0755 /tmp/build/src/cli/tessera "$out/usr/local/bin/tessera"
shim=$(find /tmp/build -name libtessera.so -print -quit)
[ -n "$shim" ] || { echo "build.sh: libtessera.so was not built" >&2; exit 1; }
install -D -m 0644 "$shim" "$out/usr/local/lib/tessera/libtessera.so"
