// A fake Gladia live v2 server (shared/reference/external-apis-and-anchors.md §A1, checklist A1.7), strict
// about the API and able to inject faults. HTTP(S) + WebSocket on 127.0.0.1 (named localhost in its URLs),
// one thread per connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace sw::test {

class fake_gladia {
public:
  struct options {
    std::string api_key = "fake-gladia-key";
    std::size_t final_every_chunks = 10;  // a final per 10 chunks of 100 ms; partial per chunk
    // Session n's finals come n chunks earlier (mod final_every_chunks), as independent speakers' utterances
    // end at different moments; otherwise every session started together gets its finals in the same instant.
    bool stagger_finals = false;
    std::string tls_cert_file;  // both set: HTTPS + WSS (the URLs then name localhost)
    std::string tls_key_file;
  };
  explicit fake_gladia(options o);
  fake_gladia() : fake_gladia(options{}) {}
  ~fake_gladia();

  std::string url() const;  // base URL for GLADIA_API_URL
  std::uint16_t port() const;

  // --- faults (apply to what comes next) ---
  void fail_inits(int times, unsigned status, const std::string& retry_after = {});
  // The next connection that brings its session past `bytes` committed audio bytes drops (no close frame)
  // or closes with `code` (code 0 = abrupt drop). That frame is never acknowledged; with `ack_lost` it was
  // received and counted first (Gladia has it, the client never hears so), otherwise it is lost with the
  // connection.
  void cut_after(std::size_t bytes, std::uint16_t code = 0, bool ack_lost = false);
  // The next connection that brings its session past `bytes` stops reading (a stalled upstream): it keeps the
  // socket open and neither reads nor writes again. That frame is not taken.
  void stall_after(std::size_t bytes);
  int stalls() const;  // connections stalled so far
  void delay_acks(std::chrono::milliseconds d);
  void send_unknown_types(bool on);
  void withhold_acks(bool on);  // audio is taken but never acknowledged

  // --- observations ---
  int init_requests() const;
  int ws_connections() const;
  std::vector<std::string> init_bodies() const;
  std::vector<std::string> init_targets() const;
  // The audio of the only (or the named) session as the fake took it: every frame it acknowledged (and any it took
  // while losing the ack on purpose, cut_after(..., ack_lost)), in the order it took them. Nothing is
  // de-duplicated: audio the relay replays twice appears twice, which is what the tests look for.
  std::string audio(const std::string& session_id = {}) const;
  std::size_t sessions() const;
  std::size_t audio_bytes(const std::string& session_id = {}) const;  // committed audio of the only/named session
  bool stopped(const std::string& session_id = {}) const;             // got stop_recording and closed 1000
  // When each chunk of audio arrived (benchmarks): session id, stream offset after the chunk, time.
  struct arrival {
    std::string session;
    std::size_t end = 0;
    std::chrono::steady_clock::time_point at;
  };
  void record_arrivals(bool on);
  std::vector<arrival> arrivals() const;
  std::vector<std::string> session_ids() const;

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

}  // namespace sw::test
