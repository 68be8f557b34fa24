#include "tests/fakes/fake_livekit.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "net/client.hpp"
#include "net/url.hpp"
#include "proto/livekit.hpp"
#include "proto/rapidjson.hpp"
#include "proto/time.hpp"
#include "proto/token.hpp"

namespace sw::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

using writer = rapidjson::Writer<rapidjson::StringBuffer>;

void kv(writer& w, const char* k, const std::string& v) {
  w.Key(k);
  w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}

// A request member under its proto name or lowerCamelCase (protojson accepts both).
const rapidjson::Value* field_of(const rapidjson::Value& o, const char* snake, const char* camel) {
  if (!o.IsObject()) return nullptr;
  auto it = o.FindMember(snake);
  if (it == o.MemberEnd()) it = o.FindMember(camel);
  return it == o.MemberEnd() ? nullptr : &it->value;
}

std::string str_of(const rapidjson::Value& o, const char* snake, const char* camel) {
  auto v = field_of(o, snake, camel);
  return v && v->IsString() ? v->GetString() : "";
}

unsigned twirp_status(const std::string& code) {
  static const std::map<std::string, unsigned> table = {
      {"invalid_argument", 400},   {"malformed", 400},     {"unauthenticated", 401},
      {"permission_denied", 403},  {"not_found", 404},     {"bad_route", 404},
      {"already_exists", 409},     {"aborted", 409},       {"failed_precondition", 412},
      {"resource_exhausted", 429}, {"unimplemented", 501}, {"unavailable", 503},
      {"internal", 500},           {"unknown", 500},       {"deadline_exceeded", 408}};
  auto it = table.find(code);
  return it == table.end() ? 500 : it->second;
}

std::string twirp_error(const std::string& code, const std::string& msg) {
  rapidjson::StringBuffer b;
  writer w(b);
  w.StartObject();
  kv(w, "code", code);
  kv(w, "msg", msg);
  w.EndObject();
  return b.GetString();
}

struct track_info {
  std::string sid, name;
  std::string pcm;  // what its egress streams
  bool muted = false;
};

struct participant_info {
  std::string sid, identity, name;
  bool egress = false;
  std::vector<track_info> tracks;
};

}  // namespace

// One started egress: its record, and the connection that streams its audio to the service.
struct egress_run {
  fake_livekit::egress_record rec;
  std::string pcm;
  std::string participant;  // identity, empty for the room mix
  std::atomic<bool> stop{false};
  std::atomic<bool> drop{false};     // break the connection: TCP closed without a close frame
  std::atomic<int> mute_change{-1};  // -1 none; 0/1: send {"muted":false|true}
  std::thread thread;
};

struct fake_livekit::impl {
  options opts;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::thread accept_thread;
  std::atomic<bool> running{true};
  mutable std::mutex mu;
  std::vector<std::thread> workers;
  std::map<std::string, std::vector<participant_info>> rooms;
  std::string room_audio;
  std::vector<std::shared_ptr<egress_run>> runs;
  std::map<std::string, int> call_count;
  struct failure {
    int times = 0;
    unsigned status = 0;
    std::string code, msg;
  };
  std::map<std::string, failure> failures;
  std::map<std::string, bool> stalled;
  std::map<std::string, bool> held;  // hold_answers
  bool keep_active = false;          // keep_active_when_closed
  std::vector<std::string> refused;
  int next_id = 1;

  std::string new_id(const char* prefix) { return std::string(prefix) + std::to_string(next_id++); }

  // ---- the egress side: dial the service and stream ------------------------------------------------------------

  void run_egress(std::shared_ptr<egress_run> run) {
    auto u = net::parse_url(run->rec.websocket_url);
    if (!u || u->secure()) {
      std::lock_guard<std::mutex> lock(mu);
      run->rec.status = "EGRESS_FAILED";
      run->rec.closed = true;
      return;
    }
    asio::io_context io;
    websocket::stream<beast::tcp_stream> ws(io);
    beast::error_code ec;
    tcp::resolver resolver(io);
    auto endpoints = resolver.resolve(u->host, std::to_string(u->port), ec);
    if (!ec) beast::get_lowest_layer(ws).connect(endpoints, ec);
    websocket::response_type res;
    if (!ec) {
      ws.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
        req.set(http::field::content_type, "audio/x-raw");
        req.set(http::field::user_agent, "Go-http-client/1.1");
      }));
      ws.handshake(res, u->host + ":" + std::to_string(u->port), u->target, ec);
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      run->rec.upgrade_status = static_cast<unsigned>(res.result_int());
      run->rec.content_type_sent = true;
      if (ec) {
        run->rec.status = "EGRESS_FAILED";
        run->rec.closed = true;
        return;
      }
      run->rec.status = "EGRESS_ACTIVE";
    }
    ws.binary(true);
    // One thread, asynchronous: a read loop (answers the service's pings, sees its close), paced writes, pings.
    bool writing = false, closing = false, done = false, muted_now = false;
    std::size_t at = 0, k = 0;
    static const std::size_t sizes[] = {3'840, 1'924, 7'680, 962, 5'762, 3'838, 11'520, 1'918};  // some cut samples
    const std::string silence(3'840, '\0');
    std::string frame, text;
    auto start = std::chrono::steady_clock::now();
    double sent_seconds = 0;
    asio::steady_timer tick(io), ping(io);
    std::function<void()> pump;
    std::function<void()> pinger;
    beast::flat_buffer rbuf;
    std::function<void()> reader = [&] {
      ws.async_read(rbuf, [&](beast::error_code e, std::size_t) {
        rbuf.consume(rbuf.size());
        if (e) {
          std::lock_guard<std::mutex> lock(mu);
          if (e == websocket::error::closed)
            run->rec.close_code =
                ws.reason().code == websocket::close_code::none ? 1005 : static_cast<std::uint16_t>(ws.reason().code);
          run->rec.closed = true;
          done = true;
          tick.cancel();
          ping.cancel();
          return;
        }
        reader();
      });
    };
    auto finish = [&] {
      if (closing || done) return;
      closing = true;
      tick.cancel();
      ping.cancel();
      // EOS: a close frame without a status, then the read loop sees the service's answer.
      ws.async_close(websocket::close_reason{}, [&](beast::error_code e) {
        std::lock_guard<std::mutex> lock(mu);
        if (!e)  // the service's answer to our close
          run->rec.close_code =
              ws.reason().code == websocket::close_code::none ? 1005 : static_cast<std::uint16_t>(ws.reason().code);
        if (run->rec.status != "EGRESS_FAILED") run->rec.status = "EGRESS_COMPLETE";
      });
    };
    pump = [&] {
      if (done || closing) return;
      if (run->stop) {
        if (!writing) finish();
        return;
      }
      if (writing) return;
      int m = run->mute_change.exchange(-1);
      if (m >= 0) {
        text = m ? R"({"muted":true})" : R"({"muted":false})";
        muted_now = m == 1;
        writing = true;
        ws.text(true);
        ws.async_write(asio::buffer(text), [&](beast::error_code e, std::size_t) {
          writing = false;
          ws.binary(true);
          if (e) return;
          pump();
        });
        return;
      }
      // Paced: audio goes out as fast as `pace` times real time allows.
      const double due = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() * opts.pace;
      if (sent_seconds > due) {
        tick.expires_after(std::chrono::milliseconds(5));
        tick.async_wait([&](beast::error_code e) {
          if (!e) pump();
        });
        return;
      }
      if (at < run->pcm.size()) {
        auto n = std::min(sizes[k++ % 8], run->pcm.size() - at);
        frame.assign(run->pcm, at, n);
        at += n;
      } else if (opts.silence_after_audio || run->rec.room_mix) {
        frame = silence;
      } else {
        finish();
        return;
      }
      sent_seconds += static_cast<double>(frame.size()) / (48'000.0 * 4);
      writing = true;
      ws.async_write(asio::buffer(frame), [&](beast::error_code e, std::size_t n) {
        writing = false;
        if (e) return;
        {
          std::lock_guard<std::mutex> lock(mu);
          run->rec.bytes_sent += n;
          if (muted_now) run->rec.bytes_sent_muted += n;
          ++run->rec.frames_sent;
        }
        pump();
      });
    };
    pinger = [&] {
      ping.expires_after(std::chrono::milliseconds(700));
      ping.async_wait([&](beast::error_code e) {
        if (e || done || closing) return;
        if (!writing) {
          writing = true;
          ws.async_ping({}, [&](beast::error_code pe) {
            writing = false;
            if (pe) return;
            {
              std::lock_guard<std::mutex> lock(mu);
              ++run->rec.pings_sent;
            }
            pump();
          });
        }
        pinger();
      });
    };
    reader();
    pump();
    pinger();
    // The stop flag is polled: the pump checks it between frames, and this timer wakes it while it waits.
    asio::steady_timer watch(io);
    std::function<void()> watcher = [&] {
      watch.expires_after(std::chrono::milliseconds(20));
      watch.async_wait([&](beast::error_code e) {
        if (e || done) return;
        if (run->drop) {
          beast::error_code ignored;
          beast::get_lowest_layer(ws).socket().close(ignored);  // the reader and any write fail: done
          return;
        }
        if ((run->stop || !running) && !writing) finish();
        if (!done) watcher();
      });
    };
    watcher();
    // Bounded: a service that never answers the close is dropped 5 s after it was sent.
    std::optional<std::chrono::steady_clock::time_point> deadline;
    while (!done) {
      io.run_for(std::chrono::milliseconds(50));
      if (io.stopped()) io.restart();
      if (closing && !deadline) deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      if (deadline && std::chrono::steady_clock::now() > *deadline) break;
    }
    beast::get_lowest_layer(ws).close();
    watch.cancel();
    tick.cancel();
    ping.cancel();
    io.restart();
    io.run_for(std::chrono::milliseconds(200));  // the aborted operations end before what they refer to
    std::lock_guard<std::mutex> lock(mu);
    run->rec.closed = true;
    if (run->rec.status == "EGRESS_ENDING" || (run->rec.status == "EGRESS_ACTIVE" && closing)) {
      run->rec.status = "EGRESS_COMPLETE";
    } else if (run->rec.status == "EGRESS_ACTIVE" && !keep_active) {
      // The service closed the stream (or it broke) while the egress ran: its writes fail, the egress fails
      // ("Unavailable"), without a webhook here (the tests send theirs). With keep_active: livekit/egress#143.
      run->rec.status = "EGRESS_FAILED";
    }
  }

  std::shared_ptr<egress_run> start_run(const std::string& room, const std::string& track, const std::string& url,
                                        bool mix, std::string pcm, const std::string& who) {
    auto run = std::make_shared<egress_run>();
    run->rec.egress_id = new_id("EG_");
    run->rec.room = room;
    run->rec.track_id = track;
    run->rec.websocket_url = url;
    run->rec.room_mix = mix;
    run->rec.status = "EGRESS_STARTING";
    run->pcm = std::move(pcm);
    run->participant = who;
    runs.push_back(run);
    run->thread = std::thread([this, run] { run_egress(run); });
    return run;
  }

  // ---- the Twirp side -------------------------------------------------------------------------------------------

  static void egress_json(writer& w, const fake_livekit::egress_record& r) {
    w.StartObject();
    kv(w, "egress_id", r.egress_id);
    kv(w, "room_id", "RM_" + r.room);
    kv(w, "room_name", r.room);
    kv(w, "source_type", "EGRESS_SOURCE_TYPE_SDK");
    kv(w, "status", r.status);
    kv(w, "started_at", std::to_string(now_ms() * 1'000'000));
    kv(w, "ended_at", "0");
    kv(w, "updated_at", std::to_string(now_ms() * 1'000'000));
    kv(w, "error", "");
    w.Key("error_code");
    w.Int(0);
    if (r.room_mix) {
      w.Key("stream_results");
      w.StartArray();
      w.StartObject();
      kv(w, "url", r.websocket_url);
      kv(w, "started_at", "0");
      kv(w, "status", "ACTIVE");
      w.EndObject();
      w.EndArray();
    } else {
      w.Key("track");
      w.StartObject();
      kv(w, "room_name", r.room);
      kv(w, "track_id", r.track_id);
      kv(w, "websocket_url", r.websocket_url);
      w.EndObject();
      w.Key("stream_results");
      w.StartArray();
      w.EndArray();
    }
    w.EndObject();
  }

  static std::string egress_body(const fake_livekit::egress_record& r) {
    rapidjson::StringBuffer b;
    writer w(b);
    egress_json(w, r);
    return b.GetString();
  }

  struct answer {
    unsigned status = 200;
    std::string body;
  };

  static answer error(const std::string& code, const std::string& msg) {
    return {twirp_status(code), twirp_error(code, msg)};
  }

  // Authorization as LiveKit checks it (§A2.1): Bearer, HS256 with the secret, iss = key; the grants.
  std::optional<answer> check_auth(const http::request<http::string_body>& req, bool egress_call,
                                   const std::string& room) {
    auto h = req[http::field::authorization];
    const std::string prefix = "Bearer ";
    if (h.size() < prefix.size() || std::string(h.substr(0, prefix.size())) != prefix) {
      refused.push_back("no bearer token");
      return error("unauthenticated", "invalid authorization header. Must start with Bearer ");
    }
    auto checked = verify_jwt(std::string(h.substr(prefix.size())), opts.api_secret);
    rapidjson::Document d;
    if (!checked.json || !parse_json(d, *checked.json) || !d.IsObject() || json_string(d, "iss") != opts.api_key) {
      refused.push_back("bad token: " + (checked.json ? std::string("wrong issuer") : checked.reason));
      return error("unauthenticated", "invalid token");
    }
    auto video = d.FindMember("video");
    bool record = false, admin = false;
    std::string granted_room;
    if (video != d.MemberEnd() && video->value.IsObject()) {
      auto& v = video->value;
      record = v.HasMember("roomRecord") && v["roomRecord"].IsBool() && v["roomRecord"].GetBool();
      admin = v.HasMember("roomAdmin") && v["roomAdmin"].IsBool() && v["roomAdmin"].GetBool();
      granted_room = json_string(v, "room");
    }
    if (egress_call ? !record : (!admin || granted_room != room)) {
      refused.push_back(egress_call ? "egress call without roomRecord" : "room call without roomAdmin for " + room);
      return error("unauthenticated", "permissions denied");
    }
    return std::nullopt;
  }

  answer twirp(const std::string& service, const std::string& method, const http::request<http::string_body>& req) {
    auto ct = std::string(req[http::field::content_type]);
    if (ct.rfind("application/json", 0) != 0) {
      refused.push_back("content type " + ct);
      return error("bad_route", "unexpected Content-Type: \"" + ct + "\"");
    }
    rapidjson::Document d;
    if (!parse_json(d, req.body()) || !d.IsObject()) return error("malformed", "the json request could not be decoded");
    if (service == "RoomService" && method == "ListParticipants") {
      auto room = str_of(d, "room", "room");
      if (auto refusal = check_auth(req, false, room)) return *refusal;
      rapidjson::StringBuffer b;
      writer w(b);
      w.StartObject();
      w.Key("participants");
      w.StartArray();
      for (auto& p : rooms[room]) {
        w.StartObject();
        kv(w, "sid", p.sid);
        kv(w, "identity", p.identity);
        kv(w, "state", "ACTIVE");
        kv(w, "name", p.name);
        kv(w, "joined_at", std::to_string(now_ms() / 1000));
        kv(w, "kind", p.egress ? "EGRESS" : "STANDARD");
        w.Key("is_publisher");
        w.Bool(!p.tracks.empty());
        w.Key("tracks");
        w.StartArray();
        for (auto& t : p.tracks) {
          w.StartObject();
          kv(w, "sid", t.sid);
          kv(w, "type", "AUDIO");
          kv(w, "name", t.name);
          w.Key("muted");
          w.Bool(t.muted);
          kv(w, "source", "MICROPHONE");
          kv(w, "mime_type", "audio/opus");
          w.EndObject();
        }
        // and a camera, which is never transcribed
        w.StartObject();
        kv(w, "sid", "TR_V" + p.sid);
        kv(w, "type", "VIDEO");
        kv(w, "source", "CAMERA");
        w.EndObject();
        w.EndArray();
        w.EndObject();
      }
      w.EndArray();
      w.EndObject();
      return {200, b.GetString()};
    }
    if (service != "Egress") return error("bad_route", "no handler for path /twirp/livekit." + service + "/" + method);
    if (auto refusal = check_auth(req, true, {})) return *refusal;
    if (method == "StartTrackEgress") {
      auto room = str_of(d, "room_name", "roomName"), track = str_of(d, "track_id", "trackId"),
           url = str_of(d, "websocket_url", "websocketUrl");
      if (room.empty() || track.empty() || url.empty())
        return error("invalid_argument", "room_name, track_id and websocket_url are required");
      for (auto& p : rooms[room])
        for (auto& t : p.tracks)
          if (t.sid == track) return {200, egress_body(start_run(room, track, url, false, t.pcm, p.identity)->rec)};
      return error("not_found", "track not found");
    }
    if (method == "StartEgress") {
      auto room = str_of(d, "room_name", "roomName");
      auto media = field_of(d, "media", "media");
      auto outputs = field_of(d, "outputs", "outputs");
      std::string url;
      if (outputs && outputs->IsArray() && !outputs->Empty()) {
        auto stream = field_of((*outputs)[0], "stream", "stream");
        auto urls = stream ? field_of(*stream, "urls", "urls") : nullptr;
        if (stream && str_of(*stream, "protocol", "protocol") == "WEBSOCKET" && urls && urls->IsArray() &&
            !urls->Empty() && (*urls)[0].IsString())
          url = (*urls)[0].GetString();
      }
      if (room.empty() || !media || url.empty())
        return error("invalid_argument", "room_name, a media source and a WEBSOCKET stream output are required");
      return {200, egress_body(start_run(room, {}, url, true, room_audio, {})->rec)};
    }
    if (method == "StopEgress") {
      auto id = str_of(d, "egress_id", "egressId");
      for (auto& r : runs) {
        if (r->rec.egress_id != id) continue;
        if (r->rec.status != "EGRESS_STARTING" && r->rec.status != "EGRESS_ACTIVE")
          return error("failed_precondition", "egress with status " + r->rec.status + " cannot be stopped");
        if (r->rec.closed) {  // kept ACTIVE without a stream (keep_active_when_closed): nothing left to end
          r->rec.status = "EGRESS_COMPLETE";
          return {200, egress_body(r->rec)};
        }
        r->rec.status = "EGRESS_ENDING";
        r->stop = true;
        return {200, egress_body(r->rec)};
      }
      return error("not_found", "egress not found");
    }
    if (method == "ListEgress") {
      auto room = str_of(d, "room_name", "roomName");
      auto active = field_of(d, "active", "active");
      const bool only_active = active && active->IsBool() && active->GetBool();
      rapidjson::StringBuffer b;
      writer w(b);
      w.StartObject();
      w.Key("items");
      w.StartArray();
      for (auto& r : runs) {
        if (!room.empty() && r->rec.room != room) continue;
        if (only_active && r->rec.status != "EGRESS_STARTING" && r->rec.status != "EGRESS_ACTIVE") continue;
        egress_json(w, r->rec);
      }
      w.EndArray();
      kv(w, "next_page_token", "");
      w.EndObject();
      return {200, b.GetString()};
    }
    return error("bad_route", "no handler for path /twirp/livekit.Egress/" + method);
  }

  void handle(tcp::socket sock) {
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    beast::error_code ec;
    http::read(sock, buf, req, ec);
    if (ec) return;
    std::string target(req.target());
    const std::string prefix = "/twirp/livekit.";
    answer a;
    if (req.method() != http::verb::post || target.rfind(prefix, 0) != 0 ||
        target.find('/', prefix.size()) == std::string::npos) {
      a = error("bad_route", "no handler for path " + target);
    } else {
      auto slash = target.find('/', prefix.size());
      auto service = target.substr(prefix.size(), slash - prefix.size()), method = target.substr(slash + 1);
      bool stall_it = false;
      {
        std::lock_guard<std::mutex> lock(mu);
        ++call_count[method];
        stall_it = stalled[method];
        auto f = failures.find(method);
        if (!stall_it && f != failures.end() && f->second.times > 0) {
          --f->second.times;
          a = {f->second.status, twirp_error(f->second.code, f->second.msg)};
        } else if (!stall_it) {
          a = twirp(service, method, req);
        }
      }
      if (stall_it) {
        while (running) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a server that never answers
        return;
      }
      auto held_now = [&] {
        std::lock_guard<std::mutex> lock(mu);
        return held[method];
      };
      while (running && held_now()) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // done, not answered
    }
    http::response<http::string_body> res(static_cast<http::status>(a.status), req.version());
    res.set(http::field::content_type, "application/json");
    res.body() = std::move(a.body);
    res.keep_alive(false);
    res.prepare_payload();
    http::write(sock, res, ec);
    sock.shutdown(tcp::socket::shutdown_send, ec);
  }

  void accept_loop() {
    while (running) {
      beast::error_code ec;
      tcp::socket s(ioc);
      acceptor.accept(s, ec);
      if (ec || !running) continue;
      std::lock_guard<std::mutex> lock(mu);
      workers.emplace_back([this, s = std::move(s)]() mutable { handle(std::move(s)); });
    }
  }
};

fake_livekit::fake_livekit(options o) : impl_(std::make_shared<impl>()) {
  impl_->opts = std::move(o);
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), impl_->opts.port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen();
  impl_->accept_thread = std::thread([i = impl_.get()] { i->accept_loop(); });
}

fake_livekit::~fake_livekit() {
  impl_->running = false;
  beast::error_code ec;
  {
    // Wake the blocking accept with a connection of our own.
    tcp::socket s(impl_->ioc);
    s.connect(impl_->acceptor.local_endpoint(), ec);
  }
  impl_->accept_thread.join();
  impl_->acceptor.close(ec);
  std::vector<std::thread> workers;
  std::vector<std::shared_ptr<egress_run>> runs;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    workers.swap(impl_->workers);
    runs = impl_->runs;
  }
  for (auto& r : runs) r->stop = true;
  for (auto& r : runs)
    if (r->thread.joinable()) r->thread.join();
  for (auto& t : workers)
    if (t.joinable()) t.join();
}

std::string fake_livekit::url() const {
  return "http://127.0.0.1:" + std::to_string(port());
}
std::uint16_t fake_livekit::port() const {
  return impl_->acceptor.local_endpoint().port();
}
const fake_livekit::options& fake_livekit::opts() const {
  return impl_->opts;
}
void fake_livekit::set_webhook_url(const std::string& url) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->opts.webhook_url = url;
}

void fake_livekit::publish(const std::string& room, const std::string& identity, const std::string& name,
                           const std::string& track_sid, std::string pcm, bool webhook) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto& people = impl_->rooms[room];
    auto p = std::find_if(people.begin(), people.end(), [&](auto& x) { return x.identity == identity; });
    if (p == people.end()) {
      people.push_back(participant_info{impl_->new_id("PA_"), identity, name, false, {}});
      p = std::prev(people.end());
    }
    p->tracks.push_back(track_info{track_sid, "microphone", std::move(pcm), false});
  }
  if (webhook) send_webhook(webhook_body("track_published", room, identity, track_sid));
}

void fake_livekit::add_egress_participant(const std::string& room) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->rooms[room].push_back(participant_info{
      impl_->new_id("PA_"), "EG_recorder", "", true, {track_info{"TR_EGRESS_AUDIO", "mix", {}, false}}});
}

void fake_livekit::leave(const std::string& room, const std::string& identity, bool webhook) {
  std::vector<std::string> ended;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto& people = impl_->rooms[room];
    people.erase(std::remove_if(people.begin(), people.end(), [&](auto& p) { return p.identity == identity; }),
                 people.end());
    for (auto& r : impl_->runs)
      if (r->rec.room == room && r->participant == identity && !r->stop) {
        r->stop = true;
        r->rec.status = "EGRESS_ENDING";
        ended.push_back(r->rec.egress_id);
      }
  }
  if (!webhook) return;
  send_webhook(webhook_body("participant_left", room, identity));
  for (auto& id : ended) send_webhook(webhook_body("egress_ended", room, {}, {}, id));
}

void fake_livekit::set_room_audio(std::string pcm) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->room_audio = std::move(pcm);
}

void fake_livekit::mute(const std::string& track_sid, bool muted) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (auto& r : impl_->runs)
    if (r->rec.track_id == track_sid && !r->stop) r->mute_change = muted ? 1 : 0;
}

void fake_livekit::fail(const std::string& method, int times, unsigned status, const std::string& code,
                        const std::string& msg) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->failures[method] = impl::failure{times, status, code, msg};
}

void fake_livekit::stall(const std::string& method, bool on) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->stalled[method] = on;
}

void fake_livekit::hold_answers(const std::string& method, bool on) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->held[method] = on;
}

void fake_livekit::keep_active_when_closed(bool on) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->keep_active = on;
}

void fake_livekit::break_egress_stream(const std::string& egress_id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (auto& r : impl_->runs)
    if (r->rec.egress_id == egress_id) r->drop = true;
}

void fake_livekit::end_egress_silently(const std::string& egress_id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (auto& r : impl_->runs)
    if (r->rec.egress_id == egress_id) {
      r->stop = true;
      r->rec.status = "EGRESS_ENDING";
    }
}

std::string fake_livekit::webhook_body(const std::string& event, const std::string& room, const std::string& identity,
                                       const std::string& track_sid, const std::string& egress_id) {
  // protojson defaults: lowerCamelCase, zero values left out, int64 as strings.
  rapidjson::StringBuffer b;
  writer w(b);
  w.StartObject();
  kv(w, "event", event);
  w.Key("room");
  w.StartObject();
  kv(w, "sid", "RM_" + room);
  kv(w, "name", room);
  w.EndObject();
  if (!identity.empty()) {
    w.Key("participant");
    w.StartObject();
    kv(w, "sid", "PA_" + identity);
    kv(w, "identity", identity);
    kv(w, "state", "ACTIVE");
    w.EndObject();
  }
  if (!track_sid.empty()) {
    w.Key("track");
    w.StartObject();
    kv(w, "sid", track_sid);
    kv(w, "type", "AUDIO");  // AUDIO is the enum's zero: protojson would leave it out; both are read
    kv(w, "source", "MICROPHONE");
    w.EndObject();
  }
  if (!egress_id.empty()) {
    w.Key("egressInfo");
    w.StartObject();
    kv(w, "egressId", egress_id);
    kv(w, "roomName", room);
    kv(w, "status", "EGRESS_COMPLETE");
    w.EndObject();
  }
  static std::atomic<int> n{0};
  kv(w, "id", "EV_" + std::to_string(++n));
  kv(w, "createdAt", std::to_string(now_ms() / 1000));
  w.EndObject();
  return b.GetString();
}

unsigned fake_livekit::send_webhook(const std::string& body, bool wrong_secret, bool tamper) {
  std::string url;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    url = impl_->opts.webhook_url;
  }
  if (url.empty()) return 0;
  auto token = livekit_webhook_token(impl_->opts.api_key, wrong_secret ? "not-the-secret" : impl_->opts.api_secret,
                                     body, now_ms() / 1000);
  std::string sent = body;
  if (tamper) sent.insert(sent.size() - 1, R"(,"numDropped":1)");
  try {
    auto r = net::http_fetch(
        url, "POST", sent,
        {{"Authorization", token}, {"Content-Type", "application/webhook+json"}, {"User-Agent", "LiveKit"}});
    return r.status;
  } catch (const std::exception&) {
    return 0;
  }
}

std::vector<fake_livekit::egress_record> fake_livekit::egresses() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<egress_record> out;
  for (auto& r : impl_->runs) out.push_back(r->rec);
  return out;
}

std::size_t fake_livekit::active_egresses(const std::string& room) const {
  std::size_t n = 0;
  for (auto& r : egresses())
    if ((room.empty() || r.room == room) && (r.status == "EGRESS_STARTING" || r.status == "EGRESS_ACTIVE")) ++n;
  return n;
}

int fake_livekit::calls(const std::string& method) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->call_count.find(method);
  return it == impl_->call_count.end() ? 0 : it->second;
}

std::vector<std::string> fake_livekit::refusals() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->refused;
}

}  // namespace sw::test
