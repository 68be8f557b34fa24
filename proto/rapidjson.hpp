// Include RapidJSON only through this header: type errors become exceptions instead of silent garbage
// under NDEBUG (stack-notes §8), identically in every translation unit.
#pragma once

#include <stdexcept>

#ifndef RAPIDJSON_ASSERT
#define RAPIDJSON_ASSERT(x)                             \
  do {                                                  \
    if (!(x)) throw std::logic_error("rapidjson: " #x); \
  } while (false)
#endif
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sw {

// The deepest nesting of arrays and objects any JSON this service reads may have.
constexpr int max_json_depth = 64;

// Whether a JSON text nests no deeper than `max` outside its strings: a scan without recursion, so that a hostile
// text is refused before a parser sees it.
inline bool json_depth_within(std::string_view s, int max) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

// Every JSON this service takes in (client messages, HTTP bodies, Gladia messages, journal lines) is parsed here:
// nesting deeper than max_json_depth is refused, and RapidJSON's iterative parser never recurses (200 000 '['
// in one WebSocket frame overflowed the recursive parser's stack and killed the process). False on either error.
template <unsigned Flags = rapidjson::kParseDefaultFlags, class Document>
bool parse_json(Document& d, std::string_view text) {
  if (!json_depth_within(text, max_json_depth)) {
    d.SetNull();
    return false;
  }
  d.template Parse<Flags | rapidjson::kParseIterativeFlag>(text.data(), text.size());
  return !d.HasParseError();
}

// A document for a parse whose values do not outlive the caller (a message read into a struct): its values and the
// parser's stacks take their first KiBs from the object itself, on the caller's stack, so a short message (a Gladia
// ack, a transcript) is parsed without a heap allocation; a longer one goes on in 4 KiB blocks from the heap. A
// plain rapidjson::Document takes a 64 KiB block from the heap for every parse, and frees it after.
class scratch_document {
public:
  using document =
      rapidjson::GenericDocument<rapidjson::UTF8<>, rapidjson::MemoryPoolAllocator<>, rapidjson::MemoryPoolAllocator<>>;
  static constexpr std::size_t value_room = 8192, stack_room = 2048;

  scratch_document() = default;
  scratch_document(const scratch_document&) = delete;
  scratch_document& operator=(const scratch_document&) = delete;

  document& operator*() { return doc_; }
  document* operator->() { return &doc_; }
  // Whether the parse needed the heap (its values or stacks did not fit).
  bool spilled() const { return values_.Capacity() > value_room || stacks_.Capacity() > stack_room; }

private:
  alignas(std::max_align_t) char value_buffer_[value_room];
  alignas(std::max_align_t) char stack_buffer_[stack_room];
  rapidjson::MemoryPoolAllocator<> values_{value_buffer_, value_room, 4096};
  rapidjson::MemoryPoolAllocator<> stacks_{stack_buffer_, stack_room, 4096};
  document doc_{&values_, 1024, &stacks_};
};

// Field readers of a JSON object: the member's value when it has the type asked for, otherwise the empty value;
// never a cast that could be undefined (a number no int64 holds reads as 0).
inline std::string json_string(const rapidjson::Value& o, const char* key) {
  auto it = o.FindMember(key);
  return it != o.MemberEnd() && it->value.IsString() ? std::string(it->value.GetString(), it->value.GetStringLength())
                                                     : std::string();
}
inline double json_number(const rapidjson::Value& o, const char* key) {  // finite numbers
  auto it = o.FindMember(key);
  return it != o.MemberEnd() && it->value.IsNumber() && std::isfinite(it->value.GetDouble()) ? it->value.GetDouble()
                                                                                             : 0;
}
inline std::uint64_t json_count(const rapidjson::Value& o, const char* key) {  // whole numbers from 0
  auto it = o.FindMember(key);
  return it != o.MemberEnd() && it->value.IsUint64() ? it->value.GetUint64() : 0;
}
inline std::int64_t json_int64(const rapidjson::Value& o, const char* key) {  // whole numbers, or 0
  auto it = o.FindMember(key);
  return it != o.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : 0;
}
// A number truncated to a whole one: client timestamps may come as 1.7e12; outside int64, 0.
inline std::int64_t json_whole(const rapidjson::Value& o, const char* key) {
  auto it = o.FindMember(key);
  if (it == o.MemberEnd() || !it->value.IsNumber()) return 0;
  if (it->value.IsInt64()) return it->value.GetInt64();
  const double v = it->value.GetDouble();
  return v > -9.2e18 && v < 9.2e18 ? static_cast<std::int64_t>(v) : 0;
}

}  // namespace sw
