# Tessera: the three commands a person needs. Everything goes through CMake; scripts/setup installs
# what is missing first.
#   make build   configure and build everything (build/)
#   make test    unit tests (plain and under ASan+UBSan), then integration tests on a real control plane
#   make demo    the local cluster demo: two simulated GPU nodes, the seed's workers, where they landed
#                (NODE=real: a real kubelet + containerd node, the chart installed, the workers in containers)
SHELL := /bin/bash
BUILD ?= build
ASAN_BUILD ?= build-asan
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo Ninja || echo "Unix Makefiles")
WERROR ?= $(if $(CI),ON,OFF)
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
# ccache keeps CI's fresh clones fast on a machine that built before; CCACHE_BASEDIR makes paths relative
# so another clone location still hits.
LAUNCHER := $(shell command -v ccache >/dev/null 2>&1 && echo -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_DIR ?= $(HOME)/.cache/tessera/ccache
# Debug info names the build directory; without this every new clone would miss the cache.
export CCACHE_NOHASHDIR ?= 1
export CCACHE_MAXSIZE ?= 5G

.PHONY: all setup build build-asan test test-unit test-asan test-integration kube demo format lint clean

all: build

setup:
	@scripts/setup

build: setup
	@cmake -S . -B $(BUILD) -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_WERROR=$(WERROR) $(LAUNCHER) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: setup
	@cmake -S . -B $(ASAN_BUILD) -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=Debug -DTESSERA_WERROR=$(WERROR) -DTESSERA_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

# The local control plane (etcd, kube-apiserver, kube-scheduler, kubectl, harnesses), cached.
kube: setup
	@test/kube/build

test-asan: build-asan
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest -L unit -LE noasan --output-on-failure -j $(JOBS)

test-unit: build
	@cd $(BUILD) && ctest -L unit --output-on-failure -j $(JOBS)

test-integration: build kube
	@cd $(BUILD) && ctest -L integration --output-on-failure

# One pass under the sanitizers, then the whole suite (unit + integration) in one ctest run so the
# last lines are the runner's summary.
test: build kube test-asan
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: build kube
	@if [ "$(NODE)" = real ]; then scripts/demo-node; else scripts/demo; fi

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

lint:
	@git ls-files '*.cc' '*.h' | xargs clang-format --dry-run --Werror

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
