/* A client for the end-to-end tests.
 *
 *   wr_testclient [--wait] [--pause MS] tcp|udp ADDR PORT BYTES [CONNECTIONS]
 *
 * Prints "pid N". With --wait, waits for a line on stdin before connecting
 * (so a test can configure interception by this PID first). TCP: opens
 * CONNECTIONS connections at once (default 1), sends BYTES pseudo-random
 * bytes on each, and checks the echo byte for byte. UDP: one datagram of
 * BYTES on a connected socket (an ICMP error about it fails the receive:
 * "fail answer Connection refused"), checks the answer. Prints "ok BYTES" per connection or
 * "fail <reason>"; exits 0 only when every connection succeeded. With
 * --pause, a TCP connection prints "half" after sending half of its bytes
 * and waits MS milliseconds before the rest (a connection held open).
 *
 *   wr_testclient rate ADDR PORT N CONCURRENCY
 *       N short connections (connect, 1 byte each way, close), CONCURRENCY at
 *       a time: prints "rate <connections/s>"
 *   wr_testclient latency ADDR PORT N
 *       N connections one after another: prints "latency p50 <us> p99 <us>"
 *       for connect() to complete */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_storage dst;
static socklen_t dst_len;
static size_t bytes;
static int pause_ms;

static uint8_t pattern(size_t i, unsigned seed) { return (uint8_t)((i * 2654435761u + seed * 40503u) >> 13); }

static void *one_tcp(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  int s = socket(dst.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (connect(s, (struct sockaddr *)&dst, dst_len) != 0) {
    printf("fail connect %s\n", strerror(errno));
    close(s);
    return (void *)1;
  }
  size_t sent = 0, got = 0;
  uint8_t out[65536], in[65536];
  int bad = 0, paused = pause_ms == 0;
  struct pollfd p = {s, POLLIN | POLLOUT, 0};
  while (got < bytes) {
    if (!paused && sent >= bytes / 2 && got >= sent) {
      printf("half\n");
      fflush(stdout);
      usleep((useconds_t)pause_ms * 1000);
      paused = 1;
    }
    int may_send = sent < bytes && (paused || sent < bytes / 2);
    p.events = POLLIN | (may_send ? POLLOUT : 0);
    if (poll(&p, 1, 20000) <= 0) {
      printf("fail timeout sent=%zu got=%zu\n", sent, got);
      close(s);
      return (void *)1;
    }
    if ((p.revents & POLLOUT) && may_send) {
      size_t n = bytes - sent < sizeof out ? bytes - sent : sizeof out;
      if (!paused && sent + n > bytes / 2) n = bytes / 2 - sent;
      for (size_t i = 0; i < n; i++) out[i] = pattern(sent + i, seed);
      ssize_t w = write(s, out, n);
      if (w > 0) sent += (size_t)w;
      if (sent == bytes) shutdown(s, SHUT_WR);
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = read(s, in, sizeof in);
      if (r <= 0) {
        printf("fail closed early got=%zu of %zu (%s)\n", got, bytes, r < 0 ? strerror(errno) : "eof");
        close(s);
        return (void *)1;
      }
      for (ssize_t i = 0; i < r; i++) {
        if (in[i] != pattern(got + (size_t)i, seed)) bad = 1;
      }
      got += (size_t)r;
    }
  }
  close(s);
  if (bad) {
    printf("fail mismatch\n");
    return (void *)1;
  }
  printf("ok %zu\n", got);
  fflush(stdout);
  return NULL;
}

static int one_udp(void) {
  int s = socket(dst.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct timeval tv = {5, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  uint8_t *out = malloc(bytes), *in = malloc(bytes + 1);
  for (size_t i = 0; i < bytes; i++) out[i] = pattern(i, 7);
  /* Connected: an ICMP error about the datagram comes back as recv's error. */
  if (connect(s, (struct sockaddr *)&dst, dst_len) != 0 || send(s, out, bytes, 0) != (ssize_t)bytes) {
    printf("fail send %s\n", strerror(errno));
    return 1;
  }
  ssize_t r = recv(s, in, bytes + 1, 0);
  if (r < 0) {
    printf("fail answer %s\n", strerror(errno));
    return 1;
  }
  int ok = r == (ssize_t)bytes && memcmp(in, out, bytes) == 0;
  printf(ok ? "ok %zd\n" : "fail answer %zd\n", r);
  return ok ? 0 : 1;
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* One short connection: connect, a byte there and back, close. Returns the
 * connect() time in microseconds, or -1. */
static double short_conn(void) {
  int s = socket(dst.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  double t0 = now_us();
  if (connect(s, (struct sockaddr *)&dst, dst_len) != 0) {
    close(s);
    return -1;
  }
  double t = now_us() - t0;
  char c = 'x';
  if (write(s, &c, 1) != 1 || read(s, &c, 1) != 1) t = -1;
  close(s);
  return t;
}

static int rate_left;
static pthread_mutex_t rate_lock = PTHREAD_MUTEX_INITIALIZER;
static int rate_failed;

static void *rate_worker(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&rate_lock);
    int go = rate_left-- > 0;
    pthread_mutex_unlock(&rate_lock);
    if (!go) return NULL;
    if (short_conn() < 0) {
      pthread_mutex_lock(&rate_lock);
      rate_failed++;
      pthread_mutex_unlock(&rate_lock);
    }
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void set_dst(const char *addr, int port) {
  memset(&dst, 0, sizeof dst);
  if (strchr(addr, ':')) {
    struct sockaddr_in6 *d = (void *)&dst;
    d->sin6_family = AF_INET6;
    d->sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, addr, &d->sin6_addr);
    dst_len = sizeof *d;
  } else {
    struct sockaddr_in *d = (void *)&dst;
    d->sin_family = AF_INET;
    d->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, addr, &d->sin_addr);
    dst_len = sizeof *d;
  }
}

static int measure(int argc, char **argv) {
  set_dst(argv[2], atoi(argv[3]));
  int n = atoi(argv[4]);
  if (strcmp(argv[1], "rate") == 0) {
    int conc = argc > 5 ? atoi(argv[5]) : 16;
    pthread_t t[256];
    if (conc > 256) conc = 256;
    rate_left = n;
    double t0 = now_us();
    for (int i = 0; i < conc; i++) pthread_create(&t[i], NULL, rate_worker, NULL);
    for (int i = 0; i < conc; i++) pthread_join(t[i], NULL);
    double secs = (now_us() - t0) / 1e6;
    printf("rate %.0f failed %d\n", (double)(n - rate_failed) / secs, rate_failed);
    return rate_failed ? 1 : 0;
  }
  double *lat = malloc(sizeof *lat * (size_t)n);
  int ok = 0;
  for (int i = 0; i < n; i++) {
    double t = short_conn();
    if (t >= 0) lat[ok++] = t;
  }
  qsort(lat, (size_t)ok, sizeof *lat, cmp_double);
  printf("latency p50 %.1f p99 %.1f failed %d\n", ok ? lat[ok / 2] : -1, ok ? lat[(ok * 99) / 100] : -1, n - ok);
  return ok == n ? 0 : 1;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* a peer that goes away is reported, not fatal */
  if (argc >= 5 && (strcmp(argv[1], "rate") == 0 || strcmp(argv[1], "latency") == 0)) return measure(argc, argv);
  int wait = 0, a = 1;
  for (;;) {
    if (a < argc && strcmp(argv[a], "--wait") == 0) {
      wait = 1;
      a++;
    } else if (a + 1 < argc && strcmp(argv[a], "--pause") == 0) {
      pause_ms = atoi(argv[a + 1]);
      a += 2;
    } else {
      break;
    }
  }
  if (argc - a < 4) {
    fprintf(stderr, "usage: %s [--wait] [--pause MS] tcp|udp ADDR PORT BYTES [CONNECTIONS]\n", argv[0]);
    return 2;
  }
  const char *proto = argv[a], *addr = argv[a + 1];
  int port = atoi(argv[a + 2]);
  bytes = strtoull(argv[a + 3], NULL, 10);
  int conns = argc - a > 4 ? atoi(argv[a + 4]) : 1;
  set_dst(addr, port);
  printf("pid %d\n", (int)getpid());
  fflush(stdout);
  if (wait) {
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 2;
  }
  if (strcmp(proto, "udp") == 0) return one_udp();
  pthread_t t[1024];
  if (conns > 1024) conns = 1024;
  for (int i = 0; i < conns; i++) pthread_create(&t[i], NULL, one_tcp, (void *)(uintptr_t)(i + 1));
  int failed = 0;
  for (int i = 0; i < conns; i++) {
    void *r;
    pthread_join(t[i], &r);
    if (r) failed++;
  }
  fflush(stdout);
  return failed ? 1 : 0;
}
