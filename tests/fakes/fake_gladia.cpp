#include "tests/fakes/fake_gladia.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <future>
#include <limits>
#include <optional>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "net/beast_util.hpp"
#include "net/edge_socket.hpp"
#include "net/url.hpp"
#include "proto/load_tag.hpp"
#include "proto/rapidjson.hpp"

namespace sw::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

// Every message's created_at: a fixed instant (no test reads it), a view (no allocation per message).
constexpr std::string_view now_iso() {
  return "2026-11-26T00:00:00.000Z";
}

// Received audio, kept as the chunks it came in: one string grown by appending would be reallocated and copied
// at the same stream offsets in every session, all at once under the fake's lock (a 10 ms stall of every
// session at 6.4 s into a 100-stream benchmark).
class chunked_audio {
public:
  bool keep = true;  // false: counted only
  std::size_t size() const { return bytes_; }
  void append(std::string_view chunk) {  // copied only when kept
    bytes_ += chunk.size();
    if (keep) parts_.emplace_back(chunk);
  }
  std::string str() const {
    std::string all;
    all.reserve(bytes_);
    for (auto& p : parts_) all += p;
    return all;
  }

private:
  std::deque<std::string> parts_;
  std::size_t bytes_ = 0;
};

struct session {
  std::string id;
  chunked_audio audio;  // committed (acknowledged) bytes, in order
  std::size_t chunks_since_final = 0;
  std::size_t bytes_since_partial = 0, bytes_since_final = 0;  // partial_every / final_every
  int utterance = 0;
  std::size_t utterance_from = 0;  // where the utterance being heard began (bytes): its finals' `start`
  // Every final made, as its `utterance` object and its text (post_transcript's and GET /v2/live/{id}'s
  // `utterances`, `full_transcript`), sent or not. At most max_kept_finals; for load (keep_audio off) only until the
  // session's post_transcript is sent.
  std::vector<std::pair<std::string, std::string>> finals;
  bool stopped = false;
  bool gone = false;  // lost (lose_session_after): its url refuses every connection
  // Takes no more audio; stop_recording drops its connection, unread (lose_session_at_stop_after,
  // drop_every_stop_after), and its url then refuses connections: for good, or for refuse_for when that is set.
  bool frozen = false;
  std::chrono::milliseconds refuse_for{0};
  std::chrono::steady_clock::time_point refuse_until;
  int result_polls = 0;  // GET /v2/live/{id} answered so far
  load_tag_reader tags;
};

constexpr std::size_t max_kept_finals = 10'000;

// Appends a byte offset of 16 kHz PCM16 as seconds with six decimals ("1.500000", like std::to_string(double);
// below a microsecond truncated), in integers: an ack a chunk and a transcript every 300 ms for thousands of
// streams, where printf's floating point was a few per cent of the fake.
void append_seconds(std::string& out, std::size_t bytes) {
  const std::size_t us = bytes * 125 / 4;  // bytes / 32 000 s, in microseconds
  char buf[32];
  auto end = std::to_chars(buf, buf + sizeof buf, us / 1'000'000).ptr;
  *end++ = '.';
  const auto frac = us % 1'000'000;
  for (std::size_t d = 100'000; d > 0; d /= 10) *end++ = static_cast<char>('0' + frac / d % 10);
  out.append(buf, end);
}

template <class Int>
void append_int(std::string& out, Int v) {
  char buf[24];
  out.append(buf, std::to_chars(buf, buf + sizeof buf, v).ptr);
}

}  // namespace

struct fake_gladia::impl {
  options opts;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::atomic<bool> running{true};
  mutable std::mutex mu;
  std::unordered_map<std::string, session> sessions;  // by id: thousands, looked up for every chunk
  std::vector<std::string> bodies, targets;
  int inits = 0, connections = 0, fail_times = 0;
  std::string init_url;  // answer_inits_with_url
  unsigned fail_status = 0;
  std::string retry_after;
  std::string fail_message;
  std::size_t cut_bytes = 0;
  bool cut_armed = false;
  std::uint16_t cut_code = 0;
  bool cut_ack_lost = false;
  std::size_t fin_bytes = 0;
  bool fin_armed = false;
  std::size_t lose_bytes = 0;
  int lose_sessions = 0;
  bool lose_takes_frame = false;
  std::size_t freeze_bytes = 0;
  bool freeze_armed = false;
  std::chrono::milliseconds freeze_refuse_for{0};
  std::size_t end_bytes = 0;
  int end_sessions = 0;
  bool end_with_results = true;
  std::size_t stall_bytes = 0;
  bool stall_armed = false;
  int stalled = 0;
  std::chrono::milliseconds ack_delay{0};
  bool unknown_types = false;
  int next_id = 1;
  bool withhold = false;
  bool hang_on_stop = false;
  std::uint16_t stop_close_code = 0;
  int processing_polls = 0;
  bool recording = false;
  std::deque<fake_gladia::arrival> arrivals;  // a deque: appending never moves what is recorded
  std::optional<asio::ssl::context> tls;
  load_figures figures;
  std::int64_t window_from = std::numeric_limits<std::int64_t>::max(), window_to = window_from;
  std::unordered_map<std::uint32_t, std::uint32_t> next_sequence;  // participant -> the sequence expected next
  std::vector<std::shared_ptr<void>> stalled_conns;                // stalled connections stay open until the fake ends

  std::string ws_url_for(const std::string& id) const {
    return std::string(tls ? "wss" : "ws") + "://" + (opts.host == "127.0.0.1" ? std::string("localhost") : opts.host) +
           ":" + std::to_string(acceptor.local_endpoint().port()) + "/v2/live?token=tok-" + id;
  }

  static std::string error_body(unsigned status, const std::string& message, const std::string& validation = {}) {
    std::string b = R"({"timestamp":")" + std::string(now_iso()) +
                    R"(","path":"/v2/live","request_id":"G-fake0001","statusCode":)" + std::to_string(status) +
                    R"(,"message":")" + message + "\"";
    if (!validation.empty()) b += R"(,"validation_errors":[")" + validation + "\"]";
    return b + "}";
  }

  // Validates a StreamingRequest body; empty string = valid.
  static std::string validate(const std::string& body) {
    rapidjson::Document d;
    if (!sw::parse_json(d, body) || !d.IsObject()) return "body must be a JSON object";
    auto str_in = [&](const char* k, std::initializer_list<const char*> allowed) -> std::string {
      if (!d.HasMember(k)) return {};
      if (!d[k].IsString()) return std::string(k) + " must be a string";
      for (auto a : allowed)
        if (d[k].GetString() == std::string(a)) return {};
      return std::string(k) + " has an unsupported value";
    };
    auto int_in = [&](const char* k, std::initializer_list<int> allowed) -> std::string {
      if (!d.HasMember(k)) return {};
      if (!d[k].IsInt()) return std::string(k) + " must be an integer";
      for (auto a : allowed)
        if (d[k].GetInt() == a) return {};
      return std::string(k) + " has an unsupported value";
    };
    auto num_range = [&](const char* k, double lo, double hi) -> std::string {
      if (!d.HasMember(k)) return {};
      if (!d[k].IsNumber() || d[k].GetDouble() < lo || d[k].GetDouble() > hi)
        return std::string(k) + " must be a number from " + std::to_string(lo) + " to " + std::to_string(hi);
      return {};
    };
    for (auto e : {str_in("encoding", {"wav/pcm", "wav/alaw", "wav/ulaw"}), int_in("bit_depth", {8, 16, 24, 32}),
                   int_in("sample_rate", {8000, 16000, 32000, 44100, 48000}), str_in("model", {"solaria-1"}),
                   num_range("endpointing", 0.01, 10), num_range("maximum_duration_without_endpointing", 5, 60),
                   num_range("channels", 1, 8)})
      if (!e.empty()) return e;
    if (d.HasMember("language_config")) {
      auto& lc = d["language_config"];
      if (!lc.IsObject() || (lc.HasMember("languages") && !lc["languages"].IsArray()))
        return "language_config.languages must be an array";
    }
    if (d.HasMember("messages_config") && !d["messages_config"].IsObject()) return "messages_config must be an object";
    return {};
  }

  struct http_answer {
    unsigned status = 200;
    std::string body;
    std::string extra_header, extra_value;
  };

  // Figures, tags' sequences and window afresh: a new load begins (its participants are numbered from 0 again).
  void reset_load_locked() {
    figures = fake_gladia::load_figures{};
    next_sequence.clear();
    window_from = window_to = std::numeric_limits<std::int64_t>::max();
  }

  // POST /v2/live (and GET /stats, GET /window, POST /reset): the answer.
  http_answer answer_http(const http::request<http::string_body>& req, const std::string& path,
                          const header_list& query) {
    if (req.method() == http::verb::get && path == "/stats") return {200, load_json_locked(), {}, {}};
    if (req.method() == http::verb::post && path == "/reset") {
      reset_load_locked();
      return {200, R"({"reset":true})", {}, {}};
    }
    if (req.method() == http::verb::get && path == "/window") {
      for (auto& [k, v] : query) {
        char* end = nullptr;
        errno = 0;
        const long long ns = std::strtoll(v.c_str(), &end, 10);
        if ((k != "from" && k != "to") || v.empty() || *end || errno == ERANGE)
          return {400, R"({"error":"GET /window?from=NS&to=NS: CLOCK_MONOTONIC nanoseconds"})", {}, {}};
        (k == "from" ? window_from : window_to) = ns;
      }
      return {200, R"({"from":)" + std::to_string(window_from) + R"(,"to":)" + std::to_string(window_to) + "}", {}, {}};
    }
    if (req.method() == http::verb::get && path.rfind("/v2/live/", 0) == 0) return session_result(req, path.substr(9));
    if (req.method() != http::verb::post || path != "/v2/live") return {404, error_body(404, "not found"), {}, {}};
    ++inits;
    bodies.push_back(req.body());
    targets.push_back(std::string(req.target()));
    auto key = req.find("x-gladia-key");
    if (key == req.end() || key->value() != opts.api_key) return {401, error_body(401, "gladia key not found"), {}, {}};
    if (fail_times > 0) {
      --fail_times;
      if (retry_after.empty()) return {fail_status, error_body(fail_status, fail_message), {}, {}};
      return {fail_status, error_body(fail_status, fail_message), "Retry-After", retry_after};
    }
    for (auto& [k, v] : query)
      if (k == "region" && v != "us-west" && v != "eu-west")
        return {400, error_body(400, "Invalid region", "region must be us-west or eu-west"), {}, {}};
    if (auto problem = validate(req.body()); !problem.empty())
      return {400, error_body(400, "Invalid request", problem), {}, {}};
    auto n = next_id++;
    auto id = "fake-" + std::to_string(n);
    auto& ses = sessions[id];
    ses.id = id;
    ses.audio.keep = opts.keep_audio;
    if (opts.stagger_finals && opts.final_every_chunks > 0)
      ses.chunks_since_final = static_cast<std::size_t>(n) % opts.final_every_chunks;
    if (opts.stagger_finals && opts.final_every.count() > 0)
      ses.bytes_since_final =
          static_cast<std::size_t>(n * 6'400) % static_cast<std::size_t>(opts.final_every.count() * 32);
    return {201,
            R"({"id":")" + id + R"(","created_at":")" + std::string(now_iso()) + R"(","url":")" +
                (init_url.empty() ? ws_url_for(id) : init_url) + "\"}",
            {},
            {}};
  }

  // GET /v2/live/{id}: the session's state, and its result once it is done: after stop_recording, and not to the
  // first processing_polls requests (those say "processing").
  http_answer session_result(const http::request<http::string_body>& req, const std::string& id) {
    auto key = req.find("x-gladia-key");
    if (key == req.end() || key->value() != opts.api_key) return {401, error_body(401, "gladia key not found"), {}, {}};
    auto it = sessions.find(id);
    if (it == sessions.end())
      return {404, error_body(404, "Item with id " + id + " doesn't exist or has been deleted"), {}, {}};
    auto& ses = it->second;
    ++ses.result_polls;  // every GET counts (result_requests)
    const bool done = ses.stopped && ses.result_polls > processing_polls;
    std::string b = R"({"id":")" + id + R"(","request_id":"G-fake0002","version":2,"kind":"live","status":")" +
                    (done ? "done" : "processing") + R"(","created_at":")" + std::string(now_iso()) + "\"";
    if (done)
      b += R"(,"completed_at":")" + std::string(now_iso()) + R"(","result":{"metadata":{"audio_duration":)" +
           std::to_string(ses.audio.size() / 32000.0) + R"(},"transcription":)" + transcription(ses) + "}";
    return {200, b + "}", {}, {}};
  }

  // A message's start, up to the comma before its own fields; one string grown in place (a message per chunk and
  // more for thousands of streams: each `+` of the former concatenation was an allocation of the fake's).
  static std::string msg_head(const std::string& id, std::string_view type, std::size_t room) {
    std::string m;
    m.reserve(96 + id.size() + room);
    m += R"({"type":")";
    m += type;
    m += R"(","session_id":")";
    m += id;
    m += R"(","created_at":")";
    m += now_iso();
    m += "\",";
    return m;
  }

  static std::string msg(const std::string& id, std::string_view type, std::string_view rest) {
    auto m = msg_head(id, type, rest.size() + 1);
    m += rest;
    m += '}';
    return m;
  }

  // The acknowledgement of the audio from byte `start` to `end` of the session.
  static std::string ack(const std::string& id, std::size_t start, std::size_t end) {
    auto m = msg_head(id, "audio_chunk", 128);
    m += R"("acknowledged":true,"error":null,"data":{"byte_range":[)";
    append_int(m, start);
    m += ',';
    append_int(m, end);
    m += R"(],"time_range":[)";
    append_seconds(m, start);
    m += ',';
    append_seconds(m, end);
    m += "]}}";
    return m;
  }

  // The session's utterance being heard, up to the end of its audio so far; a final ends it (the next one begins
  // there) and is kept for the session's result.
  std::string transcript(session& ses, bool final) {
    ++figures.transcripts;
    if (final) ++figures.finals;
    auto m = msg_head(ses.id, "transcript", 224);
    m += R"("data":{"id":"00_)";
    const auto digits = m.size();
    append_int(m, ses.utterance);
    if (const auto n = m.size() - digits; n < 8) m.insert(digits, 8 - n, '0');
    m += R"(","is_final":)";
    m += final ? "true" : "false";
    m += R"(,"utterance":)";
    const auto utterance_at = m.size();
    m += R"({"start":)";
    append_seconds(m, ses.utterance_from);
    m += R"(,"end":)";
    append_seconds(m, ses.audio.size());
    m += R"(,"confidence":0.9,"channel":0,"words":[],"text":")";
    const auto text_at = m.size();
    m += "utterance ";
    append_int(m, ses.utterance);
    if (opts.stamp_texts) {
      m += " @";
      append_int(m, monotonic_ns());
    }
    const auto text_end = m.size();
    m += R"(","language":"en"})";
    if (final) {
      if (ses.finals.size() < max_kept_finals)
        ses.finals.emplace_back(m.substr(utterance_at), m.substr(text_at, text_end - text_at));
      ses.utterance_from = ses.audio.size();
      ++ses.utterance;
    }
    m += "}}";
    return m;
  }

  // The session's result as post_transcript's `data` and GET /v2/live/{id}'s `result.transcription` have it.
  static std::string transcription(const session& ses) {
    std::string full, utterances;
    for (auto& [u, text] : ses.finals) {
      full += (full.empty() ? "" : " ") + text;
      utterances += (utterances.empty() ? "" : ",") + u;
    }
    return R"({"full_transcript":")" + full + R"(","languages":["en"],"utterances":[)" + utterances + "]}";
  }

  // The relay's upstream message `pcm` arrived at `arrival_ns`: its tags.
  void read_tags(session& ses, std::string_view pcm, std::int64_t arrival_ns) {
    const bool was_broken = ses.tags.broken();
    ses.tags.feed(reinterpret_cast<const std::uint8_t*>(pcm.data()), pcm.size(), [&](const load_tag& t, bool last) {
      ++figures.frames;
      figures.relay_frame.add_ns(arrival_ns - t.sent_ns);
      if (last) figures.relay_message.add_ns(arrival_ns - t.sent_ns);
      if (t.sent_ns >= window_from && t.sent_ns < window_to) {
        figures.relay_frame_steady.add_ns(arrival_ns - t.sent_ns);
        if (last) figures.relay_message_steady.add_ns(arrival_ns - t.sent_ns);
      }
      auto [it, fresh] = next_sequence.emplace(t.participant, t.sequence);
      if (!fresh) {
        if (t.sequence > it->second)
          figures.lost += t.sequence - it->second;
        else if (t.sequence < it->second)
          ++figures.duplicates;
      }
      if (fresh || t.sequence >= it->second) it->second = t.sequence + 1;
    });
    if (ses.tags.broken() && !was_broken) ++figures.untagged_streams;
  }

  // What one message from the relay leads to: the messages to send back, and what the connection does next.
  struct verdict {
    std::vector<std::string> out;
    std::uint16_t cut = 0;
    bool drop = false, stall = false, stop = false, skip = false;
    bool fin = false;  // what is sent, then the connection's end (FIN) in the same segment; nothing read after
  };

  // `ses` is the connection's session (found once, when it connected: sessions are never erased, and an
  // unordered_map's elements stay where they are). `frame` is read before the connection reads again.
  // `received_ns`: when the kernel received the frame's last bytes (CLOCK_MONOTONIC), 0 = now.
  verdict on_message(session& ses, std::string_view frame, bool binary, bool& sent_unknown, std::int64_t received_ns) {
    const auto arrived = std::chrono::steady_clock::now();  // before the lock every session shares
    const auto read_ns = monotonic_ns();
    const auto arrived_ns = received_ns ? received_ns : read_ns;
    const std::string& id = ses.id;
    verdict v;
    std::string decoded;  // a JSON audio_chunk's audio
    std::string_view pcm;
    if (binary) {
      pcm = frame;
    } else {
      rapidjson::Document d;
      const bool parsed = sw::parse_json(d, frame);
      std::string type =
          parsed && d.IsObject() && d.HasMember("type") && d["type"].IsString() ? d["type"].GetString() : "";
      if (type == "audio_chunk" && d.HasMember("data") && d["data"].IsObject() && d["data"].HasMember("chunk") &&
          d["data"]["chunk"].IsString()) {
        std::string b64 = d["data"]["chunk"].GetString();
        decoded.resize(b64.size());
        auto n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(&decoded[0]),
                                 reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
        decoded.resize(n > 0 ? static_cast<std::size_t>(n) - std::count(b64.end() - 2, b64.end(), '=') : 0);
        pcm = decoded;
      } else if (type == "stop_recording") {
        v.stop = true;
      } else {
        v.skip = true;  // ignored, like the real service does with what it does not know
        return v;
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    if (ses.gone) {  // its host went away: what any of its connections still brings (read before a reset) is not taken
      v.drop = true;
      return v;
    }
    if (ses.frozen || (freeze_armed && !pcm.empty() && ses.audio.size() + pcm.size() > freeze_bytes)) {
      if (!ses.frozen) ses.refuse_for = freeze_refuse_for;
      freeze_armed = false;
      ses.frozen = true;
      if (!v.stop) return v;                  // audio read, nothing of it taken, nothing said
      if (!ses.stopped) end_session(ses, v);  // the stop: the session is lost before it reads it
      v.out.clear();
      v.drop = true;
      if (ses.refuse_for.count() > 0) {  // drop_every_stop_after: gone for a while
        ses.refuse_until = std::chrono::steady_clock::now() + ses.refuse_for;
      } else {
        ses.gone = true;
      }
      return v;
    }
    if (!pcm.empty()) {
      bool take = true, lost = false, ended = false, results = true;
      const auto after = ses.audio.size() + pcm.size();
      const bool scripted_end = end_sessions > 0 && after > end_bytes;
      const bool limit_end =
          opts.session_limit.count() > 0 && after > static_cast<std::size_t>(opts.session_limit.count()) * 32;
      const bool scripted_loss = lose_sessions > 0 && after > lose_bytes;
      const bool limit_loss =
          opts.lose_after.count() > 0 && after > static_cast<std::size_t>(opts.lose_after.count()) * 32;
      if (stall_armed && ses.audio.size() + pcm.size() > stall_bytes) {
        stall_armed = false;
        v.stall = true;
        ++stalled;
        take = false;
      } else if (!ses.stopped && (scripted_end || limit_end)) {
        if (scripted_end) {
          --end_sessions;
          results = end_with_results;
        }
        take = false;  // the session is over (its limit): this frame is not taken, it goes to the next session
        ended = true;
      } else if (!ses.stopped && (scripted_loss || limit_loss)) {
        if (scripted_loss) --lose_sessions;
        // The session is lost: its last utterance made final into its result, none of it sent.
        if (scripted_loss && lose_takes_frame) {  // that frame taken first (its acknowledgment lost with the rest)
          ses.audio.append(pcm);
          ++ses.chunks_since_final;
        }
        end_session(ses, v);
        v.out.clear();
        v.drop = true;
        ses.gone = true;
        return v;
      } else if (fin_armed && after > fin_bytes) {
        fin_armed = false;  // taken and acknowledged as any other; the end leaves with the acknowledgment
        v.fin = true;
      } else if (cut_armed && ses.audio.size() + pcm.size() > cut_bytes) {
        cut_armed = false;  // this frame is never acknowledged: the client must replay it
        v.cut = cut_code;
        v.drop = cut_code == 0;
        // With ack_lost it is taken and transcribed as any other, but its ack and the transcripts it completes are
        // lost with the connection (Gladia has them, the client never hears so); otherwise it is lost itself.
        take = cut_ack_lost;
        lost = true;
      }
      if (take) {
        ++figures.chunks;
        figures.bytes += pcm.size();
        if (opts.read_tags) {
          read_tags(ses, pcm, arrived_ns);
          if (received_ns) {
            const auto delay = std::max<std::int64_t>(0, read_ns - received_ns);
            figures.read_delay.add_ns(delay);
            if (received_ns >= window_from && received_ns < window_to) figures.read_delay_steady.add_ns(delay);
          }
        }
        auto start = ses.audio.size();
        const auto size = pcm.size();
        ses.audio.append(pcm);
        if (recording) arrivals.push_back({id, ses.audio.size(), arrived});
        if (!withhold) v.out.push_back(ack(id, start, ses.audio.size()));
        bool partial = true, final = false;
        if (opts.partial_every.count() > 0) {
          ses.bytes_since_partial += size;
          const auto every = static_cast<std::size_t>(opts.partial_every.count()) * 32;
          partial = ses.bytes_since_partial >= every;
          if (partial) ses.bytes_since_partial %= every;
        }
        if (opts.final_every.count() > 0) {
          ses.bytes_since_final += size;
          const auto every = static_cast<std::size_t>(opts.final_every.count()) * 32;
          final = ses.bytes_since_final >= every;
          if (final) ses.bytes_since_final %= every;
          ses.chunks_since_final = final ? 0 : 1;
        } else {
          ses.chunks_since_final += 1;
          final = ses.chunks_since_final >= opts.final_every_chunks;
          if (final) ses.chunks_since_final = 0;
        }
        if (partial) v.out.push_back(transcript(ses, false));
        if (final) v.out.push_back(transcript(ses, true));
      }
      if (lost) v.out.clear();
      if (ended) {  // as after stop_recording, without its ack; without results nothing of it is sent
        end_session(ses, v);
        if (!results) v.out.clear();
        v.stop = true;  // closes 1000 after what is sent
        return v;
      }
    }
    if (v.stop) {
      v.out.push_back(msg(id, "stop_recording",
                          R"("acknowledged":true,"error":null,"data":{"recording_duration":)" +
                              std::to_string(ses.audio.size() / 32000.0) + R"(,"recording_left_to_process":0})"));
      end_session(ses, v);
      if (stop_close_code) {  // the session ends as above, but the connection closes with this code instead
        v.out.clear();
        v.cut = stop_close_code;
      } else if (hang_on_stop) {  // the session ends as above, but none of it arrives: the socket stays open, silent
        v.out.clear();
        v.stall = true;
        ++stalled;
      } else if (!opts.keep_audio) {  // for load: sessions are never erased, their finals need not stay
        ses.finals = {};
      }
    }
    if (unknown_types && !sent_unknown) {
      v.out.push_back(msg(id, "mystery_event", R"("data":{})"));
      sent_unknown = true;
    }
    return v;
  }

  // The session is over: its last utterance is made final, then post_transcript and post_final_transcript.
  void end_session(session& ses, verdict& v) {
    if (ses.chunks_since_final > 0) {  // the last utterance is final only at the end
      v.out.push_back(transcript(ses, true));
      ses.chunks_since_final = 0;
    }
    v.out.push_back(msg(ses.id, "post_transcript", R"("data":)" + transcription(ses)));
    v.out.push_back(
        msg(ses.id, "post_final_transcript",
            R"("data":{"metadata":{"audio_duration":)" + std::to_string(ses.audio.size() / 32000.0) + "}}"));
    ses.stopped = true;
  }

  std::string load_json_locked() const {
    auto q = [](const histogram& h, double p) { return std::to_string(h.quantile_us(p) / 1000.0); };
    auto ms = [&](const histogram& h) {
      return R"({"p50":)" + q(h, 0.5) + R"(,"p99":)" + q(h, 0.99) + R"(,"max":)" + std::to_string(h.max_us() / 1000.0) +
             R"(,"count":)" + std::to_string(h.count()) + "}";
    };
    const auto& f = figures;
    return R"({"streams":)" + std::to_string(f.streams) + R"(,"untaggedStreams":)" +
           std::to_string(f.untagged_streams) + R"(,"chunks":)" + std::to_string(f.chunks) + R"(,"bytes":)" +
           std::to_string(f.bytes) + R"(,"frames":)" + std::to_string(f.frames) + R"(,"lost":)" +
           std::to_string(f.lost) + R"(,"duplicates":)" + std::to_string(f.duplicates) + R"(,"transcripts":)" +
           std::to_string(f.transcripts) + R"(,"finals":)" + std::to_string(f.finals) + R"(,"relayMessageMs":)" +
           ms(f.relay_message) + R"(,"relayFrameMs":)" + ms(f.relay_frame) + R"(,"relayMessageSteadyMs":)" +
           ms(f.relay_message_steady) + R"(,"relayFrameSteadyMs":)" + ms(f.relay_frame_steady) + R"(,"readDelayMs":)" +
           ms(f.read_delay) + R"(,"readDelaySteadyMs":)" + ms(f.read_delay_steady) + "}";
  }
};

namespace {

// One connection: an HTTP request (POST /v2/live, GET /stats) or a WebSocket session, asynchronous on a strand.
template <class Stream>
class conn : public std::enable_shared_from_this<conn<Stream>> {
public:
  template <class... Args>
  conn(fake_gladia::impl* f, Args&&... args) : f_(f), ws_(std::forward<Args>(args)...), timer_(ws_.get_executor()) {}

  void start() {
    if constexpr (std::is_same_v<Stream, net::ahead_socket>) {
      read_request();
    } else {
      auto self = this->shared_from_this();
      ws_.next_layer().async_handshake(asio::ssl::stream_base::server, [self](beast::error_code ec) {
        if (!ec) self->read_request();  // else e.g. the client rejected our certificate
      });
    }
  }

  void stamp_receipts() { socket().stamp_receipts(); }

private:
  net::ahead_socket& socket() {
    if constexpr (std::is_same_v<Stream, net::ahead_socket>) {
      return ws_.next_layer();
    } else {
      return ws_.next_layer().next_layer();
    }
  }

  void read_request() {
    auto self = this->shared_from_this();
    http::async_read(ws_.next_layer(), buf_, req_, [self](beast::error_code ec, std::size_t) {
      if (!ec) self->on_request();
    });
  }

  void on_request() {
    std::string path;
    header_list query;
    net::split_target(std::string(req_.target()), path, query);
    std::string token;
    for (auto& [k, v] : query)
      if (k == "token") token = v;
    if (websocket::is_upgrade(req_)) {
      const auto id = token.rfind("tok-", 0) == 0 ? token.substr(4) : "";
      {
        std::lock_guard<std::mutex> lock(f_->mu);
        auto it = f_->sessions.find(id);
        if (path == "/v2/live" && it != f_->sessions.end() && !it->second.gone &&
            std::chrono::steady_clock::now() >= it->second.refuse_until) {
          ses_ = &it->second;
          ++f_->connections;
          ++f_->figures.streams;
        }
      }
      if (!ses_) {
        respond({401, fake_gladia::impl::error_body(401, "invalid or expired token"), {}, {}});
        return;
      }
      ws_.read_message_max(1024 * 1024);  // Gladia's 1 MiB frame limit
      auto self = this->shared_from_this();
      ws_.async_accept(req_, [self](beast::error_code ec) {
        if (!ec) self->read();
      });
      return;
    }
    fake_gladia::impl::http_answer a;
    {
      std::lock_guard<std::mutex> lock(f_->mu);
      a = f_->answer_http(req_, path, query);
    }
    respond(std::move(a));
  }

  void respond(fake_gladia::impl::http_answer a) {
    res_ = http::response<http::string_body>(static_cast<http::status>(a.status), req_.version());
    res_.set(http::field::content_type, "application/json");
    if (!a.extra_header.empty()) res_.set(a.extra_header, a.extra_value);
    res_.body() = std::move(a.body);
    res_.keep_alive(false);
    res_.prepare_payload();
    auto self = this->shared_from_this();
    http::async_write(ws_.next_layer(), res_, [self](beast::error_code, std::size_t) {
      beast::error_code ec;
      net::raw_socket(beast::get_lowest_layer(self->ws_)).shutdown(tcp::socket::shutdown_send, ec);
    });
  }

  void read() {
    auto self = this->shared_from_this();
    ws_.async_read(buf_, [self](beast::error_code ec, std::size_t) {
      if (ec) return;
      self->on_message();
    });
  }

  void on_message() {
    const auto data = buf_.data();  // a flat buffer: one piece
    std::int64_t received_ns = 0;   // the fake's own read time, unless the kernel's receive time is known
    // Over TLS: the receipt of the last segment of the read that brought the message's records (never earlier).
    if (const auto real = socket().receipt_realtime_ns()) received_ns = monotonic_of_realtime_ns(real);
    auto v = f_->on_message(*ses_, {static_cast<const char*>(data.data()), data.size()}, ws_.got_binary(),
                            sent_unknown_, received_ns);
    buf_.consume(buf_.size());
    if (v.skip) {
      read();
      return;
    }
    auto self = this->shared_from_this();
    if (v.stall) {  // stops reading and writing, socket open, until the fake ends
      std::lock_guard<std::mutex> lock(f_->mu);
      f_->stalled_conns.push_back(self);
      return;
    }
    if (v.drop) {  // abrupt: no close frame; the acks already written still arrive before the FIN
      beast::error_code ec;
      net::raw_socket(beast::get_lowest_layer(ws_)).shutdown(tcp::socket::shutdown_send, ec);
      timer_.expires_after(std::chrono::milliseconds(50));
      timer_.async_wait([self](beast::error_code) {
        beast::error_code ignored;
        net::raw_socket(beast::get_lowest_layer(self->ws_)).close(ignored);
      });
      return;
    }
    if (v.cut) {
      ws_.async_close(websocket::close_reason(static_cast<websocket::close_code>(v.cut)), [self](beast::error_code ec) {
        if (!ec) self->drain();
      });
      return;
    }
    out_ = std::move(v.out);
    next_out_ = 0;
    stop_ = v.stop;
    if (v.fin) {  // corked: what is written waits in the kernel, and leaves with the FIN when the sending side shuts
      fin_ = true;
      int on = 1;
      ::setsockopt(net::raw_socket(beast::get_lowest_layer(ws_)).native_handle(), IPPROTO_TCP, TCP_CORK, &on,
                   sizeof on);
    }
    std::chrono::milliseconds delay;
    {
      std::lock_guard<std::mutex> lock(f_->mu);
      delay = f_->ack_delay;
    }
    if (delay.count()) {
      timer_.expires_after(delay);
      timer_.async_wait([self](beast::error_code) { self->write_next(); });
    } else {
      write_next();
    }
  }

  void write_next() {
    auto self = this->shared_from_this();
    if (next_out_ == out_.size()) {
      if (stop_) {
        ws_.async_close(websocket::close_code::normal, [self](beast::error_code ec) {
          if (!ec) self->drain();
        });
      } else if (fin_) {  // the end, with what was written; the socket stays open, unread, until the fake ends
        beast::error_code ignored;
        net::raw_socket(beast::get_lowest_layer(ws_)).shutdown(tcp::socket::shutdown_send, ignored);
        std::lock_guard<std::mutex> lock(f_->mu);
        f_->stalled_conns.push_back(self);
      } else {
        read();
      }
      return;
    }
    ws_.text(true);
    ws_.async_write(asio::buffer(out_[next_out_]), [self](beast::error_code ec, std::size_t) {
      if (ec) return;
      ++self->next_out_;
      self->write_next();
    });
  }

  // Until the client's close completes.
  void drain() {
    auto self = this->shared_from_this();
    ws_.async_read(buf_, [self](beast::error_code ec, std::size_t) {
      self->buf_.consume(self->buf_.size());
      if (!ec) self->drain();
    });
  }

  fake_gladia::impl* f_;
  websocket::stream<Stream> ws_;
  asio::steady_timer timer_;
  beast::flat_buffer buf_;
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
  session* ses_ = nullptr;  // set when a known session's WebSocket is accepted
  bool sent_unknown_ = false;
  std::vector<std::string> out_;
  std::size_t next_out_ = 0;
  bool stop_ = false;
  bool fin_ = false;
};

void accept_next(fake_gladia::impl* f) {
  // One I/O thread runs every handler in order already: a strand per connection would only add a queue to each.
  auto executor = f->opts.threads > 1 ? asio::any_io_executor(asio::make_strand(f->ioc))
                                      : asio::any_io_executor(f->ioc.get_executor());
  f->acceptor.async_accept(executor, [f](beast::error_code ec, tcp::socket s) {
    if (!f->running) return;
    if (!ec) {
      beast::error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);  // acks and transcripts leave at once, as Gladia's do
      // Each chunk of the relay's in one `recvmsg` (net/edge_socket.hpp), as the server reads its clients. For load,
      // a chunk arrives when the kernel received it (its read notes that), not when this thread got to read it (or,
      // over TLS, to decrypt it): the fake shares its core with the loadgen, whose queueing is not the relay's latency.
      if (f->tls) {
        auto c =
            std::make_shared<conn<beast::ssl_stream<net::ahead_socket>>>(f, net::ahead_socket(std::move(s)), *f->tls);
        if (f->opts.read_tags) c->stamp_receipts();
        c->start();
      } else {
        auto c = std::make_shared<conn<net::ahead_socket>>(f, std::move(s));
        if (f->opts.read_tags) c->stamp_receipts();
        c->start();
      }
    }
    accept_next(f);
  });
}

}  // namespace

fake_gladia::options fake_gladia::load_options() {
  options o;
  o.partial_every = std::chrono::milliseconds(300);
  o.final_every = std::chrono::milliseconds(2000);
  o.stagger_finals = true;
  o.keep_audio = false;
  o.stamp_texts = true;
  o.read_tags = true;
  return o;
}

fake_gladia::fake_gladia(options o) : impl_(std::make_shared<impl>()) {
  auto& d = *impl_;
  d.opts = std::move(o);
  if (!d.opts.tls_cert_file.empty()) {
    d.tls.emplace(asio::ssl::context::tls_server);
    d.tls->use_certificate_chain_file(d.opts.tls_cert_file);
    d.tls->use_private_key_file(d.opts.tls_key_file, asio::ssl::context::pem);
  }
  tcp::endpoint ep(asio::ip::make_address(d.opts.host), d.opts.port);
  d.acceptor.open(ep.protocol());
  d.acceptor.set_option(asio::socket_base::reuse_address(true));
  d.acceptor.bind(ep);
  d.acceptor.listen(asio::socket_base::max_listen_connections);
  accept_next(&d);
  for (int i = 0; i < std::max(1, d.opts.threads); ++i)
    d.threads.emplace_back([p = impl_.get()] {
      pthread_setname_np(pthread_self(), "fake.gladia");  // told apart from a load tool's threads it runs beside
      p->ioc.run();
    });
}

fake_gladia::~fake_gladia() {
  impl_->running = false;
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->stalled_conns.clear();
}

fake_gladia::load_figures fake_gladia::load() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->figures;
}

void fake_gladia::set_window(std::int64_t from_ns, std::int64_t to_ns) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->window_from = from_ns;
  impl_->window_to = to_ns;
}

void fake_gladia::reset_load() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->reset_load_locked();
}

std::string fake_gladia::load_json() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->load_json_locked();
}

std::uint16_t fake_gladia::port() const {
  return impl_->acceptor.local_endpoint().port();
}
std::string fake_gladia::url() const {
  return std::string(impl_->tls ? "https" : "http") + "://" +
         (impl_->opts.host == "127.0.0.1" ? std::string("localhost") : impl_->opts.host) + ":" + std::to_string(port());
}

void fake_gladia::close_after_stop(std::uint16_t code) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->stop_close_code = code;
}

void fake_gladia::hang_after_stop(bool on, int processing_polls) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->hang_on_stop = on;
  impl_->processing_polls = processing_polls;
}

int fake_gladia::result_requests(const std::string& id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!id.empty()) return impl_->sessions.count(id) ? impl_->sessions.at(id).result_polls : 0;
  return impl_->sessions.size() == 1 ? impl_->sessions.begin()->second.result_polls : 0;
}

void fake_gladia::withhold_acks(bool on) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->withhold = on;
}

void fake_gladia::record_arrivals(bool on) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->recording = on;
}

std::vector<fake_gladia::arrival> fake_gladia::arrivals() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return {impl_->arrivals.begin(), impl_->arrivals.end()};
}

std::vector<std::string> fake_gladia::session_ids() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<std::string> ids;
  for (auto& [k, v] : impl_->sessions) ids.push_back(k);
  std::sort(ids.begin(), ids.end());
  return ids;
}

void fake_gladia::fail_inits(int times, unsigned status, const std::string& retry_after, const std::string& message) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->fail_times = times;
  impl_->fail_status = status;
  impl_->fail_message = message;
  impl_->retry_after = retry_after;
}

void fake_gladia::answer_inits_with_url(const std::string& url) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->init_url = url;
}

void fake_gladia::end_session_after(std::size_t bytes, int sessions, bool with_results) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->end_bytes = bytes;
  impl_->end_sessions = sessions;
  impl_->end_with_results = with_results;
}

void fake_gladia::cut_after(std::size_t bytes, std::uint16_t code, bool ack_lost) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->cut_armed = true;
  impl_->cut_bytes = bytes;
  impl_->cut_code = code;
  impl_->cut_ack_lost = ack_lost;
}

void fake_gladia::end_with_ack_after(std::size_t bytes) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->fin_armed = true;
  impl_->fin_bytes = bytes;
}

void fake_gladia::lose_session_after(std::size_t bytes, int sessions, bool takes_frame) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->lose_takes_frame = takes_frame;
  impl_->lose_sessions = sessions;
  impl_->lose_bytes = bytes;
}

void fake_gladia::lose_session_at_stop_after(std::size_t bytes) {
  drop_every_stop_after(bytes, std::chrono::milliseconds(0));
}

void fake_gladia::drop_every_stop_after(std::size_t bytes, std::chrono::milliseconds refuse_for) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->freeze_armed = true;
  impl_->freeze_bytes = bytes;
  impl_->freeze_refuse_for = refuse_for;
}

void fake_gladia::stall_after(std::size_t bytes) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->stall_armed = true;
  impl_->stall_bytes = bytes;
}

int fake_gladia::stalls() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stalled;
}

std::size_t fake_gladia::audio_bytes(const std::string& id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!id.empty()) return impl_->sessions.count(id) ? impl_->sessions.at(id).audio.size() : 0;
  return impl_->sessions.size() == 1 ? impl_->sessions.begin()->second.audio.size() : 0;
}

void fake_gladia::hold_threads(std::chrono::milliseconds d) {
  // Each I/O thread takes one of these handlers and sleeps in it (a thread that runs one cannot take a second).
  auto left = std::make_shared<std::atomic<int>>(static_cast<int>(impl_->threads.size()));
  auto all_held = std::make_shared<std::promise<void>>();
  auto held = all_held->get_future();
  for (std::size_t i = 0; i < impl_->threads.size(); ++i)
    asio::post(impl_->ioc, [d, left, all_held] {
      if (--*left == 0) all_held->set_value();
      std::this_thread::sleep_for(d);
    });
  held.wait();
}

void fake_gladia::delay_acks(std::chrono::milliseconds d) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->ack_delay = d;
}

void fake_gladia::send_unknown_types(bool on) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->unknown_types = on;
}

int fake_gladia::init_requests() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->inits;
}

int fake_gladia::ws_connections() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->connections;
}

std::vector<std::string> fake_gladia::init_bodies() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->bodies;
}

std::vector<std::string> fake_gladia::init_targets() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->targets;
}

std::string fake_gladia::audio(const std::string& id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!id.empty()) return impl_->sessions.count(id) ? impl_->sessions.at(id).audio.str() : std::string{};
  return impl_->sessions.size() == 1 ? impl_->sessions.begin()->second.audio.str() : std::string{};
}

std::size_t fake_gladia::sessions() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->sessions.size();
}

bool fake_gladia::stopped(const std::string& id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!id.empty()) return impl_->sessions.count(id) && impl_->sessions.at(id).stopped;
  return impl_->sessions.size() == 1 && impl_->sessions.begin()->second.stopped;
}

}  // namespace sw::test
