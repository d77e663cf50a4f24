#define _GNU_SOURCE
#include "os/platform.h"

#include <errno.h>
#include <sys/random.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

void wr_mutex_lock(wr_mutex *m) { pthread_mutex_lock(m); }
void wr_mutex_unlock(wr_mutex *m) { pthread_mutex_unlock(m); }

struct start_args {
  void (*fn)(void *);
  void *arg;
};

static void *trampoline(void *p) {
  struct start_args a = *(struct start_args *)p;
  free(p);
  a.fn(a.arg);
  return NULL;
}

int wr_thread_start(wr_thread *t, void (*fn)(void *), void *arg) {
  struct start_args *a = malloc(sizeof *a);
  if (!a) return ENOMEM;
  a->fn = fn;
  a->arg = arg;
  int rc = pthread_create(&t->handle, NULL, trampoline, a);
  if (rc != 0) free(a);
  return rc;
}

void wr_thread_join(wr_thread *t) { pthread_join(t->handle, NULL); }

int wr_event_init(wr_event *e) {
  e->value = 0;
  if (pthread_mutex_init(&e->lock, NULL) != 0) return -1;
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(&e->cond, &attr);
  pthread_condattr_destroy(&attr);
  if (rc != 0) {
    pthread_mutex_destroy(&e->lock);
    return -1;
  }
  return 0;
}

void wr_event_destroy(wr_event *e) {
  pthread_cond_destroy(&e->cond);
  pthread_mutex_destroy(&e->lock);
}

void wr_event_set(wr_event *e) {
  pthread_mutex_lock(&e->lock);
  e->value++;
  pthread_cond_broadcast(&e->cond);
  pthread_mutex_unlock(&e->lock);
}

uint64_t wr_event_value(wr_event *e) {
  pthread_mutex_lock(&e->lock);
  uint64_t v = e->value;
  pthread_mutex_unlock(&e->lock);
  return v;
}

uint64_t wr_event_wait_change(wr_event *e, uint64_t seen, uint32_t timeout_ms) {
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&e->lock);
  while (e->value == seen) {
    if (pthread_cond_timedwait(&e->cond, &e->lock, &deadline) == ETIMEDOUT) break;
  }
  uint64_t v = e->value;
  pthread_mutex_unlock(&e->lock);
  return v;
}

void wr_sleep_ms(uint32_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

uint64_t wr_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint32_t wr_self_pid(void) { return (uint32_t)getpid(); }

uint32_t wr_random_seed(void) {
  uint32_t v = 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    v = (uint32_t)ts.tv_nsec * 2654435761u ^ (uint32_t)getpid();
  }
  return v;
}
