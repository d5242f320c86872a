// Fetches a metrics endpoint over HTTP for `tessera top --endpoint` and `tessera doctor`.
//
// Accepts "host:port", "http://host:port" or a full URL; a URL without a path gets /metrics. Plain HTTP
// only (the agent's metrics endpoint is plain HTTP, like HAMi's). Stateless; thread-safe.
#pragma once

#include <string>

namespace tessera::cli {

// Normalises an endpoint to "http://host:port/path". Returns false with *err naming the problem.
bool NormalizeMetricsUrl(const std::string& endpoint, std::string* url, std::string* err);

// GETs `url` (as returned by NormalizeMetricsUrl) with a timeout; the body on HTTP 200.
bool FetchText(const std::string& url, double timeout_s, std::string* body, std::string* err);

}  // namespace tessera::cli
