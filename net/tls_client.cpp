#include "net/tls_client.hpp"

#include <ctime>
#include <deque>
#include <map>
#include <mutex>

namespace sw::net {

namespace ssl = boost::asio::ssl;

namespace {

// The sessions a client context keeps (keep_tls_sessions), in the OpenSSL context's ex_data: freed with it.
class session_pool {
public:
  static constexpr std::size_t per_host = 8, hosts = 64;
  ~session_pool() {
    for (auto& [host, sessions] : by_host_)
      for (SSL_SESSION* s : sessions) SSL_SESSION_free(s);
  }
  // Takes ownership of `s`.
  void add(const std::string& host, SSL_SESSION* s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (by_host_.size() >= hosts && by_host_.find(host) == by_host_.end()) {
      SSL_SESSION_free(s);  // a context that meets more hosts than this is not the one this is for
      return;
    }
    auto& sessions = by_host_[host];
    if (sessions.size() >= per_host) {
      SSL_SESSION_free(sessions.front());
      sessions.pop_front();
    }
    sessions.push_back(s);
  }
  // The newest usable session for `host` (the caller owns it), or null.
  SSL_SESSION* take(const std::string& host) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_host_.find(host);
    if (it == by_host_.end()) return nullptr;
    const auto now = static_cast<long>(std::time(nullptr));
    SSL_SESSION* found = nullptr;
    while (!found && !it->second.empty()) {
      SSL_SESSION* s = it->second.back();
      it->second.pop_back();
      if (SSL_SESSION_is_resumable(s) && SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s) > now) {
        found = s;
      } else {
        SSL_SESSION_free(s);
      }
    }
    if (it->second.empty()) by_host_.erase(it);
    return found;
  }

private:
  std::mutex mu_;
  std::map<std::string, std::deque<SSL_SESSION*>> by_host_;
};

void free_pool(void*, void* pool, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<session_pool*>(pool);
}

int pool_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, &free_pool);
  return index;
}

session_pool* pool_of(SSL_CTX* ctx) {
  return static_cast<session_pool*>(SSL_CTX_get_ex_data(ctx, pool_index()));
}

// OpenSSL's: a session a server gave (after the handshake in TLS 1.2; each ticket, read later, in TLS 1.3).
int on_new_session(SSL* ssl, SSL_SESSION* session) {
  session_pool* pool = pool_of(SSL_get_SSL_CTX(ssl));
  // Kept by the SNI name the connection sent (the session names it only if the server acknowledged it).
  const char* host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!pool || !host) return 0;  // not kept (an address has no SNI name to key it by)
  // A copy: OpenSSL marks the connection's own session unresumable when the connection is freed without a
  // close_notify sent, as an HTTPS fetch that reads to the server's end is (RFC 5246 §7.2.1 has not required that
  // since TLS 1.1).
  if (SSL_SESSION* copy = SSL_SESSION_dup(session)) pool->add(host, copy);
  return 0;  // OpenSSL keeps its own
}

}  // namespace

void keep_tls_sessions(ssl::context& ctx) {
  SSL_CTX* c = ctx.native_handle();
  if (pool_of(c)) return;
  auto* pool = new session_pool;
  if (SSL_CTX_set_ex_data(c, pool_index(), pool) != 1) {
    delete pool;
    return;  // no resumption: every handshake is a full one, as before
  }
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(c, &on_new_session);
}

bool resume_tls_session(SSL* ssl, const std::string& host) {
  session_pool* pool = pool_of(SSL_get_SSL_CTX(ssl));
  if (!pool) return false;
  SSL_SESSION* s = pool->take(host);
  if (!s) return false;
  const bool set = SSL_set_session(ssl, s) == 1;  // takes a reference of its own
  SSL_SESSION_free(s);
  return set;
}

std::shared_ptr<ssl::context> client_tls_context(const std::string& ca_file, std::string& error) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  if (ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
  } else {
    ctx->load_verify_file(ca_file, ec);
  }
  if (ec) {
    error = "cannot load CA " + (ca_file.empty() ? std::string("store") : ca_file) + ": " + ec.message();
    return nullptr;
  }
  return ctx;
}

}  // namespace sw::net
