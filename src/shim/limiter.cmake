# The compute limiter's own targets (included from src/shim/CMakeLists.txt; owned by the compute-cap
# work): the tessera-mps tool and the limiter's unit tests. The limiter's sources themselves are
# compiled into libtessera.so by the glob in CMakeLists.txt.
add_executable(tessera-mps ${CMAKE_CURRENT_SOURCE_DIR}/mps_main.cc ${CMAKE_CURRENT_SOURCE_DIR}/mps.cc)
target_compile_definitions(tessera-mps PRIVATE TESSERA_MPS_TOOL)
set_target_properties(tessera-mps PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)

# The gate engine without the shim around it: tested against a simulated GPU (launch_gate_core_test).
add_library(tessera_gate_core STATIC
  ${CMAKE_CURRENT_SOURCE_DIR}/limiter.cc ${CMAKE_CURRENT_SOURCE_DIR}/launch_gate_core.cc
  ${CMAKE_SOURCE_DIR}/src/slice/node_region.cc)
target_include_directories(tessera_gate_core SYSTEM PUBLIC ${TESSERA_CUDA_INCLUDE})
target_link_libraries(tessera_gate_core PUBLIC Threads::Threads)

tessera_unit_test(limiter_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/limiter_test.cc LIBS tessera_gate_core)
tessera_unit_test(launch_gate_core_test
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/launch_gate_core_test.cc LIBS tessera_gate_core)
tessera_unit_test(mps_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/mps_test.cc ${CMAKE_CURRENT_SOURCE_DIR}/mps.cc)
