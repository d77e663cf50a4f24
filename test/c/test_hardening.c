/* Hardening: hostile configurations by the hundred thousand, ABI misuse from
 * many threads while the redirector starts and stops, and start/stop cycles
 * with redirected traffic flowing (run under valgrind or LeakSanitizer, and
 * checked for leaked descriptors and threads).
 *
 *   test_hardening <case>
 *
 * Sizes scale with WR_SOAK (npm run soak sets it): configs, seconds of
 * misuse, cycles (WR_CYCLES overrides the cycles). Each case prints its
 * figures as "figure <name> <value>". */
#include "check.h"

#include <stdatomic.h>
#include <time.h>

#ifndef _WIN32
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#endif

static int soak(void) { return getenv("WR_SOAK") != NULL; }

static _Thread_local uint32_t rnd_state = 2463534242u;
static uint32_t rnd(void) {
  rnd_state ^= rnd_state << 13;
  rnd_state ^= rnd_state >> 17;
  rnd_state ^= rnd_state << 5;
  return rnd_state;
}

/* ------------------------------------------------------------------------
 * Configurations: generated and mutated; only documented codes; a rejected
 * one never changes the configuration in force. */

static const char *SEEDS[] = {
    "{\"intercept_pids\":[4201234,4205678],\"description\":\"Intercept processes 4201234 and 4205678\"}",
    "{\"intercept_pids\":null,\"description\":\"\"}",
    "{\"intercept\":\"curl,!4201234,*.exe\",\"protocols\":[\"tcp\",\"udp\"],\"directions\":\"outbound,inbound\","
    "\"ports\":[80,\"8000-8100\"],\"exclude_ports\":[22],\"destinations\":[\"198.18.0.0/15\",\"fd00::/8\"],"
    "\"exclude_destinations\":[\"10.0.0.0/8\"],\"bypass\":[\"loopback\"],\"max_flows\":4096,"
    "\"hold_timeout_ms\":500,\"max_held_packets\":64,\"tcp_idle_timeout_ms\":60000,\"udp_idle_timeout_ms\":5000}",
    "{\"intercept\":[\"!chrome.exe\",4201234,\"C:\\\\Program Files\\\\*\"],\"x\":{\"n\":[[[1,2.5e-3,true,null]]]}}",
    "{\"description\":\"caf\xc3\xa9 \\u00e9\\ud83d\\ude00\"}",
};

static const char *TOKENS[] = {"{", "}", "[", "]", ",", ":", "\"", "\\", "null", "true", "-1", "4294967296",
                               "1e3", "\"intercept_pids\"", "\"ports\"", "\"bypass\"", "\xff", "\xc3", "\\ud800",
                               "\"max_flows\":0", "  ", "\n", "0.5", "\"!\"", "\"*\"", "[[[[[[[[", "]]]]"};

static void mutate(char *out, size_t cap, const char *seed) {
  size_t n = strlen(seed);
  if (n >= cap) n = cap - 1;
  memcpy(out, seed, n);
  out[n] = '\0';
  int edits = 1 + (int)(rnd() % 6);
  for (int k = 0; k < edits; k++) {
    size_t len = strlen(out);
    switch (rnd() % 5) {
      case 0: /* flip a byte */
        if (len) out[rnd() % len] = (char)(rnd() & 0xff ? rnd() & 0xff : 1);
        break;
      case 1: /* cut */
        if (len) out[rnd() % len] = '\0';
        break;
      case 2: { /* insert a token */
        const char *t = TOKENS[rnd() % (sizeof TOKENS / sizeof TOKENS[0])];
        size_t tl = strlen(t), at = len ? rnd() % len : 0;
        if (len + tl + 1 < cap) {
          memmove(out + at + tl, out + at, len - at + 1);
          memcpy(out + at, t, tl);
        }
        break;
      }
      case 3: /* delete a run */
        if (len > 2) {
          size_t at = rnd() % len, del = 1 + rnd() % 8;
          if (at + del > len) del = len - at;
          memmove(out + at, out + at + del, len - at - del + 1);
        }
        break;
      default: /* duplicate a run */
        if (len > 2 && len * 2 < cap) {
          size_t at = rnd() % len, dl = 1 + rnd() % 16;
          if (at + dl > len) dl = len - at;
          memmove(out + at + dl, out + at, len - at + 1);
        }
        break;
    }
  }
}

/* PIDs above 4194304 cannot be this process's own (never intercepted). */
static int probe(void) {
  return redirector_would_intercept(4204242, NULL) * 2 + redirector_would_intercept(4200077, "/opt/probe-x");
}

TEST_CASE(config_flood) {
  const char *base = "{\"intercept_pids\":[4204242],\"intercept\":\"probe-*\"}";
  int total = soak() ? 1000000 : 100000;
  int accepted = 0, rejected = 0, undocumented = 0, changed = 0, silent = 0;
  char buf[4096];
  CHECK(set_redirector_config(base) == 0, "base config");
  int want = probe();
  for (int i = 0; i < total; i++) {
    mutate(buf, sizeof buf, SEEDS[rnd() % (sizeof SEEDS / sizeof SEEDS[0])]);
    int32_t rc = set_redirector_config(buf);
    if (rc == 0) {
      accepted++;
      set_redirector_config(base);
      continue;
    }
    if (rc != -2 && rc != -3) undocumented++;
    rejected++;
    int32_t code = redirector_last_error_code();
    if ((rc == -2 && code != REDIRECTOR_ECONFIG) || (rc == -3 && code != REDIRECTOR_EUTF8)) undocumented++;
    if (redirector_last_error(NULL, 0) == 0) silent++;
    if (probe() != want) {
      changed++;
      set_redirector_config(base);
    }
  }
  CHECK(undocumented == 0, "%d undocumented results", undocumented);
  CHECK(changed == 0, "%d rejected configs changed the one in force", changed);
  CHECK(silent == 0, "%d failures without a reason", silent);
  CHECK(accepted > 0 && rejected > total / 2, "a real mix: %d accepted, %d rejected", accepted, rejected);
  printf("figure configs %d\nfigure configs-accepted %d\nfigure configs-rejected %d\n", total, accepted, rejected);
}

/* ------------------------------------------------------------------------
 * Misuse: NULL and junk everywhere, before init, after stop, and from 8
 * threads at once while another starts and stops. */

static int documented(int32_t rc) {
  return rc == 0 || rc == -1 || rc == -2 || rc == -3 || (rc <= REDIRECTOR_EALREADY && rc >= REDIRECTOR_ENOMEM);
}

static void junk_calls(int *bad) {
  char buf[64];
  redirector_origin o;
  redirector_event ev;
  redirector_stats st;
  redirector_endpoint ep;
  memset(&ep, 0, sizeof ep);
  ep.family = (uint8_t)(rnd() % 8);
  ep.port = (uint16_t)rnd();
  for (int i = 0; i < 16; i++) ep.addr[i] = (uint8_t)rnd();
  o.size = rnd() % 2 ? sizeof o : rnd() % 64;
  ev.size = rnd() % 2 ? sizeof ev : rnd() % 64;
  st.size = rnd() % 2 ? sizeof st : rnd() % 64;
  int32_t r[16];
  int k = 0;
  r[k++] = redirector_lookup((int32_t)(rnd() % 20), rnd() % 4 ? &ep : NULL, rnd() % 4 ? &ep : NULL,
                             rnd() % 4 ? &o : NULL);
  r[k++] = redirector_next_event(rnd() % 4 ? &ev : NULL, 0);
  int32_t w = redirector_wait_event(rnd() % 2);
  r[k++] = w == 1 ? 0 : w; /* 1: an event waits */
  r[k++] = redirector_get_stats(rnd() % 4 ? &st : NULL);
  r[k++] = redirector_last_error(rnd() % 2 ? buf : NULL, rnd() % 2 ? sizeof buf : 0) >= 0 ? 0 : -999;
  r[k++] = redirector_diagnostics(rnd() % 2 ? buf : NULL, rnd() % 2 ? sizeof buf : 0) >= 0 ? 0 : REDIRECTOR_ENOTRUNNING;
  r[k++] = redirector_would_intercept(rnd(), rnd() % 2 ? "/x/\xff" : NULL);
  r[k++] = redirector_debug_inject_fault((int32_t)(rnd() % 5) + 5); /* never a real selector */
  r[k++] = set_redirector_config(rnd() % 2 ? NULL : "{\"intercept_pids\":[");
  r[k++] = redirector_strerror((int32_t)rnd()) ? 0 : -999;
  int32_t status = get_redirector_status();
  r[k++] = status == 0 || status == 1 ? 0 : -999;
  for (int i = 0; i < k; i++) {
    if (!documented(r[i])) {
      (*bad)++;
      fprintf(stderr, "call %d returned %d\n", i, (int)r[i]);
    }
  }
}

struct misuse {
  atomic_int stop;
  int bad;
  long calls;
};

static THREAD_FN misuse_thread(void *p) {
  struct misuse *m = p;
  rnd_state ^= (uint32_t)(uintptr_t)p; /* each thread its own sequence */
  while (!m->stop) {
    junk_calls(&m->bad);
    m->calls++;
  }
  return THREAD_RET;
}

TEST_CASE(misuse) {
  int bad = 0;
  /* Before initialize_global_config: everything initialises itself. */
  for (int i = 0; i < 200; i++) junk_calls(&bad);
  CHECK(bad == 0, "%d undocumented results before init", bad);
  initialize_global_config();
  /* A config the library must have copied: the caller's buffer goes away. */
  char *mine = strdup("{\"intercept_pids\":[4231337]}");
  CHECK(set_redirector_config(mine) == 0, "config");
  memset(mine, 'x', strlen(mine));
  free(mine);
  CHECK(redirector_would_intercept(4231337, NULL) == 1, "the library kept its own copy");
  CHECK(redirector_set_windivert_path("") == 0, "empty WinDivert path");
  CHECK(redirector_set_nfqueue_num(7870) == 0, "queue number");
  update_app_port(18080);
  int seconds = soak() ? 60 : 5;
  enum { N = 8 };
  struct misuse m[N];
  thread_t t[N];
  for (int i = 0; i < N; i++) {
    m[i].stop = 0;
    m[i].bad = 0;
    m[i].calls = 0;
    thread_start(&t[i], misuse_thread, &m[i]);
  }
  int cycles = 0;
  uint64_t end = (uint64_t)time(NULL) + (uint64_t)seconds;
  while ((uint64_t)time(NULL) < end) {
    int32_t rc = start_redirector();
#ifdef _WIN32
    if (rc != -2) bad++;
#else
    if (rc != 0) {
      bad++;
      fprintf(stderr, "start: %d %s\n", (int)rc, last_error());
    }
#endif
    stop_redirector();
    cycles++;
  }
  long calls = 0;
  for (int i = 0; i < N; i++) {
    m[i].stop = 1;
    thread_join(t[i]);
    bad += m[i].bad;
    calls += m[i].calls;
  }
  CHECK(bad == 0, "%d undocumented results", bad);
  CHECK(get_redirector_status() == 0, "stopped at the end");
  CHECK(redirector_would_intercept(4231337, NULL) == 1, "the last good config survived");
  int after = 0;
  for (int i = 0; i < 100; i++) junk_calls(&after);
  CHECK(after == 0, "%d undocumented results after stop", after);
  printf("figure misuse-seconds %d\nfigure misuse-calls %ld\nfigure misuse-cycles %d\n", seconds, calls, cycles);
}

#ifndef _WIN32
/* ------------------------------------------------------------------------
 * Start/stop cycles with traffic: a child process connects to an echo
 * server of ours on 127.0.0.1; it is intercepted by PID, or as a process
 * tree every other cycle (loopback is not bypassed here), so its connection
 * comes to our proxy on the app port, which looks it up and relays to the
 * echo server. */

#define APP_PORT 18081

static int count_dir(const char *path) {
  DIR *d = opendir(path);
  if (!d) return -1;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) n += de->d_name[0] != '.';
  closedir(d);
  return n;
}

static int listen_tcp(uint16_t port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {AF_INET, htons(port), {htonl(INADDR_LOOPBACK)}, {0}};
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 64) != 0) return -1;
  return s;
}

static atomic_int serve_stop;
static int echo_fd, app_fd;
static long relayed;

/* The echo server: one connection at a time (they are short). */
static void *echo(void *arg) {
  (void)arg;
  while (!serve_stop) {
    struct pollfd p = {echo_fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    int c = accept4(echo_fd, NULL, NULL, SOCK_CLOEXEC);
    char buf[4096];
    ssize_t n;
    while (c >= 0 && (n = read(c, buf, sizeof buf)) > 0) {
      if (write(c, buf, (size_t)n) != n) break;
    }
    if (c >= 0) close(c);
  }
  return NULL;
}

/* The proxy on the app port: looks each connection up and relays it. */
static void *proxy(void *arg) {
  (void)arg;
  while (!serve_stop) {
    struct pollfd p = {app_fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    struct sockaddr_in peer, local;
    socklen_t pl = sizeof peer, ll = sizeof local;
    int c = accept4(app_fd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
    if (c < 0) continue;
    getsockname(c, (struct sockaddr *)&local, &ll);
    redirector_endpoint pe = {4, 0, ntohs(peer.sin_port), {0}}, le = {4, 0, ntohs(local.sin_port), {0}};
    memcpy(pe.addr, &peer.sin_addr, 4);
    memcpy(le.addr, &local.sin_addr, 4);
    redirector_origin o;
    o.size = sizeof o;
    if (redirector_lookup(REDIRECTOR_TCP, &pe, &le, &o) == 0) {
      int up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      struct sockaddr_in d = {AF_INET, htons(o.destination.port), {0}, {0}};
      memcpy(&d.sin_addr, o.destination.addr, 4);
      if (connect(up, (struct sockaddr *)&d, sizeof d) == 0) {
        /* The child sends everything, then reads: relay one way, then back. */
        char buf[4096];
        ssize_t n;
        int ok = 1;
        while (ok && (n = read(c, buf, sizeof buf)) > 0) ok = write(up, buf, (size_t)n) == n;
        shutdown(up, SHUT_WR);
        while (ok && (n = read(up, buf, sizeof buf)) > 0) ok = write(c, buf, (size_t)n) == n;
        if (ok) relayed++;
      }
      close(up);
    }
    close(c);
  }
  return NULL;
}

/* A child that waits for a byte on `go`, connects to the echo server, sends
 * and checks 1000 bytes; exit 0 on success. */
static pid_t child(int go[2], uint16_t echo_port) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  char c;
  close(go[1]);
  if (read(go[0], &c, 1) != 1) _exit(3);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {AF_INET, htons(echo_port), {htonl(INADDR_LOOPBACK)}, {0}};
  if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) _exit(4);
  char out[1000], in[1000];
  for (int i = 0; i < 1000; i++) out[i] = (char)i;
  if (write(s, out, sizeof out) != (ssize_t)sizeof out) _exit(5);
  shutdown(s, SHUT_WR);
  size_t got = 0;
  ssize_t n;
  while (got < sizeof in && (n = read(s, in + got, sizeof in - got)) > 0) got += (size_t)n;
  _exit(got == sizeof in && memcmp(in, out, sizeof in) == 0 ? 0 : 6);
}

TEST_CASE_POSIX(leak_cycles) {
  signal(SIGPIPE, SIG_IGN);
  uint16_t echo_port = 18090;
  echo_fd = listen_tcp(echo_port);
  app_fd = listen_tcp(APP_PORT);
  CHECK(echo_fd >= 0 && app_fd >= 0, "listening");
  pthread_t echo_thread, proxy_thread;
  pthread_create(&echo_thread, NULL, echo, NULL);
  pthread_create(&proxy_thread, NULL, proxy, NULL);
  update_app_port(APP_PORT);
  int cycles = getenv("WR_CYCLES") ? atoi(getenv("WR_CYCLES")) : soak() ? 1000 : 40;
  int fds0 = -1, threads0 = -1, ok = 0;
  for (int i = 0; i < cycles; i++) {
    if (i == 1) {
      /* Counted after the first cycle: the runtime's one-time set-up is done. */
      fds0 = count_dir("/proc/self/fd");
      threads0 = count_dir("/proc/self/task");
    }
    int go[2];
    if (pipe(go) != 0) break;
    pid_t pid = child(go, echo_port);
    close(go[0]);
    char cfg[128];
    /* Every other cycle as a process tree: the backend's watch thread
     * (listing new processes) then runs beside the packet thread. */
    if (i % 2) snprintf(cfg, sizeof cfg, "{\"intercept\":\"tree:%d\",\"bypass\":[]}", (int)pid);
    else snprintf(cfg, sizeof cfg, "{\"intercept_pids\":[%d],\"bypass\":[]}", (int)pid);
    set_redirector_config(cfg);
    int32_t rc = start_redirector();
    if (write(go[1], "g", 1) != 1) rc = -9;
    close(go[1]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) ok++;
    stop_redirector();
  }
  int fds1 = count_dir("/proc/self/fd"), threads1 = count_dir("/proc/self/task");
  serve_stop = 1;
  pthread_join(echo_thread, NULL);
  pthread_join(proxy_thread, NULL);
  close(echo_fd);
  close(app_fd);
  CHECK(ok == cycles, "%d of %d cycles redirected a connection end to end", ok, cycles);
  CHECK(relayed == cycles, "the proxy relayed %ld of %d", relayed, cycles);
  CHECK(fds1 == fds0, "descriptors: %d before, %d after", fds0, fds1);
  CHECK(threads1 == threads0, "threads: %d before, %d after", threads0, threads1);
  printf("figure leak-cycles %d\nfigure leak-fds-delta %d\nfigure leak-threads-delta %d\n", cycles, fds1 - fds0,
         threads1 - threads0);
}
#endif


int main(int argc, char **argv) { return tests_main(argc, argv); }
