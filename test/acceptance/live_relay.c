/* The live relay: real kernel traffic for the stand-in WinDivert.dll under
 * wine (test/windows/fake_live.c), so the acceptance program
 * (acceptance.c) runs the WinDivert backend over real packets. Linux, run
 * by the acceptance suite (run_wine.ts) inside a network namespace of its
 * own, with iptables rules that queue that namespace's TCP and UDP packets:
 *
 *   outbound  the OUTPUT chain (loopback traffic only here, with the
 *             loopback flag: the real driver shows a loopback packet once,
 *             as outbound)
 *   inbound   INPUT from devices other than lo
 *
 * Each queued packet goes to the stand-in (one client at a time, on
 * 127.0.0.1:PORT, a port the rules leave out) with its direction, loopback
 * flag and interface, and waits there for its verdict: diverted (a handle
 * took it: dropped here, as the driver drops a diverted packet unless the
 * program sends it again) or not (accepted unchanged). Each packet the
 * library sends comes back as an inject message and is put on its way with
 * a raw socket (IP_HDRINCL / IPv6 IPPROTO_RAW), carrying MARK so the rules
 * do not queue it again: outbound it is routed like any sent packet; inbound
 * it is addressed to a local address, so the kernel delivers it to the local
 * socket, except on the loopback interface, where the driver delivers no
 * packet injected inbound (it sees loopback traffic only as outbound): such
 * a packet is counted and dropped. With no client connected (no NETWORK handle open), packets are
 * accepted at once, as no driver diverts them.
 *
 *   live_relay --queue N --port P --mark M
 *
 * Prints "live_relay: ready" once the queue and the port are open; ends on
 * SIGTERM, SIGINT or its parent's death, and prints what it did. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "live_proto.h"

#define MAX_PENDING 65536

typedef struct {
  struct nfq_handle *h;
  struct nfq_q_handle *q;
  int client;
  unsigned lo_index;
  int raw4, raw6;
  uint32_t *pending; /* ids sent to the client, awaiting a verdict */
  size_t npending;
  uint8_t *in; /* what the client sent, not yet a whole message */
  size_t in_len;
  unsigned long queued, diverted, passed, injected, inject_errors, unanswered, inbound_loopback;
} relay;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static void verdict(relay *r, uint32_t id, int accept) {
  nfq_set_verdict(r->q, id, accept ? NF_ACCEPT : NF_DROP, 0, NULL);
}

static int write_all(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n > 0) {
    ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    b += k;
    n -= (size_t)k;
  }
  return 0;
}

/* The client went away: what it never answered goes on unchanged. */
static void drop_client(relay *r) {
  for (size_t i = 0; i < r->npending; i++) verdict(r, r->pending[i], 1);
  r->unanswered += r->npending;
  r->npending = 0;
  r->in_len = 0;
  close(r->client);
  r->client = -1;
  fprintf(stderr, "live_relay: client gone\n");
}

static int queued_packet(struct nfq_q_handle *q, struct nfgenmsg *msg, struct nfq_data *nfa, void *arg) {
  (void)q;
  (void)msg;
  relay *r = arg;
  struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
  if (!ph) return 0;
  uint32_t id = ntohl(ph->packet_id);
  unsigned char *data = NULL;
  int len = nfq_get_payload(nfa, &data);
  r->queued++;
  if (r->client < 0 || len <= 0 || r->npending == MAX_PENDING) {
    verdict(r, id, 1);
    r->passed++;
    return 0;
  }
  live_header hd;
  memset(&hd, 0, sizeof hd);
  hd.type = LIVE_PACKET;
  hd.id = id;
  int out = ph->hook == NF_INET_LOCAL_OUT || ph->hook == NF_INET_POST_ROUTING;
  uint32_t dev = out ? nfq_get_outdev(nfa) : nfq_get_indev(nfa);
  hd.flags = (uint8_t)((out ? LIVE_F_OUTBOUND : 0) | (dev == r->lo_index ? LIVE_F_LOOPBACK : 0));
  hd.if_idx = dev;
  hd.len = (uint32_t)len;
  r->pending[r->npending++] = id;
  if (write_all(r->client, &hd, sizeof hd) != 0 || write_all(r->client, data, (size_t)len) != 0) drop_client(r);
  return 0;
}

/* Puts a packet the library sent on its way. */
static void inject(relay *r, const live_header *hd, const uint8_t *p, uint32_t len) {
  if (!(hd->flags & LIVE_F_OUTBOUND) && hd->if_idx == r->lo_index) {
    r->inbound_loopback++;
    fprintf(stderr, "live_relay: a packet injected inbound on the loopback interface: not delivered\n");
    return;
  }
  ssize_t k = -1;
  if (len >= 20 && (p[0] >> 4) == 4) {
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    memcpy(&to.sin_addr, p + 16, 4);
    k = sendto(r->raw4, p, len, 0, (struct sockaddr *)&to, sizeof to);
  } else if (len >= 40 && (p[0] >> 4) == 6) {
    struct sockaddr_in6 to;
    memset(&to, 0, sizeof to);
    to.sin6_family = AF_INET6;
    memcpy(&to.sin6_addr, p + 24, 16);
    k = sendto(r->raw6, p, len, 0, (struct sockaddr *)&to, sizeof to);
  }
  if (k == (ssize_t)len) {
    r->injected++;
  } else {
    r->inject_errors++;
    fprintf(stderr, "live_relay: inject of %u bytes failed: %s\n", len, k < 0 ? strerror(errno) : "short");
  }
}

/* Acts on every whole message the client sent. */
static void client_messages(relay *r) {
  size_t off = 0;
  while (r->in_len - off >= sizeof(live_header)) {
    live_header hd;
    memcpy(&hd, r->in + off, sizeof hd);
    if (hd.len > LIVE_MAX_PACKET) {
      fprintf(stderr, "live_relay: message of %u bytes: not the stand-in\n", hd.len);
      drop_client(r);
      return;
    }
    if (r->in_len - off < sizeof hd + hd.len) break;
    const uint8_t *body = r->in + off + sizeof hd;
    if (hd.type == LIVE_VERDICT) {
      for (size_t i = 0; i < r->npending; i++) {
        if (r->pending[i] == hd.id) {
          r->pending[i] = r->pending[--r->npending];
          int diverted = (hd.flags & LIVE_DIVERTED) != 0;
          verdict(r, hd.id, !diverted);
          if (diverted) r->diverted++;
          else r->passed++;
          break;
        }
      }
    } else if (hd.type == LIVE_INJECT) {
      inject(r, &hd, body, hd.len);
    }
    off += sizeof hd + hd.len;
  }
  memmove(r->in, r->in + off, r->in_len - off);
  r->in_len -= off;
}

static int raw_socket(int family, unsigned mark) {
  int s = socket(family, SOCK_RAW, IPPROTO_RAW); /* IPPROTO_RAW: the header is ours */
  if (s < 0) return -1;
  int one = 1;
  if (family == AF_INET) setsockopt(s, IPPROTO_IP, IP_HDRINCL, &one, sizeof one);
  if (setsockopt(s, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    close(s);
    return -1;
  }
  return s;
}

static int usage(void) {
  fprintf(stderr, "usage: live_relay --queue N --port P --mark M\n");
  return 2;
}

int main(int argc, char **argv) {
  long queue = -1, port = -1;
  unsigned long mark = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--queue") == 0) queue = strtol(argv[i + 1], NULL, 0);
    else if (strcmp(argv[i], "--port") == 0) port = strtol(argv[i + 1], NULL, 0);
    else if (strcmp(argv[i], "--mark") == 0) mark = strtoul(argv[i + 1], NULL, 0);
    else return usage();
  }
  if (argc % 2 != 1 || queue < 0 || queue > 65535 || port <= 0 || port > 65535 || mark == 0) return usage();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  relay r;
  memset(&r, 0, sizeof r);
  r.client = -1;
  r.lo_index = if_nametoindex("lo");
  r.pending = malloc(MAX_PENDING * sizeof *r.pending);
  r.in = malloc(2 * (sizeof(live_header) + LIVE_MAX_PACKET));
  r.raw4 = raw_socket(AF_INET, (unsigned)mark);
  r.raw6 = raw_socket(AF_INET6, (unsigned)mark);
  if (!r.pending || !r.in || r.raw4 < 0 || r.raw6 < 0) {
    fprintf(stderr, "live_relay: raw sockets: %s (needs root)\n", strerror(errno));
    return 1;
  }
  r.h = nfq_open();
  r.q = r.h ? nfq_create_queue(r.h, (uint16_t)queue, queued_packet, &r) : NULL;
  if (!r.q || nfq_set_mode(r.q, NFQNL_COPY_PACKET, 0xffff) < 0) {
    fprintf(stderr, "live_relay: NFQUEUE %ld: %s\n", queue, strerror(errno));
    return 1;
  }
  nfq_set_queue_maxlen(r.q, 8192);
  nfnl_rcvbufsiz(nfq_nfnlh(r.h), 8u << 20);
  int nfd = nfq_fd(r.h);

  int lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in la;
  memset(&la, 0, sizeof la);
  la.sin_family = AF_INET;
  la.sin_port = htons((uint16_t)port);
  la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lst, (struct sockaddr *)&la, sizeof la) != 0 || listen(lst, 4) != 0) {
    fprintf(stderr, "live_relay: 127.0.0.1:%ld: %s\n", port, strerror(errno));
    return 1;
  }
  printf("live_relay: ready (queue %ld, port %ld, mark 0x%lx)\n", queue, port, mark);
  fflush(stdout);

  char *buf = malloc(1u << 17);
  while (!g_stop && buf) {
    struct pollfd fds[3] = {{nfd, POLLIN, 0}, {lst, POLLIN, 0}, {r.client, POLLIN, 0}};
    int n = poll(fds, r.client >= 0 ? 3 : 2, 200);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    if (fds[0].revents & POLLIN) {
      ssize_t k = recv(nfd, buf, 1u << 17, 0);
      if (k > 0) nfq_handle_packet(r.h, buf, (int)k);
      else if (k < 0 && errno == ENOBUFS) fprintf(stderr, "live_relay: the queue overflowed (packets lost)\n");
    }
    if (fds[1].revents & POLLIN) {
      int c = accept4(lst, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0 && r.client >= 0) {
        close(c); /* one stand-in at a time */
      } else if (c >= 0) {
        int big = 4 << 20;
        setsockopt(c, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
        setsockopt(c, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        r.client = c;
        fprintf(stderr, "live_relay: client connected\n");
      }
    }
    if (r.client >= 0 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      size_t room = 2 * (sizeof(live_header) + LIVE_MAX_PACKET) - r.in_len;
      ssize_t k = recv(r.client, r.in + r.in_len, room, 0);
      if (k <= 0) {
        drop_client(&r);
      } else {
        r.in_len += (size_t)k;
        client_messages(&r);
      }
    }
  }
  if (r.client >= 0) drop_client(&r);
  nfq_destroy_queue(r.q);
  nfq_close(r.h);
  fprintf(stderr,
          "live_relay: %lu packets queued: %lu diverted, %lu passed, %lu left unanswered; %lu injected, %lu inject "
          "errors, %lu inbound on loopback (not delivered)\n",
          r.queued, r.diverted, r.passed, r.unanswered, r.injected, r.inject_errors, r.inbound_loopback);
  free(buf);
  free(r.in);
  free(r.pending);
  return 0;
}
