# Integration tests of the install and observability pieces (issue 8): the Helm chart against the real
# API server, Prometheus scraping the agent and the scheduler, and `tessera doctor` diagnosing broken
# states. Included by test/integration/CMakeLists.txt; each script needs the fixture `kube`.
tessera_integration_test(obs_chart_lint_template_dry_run
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/obs_chart_test.sh
  TIMEOUT 300)
# The chart's KubeSchedulerConfiguration, certificate and scheduler arguments, run for real: a HAMi-style
# pod is bound through kube-scheduler and the extender over HTTPS.
tessera_integration_test(obs_chart_scheduler_binds_through_extender
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/obs_chart_scheduler_test.sh
  TIMEOUT 300)
tessera_integration_test(obs_prometheus_scrape_agent_scheduler
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/obs_prometheus_test.sh
  TIMEOUT 300)
# One test per doctor check; each makes its broken state on the shared control plane. They take a lock
# so one case's cluster-wide objects (a webhook, an agent DaemonSet) never change another's diagnosis.
foreach(check gpu-node-without-agent gpu-pod-not-isolated bound-not-allocated container-without-shim
              version-skew webhook-unreachable)
  string(REPLACE "-" "_" test_suffix "${check}")
  tessera_integration_test(obs_doctor_${test_suffix}
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/obs_doctor_test.sh ${check}
    TIMEOUT 180)
  set_tests_properties(obs_doctor_${test_suffix} PROPERTIES RESOURCE_LOCK tessera_doctor_cluster)
endforeach()
# HAMi compatibility of the chart (issue 18): schema, HAMi value names, the seed's ServiceMonitors.
tessera_integration_test(hami_chart_values_and_seed_servicemonitors
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/hami_chart_test.sh
  TIMEOUT 300)
