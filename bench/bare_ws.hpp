// What the bare benchmark peers (bare_receiver, bare_relay) share: a loopback listener and the one answer they give
// to a WebSocket upgrade (101 with the accept key, nothing checked). Bench code only: no limits, no validation.
#pragma once

#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace bare {

// A non-blocking listening socket on 127.0.0.1:port, or -1 (after perror).
inline int listen_loopback(int port) {
  const int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(ls, 4096) != 0) {
    std::perror("listen");
    return -1;
  }
  return ls;
}

// The 101 answer to the upgrade request `req` once it is whole (ends in an empty line); empty while it is not.
inline std::string upgrade_reply(const std::string& req) {
  if (req.find("\r\n\r\n") == std::string::npos) return {};
  std::string key;
  const auto k = req.find("Sec-WebSocket-Key: ");
  if (k != std::string::npos) key = req.substr(k + 19, req.find("\r\n", k) - k - 19);
  const std::string magic = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(magic.data()), magic.size(), digest);
  unsigned char b64[64];
  const int n = EVP_EncodeBlock(b64, digest, SHA_DIGEST_LENGTH);
  return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
         std::string(reinterpret_cast<char*>(b64), static_cast<std::size_t>(n)) + "\r\n\r\n";
}

}  // namespace bare
