#include "cli/top_fetch.h"

#include <httplib.h>

namespace tessera::cli {

bool NormalizeMetricsUrl(const std::string& endpoint, std::string* url, std::string* err) {
  std::string e = endpoint;
  if (e.rfind("https://", 0) == 0) {
    *err = "--endpoint " + endpoint + ": https is not supported (the agent serves metrics over plain http)";
    return false;
  }
  if (e.rfind("http://", 0) == 0) e = e.substr(7);
  size_t slash = e.find('/');
  std::string hostport = e.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : e.substr(slash);
  if (path.empty() || path == "/") path = "/metrics";
  size_t colon = hostport.rfind(':');
  bool bracketed = !hostport.empty() && hostport[0] == '[';
  if (hostport.empty() || colon == std::string::npos || (bracketed && hostport.find(']') > colon)) {
    *err = "--endpoint " + endpoint + ": expected host:port (e.g. http://node1:9394)";
    return false;
  }
  std::string port = hostport.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) < 1 || std::stoi(port) > 65535) {
    *err = "--endpoint " + endpoint + ": port must be 1..65535";
    return false;
  }
  *url = "http://" + hostport + path;
  return true;
}

bool FetchText(const std::string& url, double timeout_s, std::string* body, std::string* err) {
  if (url.rfind("http://", 0) != 0) {
    *err = url + ": not an http:// URL";
    return false;
  }
  size_t slash = url.find('/', 7);
  std::string base = url.substr(0, slash);
  std::string path = slash == std::string::npos ? "/" : url.substr(slash);
  httplib::Client cli(base);
  time_t sec = static_cast<time_t>(timeout_s);
  time_t usec = static_cast<time_t>((timeout_s - static_cast<double>(sec)) * 1e6);
  cli.set_connection_timeout(sec, usec);
  cli.set_read_timeout(sec, usec);
  auto res = cli.Get(path);
  if (!res) {
    *err = url + ": " + httplib::to_string(res.error());
    return false;
  }
  if (res->status != 200) {
    *err = url + ": HTTP " + std::to_string(res->status);
    return false;
  }
  *body = res->body;
  return true;
}

}  // namespace tessera::cli
