// The Gladia live v2 relay: one per participant stream (shared/spec/stt-upstream.md). Audio is buffered while the
// upstream connects, kept until Gladia acknowledges it, replayed after a reconnect to the same session URL (or, when
// Gladia ends the session mid-stream, at its 3-hour limit, or no reconnect to it gets through, to a new session), and
// `stop` waits for Gladia's last finals. Within STT_REPLAY_BUFFER_BYTES nothing is lost; beyond it (an outage
// longer than the buffer holds) the oldest whole chunks go, counted and logged, never silently.
#pragma once

#include <memory>
#include <string>

#include "actors/context.hpp"
#include "net/upstream.hpp"

namespace sw {

// The provider the service plugs into sessions when STT_PROVIDER=gladia.
stt_provider gladia_provider(context_ptr ctx, std::shared_ptr<net::outbound> out);

// The init request body sent to POST /v2/live (exposed for tests).
std::string gladia_init_body(const config::gladia_settings& g);

}  // namespace sw
