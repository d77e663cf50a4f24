/* A transparent proxy for the end-to-end tests, driven by lines on stdin:
 *
 *   port N            update_app_port(N)
 *   config JSON       set_redirector_config(JSON)
 *   start | stop      start_redirector() | stop_redirector()
 *   stats             one line of counters
 *   diag              "diag <redirector_diagnostics text>"
 *   queue N           redirector_set_nfqueue_num(N)
 *   exclude           from now on, redirector_exclude_socket() on upstream sockets
 *   cut N             from now on, close each TCP connection after relaying N
 *                     bytes up (a proxy failing mid-stream)
 *   origdst           from now on, learn TCP destinations with SO_ORIGINAL_DST
 *                     (for a kernel REDIRECT baseline) instead of the library
 *   events            a thread waits in redirector_next_event (60 s at a time)
 *                     and prints each event; it ends when the redirector stops
 *   quit
 *
 * It answers each command with "ok" or "err <code> <text>". It listens on the
 * app port (TCP and UDP, IPv4 and IPv6), asks redirector_lookup where each
 * connection or datagram was going, relays it there, and prints
 *   open tcp pid=P path=X dir=out|in dst=A:p client=A:p
 *   close tcp ... up=N down=N
 *   udp pid=P path=X dst=A:p client=A:p bytes=N
 *   miss tcp peer=A:p        (a connection with no origin: closed at once)
 *   event opened|closed tcp|udp pid=P dst=A:p client=A:p up=N down=N
 *   events end <code>        (the events thread stopped waiting)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "windows_redirector.h"

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static int use_origdst;
static int exclude_upstream; /* "exclude": mark upstream sockets */
static uint64_t cut_after; /* 0: never */

static void say(const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&out_lock);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fputc('\n', stdout);
  fflush(stdout);
  pthread_mutex_unlock(&out_lock);
}

static void endpoint_text(const redirector_endpoint *e, char *buf, size_t len) {
  char a[INET6_ADDRSTRLEN];
  inet_ntop(e->family == 6 ? AF_INET6 : AF_INET, e->addr, a, sizeof a);
  snprintf(buf, len, e->family == 6 ? "[%s]:%u" : "%s:%u", a, (unsigned)e->port);
}

static void to_endpoint(const struct sockaddr_storage *ss, redirector_endpoint *e) {
  memset(e, 0, sizeof *e);
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s = (const void *)ss;
    e->family = 4;
    e->port = ntohs(s->sin_port);
    memcpy(e->addr, &s->sin_addr, 4);
  } else {
    const struct sockaddr_in6 *s = (const void *)ss;
    e->family = 6;
    e->port = ntohs(s->sin6_port);
    memcpy(e->addr, &s->sin6_addr, 16);
  }
}

static socklen_t to_sockaddr(const redirector_endpoint *e, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (e->family == 4) {
    struct sockaddr_in *s = (void *)ss;
    s->sin_family = AF_INET;
    s->sin_port = htons(e->port);
    memcpy(&s->sin_addr, e->addr, 4);
    return sizeof *s;
  }
  struct sockaddr_in6 *s = (void *)ss;
  s->sin6_family = AF_INET6;
  s->sin6_port = htons(e->port);
  memcpy(&s->sin6_addr, e->addr, 16);
  return sizeof *s;
}

static void last_error(char *buf, size_t len) { redirector_last_error(buf, len); }

/* ------------------------------------------------------------------------
 * TCP */

struct conn {
  int client;
  redirector_origin origin;
};

static uint64_t pump(int from, int to) {
  char buf[65536];
  ssize_t n = read(from, buf, sizeof buf);
  if (n <= 0) return (uint64_t)-1;
  for (ssize_t off = 0; off < n;) {
    ssize_t w = write(to, buf + off, (size_t)(n - off));
    if (w <= 0) return (uint64_t)-1;
    off += w;
  }
  return (uint64_t)n;
}

static void *relay(void *arg) {
  struct conn *c = arg;
  char dst[80], cli[80];

  endpoint_text(&c->origin.destination, dst, sizeof dst);
  endpoint_text(&c->origin.client, cli, sizeof cli);
  const char *dir = c->origin.direction == REDIRECTOR_INBOUND ? "in" : "out";
  say("open tcp pid=%u path=%s dir=%s dst=%s client=%s", c->origin.pid, c->origin.process_path, dir, dst, cli);
  struct sockaddr_storage ss;
  socklen_t sl = to_sockaddr(&c->origin.destination, &ss);
  int up = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  uint64_t bytes_up = 0, bytes_down = 0;
  if (exclude_upstream && up >= 0 && redirector_exclude_socket(up) != 0) say("err exclude");
  if (up < 0 || connect(up, (struct sockaddr *)&ss, sl) != 0) {
    say("fail tcp dst=%s %s", dst, strerror(errno));
    if (up >= 0) close(up);
    close(c->client);
    free(c);
    return NULL;
  }
  struct pollfd p[2] = {{c->client, POLLIN, 0}, {up, POLLIN, 0}};
  int open_c = 1, open_u = 1;
  while (open_c || open_u) {
    if (poll(p, 2, -1) < 0) break;
    if (open_c && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      uint64_t n = pump(c->client, up);
      if (n == (uint64_t)-1) {
        shutdown(up, SHUT_WR);
        open_c = 0;
        p[0].fd = -1;
      } else {
        bytes_up += n;
        if (cut_after && bytes_up >= cut_after) break; /* fail mid-stream */
      }
    }
    if (open_u && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      uint64_t n = pump(up, c->client);
      if (n == (uint64_t)-1) {
        shutdown(c->client, SHUT_WR);
        open_u = 0;
        p[1].fd = -1;
      } else {
        bytes_down += n;
      }
    }
  }
  close(up);
  close(c->client);
  say("close tcp pid=%u path=%s dir=%s dst=%s client=%s up=%llu down=%llu", c->origin.pid, c->origin.process_path,
      dir, dst, cli, (unsigned long long)bytes_up, (unsigned long long)bytes_down);
  free(c);
  return NULL;
}

static void *tcp_accept_loop(void *arg) {
  int ls = (int)(intptr_t)arg;
  for (;;) {
    struct sockaddr_storage peer, local;
    socklen_t pl = sizeof peer, ll = sizeof local;
    int s = accept4(ls, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
    if (s < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return NULL;
    }
    getsockname(s, (struct sockaddr *)&local, &ll);
    redirector_endpoint pe, le;
    to_endpoint(&peer, &pe);
    to_endpoint(&local, &le);
    struct conn *c = calloc(1, sizeof *c);
    c->client = s;
    c->origin.size = sizeof c->origin;
    if (use_origdst) {
      /* The kernel's NAT table knows where it was going. */
      struct sockaddr_storage od;
      socklen_t ol = sizeof od;
      int ok = le.family == 4 ? getsockopt(s, SOL_IP, SO_ORIGINAL_DST, &od, &ol)
                              : getsockopt(s, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &od, &ol);
      if (ok == 0) {
        to_endpoint(&od, &c->origin.destination);
        c->origin.client = pe;
      } else {
        close(s);
        free(c);
        continue;
      }
    } else if (redirector_lookup(REDIRECTOR_TCP, &pe, &le, &c->origin) != 0) {
      char p[80], err[256];
      endpoint_text(&pe, p, sizeof p);
      last_error(err, sizeof err);
      say("miss tcp peer=%s %s", p, err);
      close(s);
      free(c);
      continue;
    }
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_create(&t, &a, relay, c);
    pthread_attr_destroy(&a);
  }
}

/* ------------------------------------------------------------------------
 * UDP: one request, one answer, relayed through a socket of our own. */

static void *udp_loop(void *arg) {
  int s = (int)(intptr_t)arg;
  for (;;) {
    char buf[65536];
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&peer, &pl);
    if (n < 0) {
      if (errno == EINTR) continue;
      return NULL;
    }
    redirector_endpoint pe, any;
    to_endpoint(&peer, &pe);
    memset(&any, 0, sizeof any);
    any.family = pe.family;
    struct sockaddr_storage local;
    socklen_t ll = sizeof local;
    getsockname(s, (struct sockaddr *)&local, &ll);
    any.port = ntohs(local.ss_family == AF_INET ? ((struct sockaddr_in *)&local)->sin_port
                                                : ((struct sockaddr_in6 *)&local)->sin6_port);
    redirector_origin o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    char p[80], dst[80], cli[80];
    endpoint_text(&pe, p, sizeof p);
    if (redirector_lookup(REDIRECTOR_UDP, &pe, &any, &o) != 0) {
      say("miss udp peer=%s", p);
      continue;
    }
    endpoint_text(&o.destination, dst, sizeof dst);
    endpoint_text(&o.client, cli, sizeof cli);
    struct sockaddr_storage ds;
    socklen_t dl = to_sockaddr(&o.destination, &ds);
    int u = socket(ds.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {2, 0};
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char answer[65536];
    ssize_t an = -1;
    if (sendto(u, buf, (size_t)n, 0, (struct sockaddr *)&ds, dl) == n) an = recv(u, answer, sizeof answer, 0);
    close(u);
    if (an >= 0) sendto(s, answer, (size_t)an, 0, (struct sockaddr *)&peer, pl);
    say("udp pid=%u path=%s dst=%s client=%s bytes=%zd answer=%zd", o.pid, o.process_path, dst, cli, n, an);
  }
}

static int listen_on(int family, int type, uint16_t port) {
  int s = socket(family, type | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t sl;
  if (family == AF_INET) {
    struct sockaddr_in *a = (void *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    sl = sizeof *a;
  } else {
    struct sockaddr_in6 *a = (void *)&ss;
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    sl = sizeof *a;
  }
  if (bind(s, (struct sockaddr *)&ss, sl) != 0) {
    fprintf(stderr, "bind %u: %s\n", (unsigned)port, strerror(errno));
    exit(1);
  }
  if (type == SOCK_STREAM) listen(s, 512);
  return s;
}

static void spawn(void *(*fn)(void *), int fd) {
  pthread_t t;
  pthread_create(&t, NULL, fn, (void *)(intptr_t)fd);
  pthread_detach(t);
}

/* Waits long inside the library: only its wake-ups deliver events in time. */
static void *events_loop(void *arg) {
  (void)arg;
  for (;;) {
    redirector_event ev;
    memset(&ev, 0, sizeof ev);
    ev.size = sizeof ev;
    int32_t rc = redirector_next_event(&ev, 60000);
    if (rc == REDIRECTOR_ENOEVENT) continue;
    if (rc != 0) {
      say("events end %d", rc);
      return NULL;
    }
    char dst[80], cli[80];
    endpoint_text(&ev.origin.destination, dst, sizeof dst);
    endpoint_text(&ev.origin.client, cli, sizeof cli);
    say("event %s %s pid=%u dst=%s client=%s up=%llu down=%llu",
        ev.type == REDIRECTOR_EVENT_OPENED ? "opened" : "closed", ev.origin.protocol == REDIRECTOR_TCP ? "tcp" : "udp",
        ev.origin.pid, dst, cli, (unsigned long long)ev.origin.bytes_up, (unsigned long long)ev.origin.bytes_down);
  }
}

static void reply(int rc) {
  if (rc == 0) {
    say("ok");
  } else {
    char err[1024];
    last_error(err, sizeof err);
    say("err %d %s", rc, err);
  }
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  char line[1 << 16];
  int listening = 0;
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "port ", 5) == 0) {
      uint16_t port = (uint16_t)atoi(line + 5);
      update_app_port(port);
      if (!listening) {
        spawn(tcp_accept_loop, listen_on(AF_INET, SOCK_STREAM, port));
        spawn(tcp_accept_loop, listen_on(AF_INET6, SOCK_STREAM, port));
        spawn(udp_loop, listen_on(AF_INET, SOCK_DGRAM, port));
        spawn(udp_loop, listen_on(AF_INET6, SOCK_DGRAM, port));
        listening = 1;
      }
      say("ok");
    } else if (strncmp(line, "config ", 7) == 0) {
      reply(set_redirector_config(line + 7));
    } else if (strcmp(line, "start") == 0) {
      reply(start_redirector());
    } else if (strcmp(line, "stop") == 0) {
      reply(stop_redirector());
    } else if (strcmp(line, "stats") == 0) {
      redirector_stats st;
      memset(&st, 0, sizeof st);
      st.size = sizeof st;
      redirector_get_stats(&st);
      say("stats running=%u packets=%llu rewritten=%llu passed=%llu held=%llu redirected=%llu table_full=%llu "
          "hold_timeouts=%llu queries=%llu restarts=%llu syn_unanswered=%llu syn_refused=%llu",
          st.running, (unsigned long long)st.packets, (unsigned long long)st.rewritten,
          (unsigned long long)st.passed, (unsigned long long)st.held, (unsigned long long)st.flows_redirected,
          (unsigned long long)st.table_full, (unsigned long long)st.hold_timeouts,
          (unsigned long long)st.owner_queries, (unsigned long long)st.engine_restarts,
          (unsigned long long)st.redirected_syn_unanswered, (unsigned long long)st.redirected_syn_refused);
    } else if (strcmp(line, "diag") == 0) {
      char text[8192];
      int32_t rc = redirector_diagnostics(text, sizeof text);
      if (rc < 0) reply(rc);
      else say("diag %s", text);
    } else if (strcmp(line, "exclude") == 0) {
      exclude_upstream = 1;
      say("ok");
    } else if (strncmp(line, "queue ", 6) == 0) {
      reply(redirector_set_nfqueue_num((uint16_t)atoi(line + 6)));
    } else if (strncmp(line, "cut ", 4) == 0) {
      cut_after = strtoull(line + 4, NULL, 10);
      say("ok");
    } else if (strcmp(line, "events") == 0) {
      spawn(events_loop, -1);
      say("ok");
    } else if (strcmp(line, "origdst") == 0) {
      use_origdst = 1;
      say("ok");
    } else if (strncmp(line, "fault ", 6) == 0) {
      reply(redirector_debug_inject_fault(atoi(line + 6)));
    } else if (strcmp(line, "quit") == 0) {
      break;
    } else {
      say("err 0 unknown command");
    }
  }
  if (get_redirector_status() == 1) stop_redirector();
  return 0;
}
