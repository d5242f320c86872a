# Unit tests of `tessera top` and `tessera doctor` (included from src/cli/CMakeLists.txt). The sources
# under test are also compiled into the tessera binary through the directory's glob.
find_package(nlohmann_json REQUIRED)
tessera_unit_test(cli_top_test
  SOURCES top_test.cc top_prom.cc top_model.cc top_render.cc
  LIBS nlohmann_json::nlohmann_json)
if(TARGET tessera_slice AND TARGET tessera_kube)
  tessera_unit_test(cli_top_local_test
    SOURCES top_local_test.cc top_local.cc top_model.cc top_prom.cc top_fetch.cc
    LIBS tessera_slice tessera_kube)
endif()
if(TARGET tessera_agent)
  tessera_unit_test(cli_top_agent_test
    SOURCES top_agent_test.cc top_model.cc top_prom.cc
    LIBS tessera_agent)
endif()
if(TARGET tessera_kube)
  tessera_unit_test(cli_doctor_test
    SOURCES doctor_test.cc doctor_checks.cc doctor_collect.cc doctor_report.cc
    LIBS tessera_kube)
endif()
if(TESSERA_BUILD_TESTS)
  add_test(NAME cli_top_doctor_usage COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/top_doctor_usage_test.sh $<TARGET_FILE:tessera>)
  set_tests_properties(cli_top_doctor_usage PROPERTIES LABELS unit TIMEOUT 60)
endif()
