# make demo as a test: the seed's worker A and B, applied unchanged, must land with 20 % / 30 % of a
# GPU's memory and 25 / 40 cores, and the container's slice config must say the same. The demo starts
# its own control plane (free ports), so it needs no fixture.
add_test(NAME demo_seed_workers
  COMMAND ${CMAKE_SOURCE_DIR}/test/integration/demo_check.sh
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(demo_seed_workers PROPERTIES LABELS integration TIMEOUT 300
  ENVIRONMENT "BUILD=${CMAKE_BINARY_DIR}")
