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
#include <rapidjson/encodedstream.h>
#include <rapidjson/memorystream.h>
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

// The text of a parse. A std::string or a C string is read up to its terminating NUL, RapidJSON's fastest input;
// any other view by its length. Either way a NUL byte ends the text for RapidJSON (within a value it is an error,
// after the value the end), so both read the same bytes alike (a byte order mark too: parse_json).
struct json_text {
  json_text(const std::string& s) : view(s), terminated(true) {}  // NOLINT: implicit by design
  json_text(const char* s) : view(s), terminated(true) {}         // NOLINT
  json_text(std::string_view s) : view(s), terminated(false) {}   // NOLINT
  std::string_view view;
  bool terminated;
};

namespace detail {

// Hands a parser's events on to a document and refuses nesting deeper than max_json_depth as the parser reaches it:
// the bound costs nothing for the text below it (no pass of its own over the bytes).
template <class Handler>
class depth_bounded {
public:
  using Ch = typename Handler::Ch;
  explicit depth_bounded(Handler& h) : h_(h) {}
  bool Null() { return h_.Null(); }
  bool Bool(bool b) { return h_.Bool(b); }
  bool Int(int i) { return h_.Int(i); }
  bool Uint(unsigned i) { return h_.Uint(i); }
  bool Int64(std::int64_t i) { return h_.Int64(i); }
  bool Uint64(std::uint64_t i) { return h_.Uint64(i); }
  bool Double(double d) { return h_.Double(d); }
  bool RawNumber(const Ch* s, rapidjson::SizeType n, bool copy) { return h_.RawNumber(s, n, copy); }
  bool String(const Ch* s, rapidjson::SizeType n, bool copy) { return h_.String(s, n, copy); }
  bool Key(const Ch* s, rapidjson::SizeType n, bool copy) { return h_.Key(s, n, copy); }
  bool StartObject() { return ++depth_ <= max_json_depth && h_.StartObject(); }
  bool EndObject(rapidjson::SizeType n) {
    --depth_;
    return h_.EndObject(n);
  }
  bool StartArray() { return ++depth_ <= max_json_depth && h_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) {
    --depth_;
    return h_.EndArray(n);
  }

private:
  Handler& h_;
  int depth_ = 0;
};

template <unsigned Flags, class Document, class Stream>
bool parse_stream(Document& d, Stream& in) {
  // The parser's own stack (a state per level of nesting, 64 at most) lives here, on the caller's stack.
  alignas(std::max_align_t) char room[1024];
  rapidjson::MemoryPoolAllocator<> states(room, sizeof room, 1024);
  rapidjson::GenericReader<rapidjson::UTF8<>, typename Document::EncodingType, rapidjson::MemoryPoolAllocator<>> reader(
      &states, 256);
  bool ok = false;
  auto generate = [&](Document& doc) {
    depth_bounded<Document> bounded(doc);
    ok = !reader.template Parse<Flags | rapidjson::kParseIterativeFlag>(in, bounded).IsError();
    return ok;
  };
  d.Populate(generate);  // the document keeps the value only when the whole text parsed
  if (!ok) d.SetNull();
  return ok;
}

}  // namespace detail

// Every JSON this service takes in (client messages, HTTP bodies, Gladia messages, journal lines) is parsed here:
// nesting deeper than max_json_depth is refused, and RapidJSON's iterative parser never recurses (200 000 '['
// in one WebSocket frame overflowed the recursive parser's stack and killed the process). False on either error
// (the document is then null).
template <unsigned Flags = rapidjson::kParseDefaultFlags, class Document>
bool parse_json(Document& d, json_text text) {
  // RapidJSON's stream by length skips the bytes of a UTF-8 byte order mark at the start (each one it finds); a text
  // that starts with one of them goes that way, so that both readings agree.
  const auto first = text.view.empty() ? 0u : static_cast<unsigned char>(text.view.front());
  if (text.terminated && first != 0xEFu && first != 0xBBu && first != 0xBFu) {
    rapidjson::StringStream in(text.view.data());
    return detail::parse_stream<Flags>(d, in);
  }
  rapidjson::MemoryStream bytes(text.view.data(), text.view.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> in(bytes);
  return detail::parse_stream<Flags>(d, in);
}

// A document for a parse whose values do not outlive the caller (a message read into a struct): its values and the
// stack it builds them on take their first KiBs from the object itself, on the caller's stack (parse_json keeps the
// reader's own state there too), so a short message (a Gladia
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
