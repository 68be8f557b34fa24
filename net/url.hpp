// URL and request-target parsing (no Beast types).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proto/http.hpp"

namespace sw::net {

struct url {
  std::string scheme;  // http | https | ws | wss
  std::string host;
  std::uint16_t port = 0;
  std::string target = "/";  // path + query
  bool secure() const { return scheme == "https" || scheme == "wss"; }
};

// Parses absolute http(s)/ws(s) URLs; nullopt for anything else.
std::optional<url> parse_url(std::string_view text);

// Splits "/a%20b?x=1&y=%2F" into a decoded path and decoded query parameters.
// Returns false when the target is not origin-form or has a bad percent escape.
bool split_target(std::string_view target, std::string& path, header_list& query);

// Percent-decodes; '+' becomes ' ' when form is true. nullopt on a bad escape.
std::optional<std::string> percent_decode(std::string_view in, bool form);

// An address as error messages show it: without its query or fragment (they may carry a token), "?…" in their place.
std::string shown_url(std::string_view address);

// Percent-encodes everything but unreserved characters.
std::string percent_encode(std::string_view in);

}  // namespace sw::net
