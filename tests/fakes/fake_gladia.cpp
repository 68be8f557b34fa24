#include "tests/fakes/fake_gladia.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <optional>
#include <thread>

#include <openssl/evp.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "net/url.hpp"
#include "proto/rapidjson.hpp"

namespace sw::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

std::string now_iso() {
  return "2026-11-26T00:00:00.000Z";
}

// Received audio, kept as the chunks it came in: one string grown by appending would be reallocated and copied
// at the same stream offsets in every session, all at once under the fake's lock (a 10 ms stall of every
// session at 6.4 s into a 100-stream benchmark).
class chunked_audio {
public:
  std::size_t size() const { return bytes_; }
  void append(std::string chunk) {
    bytes_ += chunk.size();
    parts_.push_back(std::move(chunk));
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
  int utterance = 0;
  bool stopped = false;
};

std::string utterance_id(int n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "00_%08d", n);
  return buf;
}

}  // namespace

struct fake_gladia::impl {
  options opts;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::thread accept_thread;
  std::atomic<bool> running{true};
  mutable std::mutex mu;
  std::vector<std::thread> workers;
  std::map<std::string, session> sessions;
  std::vector<std::string> bodies, targets;
  int inits = 0, connections = 0, fail_times = 0;
  unsigned fail_status = 0;
  std::string retry_after;
  std::size_t cut_bytes = 0;
  bool cut_armed = false;
  std::uint16_t cut_code = 0;
  bool cut_ack_lost = false;
  std::size_t stall_bytes = 0;
  bool stall_armed = false;
  int stalled = 0;
  std::chrono::milliseconds ack_delay{0};
  bool unknown_types = false;
  int next_id = 1;
  bool withhold = false;
  bool recording = false;
  std::deque<fake_gladia::arrival> arrivals;  // a deque: appending never moves what is recorded
  std::optional<asio::ssl::context> tls;

  std::string ws_url_for(const std::string& id) const {
    return std::string(tls ? "wss" : "ws") + "://localhost:" + std::to_string(acceptor.local_endpoint().port()) +
           "/v2/live?token=tok-" + id;
  }

  template <class Stream, class Body>
  void reply(Stream& s, unsigned status, std::string body, const http::request<Body>& req,
             const std::string& extra_header = {}, const std::string& extra_value = {}) {
    http::response<http::string_body> res(static_cast<http::status>(status), req.version());
    res.set(http::field::content_type, "application/json");
    if (!extra_header.empty()) res.set(extra_header, extra_value);
    res.body() = std::move(body);
    res.keep_alive(false);
    res.prepare_payload();
    beast::error_code ec;
    http::write(s, res, ec);
  }

  static std::string error_body(unsigned status, const std::string& message, const std::string& validation = {}) {
    std::string b = R"({"timestamp":")" + now_iso() + R"(","path":"/v2/live","request_id":"G-fake0001","statusCode":)" +
                    std::to_string(status) + R"(,"message":")" + message + "\"";
    if (!validation.empty()) b += R"(,"validation_errors":[")" + validation + "\"]";
    return b + "}";
  }

  // Validates a StreamingRequest body; empty string = valid.
  static std::string validate(const std::string& body) {
    rapidjson::Document d;
    sw::parse_json(d, body);
    if (d.HasParseError() || !d.IsObject()) return "body must be a JSON object";
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

  void handle(tcp::socket sock) {
    if (!tls) {
      handle_stream(sock);
      return;
    }
    asio::ssl::stream<tcp::socket> s(std::move(sock), *tls);
    beast::error_code ec;
    s.handshake(asio::ssl::stream_base::server, ec);
    if (ec) return;  // e.g. the client rejected our certificate
    handle_stream(s);
  }

  template <class Stream>
  void handle_stream(Stream& s) {
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    beast::error_code ec;
    http::read(s, buf, req, ec);
    if (ec) return;
    std::string path, token;
    header_list query;
    net::split_target(std::string(req.target()), path, query);
    for (auto& [k, v] : query)
      if (k == "token") token = v;
    if (websocket::is_upgrade(req)) {
      std::string id = token.rfind("tok-", 0) == 0 ? token.substr(4) : "";
      {
        std::lock_guard<std::mutex> lock(mu);
        if (path != "/v2/live" || !sessions.count(id)) {
          reply(s, 401, error_body(401, "invalid or expired token"), req);
          return;
        }
        ++connections;
      }
      stream(s, std::move(req), id);
      return;
    }
    if (req.method() != http::verb::post || path != "/v2/live") {
      reply(s, 404, error_body(404, "not found"), req);
      return;
    }
    std::lock_guard<std::mutex> lock(mu);
    ++inits;
    bodies.push_back(req.body());
    targets.push_back(std::string(req.target()));
    auto key = req.find("x-gladia-key");
    if (key == req.end() || key->value() != opts.api_key) {
      reply(s, 401, error_body(401, "gladia key not found"), req);
      return;
    }
    if (fail_times > 0) {
      --fail_times;
      if (retry_after.empty()) {
        reply(s, fail_status, error_body(fail_status, "scripted failure"), req);
      } else {
        reply(s, fail_status, error_body(fail_status, "scripted failure"), req, "Retry-After", retry_after);
      }
      return;
    }
    for (auto& [k, v] : query)
      if (k == "region" && v != "us-west" && v != "eu-west") {
        reply(s, 400, error_body(400, "Invalid region", "region must be us-west or eu-west"), req);
        return;
      }
    if (auto problem = validate(req.body()); !problem.empty()) {
      reply(s, 400, error_body(400, "Invalid request", problem), req);
      return;
    }
    auto n = next_id++;
    auto id = "fake-" + std::to_string(n);
    sessions[id].id = id;
    if (opts.stagger_finals && opts.final_every_chunks > 0)
      sessions[id].chunks_since_final = static_cast<std::size_t>(n) % opts.final_every_chunks;
    reply(s, 201, R"({"id":")" + id + R"(","created_at":")" + now_iso() + R"(","url":")" + ws_url_for(id) + "\"}", req);
  }

  std::string msg(const std::string& id, const std::string& type, const std::string& rest) {
    return R"({"type":")" + type + R"(","session_id":")" + id + R"(","created_at":")" + now_iso() + "\"," + rest + "}";
  }

  std::string transcript(const std::string& id, int utt, bool final, double start, double end) {
    return msg(id, "transcript",
               R"("data":{"id":")" + utterance_id(utt) + R"(","is_final":)" + (final ? "true" : "false") +
                   R"(,"utterance":{"start":)" + std::to_string(start) + R"(,"end":)" + std::to_string(end) +
                   R"(,"confidence":0.9,"channel":0,"words":[],"text":"utterance )" + std::to_string(utt) +
                   R"(","language":"en"}})");
  }

  template <class Stream>
  void stream(Stream& s, http::request<http::string_body> req, const std::string& id) {
    websocket::stream<Stream&> ws(s);
    ws.read_message_max(1024 * 1024);  // Gladia's 1 MiB frame limit
    beast::error_code ec;
    ws.accept(req, ec);
    if (ec) return;
    beast::flat_buffer buf;
    bool sent_unknown = false;
    for (;;) {
      ws.read(buf, ec);
      if (ec) return;
      const auto arrived = std::chrono::steady_clock::now();  // before the lock every session shares
      std::string frame = beast::buffers_to_string(buf.data());
      buf.consume(buf.size());
      std::string pcm;
      bool stop = false;
      if (ws.got_binary()) {
        pcm = std::move(frame);
      } else {
        rapidjson::Document d;
        sw::parse_json(d, frame);
        std::string type = !d.HasParseError() && d.IsObject() && d.HasMember("type") && d["type"].IsString()
                               ? d["type"].GetString()
                               : "";
        if (type == "audio_chunk" && d.HasMember("data") && d["data"].IsObject() && d["data"].HasMember("chunk") &&
            d["data"]["chunk"].IsString()) {
          std::string b64 = d["data"]["chunk"].GetString();
          pcm.resize(b64.size());
          auto n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(&pcm[0]),
                                   reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
          pcm.resize(n > 0 ? static_cast<std::size_t>(n) - std::count(b64.end() - 2, b64.end(), '=') : 0);
        } else if (type == "stop_recording") {
          stop = true;
        } else {
          continue;  // ignored, like the real service does with what it does not know
        }
      }
      std::vector<std::string> out;
      std::uint16_t cut = 0;
      bool drop = false, stall = false;
      {
        std::lock_guard<std::mutex> lock(mu);
        auto& ses = sessions[id];
        if (!pcm.empty()) {
          if (stall_armed && ses.audio.size() + pcm.size() > stall_bytes) {
            stall_armed = false;
            stall = true;
            ++stalled;
          } else if (cut_armed && ses.audio.size() + pcm.size() > cut_bytes) {
            cut_armed = false;  // this frame is never acknowledged: the client must replay it
            cut = cut_code;
            drop = cut_code == 0;
            if (cut_ack_lost) ses.audio.append(std::move(pcm));  // taken, but the ack never leaves
          } else {
            auto start = ses.audio.size();
            ses.audio.append(std::move(pcm));
            if (recording) arrivals.push_back({id, ses.audio.size(), arrived});
            if (!withhold)
              out.push_back(msg(id, "audio_chunk",
                                R"("acknowledged":true,"error":null,"data":{"byte_range":[)" + std::to_string(start) +
                                    "," + std::to_string(ses.audio.size()) + R"(],"time_range":[)" +
                                    std::to_string(start / 32000.0) + "," + std::to_string(ses.audio.size() / 32000.0) +
                                    "]}"));
            ses.chunks_since_final += 1;
            double t = ses.audio.size() / 32000.0;
            out.push_back(transcript(id, ses.utterance, false, 0, t));
            if (ses.chunks_since_final >= opts.final_every_chunks) {
              out.push_back(transcript(id, ses.utterance++, true, 0, t));
              ses.chunks_since_final = 0;
            }
          }
        }
        if (stop) {
          out.push_back(msg(id, "stop_recording",
                            R"("acknowledged":true,"error":null,"data":{"recording_duration":)" +
                                std::to_string(ses.audio.size() / 32000.0) + R"(,"recording_left_to_process":0})"));
          if (ses.chunks_since_final > 0) {  // the last utterance is final only after stop_recording
            out.push_back(transcript(id, ses.utterance++, true, 0, ses.audio.size() / 32000.0));
            ses.chunks_since_final = 0;
          }
          out.push_back(
              msg(id, "post_transcript", R"("data":{"full_transcript":"","languages":["en"],"utterances":[]})"));
          out.push_back(
              msg(id, "post_final_transcript",
                  R"("data":{"metadata":{"audio_duration":)" + std::to_string(ses.audio.size() / 32000.0) + "}}"));
          ses.stopped = true;
        }
        if (unknown_types && !sent_unknown) {
          out.push_back(msg(id, "mystery_event", R"("data":{})"));
          sent_unknown = true;
        }
      }
      if (stall) {  // stops reading and writing, socket open, until the fake ends
        while (running) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        return;
      }
      if (drop) {  // abrupt: no close frame; the acks already written still arrive before the FIN
        auto& sock = beast::get_lowest_layer(ws);
        sock.shutdown(tcp::socket::shutdown_send, ec);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        sock.close(ec);
        return;
      }
      if (cut) {
        ws.close(websocket::close_reason(static_cast<websocket::close_code>(cut)), ec);
        drain(ws);
        return;
      }
      if (ack_delay.count()) std::this_thread::sleep_for(ack_delay);
      ws.text(true);
      for (auto& m : out) {
        ws.write(asio::buffer(m), ec);
        if (ec) return;
      }
      if (stop) {
        ws.close(websocket::close_code::normal, ec);
        drain(ws);
        return;
      }
    }
  }

  template <class WS>
  static void drain(WS& ws) {
    beast::flat_buffer buf;
    beast::error_code ec;
    for (int i = 0; i < 1000 && !ec; ++i) ws.read(buf, ec);  // until the client's close completes
  }
};

fake_gladia::fake_gladia(options o) : impl_(std::make_shared<impl>()) {
  auto& d = *impl_;
  d.opts = std::move(o);
  if (!d.opts.tls_cert_file.empty()) {
    d.tls.emplace(asio::ssl::context::tls_server);
    d.tls->use_certificate_chain_file(d.opts.tls_cert_file);
    d.tls->use_private_key_file(d.opts.tls_key_file, asio::ssl::context::pem);
  }
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
  d.acceptor.open(ep.protocol());
  d.acceptor.set_option(asio::socket_base::reuse_address(true));
  d.acceptor.bind(ep);
  d.acceptor.listen();
  auto self = impl_;
  d.accept_thread = std::thread([self] {
    for (;;) {
      beast::error_code ec;
      tcp::socket s(self->ioc);
      self->acceptor.accept(s, ec);
      if (!self->running) return;
      if (ec) continue;
      std::lock_guard<std::mutex> lock(self->mu);
      self->workers.emplace_back([self, s = std::move(s)]() mutable { self->handle(std::move(s)); });
    }
  });
}

fake_gladia::~fake_gladia() {
  impl_->running = false;
  beast::error_code ec;
  // wake the blocking accept with a connection of our own
  tcp::socket poke(impl_->ioc);
  poke.connect(impl_->acceptor.local_endpoint(), ec);
  impl_->accept_thread.join();
  impl_->acceptor.close(ec);
  std::vector<std::thread> ws;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    ws.swap(impl_->workers);
  }
  for (auto& t : ws) t.join();
}

std::uint16_t fake_gladia::port() const {
  return impl_->acceptor.local_endpoint().port();
}
std::string fake_gladia::url() const {
  return std::string(impl_->tls ? "https" : "http") + "://localhost:" + std::to_string(port());
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
  return ids;
}

void fake_gladia::fail_inits(int times, unsigned status, const std::string& retry_after) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->fail_times = times;
  impl_->fail_status = status;
  impl_->retry_after = retry_after;
}

void fake_gladia::cut_after(std::size_t bytes, std::uint16_t code, bool ack_lost) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->cut_armed = true;
  impl_->cut_bytes = bytes;
  impl_->cut_code = code;
  impl_->cut_ack_lost = ack_lost;
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
