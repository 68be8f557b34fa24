#include "actors/memory_trim.hpp"

#include <malloc.h>

#include <string>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/background_thread.hpp"

namespace sw {

namespace {

memory_trim_actor::behavior_type memory_trim(memory_trim_actor::pointer self, context_ptr ctx) {
  become_background_thread(ctx, "memory trim");
  self->send(self, tick_atom::value);
  return {
      [=](tick_atom) {
        const long before = self_rss_anon_kib();
#if defined(__GLIBC__)
        malloc_trim(0);  // every arena, and whole free pages inside the heap too (glibc 2.8 on)
        const auto heap = mallinfo2();
        ctx->metrics->heap_in_use_bytes = heap.uordblks + heap.hblkhd;  // chunks in use, and those mmap'd on their own
        ctx->metrics->heap_free_bytes = heap.fordblks;
#endif
        const long after = self_rss_anon_kib();
        ctx->metrics->count("memory.trims");
        if (before >= 0 && after >= 0 && after < before)
          ctx->metrics->count("memory.trimmed_kib", static_cast<std::uint64_t>(before - after));
        self->delayed_send(self, ctx->cfg.memory_trim_interval, tick_atom::value);
      },
  };
}

}  // namespace

memory_trim_actor spawn_memory_trim(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn<caf::detached>(memory_trim, std::move(ctx));
}

}  // namespace sw
