#include "service/service.hpp"

#include "net/url.hpp"

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include <caf/actor_registry.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/thread_hook.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/gateway.hpp"
#include "actors/log_flush.hpp"
#include "actors/memory_trim.hpp"
#include "actors/persistence.hpp"
#include "actors/stt_gladia.hpp"
#include "actors/stt_local.hpp"
#include "net/runtime.hpp"
#include "net/server.hpp"
#include "proto/time.hpp"
#include "service/fatal_signal.hpp"
#include "service/io_scheduler.hpp"

namespace sw {

namespace {

// Where a failure is reported: set by the owner at any time, called from the supervisor.
struct failure_hook {
  std::mutex mu;
  std::function<void(const std::string&)> f;
  // The gateway actor ended: nobody counts or stops the streams any more, so a shutdown does not wait for them.
  std::atomic<bool> gateway_down{false};
  void call(const std::string& why) {
    std::function<void(const std::string&)> g;
    {
      std::lock_guard<std::mutex> lock(mu);
      g = std::move(f);  // once
    }
    if (g) g(why);
  }
};

struct supervisor_state {
  static inline const char* name = "supervisor";
  context_ptr ctx;
  std::shared_ptr<failure_hook> hook;
  caf::actor_addr gateway;
};

supervisor_actor::behavior_type supervisor(supervisor_actor::stateful_pointer<supervisor_state> self, context_ptr ctx,
                                           std::shared_ptr<failure_hook> hook, gateway_actor gw,
                                           persistence_actor persistence) {
  self->state.ctx = ctx;
  self->state.hook = hook;
  self->state.gateway = gw.address();
  self->monitor(gw);
  if (persistence) self->monitor(persistence);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    auto why = std::string(dm.source == st.gateway ? "gateway" : "persistence") + " actor ended (" +
               to_string(dm.reason) + ")";
    SW_LOG(st.ctx, error, why << ": the service stops; journaled finals are written at the next start");
    if (dm.source == st.gateway) st.hook->gateway_down = true;
    st.ctx->metrics->fail(why);
    st.hook->call(why);
  });
  return {[self](shutdown_atom) { self->quit(); }};
}

}  // namespace

// Every thread CAF starts (workers, detached actors) gets an alternate signal stack for the fatal-signal handler.
class signal_stack_hook final : public caf::thread_hook {
public:
  void init(caf::actor_system&) override {}
  void thread_started() override { prepare_thread_for_fatal_signals(); }
  void thread_terminates() override {}
};

struct service::impl {
  std::shared_ptr<service_context> ctx;
  std::shared_ptr<net::io_runtime> io;      // the I/O threads: client sockets and upstream connections
  std::shared_ptr<net::outbound> outbound;  // upstream connections (Gladia)
  std::unique_ptr<caf::actor_system_config> caf_cfg = std::make_unique<caf::actor_system_config>();
  std::unique_ptr<caf::actor_system> sys;  // refers to *caf_cfg
  gateway_actor gw;                        // the gateway actor
  supervisor_actor supervisor;
  memory_trim_actor trim;  // none when MEMORY_TRIM_INTERVAL_MS is 0
  log_flush_actor log_flush;
  std::shared_ptr<failure_hook> failure = std::make_shared<failure_hook>();
  std::unique_ptr<net::server> srv;
  bool started = false;
  bool stopped = false;
};

service::service(config cfg, std::optional<stt_provider> stt) : impl_(new impl) {
  auto ctx = std::make_shared<service_context>();
  ctx->cfg = std::move(cfg);
  ctx->metrics = std::make_shared<metrics>();
  ctx->net = std::make_shared<net::net_stats>();
  ctx->net->log = [m = ctx->metrics](const std::string& kind, const std::string& line) {
    m->log_throttled(kind, line);
  };
  ctx->log = std::make_shared<logger>(ctx->cfg.log_level);
  ctx->metrics->set_log([log = ctx->log](bool error, const std::string& line) {
    if (log->enabled(error ? log_level::error : log_level::warn))
      log->write(error ? log_level::error : log_level::warn, line);
  });
  impl_->ctx = ctx;
  impl_->io = std::make_shared<net::io_runtime>(ctx->cfg.io_threads, prepare_thread_for_fatal_signals);
  if (stt) {
    ctx->stt = std::move(*stt);
  } else if (ctx->cfg.stt_provider == "gladia") {
    impl_->outbound = std::make_shared<net::outbound>(impl_->io);
    // The TLS context every Gladia connection shares, made once now (loading the CA store takes milliseconds).
    if (net::parse_url(ctx->cfg.gladia.api_url) && net::parse_url(ctx->cfg.gladia.api_url)->secure()) {
      if (auto error = impl_->outbound->prepare_tls(ctx->cfg.gladia.ca_file); !error.empty())
        SW_LOG(ctx, error, "gladia: " << error << " (every stream will report stt_unavailable)");
    }
    ctx->stt = gladia_provider(ctx, impl_->outbound);
  } else if (ctx->cfg.stt_provider == "local") {
    local_model_paths paths;
    if (paths.available()) {
      ctx->stt = local_provider(ctx, paths);
    } else {
      ctx->stt.name = "local";  // no spawn: streams report stt_unavailable, /ready says why
      SW_LOG(ctx, warn, "local STT model not found at " << paths.hmm << " (install pocketsphinx-en-us)");
    }
  }
  if (ctx->cfg.livekit.configured()) {
    if (!impl_->outbound) impl_->outbound = std::make_shared<net::outbound>(impl_->io);
    const auto& lk = ctx->cfg.livekit;
    if (net::parse_url(lk.url) && net::parse_url(lk.url)->secure()) {
      if (auto error = impl_->outbound->prepare_tls(lk.ca_file); !error.empty())
        SW_LOG(ctx, error, "livekit: " << error << " (every LiveKit call will fail)");
    }
    ctx->livekit = std::make_shared<const net::livekit_client>(
        net::livekit_client::settings{lk.url, lk.api_key, lk.api_secret, lk.ca_file, lk.timeout}, impl_->outbound);
  }
  use_io_scheduler(*impl_->caf_cfg, impl_->io->context());
  impl_->caf_cfg->add_thread_hook<signal_stack_hook>();
}

service::~service() {
  if (impl_->started && !impl_->stopped) {
    shutdown();
  }
}

void service::start() {
  auto& d = *impl_;
  d.sys = std::make_unique<caf::actor_system>(*d.caf_cfg);
  if (d.ctx->cfg.persistence) {
    try {
      d.ctx->persistence = spawn_persistence(*d.sys, d.ctx);
    } catch (const std::exception& e) {
      d.sys.reset();
      throw std::runtime_error(std::string("cannot start persistence: ") + e.what());
    }
  }
  d.gw = d.sys->spawn(sw::gateway, context_ptr(d.ctx));
  d.supervisor = d.sys->spawn(supervisor, context_ptr(d.ctx), d.failure, d.gw, d.ctx->persistence);
  net::server_options o;
  const auto& c = d.ctx->cfg;
  o.host = c.host;
  o.port = c.port;
  o.io_threads = c.io_threads;
  o.tls_cert_file = c.tls_cert_file;
  o.tls_key_file = c.tls_key_file;
  o.cors_origin = c.cors_allow_origin;
  o.send_queue_bytes = c.client_send_queue_bytes;
  o.socket_send_buffer = c.socket_send_buffer;
  o.request_timeout = c.http_request_timeout;
  o.idle_timeout = c.http_idle_timeout;
  o.ping_interval = c.ws_ping_interval;
  o.pong_timeout = c.ws_pong_timeout;
  o.close_timeout = c.ws_close_timeout;
  // the floor in bytes of browser audio (16 kHz PCM16 mono, 32 bytes a ms); the session judges by its own format
  o.backlog_floor_bytes = static_cast<std::size_t>(c.overload_backlog.count()) * 32;
  // Any frames (data, continuation, control): twice the audio frames that close a client for flooding (audio_guard);
  // the browser sends about 50 a second.
  o.ws_max_frames_per_second = 8.0 * c.audio_max_frames_per_second;
  if (d.ctx->stt.batch_bytes > 0) o.audio_quiet = c.stt_chunk_flush;  // a provider that batches needs the pauses
  o.audio_batch_bytes = d.ctx->stt.batch_bytes;
  o.trusted_proxies = c.trusted_proxies;
  d.srv = std::make_unique<net::server>(o, d.gw, d.ctx->net, d.io);
  try {
    d.srv->start();
  } catch (...) {
    caf::anon_send(d.supervisor, shutdown_atom::value);
    caf::anon_send_exit(d.gw, caf::exit_reason::user_shutdown);
    if (d.ctx->persistence) caf::anon_send_exit(d.ctx->persistence, caf::exit_reason::user_shutdown);
    d.ctx->persistence = persistence_actor{};
    d.srv.reset();
    d.sys.reset();
    throw;
  }
  if (c.memory_trim_interval.count() > 0) d.trim = spawn_memory_trim(*d.sys, d.ctx);
  d.log_flush = spawn_log_flush(*d.sys, d.ctx);
  d.started = true;
}

std::uint16_t service::port() const {
  return impl_->srv ? impl_->srv->port() : 0;
}
bool service::tls() const {
  return impl_->srv && impl_->srv->tls();
}
bool service::reload_tls() {
  return impl_->srv && impl_->srv->reload_tls();
}
const service_context& service::context() const {
  return *impl_->ctx;
}
caf::actor_system& service::system() {
  return *impl_->sys;
}
void service::on_failure(std::function<void(const std::string&)> f) {
  std::lock_guard<std::mutex> lock(impl_->failure->mu);
  impl_->failure->f = std::move(f);
}

gateway_actor service::gateway() const {
  return impl_->gw;
}

bool service::shutdown() {
  auto& d = *impl_;
  if (!d.started || d.stopped) return true;
  d.stopped = true;
  using clock = std::chrono::steady_clock;
  auto deadline = clock::now() + d.ctx->cfg.shutdown_timeout;
  // The listener stays open while the streams drain: /ready answers 503 (draining) and new upgrades 503
  // shutting_down, which a proxy reads as "send it elsewhere"; a refused connection would say less.
  caf::anon_send(d.supervisor, shutdown_atom::value);  // from here on, actors end on purpose
  caf::anon_send(d.gw, shutdown_atom::value);
  bool drained = false;
  while (clock::now() < deadline && !d.failure->gateway_down) {
    if (d.ctx->metrics->live_streams.load() == 0) {
      drained = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Let the close frames go out, then stop the I/O threads.
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  d.srv->drain(d.failure->gateway_down ? std::chrono::milliseconds(0) : std::max(left, std::chrono::milliseconds(200)));
  caf::anon_send_exit(d.gw, caf::exit_reason::user_shutdown);
  if (d.trim) {
    caf::anon_send_exit(d.trim, caf::exit_reason::user_shutdown);
    d.trim = memory_trim_actor{};
  }
  if (d.log_flush) {
    caf::anon_send_exit(d.log_flush, caf::exit_reason::user_shutdown);
    d.log_flush = log_flush_actor{};
  }
  if (d.ctx->persistence) {
    // Every stream has ended: flush what is pending within the bound; the rest stays journaled.
    bool flushed = false;
    {
      caf::scoped_actor self{*d.sys};
      self->request(d.ctx->persistence, d.ctx->cfg.shutdown_timeout + std::chrono::seconds(1), shutdown_atom::value)
          .receive([&](bool ok) { flushed = ok; }, [&](caf::error&) {});
    }
    if (!flushed) SW_LOG(d.ctx, warn, "shutdown: some finals stay in the journal for the next start");
    caf::anon_send_exit(d.ctx->persistence, caf::exit_reason::user_shutdown);
    d.ctx->persistence = persistence_actor{};
  }
  // What the throttle left out in the last second, the final flush's errors too (nothing logs through it after this).
  d.ctx->metrics->flush_suppressed(now_ms() + 1000);
  // Every actor should be gone now; never hang the process on one that is not.
  auto settle = clock::now() + std::chrono::seconds(2);
  while (d.sys->registry().running() > 0 && clock::now() < settle)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  d.gw = gateway_actor{};
  d.supervisor = supervisor_actor{};
  d.srv.reset();
  if (auto left_over = d.sys->registry().running(); left_over > 0) {
    SW_LOG(d.ctx, warn,
           "shutdown: " << left_over << " actors still running (a database call that does not return?); not waiting "
                        << "for them");
    d.sys->await_actors_before_shutdown(false);
    // The system's destructor joins every detached actor's thread, and one stuck in a blocking call would hold
    // the caller (and a SIGTERM'd process) forever. So it runs on a thread of its own, which the process does
    // not wait for. (CAF 0.17's destructor also waits for the logger that the thread which built the system
    // holds: off that thread it ends with the process.) What was not written is in the journal for the next
    // start.
    std::thread([sys = std::move(d.sys), cfg = std::move(d.caf_cfg), io = d.io]() mutable { sys.reset(); }).detach();
    return false;
  }
  d.sys.reset();
  d.io->stop();  // after the actors: they run on the I/O threads
  return drained;
}

}  // namespace sw
