# Integration tests of the install and observability pieces (issue 8): the Helm chart against the real
# API server, Prometheus scraping the agent and the scheduler, and `tessera doctor` diagnosing broken
# states. Included by test/integration/CMakeLists.txt; each script needs the fixture `kube`.
tessera_integration_test(obs_chart_lint_template_dry_run
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/obs_chart_test.sh
  TIMEOUT 300)
tessera_integration_test(obs_prometheus_scrape_agent_scheduler
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/obs_prometheus_test.sh
  TIMEOUT 300)
