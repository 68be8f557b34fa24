// Internal to net/: an executor that runs what one connection posts to itself inside the handler already running,
// instead of as a round of Asio's scheduler of its own.
//
// Why. Asio's scheduler (Boost 1.81) polls the reactor (`epoll_wait`, timeout 0) between every round of posted
// handlers. A chunk of frames that arrives in one read then completes frame by frame through posts (Beast completes a
// read it could serve from its buffer with a post, and so does the client layer's read-ahead), each in a round of
// its own: one `epoll_wait` a frame, most finding nothing.
//
// How. A connection's completion handlers are bound to a drain_executor keyed to the connection. The first handler
// that runs through it (from the reactor, or a post from elsewhere) opens a drain on its thread. What is posted to the
// same key while the drain is open (blocking.never: Beast's and the read-ahead's completions) waits in the drain's
// queue and runs when the handler before it has returned, in order, before the drain closes. What is dispatched
// (blocking.possibly) to the same key while it is open runs at once, as Asio runs a dispatch from inside its context.
// Everything else goes to the inner executor, unchanged.
//
// It preserves what a post promises: the function never runs inside the call that posted it; it runs on the thread of
// the drain, which is inside a handler of the inner executor (so inside its strand, when it is one); posts from one
// drain run in the order posted. A drain runs at most `drain_budget` queued functions; the rest go to the inner
// executor, in order, as one function that opens a new drain with them, so one busy connection cannot keep the thread
// from others.
//
// Outstanding work is not tracked through it (`prefer(outstanding_work.tracked)` is ignored, as a preference may be):
// the I/O runtime keeps its context running with a work guard of its own until it stops.
#pragma once

#include <cstddef>
#include <iterator>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/detail/executor_function.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/require.hpp>
#include <boost/container/small_vector.hpp>

namespace sw::net {

class drain_executor {
public:
  using inner_type = boost::asio::any_io_executor;

  // Queued functions a drain runs before it hands the rest back to the inner executor.
  static constexpr std::size_t drain_budget = 64;

  drain_executor(inner_type inner, const void* key) noexcept : inner_(std::move(inner)), key_(key) {}

  boost::asio::execution_context& query(boost::asio::execution::context_t) const noexcept {
    return boost::asio::query(inner_, boost::asio::execution::context);
  }
  boost::asio::execution::blocking_t query(boost::asio::execution::blocking_t) const noexcept {
    return never_ ? boost::asio::execution::blocking_t(boost::asio::execution::blocking.never)
                  : boost::asio::execution::blocking_t(boost::asio::execution::blocking.possibly);
  }
  drain_executor require(boost::asio::execution::blocking_t::never_t) const noexcept {
    drain_executor e(*this);
    e.never_ = true;
    return e;
  }
  drain_executor require(boost::asio::execution::blocking_t::possibly_t) const noexcept {
    drain_executor e(*this);
    e.never_ = false;
    return e;
  }

  template <class F>
  void execute(F&& f) const {
    drain* d = current();
    if (d && d->key == key_) {
      if (!never_) {
        std::forward<F>(f)();  // a dispatch from inside: at once
        return;
      }
      d->queue.emplace_back(std::forward<F>(f), std::allocator<void>());
      return;
    }
    start(function(std::forward<F>(f), std::allocator<void>()));
  }

  friend bool operator==(const drain_executor& a, const drain_executor& b) noexcept {
    return a.key_ == b.key_ && a.never_ == b.never_ && a.inner_ == b.inner_;
  }
  friend bool operator!=(const drain_executor& a, const drain_executor& b) noexcept { return !(a == b); }

private:
  using function = boost::asio::detail::executor_function;

  // The drain open on this thread: what was posted to its key, in order; `next` is the first not yet run.
  struct drain {
    drain(const void* k, drain* o) : key(k), outer(o) {}
    const void* key;
    drain* outer;  // the drain this one opened inside (another key's), restored when it closes
    boost::container::small_vector<function, 8> queue;
    std::size_t next = 0;
  };

  static drain*& current() {
    thread_local drain* d = nullptr;
    return d;
  }

  // Runs `first` in a drain of this key on the inner executor, then what it queued.
  void start(function first) const {
    submit([self = *this, first = std::move(first)]() mutable { self.run_drain(&first, &first + 1); });
  }

  // Runs what an earlier drain left, in order, in a drain of its own.
  void resume(std::vector<function> rest) const {
    submit(
        [self = *this, rest = std::move(rest)]() mutable { self.run_drain(rest.data(), rest.data() + rest.size()); });
  }

  template <class Run>
  void submit(Run&& run) const {
    if (never_)
      boost::asio::require(inner_, boost::asio::execution::blocking.never).execute(std::forward<Run>(run));
    else
      inner_.execute(std::forward<Run>(run));
  }

  // [begin, end) runs first (counted against the budget as queued functions are, all but the first).
  void run_drain(function* begin, function* end) const {
    drain d(key_, current());
    for (auto* f = begin; f != end; ++f) d.queue.push_back(std::move(*f));
    current() = &d;
    struct close_on_exit {
      drain& d;
      const drain_executor& self;
      ~close_on_exit() {
        current() = d.outer;
        // Whatever is left (the budget ran out, or a function threw) continues in a drain of its own, in order,
        // behind what the inner executor already holds.
        if (d.next == d.queue.size()) return;
        std::vector<function> rest(std::make_move_iterator(d.queue.begin() + static_cast<std::ptrdiff_t>(d.next)),
                                   std::make_move_iterator(d.queue.end()));
        self.require(boost::asio::execution::blocking.never).resume(std::move(rest));
      }
    } closer{d, *this};
    for (std::size_t n = 0; n <= drain_budget && d.next < d.queue.size(); ++n) {
      function f(std::move(d.queue[d.next++]));  // moved out first: running it may grow the queue
      f();
    }
  }

  inner_type inner_;
  const void* key_;
  bool never_ = false;
};

}  // namespace sw::net
