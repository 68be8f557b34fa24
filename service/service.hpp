// One running sessions-ws instance: the actor system, the gateway actor and the listening server.
// Used by the executable, the integration tests and the benchmarks alike.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "actors/context.hpp"

namespace caf {
class actor_system;
}

namespace sw {

class service {
public:
  // `stt` overrides the provider chosen from the configuration (tests plug in their relay here).
  explicit service(config cfg, std::optional<stt_provider> stt = std::nullopt);
  ~service();
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  // Starts actors and the listener. Throws std::runtime_error (port in use, TLS files, ...).
  void start();
  std::uint16_t port() const;
  bool tls() const;
  // Loads the TLS certificate and key again for new connections (net::server::reload_tls): false without TLS,
  // std::runtime_error when they do not load (the pair in use serves on).
  bool reload_tls();
  // Stops admitting, drains every stream (close 1001) within cfg.shutdown_timeout, stops the I/O.
  // Returns false when the bound was hit before every stream ended.
  bool shutdown();

  // Called (once, on an actor thread) when an actor the service cannot run without has failed; the owner
  // should then shut the service down. May be set at any time.
  void on_failure(std::function<void(const std::string&)> f);

  const service_context& context() const;
  caf::actor_system& system();
  gateway_actor gateway() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace sw
