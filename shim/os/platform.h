/* Threads, locks, time and process facts: the little the shim needs from the
 * OS, behind one interface (os/posix.c, os/win32.c). */
#ifndef WR_PLATFORM_H
#define WR_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
typedef SRWLOCK wr_mutex;
#define WR_MUTEX_INIT SRWLOCK_INIT
typedef struct {
  HANDLE handle;
} wr_thread;
typedef struct {
  SRWLOCK lock;
  CONDITION_VARIABLE cond;
  uint64_t value;
} wr_event;
#else
#include <pthread.h>
typedef pthread_mutex_t wr_mutex;
#define WR_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
typedef struct {
  pthread_t handle;
} wr_thread;
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  uint64_t value;
} wr_event;
#endif

/* Mutexes are statically initialised with WR_MUTEX_INIT; no destroy needed. */
void wr_mutex_lock(wr_mutex *m);
void wr_mutex_unlock(wr_mutex *m);

/* Starts fn(arg) on a new thread. 0 on success, else an OS error number. */
int wr_thread_start(wr_thread *t, void (*fn)(void *), void *arg);
void wr_thread_join(wr_thread *t);

/* An event as a counter that only grows: wr_event_set adds one and wakes
 * every waiter. wr_event_wait_change waits until the value differs from
 * `seen` (read it with wr_event_value before checking what it guards, and
 * no wake-up is missed) and returns the value then, or `seen` on timeout.
 * wr_event_wait: has it ever been set (a manual-reset event that stays
 * set); 1 when set, 0 on timeout. */
int wr_event_init(wr_event *e);
void wr_event_destroy(wr_event *e);
void wr_event_set(wr_event *e);
uint64_t wr_event_value(wr_event *e);
uint64_t wr_event_wait_change(wr_event *e, uint64_t seen, uint32_t timeout_ms);
static inline int wr_event_wait(wr_event *e, uint32_t timeout_ms) { return wr_event_wait_change(e, 0, timeout_ms) != 0; }

void wr_sleep_ms(uint32_t ms);
/* Milliseconds from a monotonic clock, with millisecond resolution (the
 * engine compares it with exact process ages: lineage.ts). Linux:
 * CLOCK_MONOTONIC; Windows: the performance counter (time asleep counted). */
uint64_t wr_now_ms(void);
#ifdef _WIN32
/* floor(ticks * per_s / hz) without overflow (hz > 0; exact while
 * (hz - 1) * per_s fits in 64 bits): a performance-counter span in another
 * unit (wr_now_ms: ms; the WinDivert owners: FILETIME's 100 ns). */
uint64_t wr_ticks_scale(uint64_t ticks, uint64_t hz, uint64_t per_s);
#endif
/* The calling process's ID. */
uint32_t wr_self_pid(void);
/* 32 unpredictable bits (for hash seeds). */
uint32_t wr_random_seed(void);

#endif
