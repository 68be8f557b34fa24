// Small JSON helpers over RapidJSON: a builder for the messages we send and the client message parser.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proto/messages.hpp"

namespace sw {

// The text with every byte that is not part of well-formed UTF-8 replaced by U+FFFD (json_builder does this to
// every string and key it writes: nothing the service sends is invalid UTF-8).
std::string valid_utf8(std::string_view s);
// Whether the text is well-formed UTF-8 already (valid_utf8 would return it unchanged).
bool is_utf8(std::string_view s);

// A control character at s[i] (C0, DEL, or C1 in UTF-8: C2 80..C2 9F): its length in bytes, else 0. What a line of
// the log or a terminal shows must not hold one: it can end a line or start an escape sequence.
std::size_t control_at(std::string_view s, std::size_t i);

// A peer's text (an upstream's error message, say) as the service quotes it in a log line or a message: at most
// `max_bytes` of it, cut at a character boundary, with "…" where it was cut. An upstream's body may be megabytes.
std::string excerpt(std::string_view text, std::size_t max_bytes = 300);

// Builds one JSON object (nested objects via open/close). Keys are literals.
class json_builder {
public:
  json_builder();
  ~json_builder();
  json_builder& str(const char* key, std::string_view value);
  json_builder& num(const char* key, std::int64_t value);
  json_builder& unum(const char* key, std::uint64_t value);
  json_builder& dbl(const char* key, double value);
  json_builder& boolean(const char* key, bool value);
  json_builder& null(const char* key);
  json_builder& open(const char* key);  // nested object
  json_builder& open_dynamic(const std::string& key);
  json_builder& num_dynamic(const std::string& key, std::int64_t value);
  json_builder& close();
  std::string done();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// Server -> client messages of the client protocol.
std::string json_warning(std::string_view code, std::string_view message);
std::string json_error_message(std::string_view code, std::string_view message);
std::string json_transcript(const room_transcript& t, std::int64_t ts_ms, bool legacy);
std::string json_error_body(std::string_view error);  // {"error": "..."}

// A parsed client text frame.
struct client_message {
  bool valid_json = false;
  std::string type;  // empty when absent or not a string
  std::string identity, name;
  std::int64_t timestamp = 0;  // 0 when absent
};
client_message parse_client_message(std::string_view text);

// Fields of a JSON request body; ok=false on invalid JSON or a non-object.
struct json_fields {
  bool ok = false;
  std::string get(const char* key) const;  // string members only; "" otherwise
  std::int64_t get_int(const char* key) const;
  std::shared_ptr<void> doc;
};
json_fields parse_json_object(std::string_view text);

// A text frame of a LiveKit egress: {"muted":true|false}; nothing for anything else.
std::optional<bool> parse_egress_muted(std::string_view text);

}  // namespace sw
