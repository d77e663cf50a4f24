/* Linux capture backend (NFQUEUE). For now the thread only waits for stop:
 * the packet path lands with the NFQUEUE backend issue. */
#ifndef _WIN32
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "platform.h"

struct wr_backend {
  wr_thread thread;
  wr_event stop;
  wr_engine *engine;
};

static void run(void *arg) {
  wr_backend *b = arg;
  while (!wr_event_wait(&b->stop, 1000)) {
  }
}

wr_backend *wr_backend_start(const wr_backend_options *opts, char *err, size_t errlen) {
  wr_backend *b = calloc(1, sizeof *b);
  if (!b) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  b->engine = opts->engine;
  if (wr_event_init(&b->stop) != 0) {
    free(b);
    snprintf(err, errlen, "could not create an event");
    return NULL;
  }
  int rc = wr_thread_start(&b->thread, run, b);
  if (rc != 0) {
    wr_event_destroy(&b->stop);
    free(b);
    snprintf(err, errlen, "could not start the packet thread (error %d)", rc);
    return NULL;
  }
  return b;
}

void wr_backend_stop(wr_backend *b) {
  if (!b) return;
  wr_event_set(&b->stop);
  wr_thread_join(&b->thread);
  wr_event_destroy(&b->stop);
  free(b);
}

size_t wr_backend_diagnostics(wr_backend *b, char *buf, size_t len) {
  (void)b;
  if (buf && len) buf[0] = '\0';
  return 0;
}
#endif
