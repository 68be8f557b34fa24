// LiveKit's server APIs over Twirp (../shared/reference/external-apis-and-anchors.md §A2.2): one POST of JSON per
// call to {LIVEKIT_URL}/twirp/livekit.<Service>/<Method>, authorized by a fresh access token per call (10 minutes,
// as LiveKit's own server SDK does), over the outbound HTTP(S) client (TLS verified, bounded by the timeout). The
// answer comes on an I/O thread: hand it to an actor.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "net/upstream.hpp"
#include "proto/livekit.hpp"

namespace sw::net {

struct livekit_reply {
  bool ok = false;      // HTTP 200: `body` is the method's answer
  unsigned status = 0;  // 0: no answer (refused, TLS, timeout)
  std::string body;
  std::string error;  // when !ok: what went wrong, in words fit for a log line and a client
};

class livekit_client {
public:
  struct settings {
    std::string url;  // http(s)://host[:port][/prefix]
    std::string api_key, api_secret;
    std::string ca_file;  // extra CA for https (empty: the system store)
    std::chrono::milliseconds timeout{10'000};
  };
  livekit_client(settings s, std::shared_ptr<outbound> out);

  // POSTs `json` to livekit.<service>/<method> with a token carrying `grant`.
  void call(const std::string& service, const std::string& method, const std::string& json, const livekit_grant& grant,
            std::function<void(livekit_reply)> done) const;

  const settings& config() const { return s_; }

private:
  settings s_;
  std::shared_ptr<outbound> out_;
};

}  // namespace sw::net
