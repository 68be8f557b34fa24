// The TLS side of every client this service and its tools open (the Gladia and LiveKit upstreams, the command-line
// tools, the load generator): peers are verified against the system's CA store, or against `ca_file` instead.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>

namespace sw::net {

// A client context that verifies its peers (the host name is checked per connection, with SNI). nullptr, with
// `error` saying why, when the store or the file cannot be loaded.
std::shared_ptr<boost::asio::ssl::context> client_tls_context(const std::string& ca_file, std::string& error);

}  // namespace sw::net
