#include "net/tls_client.hpp"

namespace sw::net {

namespace ssl = boost::asio::ssl;

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
