#define _CRT_RAND_S
#include "os/platform.h"

#include <stdlib.h>

void wr_mutex_lock(wr_mutex *m) { AcquireSRWLockExclusive(m); }
void wr_mutex_unlock(wr_mutex *m) { ReleaseSRWLockExclusive(m); }

struct start_args {
  void (*fn)(void *);
  void *arg;
};

static DWORD WINAPI trampoline(LPVOID p) {
  struct start_args a = *(struct start_args *)p;
  free(p);
  a.fn(a.arg);
  return 0;
}

int wr_thread_start(wr_thread *t, void (*fn)(void *), void *arg) {
  struct start_args *a = malloc(sizeof *a);
  if (!a) return ERROR_NOT_ENOUGH_MEMORY;
  a->fn = fn;
  a->arg = arg;
  t->handle = CreateThread(NULL, 0, trampoline, a, 0, NULL);
  if (!t->handle) {
    DWORD err = GetLastError();
    free(a);
    return (int)(err ? err : 1);
  }
  return 0;
}

void wr_thread_join(wr_thread *t) {
  WaitForSingleObject(t->handle, INFINITE);
  CloseHandle(t->handle);
  t->handle = NULL;
}

int wr_event_init(wr_event *e) {
  InitializeSRWLock(&e->lock);
  InitializeConditionVariable(&e->cond);
  e->value = 0;
  return 0;
}

void wr_event_destroy(wr_event *e) { (void)e; }

void wr_event_set(wr_event *e) {
  AcquireSRWLockExclusive(&e->lock);
  e->value++;
  ReleaseSRWLockExclusive(&e->lock);
  WakeAllConditionVariable(&e->cond);
}

uint64_t wr_event_value(wr_event *e) {
  AcquireSRWLockShared(&e->lock);
  uint64_t v = e->value;
  ReleaseSRWLockShared(&e->lock);
  return v;
}

uint64_t wr_event_wait_change(wr_event *e, uint64_t seen, uint32_t timeout_ms) {
  ULONGLONG deadline = GetTickCount64() + timeout_ms;
  AcquireSRWLockExclusive(&e->lock);
  while (e->value == seen) {
    ULONGLONG now = GetTickCount64();
    if (now >= deadline) break;
    ULONGLONG left = deadline - now;
    /* INFINITE (0xFFFFFFFF) would never end: wait in shorter steps. */
    SleepConditionVariableSRW(&e->cond, &e->lock, left >= INFINITE ? INFINITE - 1 : (DWORD)left, 0);
  }
  uint64_t v = e->value;
  ReleaseSRWLockExclusive(&e->lock);
  return v;
}

void wr_sleep_ms(uint32_t ms) { Sleep(ms); }

/* The performance counter, not GetTickCount64: that one moves in steps of
 * the clock interrupt (about 15.6 ms), while the ages of processes it is
 * compared with (the engine's configuration time, lineage.ts) are exact, so
 * a process started just before a configuration could look younger than it.
 * Like GetTickCount64 the counter also counts time asleep or hibernated, as
 * the wall clock of those ages does. Whole seconds and the remainder apart:
 * counter * 1000 itself could overflow (the remainder times 1000 fits for
 * any frequency under 1.8e16 Hz); the result is floor(counter * 1000 /
 * frequency) exactly, so it never goes back while the counter does not. */
uint64_t wr_ticks_scale(uint64_t ticks, uint64_t hz, uint64_t per_s) {
  return ticks / hz * per_s + ticks % hz * per_s / hz;
}

uint64_t wr_now_ms(void) {
  static volatile LONG64 freq; /* constant after boot: read once */
  LONG64 f = freq;
  if (f <= 0) {
    LARGE_INTEGER q;
    QueryPerformanceFrequency(&q);
    f = q.QuadPart > 0 ? q.QuadPart : 1;
    freq = f;
  }
  LARGE_INTEGER c;
  QueryPerformanceCounter(&c);
  return wr_ticks_scale((uint64_t)c.QuadPart, (uint64_t)f, 1000u);
}

uint32_t wr_self_pid(void) { return (uint32_t)GetCurrentProcessId(); }

uint32_t wr_random_seed(void) {
  unsigned int v = 0;
  if (rand_s(&v) != 0) {
    LARGE_INTEGER t;
    QueryPerformanceCounter(&t);
    v = (unsigned int)t.QuadPart * 2654435761u ^ GetCurrentProcessId();
  }
  return v;
}
