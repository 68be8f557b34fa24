#include "service/io_scheduler.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <utility>

#include <boost/asio/defer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <caf/actor_system.hpp>
#include <caf/detail/set_thread_name.hpp>
#include <caf/detail/thread_safe_actor_clock.hpp>
#include <caf/execution_unit.hpp>
#include <caf/logger.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>

namespace sw {
namespace {

class io_coordinator;

// The execution unit an actor sees while it runs: a message it sends to an idle actor schedules that actor on the
// same thread, after the current handler (Asio's defer: no lock, no wake-up).
class io_unit final : public caf::execution_unit {
public:
  io_unit(caf::actor_system* sys, io_coordinator* parent) : caf::execution_unit(sys), parent_(parent) {}
  void exec_later(caf::resumable* job) override;

private:
  io_coordinator* parent_;
};

class io_coordinator final : public caf::scheduler::abstract_coordinator {
public:
  // An actor handles at most this many messages per turn, then queues behind what its thread has waiting (CAF's
  // default is its whole mailbox): a flooded actor, e.g. the gateway in a reconnect storm, never holds a thread's
  // sockets, timers and other actors for longer than that.
  static constexpr std::size_t turn_messages = 50;

  io_coordinator(caf::actor_system& sys, boost::asio::io_context& io)
      : abstract_coordinator(sys), io_(io), unit_(&sys, this) {}

  void init(caf::actor_system_config& cfg) override {
    abstract_coordinator::init(cfg);
    max_throughput_ = std::min(max_throughput_, turn_messages);
  }

  // From any thread: the I/O threads' own sends stay on their thread; others' go to whichever thread is free.
  void enqueue(caf::resumable* job) override { schedule(job, io_.get_executor().running_in_this_thread()); }

  void schedule(caf::resumable* job, bool local) {
    pending_.fetch_add(1, std::memory_order_relaxed);
    if (local)
      boost::asio::defer(io_, run_job{this, job});
    else
      boost::asio::post(io_, run_job{this, job});
  }

  caf::detail::thread_safe_actor_clock& clock() noexcept override { return clock_; }

  void start() override {
    timer_ = std::thread([this] {
      caf::detail::set_thread_name("caf.clock");
      system().thread_started();
      clock_.run_dispatch_loop();
      system().thread_terminates();
    });
    abstract_coordinator::start();
  }

  void stop() override {
    stop_actors();
    // Every actor has ended by now (or the system was told not to wait for them): let the jobs still queued on the
    // I/O threads run, so none is left for the io_context's destructor after the system is gone. Bounded, in case
    // the I/O threads were stopped first.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (pending_.load() > 0 && !io_.stopped() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stopped_.store(true);
    clock_.cancel_dispatch_loop();
    timer_.join();
  }

private:
  // A queued resume. If it is destroyed without running (the io_context was stopped and destroyed first), the actor
  // is cleaned up as CAF's own workers do at shutdown, while the system still exists.
  struct run_job {
    io_coordinator* self;
    caf::resumable* job;
    run_job(io_coordinator* s, caf::resumable* j) : self(s), job(j) {}
    run_job(run_job&& o) noexcept : self(o.self), job(std::exchange(o.job, nullptr)) {}
    run_job(const run_job&) = delete;
    ~run_job() {
      if (job == nullptr) return;
      if (!self->stopped_.load()) cleanup_and_release(job);
      self->pending_.fetch_sub(1, std::memory_order_relaxed);
    }
    void operator()() {
      auto* j = std::exchange(job, nullptr);
      self->run(j);
      self->pending_.fetch_sub(1, std::memory_order_relaxed);
    }
  };

  void run(caf::resumable* job) {
    auto result = job->resume(&unit_, max_throughput_);
    // A spawn points the thread's CAF logger at the system, and the system's destructor waits until no thread does:
    // the I/O threads outlive the system, so they let go after every job.
    if (caf::logger::current_logger() != nullptr) caf::logger::set_current_actor_system(nullptr);
    switch (result) {
      case caf::resumable::resume_later:
        schedule(job, true);  // keeps its reference
        break;
      case caf::resumable::done:
      case caf::resumable::awaiting_message:
      case caf::resumable::shutdown_execution_unit:
        intrusive_ptr_release(job);
        break;
    }
  }

  boost::asio::io_context& io_;
  io_unit unit_;
  caf::detail::thread_safe_actor_clock clock_;
  std::thread timer_;
  std::atomic<long> pending_{0};
  std::atomic<bool> stopped_{false};
};

void io_unit::exec_later(caf::resumable* job) {
  parent_->schedule(job, true);
}

}  // namespace

void use_io_scheduler(caf::actor_system_config& cfg, boost::asio::io_context& io) {
  cfg.module_factories.push_back(
      [&io](caf::actor_system& sys) -> caf::actor_system::module* { return new io_coordinator(sys, io); });
}

}  // namespace sw
