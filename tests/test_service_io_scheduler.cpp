// The actor scheduler on the I/O threads (service/io_scheduler): actors run on the threads that run the io_context,
// timers still fire, and the actor system ends while those threads keep running.
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "service/io_scheduler.hpp"

namespace {

using namespace std::chrono_literals;
using thread_id_atom = caf::atom_constant<caf::atom("threadid")>;
using later_atom = caf::atom_constant<caf::atom("later")>;
using spawn_atom = caf::atom_constant<caf::atom("spawn")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using flood_atom = caf::atom_constant<caf::atom("flood")>;
using seen_atom = caf::atom_constant<caf::atom("seen")>;

std::size_t id_of(std::thread::id id) {
  return std::hash<std::thread::id>{}(id);
}

// Answers with the thread it runs on; answers `later` 20 ms later (through the scheduler's clock); spawns a child.
// `depth` is there because CAF 0.17 dereferences a null argument tuple when a function actor takes no arguments
// (UBSan reports it); the service's actors all take some.
caf::behavior probe(caf::event_based_actor* self, int depth) {
  auto waiting = std::make_shared<std::vector<caf::response_promise>>();
  return {
      [](thread_id_atom) { return id_of(std::this_thread::get_id()); },
      [self, waiting](later_atom) {
        waiting->push_back(self->make_response_promise());
        self->delayed_send(self, 20ms, tick_atom::value);
        return waiting->back();
      },
      [waiting](tick_atom) {
        for (auto& rp : *waiting) rp.deliver(id_of(std::this_thread::get_id()));
        waiting->clear();
      },
      [self, depth](spawn_atom) {
        auto child = self->spawn(probe, depth + 1);
        return self->delegate(child, thread_id_atom::value);
      },
  };
}

// Counts `flood` messages. The first posts a handler onto the I/O thread, as a socket's completion would be queued;
// `seen` answers how many messages the actor had handled when that handler had run (-1: not yet).
caf::behavior flooded(caf::event_based_actor*, boost::asio::io_context* io) {
  struct counts {
    int handled = 0;
    int seen_at = -1;
    std::shared_ptr<std::atomic<bool>> ran = std::make_shared<std::atomic<bool>>(false);
  };
  auto s = std::make_shared<counts>();
  return {
      [s, io](flood_atom) {
        if (s->handled == 0) boost::asio::post(*io, [ran = s->ran] { ran->store(true); });
        if (s->seen_at < 0 && s->ran->load()) s->seen_at = s->handled;
        ++s->handled;
      },
      [s](seen_atom) { return s->seen_at; },
  };
}

struct io_thread {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  std::thread thread{[this] { io.run(); }};
  ~io_thread() {
    work.reset();
    io.stop();
    thread.join();
  }
};

// Runs `body` (a whole actor system's life) on a thread of its own, as the service does, and fails instead of hanging
// when the system does not end: CAF's destructor waits for the logger reference of every thread that spawned an
// actor, and the I/O thread outlives the system.
void bounded(const std::shared_ptr<io_thread>& t, std::function<void(caf::actor_system&)> body) {
  auto ended = std::make_shared<std::promise<void>>();
  auto done = ended->get_future();
  std::thread([t, ended, body = std::move(body)] {
    caf::actor_system_config cfg;
    sw::use_io_scheduler(cfg, t->io);
    {
      caf::actor_system sys{cfg};
      body(sys);
    }
    ended->set_value();
  }).detach();
  if (done.wait_for(10s) != std::future_status::ready) {
    ADD_FAILURE() << "the actor system did not end within 10 s";
    new std::shared_ptr<io_thread>(t);  // the stuck destructor and the I/O thread are left to the process's end
  }
}

TEST(IoScheduler, ActorsAndTheirTimersRunOnTheIoThread) {
  auto t = std::make_shared<io_thread>();
  const auto io_id = id_of(t->thread.get_id());
  bounded(t, [io_id](caf::actor_system& sys) {
    auto a = sys.spawn(probe, 0);
    caf::scoped_actor self{sys};
    std::size_t ran_on = 0;
    self->request(a, 5s, thread_id_atom::value).receive([&](std::size_t id) { ran_on = id; }, [](caf::error&) {});
    EXPECT_EQ(ran_on, io_id);
    ran_on = 0;
    self->request(a, 5s, later_atom::value).receive([&](std::size_t id) { ran_on = id; }, [](caf::error&) {});
    EXPECT_EQ(ran_on, io_id) << "a delayed message (the scheduler's clock)";
    ran_on = 0;
    self->request(a, 5s, spawn_atom::value).receive([&](std::size_t id) { ran_on = id; }, [](caf::error&) {});
    EXPECT_EQ(ran_on, io_id) << "an actor spawned by an actor";
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  });
}

// 500 messages wait in one actor's mailbox: the thread runs the handler the first of them queued after a turn of the
// actor's (50 messages), not after all 500.
TEST(IoScheduler, AFloodedActorLetsTheThreadRunOtherWorkBetweenItsTurns) {
  auto t = std::make_shared<io_thread>();
  bounded(t, [t](caf::actor_system& sys) {
    auto a = sys.spawn(flooded, &t->io);
    caf::scoped_actor self{sys};
    std::promise<void> release, blocked;
    auto released = release.get_future().share();
    boost::asio::post(t->io, [released, &blocked] {  // holds the I/O thread while the mailbox fills
      blocked.set_value();
      released.wait();
    });
    blocked.get_future().wait();
    for (int i = 0; i < 500; ++i) self->send(a, flood_atom::value);
    release.set_value();
    int seen_at = -2;
    self->request(a, 5s, seen_atom::value).receive([&](int n) { seen_at = n; }, [](caf::error&) {});
    EXPECT_GE(seen_at, 1) << "the thread's other work waited for the actor's whole mailbox";
    EXPECT_LE(seen_at, 100);
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  });
}

// An actor spawned on the I/O thread: the system still ends while that thread keeps running.
TEST(IoScheduler, TheSystemEndsWhileTheIoThreadsKeepRunning) {
  auto t = std::make_shared<io_thread>();
  bounded(t, [](caf::actor_system& sys) {
    auto a = sys.spawn(probe, 0);
    caf::scoped_actor self{sys};
    self->request(a, 5s, spawn_atom::value).receive([](std::size_t) {}, [](caf::error&) {});
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  });
  EXPECT_FALSE(t->io.stopped());
}

}  // namespace
