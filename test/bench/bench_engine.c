/* The engine's speed, on one core, through the engine host the backends use
 * (shim/host.h: copy into the engine, decide, verdict callback):
 *
 *   established   packets/s rewritten on established redirected flows
 *   new flows     flows/s: SYN held, owner fact, SYN released rewritten
 *   lookups       lookups/s answered (the engine host, and the public ABI)
 *   memory        bytes of memory per flow table entry
 *
 * Prints "name value unit" lines for test/bench.mts to tabulate.
 *
 *   bench_engine [seconds]   each figure measured for that long (default 2)
 *   bench_engine --count N   each over exactly N operations (packets, in
 *                            whole batches of 256; flows, at most 1,000,000;
 *                            lookups), for
 *                            valgrind --tool=callgrind --toggle-collect=measure_lookups
 *                            (or measure_established, measure_new_flows):
 *                            instructions per operation, the same on every
 *                            run, to compare two builds on a busy machine */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host.h"
#include "tcp4.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double g_seconds = 2.0;
static uint64_t g_count; /* 0: timed */

/* Whether a measured loop goes on after `done` operations since t0. */
static int more(double t0, uint64_t done) { return g_count ? done < g_count : now_s() - t0 < g_seconds; }

static uint64_t verdicts, rewritten;
static void count(void *ctx, const wr_packet *p, uint32_t v, uint32_t f) {
  (void)ctx;
  (void)p;
  (void)f;
  verdicts++;
  if (v == WR_V_MODIFIED) rewritten++;
}

#define C_ADDR 0x0a000002u /* 10.0.0.2 */
#define D_ADDR 0xc612000au /* 198.18.0.10 */
#define APP 8080

static wr_engine *engine(const char *config) {
  char err[256];
  wr_engine *e = wr_engine_new(1000, err, sizeof err);
  if (!e || wr_engine_config(e, config, strlen(config), err, sizeof err) != 0) {
    fprintf(stderr, "engine: %s\n", err);
    exit(1);
  }
  wr_engine_set_app_port(e, APP);
  wr_engine_start(e, 1, err, sizeof err);
  return e;
}

/* The owner of the connection client:cport -> D:443 is PID 500. */
static void fact(wr_engine *e, uint32_t client, uint16_t cport, uint32_t now) {
  wr_owner_fact f;
  memset(&f, 0, sizeof f);
  f.kind = WR_OWNER_CONNECT;
  f.proto = 6;
  f.family = 4;
  uint32_t c = htonl(client), d = htonl(D_ADDR);
  memcpy(f.local, &c, 4);
  memcpy(f.remote, &d, 4);
  f.local_port = cport;
  f.remote_port = 443;
  f.pid = 500;
  f.path = "/usr/bin/bench";
  f.path_len = strlen(f.path);
  wr_engine_owner(e, &f, now, count, NULL);
}

/* The measured loops, from t0: out of line and under their own names, so
 * callgrind can count them alone. */
__attribute__((noinline, noclone)) static uint64_t measure_established(wr_engine *e, const wr_packet *pk,
                                                                       size_t n, double t0) {
  uint64_t packets = 0;
  while (more(t0, packets)) {
    wr_engine_process(e, pk, n, 2, count, NULL);
    packets += n;
  }
  return packets;
}

static void established(void) {
  wr_engine *e = engine("{\"intercept_pids\":[500]}");
  enum { FLOWS = 1024, BATCH = 256 };
  static uint8_t buf[BATCH][128];
  wr_packet pk[BATCH];
  for (int i = 0; i < FLOWS; i++) {
    uint16_t port = (uint16_t)(20000 + i);
    fact(e, C_ADDR, port, 1);
    size_t n = tcp4(buf[0], C_ADDR, port, D_ADDR, 443, 0x02, 0);
    wr_packet syn = {0, buf[0], (uint32_t)n, WR_PKT_OUTBOUND, 1, 0};
    wr_engine_process(e, &syn, 1, 1, count, NULL);
    n = tcp4(buf[0], C_ADDR, APP, D_ADDR, port, 0x12, 0);
    wr_packet synack = {0, buf[0], (uint32_t)n, WR_PKT_OUTBOUND, 1, 0};
    wr_engine_process(e, &synack, 1, 1, count, NULL);
  }
  for (int i = 0; i < BATCH; i++) {
    size_t n = tcp4(buf[i], C_ADDR, (uint16_t)(20000 + (i * 7) % FLOWS), D_ADDR, 443, 0x18, 64);
    pk[i] = (wr_packet){(uint64_t)i, buf[i], (uint32_t)n, WR_PKT_OUTBOUND, 1, 0};
  }
  rewritten = 0;
  double t0 = now_s();
  uint64_t packets = measure_established(e, pk, BATCH, t0);
  double t = now_s();
  if (rewritten != packets) {
    fprintf(stderr, "established: only %llu of %llu packets were rewritten\n", (unsigned long long)rewritten,
            (unsigned long long)packets);
    exit(1);
  }
  printf("established %.0f packets/s\n", (double)packets / (t - t0));
  uint32_t cap, per;
  wr_engine_table(e, &cap, &per);
  printf("memory %u bytes/flow\n", per);
  wr_engine_free(e);
}

__attribute__((noinline, noclone)) static uint64_t measure_new_flows(wr_engine *e, double t0) {
  uint8_t buf[128];
  uint64_t flows = 0;
  uint32_t src = 0x0a000000u;
  int chunk = g_count ? 1 : 1000; /* flows between looks at the clock */
  while (more(t0, flows) && flows < 1000000) {
    for (int k = 0; k < chunk; k++, flows++) {
      /* A new client address and port each time: always a new flow. */
      uint32_t c = src + (uint32_t)(flows >> 16) + 2;
      uint16_t port = (uint16_t)(1024 + (flows & 0xffff) % 60000);
      size_t n = tcp4(buf, c, port, D_ADDR, 443, 0x02, 0);
      wr_packet syn = {flows, buf, (uint32_t)n, WR_PKT_OUTBOUND, 1, 0};
      wr_engine_process(e, &syn, 1, 2, count, NULL);
      fact(e, c, port, 2);
    }
  }
  return flows;
}

static void new_flows(void) {
  wr_engine *e = engine("{\"intercept_pids\":[500],\"max_flows\":1048576}");
  rewritten = 0;
  double t0 = now_s();
  uint64_t flows = measure_new_flows(e, t0);
  double t = now_s();
  if (rewritten != flows) {
    fprintf(stderr, "new flows: %llu of %llu released rewritten\n", (unsigned long long)rewritten,
            (unsigned long long)flows);
    exit(1);
  }
  printf("new-flows %.0f flows/s\n", (double)flows / (t - t0));
  wr_engine_free(e);
}

enum { LOOKUP_FLOWS = 1024 };

__attribute__((noinline, noclone)) static uint64_t measure_lookups(wr_engine *e, double t0, uint64_t *found) {
  uint8_t peer[16] = {0}, local[16] = {0};
  uint32_t d = htonl(D_ADDR), c = htonl(C_ADDR);
  memcpy(peer, &d, 4);
  memcpy(local, &c, 4);
  wr_origin o;
  uint64_t n = 0;
  int chunk = g_count ? 1 : 10000; /* lookups between looks at the clock */
  while (more(t0, n)) {
    for (int k = 0; k < chunk; k++, n++) {
      *found += (uint64_t)wr_engine_lookup(e, 6, 4, peer, (uint16_t)(20000 + n % LOOKUP_FLOWS), 4, local, APP, &o);
    }
  }
  return n;
}

static void lookups(void) {
  wr_engine *e = engine("{\"intercept_pids\":[500]}");
  uint8_t buf[128];
  for (int i = 0; i < LOOKUP_FLOWS; i++) {
    uint16_t port = (uint16_t)(20000 + i);
    fact(e, C_ADDR, port, 1);
    size_t n = tcp4(buf, C_ADDR, port, D_ADDR, 443, 0x02, 0);
    wr_packet syn = {0, buf, (uint32_t)n, WR_PKT_OUTBOUND, 1, 0};
    wr_engine_process(e, &syn, 1, 1, count, NULL);
  }
  uint64_t found = 0;
  double t0 = now_s();
  uint64_t n = measure_lookups(e, t0, &found);
  double t = now_s();
  if (found != n) fprintf(stderr, "lookups: %llu of %llu found\n", (unsigned long long)found, (unsigned long long)n);
  printf("lookups %.0f lookups/s\n", (double)n / (t - t0));
  printf("lookup-time %.0f ns/lookup\n", (t - t0) * 1e9 / (double)n);
  wr_engine_free(e);
}

int main(int argc, char **argv) {
  if (argc > 2 && strcmp(argv[1], "--count") == 0) {
    g_count = strtoull(argv[2], NULL, 10);
    if (g_count == 0) g_count = 1;
  } else if (argc > 1) {
    g_seconds = atof(argv[1]);
  }
  established();
  new_flows();
  lookups();
  return 0;
}
