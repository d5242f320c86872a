# The real one-node cluster (test/integration/node, test/README.md "The real node"): the pinned kubelet,
# kube-proxy and containerd (test/kube/build-node) with runc, the chart installed with helm from images
# built by deploy/images/build-oci, the seed's two workers running in containers. Its own fixture `node`
# (a private control plane in node mode, scripts/kube-up --node), not `kube`. Root only; the tests are
# skipped (exit 77) elsewhere.

# The worker image's programs: the CUDA program (against the fake driver in the image) and the
# nvidia-smi stand-in (against the fake NVML). Never sanitized: they run inside a container.
add_executable(node_gpu_check node/gpu_check.cc ${TESSERA_SLICE_SOURCES})
target_include_directories(node_gpu_check PRIVATE ${TESSERA_CUDA_INCLUDE})
target_link_libraries(node_gpu_check PRIVATE tessera_fake_cuda)
add_executable(node_nvidia_smi node/nvidia_smi.cc)
target_include_directories(node_nvidia_smi PRIVATE ${TESSERA_CUDA_INCLUDE})
target_link_libraries(node_nvidia_smi PRIVATE tessera_fake_nvml)
foreach(t node_gpu_check node_nvidia_smi)
  get_target_property(_opts ${t} COMPILE_OPTIONS)
  set_target_properties(${t} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/node)
  target_compile_options(${t} PRIVATE -fno-sanitize=all)
  target_link_options(${t} PRIVATE -fno-sanitize=all)
endforeach()
set_target_properties(node_gpu_check PROPERTIES OUTPUT_NAME tessera-gpu-check)
set_target_properties(node_nvidia_smi PROPERTIES OUTPUT_NAME nvidia-smi)
add_custom_target(node_worker_programs DEPENDS node_gpu_check node_nvidia_smi)

set(_node_state "${CMAKE_BINARY_DIR}/kube-node")
set(_node_test "${CMAKE_CURRENT_SOURCE_DIR}/node/node_test.sh")
set(_node_env "TESSERA_SOURCE_DIR=${CMAKE_SOURCE_DIR};TESSERA_BINARY_DIR=${CMAKE_BINARY_DIR};TESSERA_NODE_STATE=${_node_state}")

add_test(NAME node_up COMMAND ${_node_test} up)
set_tests_properties(node_up PROPERTIES FIXTURES_SETUP node LABELS "integration;node" TIMEOUT 3600
  ENVIRONMENT "${_node_env}" SKIP_RETURN_CODE 77 RESOURCE_LOCK tessera_node)
add_test(NAME node_down COMMAND ${_node_test} down)
set_tests_properties(node_down PROPERTIES FIXTURES_CLEANUP node LABELS "integration;node" TIMEOUT 300
  ENVIRONMENT "${_node_env}" SKIP_RETURN_CODE 77 RESOURCE_LOCK tessera_node)

# The chain, in order: each step needs the one before it.
set(_prev "")
foreach(step kubelet images quickstart helm workers in_container pod_delete agent_restart dra_mode dra_workers
    dra_in_container)
  add_test(NAME node_${step} COMMAND ${_node_test} ${step})
  set_tests_properties(node_${step} PROPERTIES FIXTURES_REQUIRED node LABELS "integration;node" TIMEOUT 600
    ENVIRONMENT "${_node_env}" SKIP_RETURN_CODE 77 RESOURCE_LOCK tessera_node)
  if(_prev)
    set_tests_properties(node_${step} PROPERTIES DEPENDS node_${_prev})
  endif()
  set(_prev ${step})
endforeach()
