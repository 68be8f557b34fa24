#include "actors/background_thread.hpp"

#include <sched.h>

#include <cerrno>
#include <cstring>

namespace sw {

void become_background_thread(const context_ptr& ctx, const char* who) {
  const sched_param p{};                              // priority 0, the only one SCHED_BATCH has
  if (sched_setscheduler(0, SCHED_BATCH, &p) != 0) {  // 0: the calling thread (Linux schedules threads)
    const int e = errno;
    SW_LOG(ctx, warn, who << ": its thread stays SCHED_OTHER: sched_setscheduler(SCHED_BATCH): " << std::strerror(e));
  }
}

}  // namespace sw
