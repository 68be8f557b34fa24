#include "net/runtime.hpp"

#include <algorithm>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

namespace sw::net {

struct io_runtime::impl {
  boost::asio::io_context ioc;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work;
  std::mutex mu;
  std::vector<std::thread> threads;
  int count = 1;
};

io_runtime::io_runtime(int threads, std::function<void()> on_thread_start) : impl_(new impl) {
  impl_->count = std::max(1, threads);
  impl_->work.emplace(impl_->ioc.get_executor());
  for (int i = 0; i < impl_->count; ++i)
    impl_->threads.emplace_back([this, on_thread_start] {
      if (on_thread_start) on_thread_start();
      impl_->ioc.run();
    });
}

io_runtime::~io_runtime() {
  stop();
}

boost::asio::io_context& io_runtime::context() {
  return impl_->ioc;
}

boost::asio::any_io_executor io_runtime::connection_executor() {
  if (impl_->count > 1) return boost::asio::make_strand(impl_->ioc);
  return impl_->ioc.get_executor();
}

void io_runtime::stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->work.reset();
    threads.swap(impl_->threads);
  }
  impl_->ioc.stop();
  for (auto& t : threads) t.join();
}

}  // namespace sw::net
