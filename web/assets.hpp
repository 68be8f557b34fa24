// The browser page (/demo), built into the binary from the files beside this header (web/CMakeLists.txt), so the
// service serves it with nothing to install.
#pragma once

#include <string_view>

namespace sw::web {

struct asset {
  std::string_view path;          // "/demo", "/demo/demo.js", ...
  std::string_view content_type;  // with charset
  std::string_view body;
  std::string_view etag;  // quoted, from the content's SHA-256
};

// The asset served at `path`, or nullptr.
const asset* find_asset(std::string_view path);

}  // namespace sw::web
