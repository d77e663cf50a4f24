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

uint64_t wr_now_ms(void) { return (uint64_t)GetTickCount64(); }

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
