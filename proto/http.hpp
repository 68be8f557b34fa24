// HTTP request/response as plain values: net/ parses and writes them, actors decide.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <caf/meta/type_name.hpp>

namespace sw {

using header_list = std::vector<std::pair<std::string, std::string>>;

struct http_request {
  std::string method;   // "GET", "POST", ...
  std::string target;   // raw request target, e.g. "/metrics?format=prometheus"
  std::string path;     // decoded path without the query
  header_list query;    // decoded query parameters, in order
  header_list headers;  // header names lower-cased
  std::string body;
  std::string remote;  // peer address, for logs
  bool tls = false;

  // First query parameter or header value with that (lower-case) name, or nullptr.
  const std::string* query_param(const std::string& name) const { return find(query, name); }
  const std::string* header(const std::string& lower_name) const { return find(headers, lower_name); }

  static const std::string* find(const header_list& list, const std::string& key) {
    for (auto& [k, v] : list)
      if (k == key) return &v;
    return nullptr;
  }
};

struct http_response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  header_list headers;  // extra headers (Allow, Retry-After, ...)
  bool close = false;   // send Connection: close and close after writing
};

// A response with a JSON body.
inline http_response json_response(unsigned status, std::string body) {
  http_response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, http_request& x) {
  return f(caf::meta::type_name("http_request"), x.method, x.target, x.path, x.query, x.headers, x.body, x.remote,
           x.tls);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, http_response& x) {
  return f(caf::meta::type_name("http_response"), x.status, x.content_type, x.body, x.headers, x.close);
}

}  // namespace sw
