#include "capture/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contract.h" /* WR_STAT_*: the counters the diagnostics name */
#include "os/platform.h"

#define PATH_CAP 4096

/* A held packet: open addressing by cookie, linear probing, backward-shift
 * deletion; cookie 0 marks an empty slot (cookies start at 1). */
typedef struct {
  uint64_t cookie;
  uint8_t *data; /* the copy of its bytes, or NULL */
  uint32_t len;
  uint32_t flags, if_idx, sub_if_idx;
  _Alignas(8) uint8_t meta[WR_CAPTURE_META_MAX];
} held_entry;

struct wr_capture {
  wr_engine *engine;
  wr_capture_io ops;
  void *io;

  /* Guarded by lock: everything from here to the loop's state. */
  wr_mutex lock;
  held_entry *slots;
  size_t cap; /* power of two, or 0 */
  size_t count;
  uint64_t next_cookie;
  /* The batch being decided. */
  uint64_t batch_first;
  size_t batch_n;
  const uint8_t *batch_meta;
  uint8_t *reported; /* reported[i]: the batch's packet i had its verdict */
  size_t reported_cap;
  uint64_t traps;

  /* The polling thread's. */
  uint32_t config_gen;
  uint32_t scope_gen;
  uint64_t next_tick;
  wr_query *queries; /* room for query_max */
  size_t query_max;
  char *path;
  wr_thread timer;
  wr_event stop;
  int timer_started;
};

/* ------------------------------------------------------------------------
 * Held packets */

static size_t held_home(const wr_capture *c, uint64_t cookie) {
  return (size_t)((cookie * 0x9e3779b97f4a7c15ull) >> 20) & (c->cap - 1);
}

static int held_grow(wr_capture *c) {
  size_t ncap = c->cap ? c->cap * 2 : 256;
  held_entry *ns = calloc(ncap, sizeof *ns);
  if (!ns) return -1;
  held_entry *old = c->slots;
  size_t ocap = c->cap;
  c->slots = ns;
  c->cap = ncap;
  for (size_t i = 0; i < ocap; i++) {
    if (!old[i].cookie) continue;
    size_t j = held_home(c, old[i].cookie);
    while (ns[j].cookie) j = (j + 1) & (ncap - 1);
    ns[j] = old[i];
  }
  free(old);
  return 0;
}

static void held_put(wr_capture *c, const wr_packet *p, const void *meta) {
  if ((c->count + 1) * 2 > c->cap && held_grow(c) != 0) return;
  uint8_t *copy = NULL;
  if (c->ops.keep_held_bytes) {
    copy = malloc(p->len ? p->len : 1);
    if (!copy) return;
    memcpy(copy, p->data, p->len);
  }
  size_t j = held_home(c, p->cookie);
  while (c->slots[j].cookie) j = (j + 1) & (c->cap - 1);
  held_entry *h = &c->slots[j];
  h->cookie = p->cookie;
  h->data = copy;
  h->len = p->len;
  h->flags = p->flags;
  h->if_idx = p->if_idx;
  h->sub_if_idx = p->sub_if_idx;
  if (meta) memcpy(h->meta, meta, c->ops.meta_size);
  else memset(h->meta, 0, sizeof h->meta);
  c->count++;
}

/* Takes an entry out, its metadata into meta; 1 if it was there. */
static int held_take(wr_capture *c, uint64_t cookie, void *meta) {
  if (!c->count) return 0;
  size_t mask = c->cap - 1, j = held_home(c, cookie);
  while (c->slots[j].cookie && c->slots[j].cookie != cookie) j = (j + 1) & mask;
  if (!c->slots[j].cookie) return 0;
  memcpy(meta, c->slots[j].meta, c->ops.meta_size);
  free(c->slots[j].data);
  c->slots[j].cookie = 0;
  c->count--;
  /* Backward shift: move later entries of the probe run into the hole. */
  size_t hole = j;
  for (size_t k = (j + 1) & mask; c->slots[k].cookie; k = (k + 1) & mask) {
    size_t home = held_home(c, c->slots[k].cookie);
    if (((k - home) & mask) >= ((k - hole) & mask)) {
      c->slots[hole] = c->slots[k];
      c->slots[k].cookie = 0;
      hole = k;
    }
  }
  return 1;
}

/* Every held packet goes out as it came, and is forgotten (lock held). */
static void fail_open_locked(wr_capture *c) {
  for (size_t i = 0; i < c->cap && c->count; i++) {
    held_entry *h = &c->slots[i];
    if (!h->cookie) continue;
    wr_packet p = {h->cookie, h->data, h->len, h->flags, h->if_idx, h->sub_if_idx};
    c->ops.send(c->io, h->meta, &p, WR_V_PASS, (h->flags & WR_PKT_OUTBOUND) ? WR_OUT_OUTBOUND : 0);
    free(h->data);
    h->cookie = 0;
    c->count--;
  }
  c->count = 0;
}

/* ------------------------------------------------------------------------
 * Verdicts */

/* The engine's verdict callback (the core's lock and the engine's held). */
static void on_verdict(void *ctx, const wr_packet *p, uint32_t verdict, uint32_t out_flags) {
  wr_capture *c = ctx;
  _Alignas(8) uint8_t meta_buf[WR_CAPTURE_META_MAX];
  const void *meta = NULL;
  if (p->cookie >= c->batch_first && p->cookie - c->batch_first < c->batch_n) {
    size_t i = (size_t)(p->cookie - c->batch_first);
    meta = c->batch_meta + i * c->ops.meta_size;
    c->reported[i] = 1;
  } else if (held_take(c, p->cookie, meta_buf)) {
    meta = meta_buf;
  }
  if (verdict == WR_V_HELD) held_put(c, p, meta);
  else c->ops.send(c->io, meta, p, verdict, out_flags);
}

/* A packet passed as it came (lock held). */
static void pass_locked(wr_capture *c, const void *meta, const wr_packet *p) {
  c->ops.send(c->io, meta, p, WR_V_PASS, (p->flags & WR_PKT_OUTBOUND) ? WR_OUT_OUTBOUND : 0);
}

/* After an engine call (lock held): a trap lost the held packets, so they
 * go out unchanged (they are older), then the packets of the call's batch
 * (c->batch_n of them) it left undecided; then the sends leave. */
static void after_engine_locked(wr_capture *c, int rc, const wr_packet *pkts) {
  if (rc == WR_ENGINE_TRAPPED) {
    c->traps++;
    fail_open_locked(c);
    for (size_t i = 0; i < c->batch_n; i++) {
      if (!c->reported[i]) pass_locked(c, c->batch_meta + i * c->ops.meta_size, &pkts[i]);
    }
  }
  c->batch_n = 0;
  c->ops.flush(c->io);
}

void wr_capture_process(wr_capture *c, wr_packet *pkts, const void *metas, size_t n) {
  if (n == 0) return;
  wr_mutex_lock(&c->lock);
  if (n > c->reported_cap) {
    uint8_t *r = realloc(c->reported, n);
    if (!r) {
      /* No room to track the batch: it passes as it is. */
      for (size_t i = 0; i < n; i++) pass_locked(c, (const uint8_t *)metas + i * c->ops.meta_size, &pkts[i]);
      c->ops.flush(c->io);
      wr_mutex_unlock(&c->lock);
      return;
    }
    c->reported = r;
    c->reported_cap = n;
  }
  memset(c->reported, 0, n);
  for (size_t i = 0; i < n; i++) pkts[i].cookie = c->next_cookie + i;
  c->batch_first = c->next_cookie;
  c->batch_n = n;
  c->batch_meta = metas;
  c->next_cookie += n;
  int rc = wr_engine_process(c->engine, pkts, n, (uint32_t)wr_now_ms(), on_verdict, c);
  after_engine_locked(c, rc, pkts);
  wr_mutex_unlock(&c->lock);
}

void wr_capture_fact(wr_capture *c, const wr_owner_fact *f) {
  wr_mutex_lock(&c->lock);
  int rc = wr_engine_owner(c->engine, f, (uint32_t)wr_now_ms(), on_verdict, c);
  after_engine_locked(c, rc, NULL);
  wr_mutex_unlock(&c->lock);
}

void wr_capture_fail_open(wr_capture *c) {
  wr_mutex_lock(&c->lock);
  fail_open_locked(c);
  c->ops.flush(c->io);
  wr_mutex_unlock(&c->lock);
}

size_t wr_capture_held(wr_capture *c) {
  wr_mutex_lock(&c->lock);
  size_t n = c->count;
  wr_mutex_unlock(&c->lock);
  return n;
}

uint64_t wr_capture_traps(wr_capture *c) {
  wr_mutex_lock(&c->lock);
  uint64_t n = c->traps;
  wr_mutex_unlock(&c->lock);
  return n;
}

void wr_capture_syn_report(wr_capture *c, const char *unanswered_causes, const char *refused_causes, char *out,
                           size_t cap) {
  uint64_t unanswered = wr_engine_stat(c->engine, WR_STAT_REDIRECTED_SYN_UNANSWERED);
  uint64_t refused = wr_engine_stat(c->engine, WR_STAT_REDIRECTED_SYN_REFUSED);
  unsigned port = wr_engine_app_port(c->engine);
  int n = 0;
  out[0] = '\0';
  if (unanswered) {
    n = snprintf(out, cap,
                 "; redirected_syn_unanswered %llu: redirected connections got no answer from app port %u within 1 "
                 "s. Likely: %s",
                 (unsigned long long)unanswered, port, unanswered_causes);
  }
  if (refused && n >= 0 && (size_t)n < cap) {
    snprintf(out + n, cap - (size_t)n,
             "; redirected_syn_refused %llu: app port %u answered redirected connections with a RST. Likely: %s",
             (unsigned long long)refused, port, refused_causes);
  }
}

/* ------------------------------------------------------------------------
 * The loop: ticks, owner queries, configuration changes */

/* Asks the backend for the owners of every pending flow. Not found is no
 * answer: a socket event may still come, or the hold timeout decides. */
static void answer_queries(wr_capture *c) {
  size_t n;
  do {
    n = wr_engine_queries(c->engine, c->queries, c->query_max);
    for (size_t i = 0; i < n; i++) {
      wr_owner_fact f;
      if (c->ops.find_owner(c->io, &c->queries[i], &f, c->path, PATH_CAP)) wr_capture_fact(c, &f);
    }
  } while (n > 0 && n == c->query_max);
}

uint32_t wr_capture_poll(wr_capture *c) {
  uint32_t gen = wr_engine_config_generation(c->engine);
  if (gen != c->config_gen) {
    c->config_gen = gen;
    if (c->ops.policy_changed) c->ops.policy_changed(c->io);
  }
  uint32_t scope = wr_engine_scope_generation(c->engine);
  if (scope != c->scope_gen) {
    c->scope_gen = scope;
    if (c->ops.scope_changed) c->ops.scope_changed(c->io);
  }
  answer_queries(c);
  uint64_t now = wr_now_ms();
  if (now >= c->next_tick) {
    wr_mutex_lock(&c->lock);
    int rc = wr_engine_tick(c->engine, (uint32_t)now, on_verdict, c);
    after_engine_locked(c, rc, NULL);
    wr_mutex_unlock(&c->lock);
    answer_queries(c);
    now = wr_now_ms();
    c->next_tick = now + WR_CAPTURE_TICK_MS;
  }
  return c->next_tick > now ? (uint32_t)(c->next_tick - now) : 0;
}

static void timer_thread(void *arg) {
  wr_capture *c = arg;
  for (;;) {
    uint32_t wait = wr_capture_poll(c);
    if (wr_event_wait(&c->stop, wait ? wait : 1)) break;
  }
}

int wr_capture_start_timer(wr_capture *c) {
  if (wr_event_init(&c->stop) != 0) return -1;
  int rc = wr_thread_start(&c->timer, timer_thread, c);
  if (rc != 0) {
    wr_event_destroy(&c->stop);
    return rc;
  }
  c->timer_started = 1;
  return 0;
}

void wr_capture_stop_timer(wr_capture *c) {
  if (!c->timer_started) return;
  wr_event_set(&c->stop);
  wr_thread_join(&c->timer);
  wr_event_destroy(&c->stop);
  c->timer_started = 0;
}

/* ------------------------------------------------------------------------
 * Life */

wr_capture *wr_capture_new(wr_engine *engine, const wr_capture_io *ops, void *io) {
  if (ops->meta_size > WR_CAPTURE_META_MAX) return NULL;
  wr_capture *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->engine = engine;
  c->ops = *ops;
  c->io = io;
  wr_mutex unlocked = WR_MUTEX_INIT;
  c->lock = unlocked;
  c->next_cookie = 1;
  c->query_max = wr_engine_query_max(engine);
  c->queries = malloc((c->query_max ? c->query_max : 1) * sizeof *c->queries);
  c->path = malloc(PATH_CAP);
  if (!c->queries || !c->path) {
    wr_capture_free(c);
    return NULL;
  }
  c->config_gen = wr_engine_config_generation(engine);
  c->scope_gen = wr_engine_scope_generation(engine);
  c->next_tick = wr_now_ms() + WR_CAPTURE_TICK_MS;
  return c;
}

void wr_capture_free(wr_capture *c) {
  if (!c) return;
  wr_capture_stop_timer(c);
  if (c->count) wr_capture_fail_open(c);
  free(c->slots);
  free(c->reported);
  free(c->queries);
  free(c->path);
  free(c);
}
