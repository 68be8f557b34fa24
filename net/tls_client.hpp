// The TLS side of every client this service and its tools open (the Gladia and LiveKit upstreams, the command-line
// tools, the load generator): peers are verified against the system's CA store, or against `ca_file` instead.
#pragma once

#include <memory>
#include <string>

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>

namespace sw::net {

// A client context that verifies its peers (the host name is checked per connection, with SNI). nullptr, with
// `error` saying why, when the store or the file cannot be loaded.
std::shared_ptr<boost::asio::ssl::context> client_tls_context(const std::string& ca_file, std::string& error);

// TLS session resumption for a client context whose connections go to the same few hosts again and again (the
// relay's HTTPS init and `wss` to Gladia, its reconnects): the sessions (TLS 1.3 tickets) its servers give are kept,
// up to 8 per host name (SNI) and 64 host names, each used once (RFC 8446 §C.4), and a handshake with one skips the
// certificate chain and the server's signature. Call once, before the context's first connection.
void keep_tls_sessions(boost::asio::ssl::context& ctx);
// Before a client handshake to `host` (its SNI name) on a context that keeps sessions: the connection offers one it
// kept for that host, if any (taken from the context: never offered twice). False if there was none.
bool resume_tls_session(SSL* ssl, const std::string& host);

}  // namespace sw::net
