// A throwaway PKI made with the openssl CLI at test time: a CA, a server certificate for localhost and
// 127.0.0.1 signed by it, and an unrelated CA, which signed a second server certificate for the same names
// (server2.pem, an ECDSA P-256 key: a renewed certificate, for reload tests).
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace sw::test {

struct test_pki {
  std::filesystem::path dir;
  test_pki() {
    dir = std::filesystem::temp_directory_path() /
          ("sw-pki-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()));
    std::filesystem::create_directories(dir);
    auto d = dir.string();
    std::string script =
        "set -e; cd '" + d +
        "';"
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=sw-test-ca 2>/dev/null;"
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.pem -days 2 -subj /CN=other-ca "
        "2>/dev/null;"
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null;"
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf;"
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
        "-extfile ext.cnf 2>/dev/null;"
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server2.key -out server2.csr "
        "-subj /CN=localhost 2>/dev/null;"
        "openssl x509 -req -in server2.csr -CA other-ca.pem -CAkey other.key -CAcreateserial -out server2.pem -days 2 "
        "-extfile ext.cnf 2>/dev/null";
    ok = std::system(("bash -c \"" + script + "\"").c_str()) == 0;
  }
  ~test_pki() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string file(const char* name) const { return (dir / name).string(); }
  bool ok = false;
};

}  // namespace sw::test
