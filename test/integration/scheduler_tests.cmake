# Scheduler integration tests (included from test/integration/CMakeLists.txt): one GoogleTest binary, one
# ctest entry per suite so they run in parallel on the shared control plane.
if(NOT TESSERA_BUILD_TESTS OR NOT GTest_FOUND)
  return()
endif()
get_filename_component(_tessera_root ${CMAKE_CURRENT_LIST_DIR}/../.. ABSOLUTE)
add_executable(scheduler_integration_test
  ${CMAKE_CURRENT_LIST_DIR}/scheduler_env.cc
  ${CMAKE_CURRENT_LIST_DIR}/scheduler_placement_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/scheduler_webhook_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/scheduler_burst_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/scheduler_lease_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/scheduler_boundary_test.cc)
target_include_directories(scheduler_integration_test PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_compile_definitions(scheduler_integration_test PRIVATE
  TESSERA_BINARY="$<TARGET_FILE:tessera>" TESSERA_SOURCE_DIR="${_tessera_root}")
target_link_libraries(scheduler_integration_test PRIVATE tessera_scheduler tessera_kube agent_itest_support GTest::gtest GTest::gtest_main Threads::Threads)
add_dependencies(scheduler_integration_test tessera)
foreach(suite SchedulerPlacement SchedulerWebhook SchedulerBurst SchedulerLease SchedulerBoundary)
  string(TOLOWER ${suite} lower)
  string(REPLACE "scheduler" "scheduler_" test_name ${lower})
  set(_serial)
  if(suite STREQUAL "SchedulerBurst")
    set(_serial SERIAL)  # a thousand pods on fifty simulated nodes: alone, see tessera_integration_test
  endif()
  tessera_integration_test(${test_name}
    COMMAND $<TARGET_FILE:scheduler_integration_test> --gtest_filter=${suite}.*
    TIMEOUT 400 ${_serial})
  # A filter that matches nothing would pass silently.
  set_tests_properties(${test_name} PROPERTIES FAIL_REGULAR_EXPRESSION "0 tests from 0 test suites|SKIPPED")
endforeach()
