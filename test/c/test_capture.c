/* The capture core (shim/capture/core.c) with the real engine host and a
 * recording stand-in for a backend's I/O: held packets come back with the
 * metadata they came with, a trap fails open the held packets before the
 * undecided ones, a stop fails open what is still held, owner queries,
 * configuration and capture scope changes reach the backend, and sends from
 * several threads keep each thread's order.
 *
 *   test_capture CASE
 */
#include "check.h" /* first: it sets _GNU_SOURCE */

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/core.h"
#include "host.h"
#include "os/platform.h"
#include "tcp4.h"

#define APP 8080
#define OWNER_PID 500u
#define C_ADDR 0x0a000002u /* 10.0.0.2 */
#define D_ADDR 0xc612000au /* 198.18.0.10 */

/* ------------------------------------------------------------------------
 * Packets */

/* IPv4 TCP C:sport -> D:443, no payload; returns its length. */
static uint32_t tcp(uint8_t *p, uint16_t sport, uint8_t flags) {
  return (uint32_t)tcp4(p, C_ADDR, sport, D_ADDR, 443, flags, 0);
}

static uint16_t dst_port(const uint8_t *p) { return (uint16_t)(p[22] << 8 | p[23]); }

/* ------------------------------------------------------------------------
 * A recording backend */

typedef struct {
  uint32_t id;
  uint32_t thread;
  uint32_t syn; /* a new flow's first packet (held until its owner is known) */
} meta;

typedef struct {
  uint32_t id, thread, syn, verdict, out_flags, len;
  int has_data;
  uint8_t data[64];
} sent;

#define MAX_SENT 100000

typedef struct {
  sent *sent;
  size_t n_sent;
  size_t flushes, unflushed;
  int answer;         /* find_owner: 1 answer with OWNER_PID, 0 none */
  size_t queries;     /* find_owner calls */
  size_t policy_changes;
  size_t scope_changes;
  wr_engine *engine;
  wr_capture_scope scope; /* read at the last scope change */
  int scope_rc;
} recorder;

static void rec_send(void *io, const void *m, const wr_packet *p, uint32_t verdict, uint32_t out_flags) {
  recorder *r = io;
  const meta *mt = m;
  if (r->n_sent == MAX_SENT) return;
  sent *s = &r->sent[r->n_sent++];
  memset(s, 0, sizeof *s);
  s->id = mt ? mt->id : 0;
  s->thread = mt ? mt->thread : 0;
  s->syn = mt ? mt->syn : 0;
  s->verdict = verdict;
  s->out_flags = out_flags;
  s->len = p->len;
  s->has_data = p->data != NULL;
  if (p->data) memcpy(s->data, p->data, p->len < sizeof s->data ? p->len : sizeof s->data);
  r->unflushed++;
}

static void rec_flush(void *io) {
  recorder *r = io;
  r->flushes++;
  r->unflushed = 0;
}

static int rec_find_owner(void *io, const wr_query *q, wr_owner_fact *f, char *path, size_t cap) {
  recorder *r = io;
  r->queries++;
  if (!r->answer) return 0;
  wr_fact_for_query(f, q, WR_OWNER_CONNECT);
  f->pid = OWNER_PID;
  snprintf(path, cap, "/usr/bin/client");
  f->path = path;
  f->path_len = strlen(path);
  return 1;
}

static void rec_policy_changed(void *io) { ((recorder *)io)->policy_changes++; }

static void rec_scope_changed(void *io) {
  recorder *r = io;
  r->scope_changes++;
  r->scope_rc = wr_engine_capture_scope(r->engine, &r->scope);
}

static wr_engine *engine(void) {
  char err[256];
  const char *cfg = "{\"intercept_pids\":[500],\"hold_timeout_ms\":60000}";
  wr_engine *e = wr_engine_new(1000, err, sizeof err);
  if (!e || wr_engine_config(e, cfg, strlen(cfg), err, sizeof err) != 0) {
    fprintf(stderr, "engine: %s\n", err);
    exit(2);
  }
  wr_engine_set_app_port(e, APP);
  if (wr_engine_start(e, (uint32_t)wr_now_ms(), err, sizeof err) != 0) {
    fprintf(stderr, "engine start: %s\n", err);
    exit(2);
  }
  return e;
}

static wr_capture *capture(wr_engine *e, recorder *r, int keep_bytes) {
  memset(r, 0, sizeof *r);
  r->sent = calloc(MAX_SENT, sizeof *r->sent);
  r->engine = e;
  wr_capture_io ops = {sizeof(meta),       keep_bytes,        rec_send, rec_flush, rec_find_owner,
                       rec_policy_changed, rec_scope_changed};
  wr_capture *c = wr_capture_new(e, &ops, r);
  if (!r->sent || !c) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return c;
}

/* One outbound packet with its metadata through the core. */
static void one(wr_capture *c, const uint8_t *data, uint32_t len, uint32_t id) {
  wr_packet p = {0, data, len, WR_PKT_OUTBOUND, 7, 3};
  meta m = {id, 0, 0};
  wr_capture_process(c, &p, &m, 1);
}

/* ------------------------------------------------------------------------
 * Cases */

/* A new flow's SYN is held; the owner query goes to the backend; its answer
 * releases the SYN rewritten, with the metadata it came with. */
TEST_CASE(held_released) {
  wr_engine *e = engine();
  recorder r;
  wr_capture *c = capture(e, &r, 0);
  uint8_t syn[64];
  uint32_t n = tcp(syn, 40000, 0x02);
  one(c, syn, n, 11);
  CHECK(r.n_sent == 0, "the SYN is held, not sent (%zu sends)", r.n_sent);
  CHECK(wr_capture_held(c) == 1, "one packet held (%zu)", wr_capture_held(c));
  r.answer = 1;
  wr_capture_poll(c);
  CHECK(r.queries == 1, "the owner was asked once (%zu)", r.queries);
  CHECK(r.n_sent == 1, "released (%zu sends)", r.n_sent);
  if (r.n_sent == 1) {
    CHECK(r.sent[0].id == 11, "with its own metadata (id %u)", r.sent[0].id);
    CHECK(r.sent[0].verdict == WR_V_MODIFIED, "rewritten (verdict %u)", r.sent[0].verdict);
    CHECK(dst_port(r.sent[0].data) == APP, "to the app port (%u)", dst_port(r.sent[0].data));
  }
  CHECK(r.unflushed == 0 && r.flushes > 0, "and flushed");
  CHECK(wr_capture_held(c) == 0, "nothing held");
  wr_capture_free(c);
  CHECK(r.n_sent == 1, "nothing more at free");
  free(r.sent);
  wr_engine_free(e);
}

/* A trap: the held SYN goes out first, unchanged (its bytes kept by the
 * core), then the undecided packets of the trapped call, in order. */
TEST_CASE(trap_order) {
  wr_engine *e = engine();
  recorder r;
  wr_capture *c = capture(e, &r, 1);
  uint8_t syn[64], a[64], b[64];
  uint32_t n = tcp(syn, 40001, 0x02), an = tcp(a, 40002, 0x10), bn = tcp(b, 40003, 0x10);
  one(c, syn, n, 21);
  CHECK(wr_capture_held(c) == 1, "the SYN is held");
  wr_engine_arm_fault(e, 2); /* the next batch traps */
  wr_packet p[2] = {{0, a, an, WR_PKT_OUTBOUND, 7, 3}, {0, b, bn, WR_PKT_OUTBOUND, 7, 3}};
  meta m[2] = {{22, 0, 0}, {23, 0, 0}};
  wr_capture_process(c, p, m, 2);
  CHECK(wr_capture_traps(c) == 1, "one trap counted (%llu)", (unsigned long long)wr_capture_traps(c));
  CHECK(r.n_sent == 3, "three sends (%zu)", r.n_sent);
  if (r.n_sent == 3) {
    static const uint32_t want[3] = {21, 22, 23};
    for (int i = 0; i < 3; i++) {
      CHECK(r.sent[i].id == want[i], "send %d is id %u (got %u)", i, want[i], r.sent[i].id);
      CHECK(r.sent[i].verdict == WR_V_PASS, "send %d passes unchanged", i);
      CHECK(r.sent[i].out_flags == WR_OUT_OUTBOUND, "send %d keeps its direction", i);
    }
    CHECK(r.sent[0].has_data && r.sent[0].len == n && memcmp(r.sent[0].data, syn, n) == 0,
          "the held SYN's own bytes");
  }
  CHECK(r.unflushed == 0, "flushed");
  CHECK(wr_capture_held(c) == 0, "nothing held after the trap");
  /* The rebuilt engine works: a new SYN is held again. */
  uint8_t syn2[64];
  one(c, syn2, tcp(syn2, 40004, 0x02), 24);
  CHECK(wr_capture_held(c) == 1, "the rebuilt engine holds again");
  wr_capture_free(c);
  free(r.sent);
  wr_engine_free(e);
}

/* Freeing the core (a stop) passes what is still held; a backend that keeps
 * no bytes gets its metadata only. */
TEST_CASE(free_fails_open) {
  wr_engine *e = engine();
  recorder r;
  wr_capture *c = capture(e, &r, 0);
  uint8_t s1[64], s2[64];
  one(c, s1, tcp(s1, 40010, 0x02), 31);
  one(c, s2, tcp(s2, 40011, 0x02), 32);
  CHECK(wr_capture_held(c) == 2, "two held");
  wr_capture_free(c);
  CHECK(r.n_sent == 2, "both sent at free (%zu)", r.n_sent);
  uint32_t seen = 0;
  for (size_t i = 0; i < r.n_sent; i++) {
    CHECK(r.sent[i].verdict == WR_V_PASS && !r.sent[i].has_data, "send %zu: a pass by metadata alone", i);
    seen |= r.sent[i].id == 31 ? 1u : r.sent[i].id == 32 ? 2u : 4u;
  }
  CHECK(seen == 3, "ids 31 and 32 (mask %u)", seen);
  CHECK(r.unflushed == 0, "flushed");
  free(r.sent);
  wr_engine_free(e);
}

/* The loop tells the backend about a configuration change once, and answers
 * no query when nothing waits. */
TEST_CASE(policy_changed) {
  wr_engine *e = engine();
  recorder r;
  wr_capture *c = capture(e, &r, 0);
  wr_capture_poll(c);
  CHECK(r.policy_changes == 0, "no change yet");
  CHECK(r.queries == 0, "no query without a pending flow");
  const char *cfg = "{\"intercept_pids\":[501]}";
  char err[128];
  CHECK(wr_engine_config(e, cfg, strlen(cfg), err, sizeof err) == 0, "config: %s", err);
  wr_capture_poll(c);
  wr_capture_poll(c);
  CHECK(r.policy_changes == 1, "one change seen (%zu)", r.policy_changes);
  wr_capture_free(c);
  free(r.sent);
  wr_engine_free(e);
}

static int side_has_port(const wr_scope_side *s, uint16_t lo, uint16_t hi) {
  for (size_t i = 0; i < s->n_ports; i++) {
    if (s->ports[i].lo == lo && s->ports[i].hi == hi) return 1;
  }
  return 0;
}

/* The loop tells the backend when the capture scope may have changed (a
 * configuration, a new app port, a rebuild after a trap), and the host reads
 * the scope whole: flags, app ports, each side's ports and networks. A flow
 * redirected before a narrower configuration stays in it. */
TEST_CASE(scope_changed) {
  wr_engine *e = engine();
  recorder r;
  wr_capture *c = capture(e, &r, 0);
  wr_capture_poll(c);
  CHECK(r.scope_changes == 0, "no change yet (%zu)", r.scope_changes);
  const char *cfg = "{\"intercept_pids\":[500],\"protocols\":[\"tcp\"],\"ports\":[443,\"8000-8100\"],"
                    "\"destinations\":[\"fd00::/8\",\"198.18.0.0/15\"],\"hold_timeout_ms\":60000}";
  char err[128];
  CHECK(wr_engine_config(e, cfg, strlen(cfg), err, sizeof err) == 0, "config: %s", err);
  wr_capture_poll(c);
  wr_capture_poll(c);
  CHECK(r.scope_changes == 1 && r.scope_rc == 0, "one change seen (%zu), scope read (%d)", r.scope_changes, r.scope_rc);
  const wr_capture_scope *s = &r.scope;
  CHECK(s->flags == (WR_SCOPE_TCP | WR_SCOPE_REMOTE | WR_SCOPE_LOCAL), "flags 0x%x", s->flags);
  CHECK(s->n_app_ports == 1 && s->app_ports[0] == APP, "the app port (%zu)", s->n_app_ports);
  CHECK(s->remote.n_ports == 2 && side_has_port(&s->remote, 443, 443) && side_has_port(&s->remote, 8000, 8100),
        "remote ports (%zu)", s->remote.n_ports);
  static const uint8_t v4[16] = {198, 18}, v6[16] = {0xfd};
  CHECK(s->remote.n_nets == 2 && s->remote.nets[0].family == 4 && s->remote.nets[0].prefix == 15 &&
            memcmp(s->remote.nets[0].addr, v4, 16) == 0 && s->remote.nets[1].family == 6 &&
            s->remote.nets[1].prefix == 8 && memcmp(s->remote.nets[1].addr, v6, 16) == 0,
        "remote networks (%zu)", s->remote.n_nets);
  CHECK(s->local.n_ports == 2 && s->local.n_nets == 2, "the local side has the same lists");
  /* The same app port is no change; another one is. */
  wr_engine_set_app_port(e, APP);
  wr_capture_poll(c);
  CHECK(r.scope_changes == 1, "same app port: no change (%zu)", r.scope_changes);
  wr_engine_set_app_port(e, APP + 1);
  wr_capture_poll(c);
  CHECK(r.scope_changes == 2 && s->n_app_ports == 1 && s->app_ports[0] == APP + 1, "new app port (%zu)",
        r.scope_changes);
  /* A connection to D:443 redirected, then a configuration without 443:
   * the flow keeps its port in the scope. */
  uint8_t syn[64];
  one(c, syn, tcp(syn, 40010, 0x02), 41);
  r.answer = 1;
  wr_capture_poll(c);
  CHECK(r.n_sent == 1 && r.sent[0].verdict == WR_V_MODIFIED, "redirected (%zu sends)", r.n_sent);
  cfg = "{\"intercept_pids\":[500],\"ports\":[80]}";
  CHECK(wr_engine_config(e, cfg, strlen(cfg), err, sizeof err) == 0, "config: %s", err);
  wr_capture_poll(c);
  CHECK(r.scope_changes == 3 && side_has_port(&s->remote, 80, 80) && side_has_port(&s->remote, 443, 443) &&
            s->remote.n_ports == 2,
        "the redirected flow's port stays (%zu changes, %zu ports)", r.scope_changes, s->remote.n_ports);
  /* A trap rebuilds the engine without flows: a change, and 443 is gone. */
  wr_engine_arm_fault(e, 2);
  one(c, syn, tcp(syn, 40011, 0x10), 42);
  wr_capture_poll(c);
  CHECK(r.scope_changes == 4 && s->remote.n_ports == 1 && side_has_port(&s->remote, 80, 80),
        "after the rebuild (%zu changes, %zu ports)", r.scope_changes, s->remote.n_ports);
  wr_capture_free(c);
  free(r.sent);
  wr_engine_free(e);
}

/* Threads deciding batches while another polls and answers owner queries:
 * every packet is sent once (each batch's new flow held, then released
 * rewritten), and each thread's other packets leave in the order it gave
 * them. */
#define THREADS 3
#define BATCHES 300
#define PER_BATCH 8

typedef struct {
  wr_capture *c;
  uint32_t thread;
} worker;

static void worker_main(void *arg) {
  worker *w = arg;
  uint8_t data[PER_BATCH][64];
  wr_packet p[PER_BATCH];
  meta m[PER_BATCH];
  uint32_t id = 1;
  for (int b = 0; b < BATCHES; b++) {
    for (int i = 0; i < PER_BATCH; i++) {
      /* The first: a new flow's SYN (held); the others ACKs of flows the
       * engine does not know (passed at once). */
      int syn = i == 0;
      uint16_t port = (uint16_t)(syn ? 30000 + w->thread * 1000 + b : 20000 + w->thread * 1000 + i);
      uint32_t n = tcp(data[i], port, syn ? 0x02 : 0x10);
      p[i] = (wr_packet){0, data[i], n, WR_PKT_OUTBOUND, 7, 3};
      m[i] = (meta){id++, w->thread, (uint32_t)syn};
    }
    wr_capture_process(w->c, p, m, PER_BATCH);
  }
}

static atomic_int g_poll_stop;

static void poller_main(void *arg) {
  wr_capture *c = arg;
  while (!atomic_load(&g_poll_stop)) {
    wr_capture_poll(c);
    wr_sleep_ms(1);
  }
}

TEST_CASE(threads) {
  wr_engine *e = engine();
  recorder r;
  wr_capture *c = capture(e, &r, 1);
  r.answer = 1;
  wr_thread t[THREADS], poller;
  worker w[THREADS];
  atomic_store(&g_poll_stop, 0);
  CHECK(wr_thread_start(&poller, poller_main, c) == 0, "poller started");
  for (uint32_t i = 0; i < THREADS; i++) {
    w[i] = (worker){c, i + 1};
    CHECK(wr_thread_start(&t[i], worker_main, &w[i]) == 0, "thread %u started", i);
  }
  for (int i = 0; i < THREADS; i++) wr_thread_join(&t[i]);
  atomic_store(&g_poll_stop, 1);
  wr_thread_join(&poller);
  wr_capture_poll(c); /* the owners of the last flows */
  size_t held = wr_capture_held(c);
  wr_capture_free(c);
  CHECK(held == 0, "every new flow was released by its owner (%zu still held)", held);
  enum { TOTAL = THREADS * BATCHES * PER_BATCH };
  CHECK(r.n_sent == TOTAL, "as many sends as packets (%zu)", r.n_sent);
  static uint8_t seen[THREADS + 1][BATCHES * PER_BATCH + 1];
  memset(seen, 0, sizeof seen);
  uint32_t last[THREADS + 1] = {0};
  size_t out_of_order = 0, twice = 0, syn_rewritten = 0;
  for (size_t i = 0; i < r.n_sent; i++) {
    const sent *x = &r.sent[i];
    if (x->thread == 0 || x->thread > THREADS || x->id == 0 || x->id > BATCHES * PER_BATCH) {
      out_of_order++;
      continue;
    }
    if (seen[x->thread][x->id]++) twice++;
    if (x->syn) {
      syn_rewritten += x->verdict == WR_V_MODIFIED && dst_port(x->data) == APP;
    } else {
      if (x->id <= last[x->thread]) out_of_order++;
      last[x->thread] = x->id;
    }
  }
  CHECK(twice == 0, "no packet sent twice (%zu)", twice);
  CHECK(syn_rewritten == THREADS * BATCHES, "every SYN released rewritten (%zu)", syn_rewritten);
  CHECK(out_of_order == 0, "each thread's packets in its order (%zu out of place)", out_of_order);
  free(r.sent);
  wr_engine_free(e);
}

int main(int argc, char **argv) { return tests_main(argc, argv); }
