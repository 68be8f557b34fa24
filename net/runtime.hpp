// The I/O threads: one Asio io_context run by a few threads, shared by the listening server and the
// outbound (upstream) connections, so a client's frame and the upstream write it leads to are handled by
// the same threads instead of crossing to a thread of their own.
#pragma once

#include <functional>
#include <memory>

#include <boost/asio/any_io_executor.hpp>

namespace boost::asio {
class io_context;
}

namespace sw::net {

class io_runtime {
public:
  // `on_thread_start` runs first on each of the threads (e.g. to give it an alternate signal stack).
  explicit io_runtime(int threads, std::function<void()> on_thread_start = {});
  ~io_runtime();  // stop()
  io_runtime(const io_runtime&) = delete;
  io_runtime& operator=(const io_runtime&) = delete;

  boost::asio::io_context& context();
  // The executor a connection's handlers run on: a strand of its own when several threads run the context; the
  // context's plain executor when one does (every handler is serialized already, and a strand only costs).
  boost::asio::any_io_executor connection_executor();
  // Stops the threads and joins them. Idempotent. Never from one of them (nor the last owner's release there).
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace sw::net
