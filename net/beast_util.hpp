// Internal to net/: the Beast/Asio namespace aliases and small helpers its translation units share.
#pragma once

#include <cctype>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "proto/http.hpp"

namespace sw::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using plain_stream = beast::tcp_stream;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

// The TCP socket at the bottom of a stream: Beast's basic_stream holds one; a bare socket is its own.
inline tcp::socket& raw_socket(tcp::socket& s) {
  return s;
}
inline tcp::socket& raw_socket(plain_stream& s) {
  return s.socket();
}

// Header fields with lower-cased names, in order.
inline header_list lower_headers(const http::fields& fields) {
  header_list out;
  for (auto& f : fields) {
    std::string name(f.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.emplace_back(std::move(name), std::string(f.value()));
  }
  return out;
}

}  // namespace sw::net
