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
// executor as one function that opens a new drain, so one busy connection cannot keep the thread from others.
//
// Outstanding work is not tracked through it (`prefer(outstanding_work.tracked)` is ignored, as a preference may be):
// the I/O runtime keeps its context running with a work guard of its own until it stops.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/detail/executor_function.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/require.hpp>

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
      if (d->size < queue_capacity) {
        d->push(function(std::forward<F>(f), std::allocator<void>()));
        return;
      }
    }
    start(function(std::forward<F>(f), std::allocator<void>()));
  }

  const inner_type& inner() const noexcept { return inner_; }

  // Functions a drain has run from its queue on this thread (for tests and the metrics).
  static std::size_t& drained() {
    thread_local std::size_t n = 0;
    return n;
  }

  friend bool operator==(const drain_executor& a, const drain_executor& b) noexcept {
    return a.key_ == b.key_ && a.never_ == b.never_ && a.inner_ == b.inner_;
  }
  friend bool operator!=(const drain_executor& a, const drain_executor& b) noexcept { return !(a == b); }

private:
  using function = boost::asio::detail::executor_function;
  static constexpr std::size_t queue_capacity = 32;

  // The drain open on this thread: a ring of queued functions.
  struct drain {
    drain(const void* k, drain* o) : key(k), outer(o) {}
    const void* key;
    drain* outer;  // the drain this one opened inside (another key's), restored when it closes
    std::size_t head = 0, size = 0;
    alignas(function) unsigned char slots[queue_capacity][sizeof(function)];

    function* at(std::size_t i) { return std::launder(reinterpret_cast<function*>(slots[i % queue_capacity])); }
    void push(function&& f) {
      new (slots[(head + size) % queue_capacity]) function(std::move(f));
      ++size;
    }
    function pop() {
      function* p = at(head);
      function f(std::move(*p));
      p->~function();
      head = (head + 1) % queue_capacity;
      --size;
      return f;
    }
  };

  static drain*& current() {
    thread_local drain* d = nullptr;
    return d;
  }

  // Runs `first` in a drain of this key on the inner executor, then what it queued.
  void start(function first) const {
    auto run = [self = *this, first = std::move(first)]() mutable { self.run_drain(std::move(first)); };
    if (never_)
      boost::asio::require(inner_, boost::asio::execution::blocking.never).execute(std::move(run));
    else
      inner_.execute(std::move(run));
  }

  void run_drain(function first) const {
    drain d(key_, current());
    current() = &d;
    struct close_on_exit {
      drain& d;
      const drain_executor& self;
      ~close_on_exit() {
        current() = d.outer;
        // Whatever is left (the budget ran out, or a function threw) continues in a drain of its own, in order.
        while (d.size > 0) {
          function f = d.pop();
          self.without_drain().start(std::move(f));
        }
      }
    } closer{d, *this};
    first();
    for (std::size_t n = 0; n < drain_budget && d.size > 0; ++n) {
      function f = d.pop();
      ++drained();
      f();
    }
  }

  // Posts each leftover to the inner executor (never inline, never into a drain of this thread).
  drain_executor without_drain() const {
    drain_executor e(*this);
    e.never_ = true;
    return e;
  }

  inner_type inner_;
  const void* key_;
  bool never_ = false;
};

}  // namespace sw::net
