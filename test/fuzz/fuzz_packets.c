/* libFuzzer target: the engine's packet entry, through the engine host the
 * backends use. Input: one flags byte (bit 0 outbound, bit 1 loopback, bit 2
 * checksum not ready, bits 3-4 how to answer owner queries), then the
 * packet. A trap inside the engine is a finding (it aborts); so is any
 * sanitizer report, and any packet without exactly one final verdict. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"

static wr_engine *e;
static uint32_t now = 1;
static uint64_t decided, held;

static void cb(void *ctx, const wr_packet *p, uint32_t v, uint32_t f) {
  (void)ctx;
  (void)f;
  if (v == WR_V_HELD) {
    held++;
    return;
  }
  if (v > WR_V_DROP) abort();
  /* The bytes to send must be readable, and as long as the packet. */
  volatile uint8_t sink = 0;
  for (uint32_t i = 0; i < p->len; i++) sink ^= p->data[i];
  (void)sink;
  decided++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  char err[256];
  e = wr_engine_new(1000, err, sizeof err);
  const char *cfg = "{\"intercept\":\"!nothing\",\"bypass\":[],\"max_flows\":4096,\"max_held_packets\":256,"
                    "\"hold_timeout_ms\":50}";
  if (!e || wr_engine_config(e, cfg, strlen(cfg), err, sizeof err) != 0) {
    fprintf(stderr, "setup: %s\n", err);
    abort();
  }
  wr_engine_set_app_port(e, 8080);
  if (wr_engine_start(e, now, err, sizeof err) != 0) abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t flags = data[0];
  wr_packet p = {0};
  p.cookie = now;
  p.data = data + 1;
  p.len = (uint32_t)(size - 1);
  p.flags = flags & 7u;
  p.if_idx = 1;
  now += 7;
  if (wr_engine_process(e, &p, 1, now, cb, NULL) == WR_ENGINE_TRAPPED) abort();
  /* Answer the owner queries: a process, an unknown owner, or nothing yet. */
  wr_query q[16];
  size_t n = wr_engine_queries(e, q, 16);
  for (size_t i = 0; i < n; i++) {
    unsigned how = (flags >> 3) & 3u;
    if (how == 3) continue;
    wr_owner_fact f;
    wr_fact_for_query(&f, &q[i],
                      how == 0 ? (q[i].inbound ? WR_OWNER_ACCEPT : WR_OWNER_CONNECT)
                      : how == 1 ? WR_OWNER_UNKNOWN
                                 : WR_OWNER_LISTEN);
    f.pid = 500 + (unsigned)(now % 3);
    f.path = "/usr/bin/fuzz";
    f.path_len = 13;
    if (wr_engine_owner(e, &f, now, cb, NULL) == WR_ENGINE_TRAPPED) abort();
  }
  if ((now & 0xff) < 7 && wr_engine_tick(e, now, cb, NULL) == WR_ENGINE_TRAPPED) abort();
  /* Lookups of what the packet might have become. */
  wr_origin o;
  uint8_t a[16] = {0};
  if (size >= 17) memcpy(a, data + 1, 16);
  if (wr_engine_lookup(e, 6, 4, a, 80, 4, a, 8080, &o) == WR_ENGINE_TRAPPED) abort();
  /* Every verdict is final once: never more decided than seen plus held. */
  if (decided > (uint64_t)now + held) abort();
  return 0;
}
