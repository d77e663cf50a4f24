/* Linux capture backend: NFQUEUE (libnetfilter_queue's message helpers over
 * libmnl), the rules of rules.c, and socket owners from
 * owners.c, on the capture core (capture/core.c). One packet thread
 * receives packets in batches, hands them to the core, and sends the
 * verdicts in batches; between batches it runs the core's loop (ticks, owner
 * queries). Packets of one flow are never reordered because one thread
 * decides them in queue order. A watch thread lists new processes while the
 * policy names process trees (owners.h); it waits idle otherwise.
 *
 * Fail open: the core remembers the queue ID of every packet the engine
 * holds; if the engine fails (a trap) or the backend stops, they are
 * accepted as they are. The queue is not set to FAIL_OPEN (an overflowing
 * queue would leak
 * packets of redirected flows to their real destination); a large receive
 * buffer keeps it from overflowing instead. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/capability.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <net/if.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "capture/backend.h"
#include "capture/core.h"
#include "capture/nfqueue/owners.h"
#include "capture/nfqueue/rules.h"
#include "os/platform.h"

#define BATCH 64
#define PKT_BUF (0x10000 + 4096) /* one netlink message with a whole packet; a multiple of 8 */
#define TX_CAP (1u << 20)
#define RCVBUF (8 << 20)

/* What the core keeps with each packet. */
typedef struct {
  uint32_t id;   /* queue packet ID */
  uint32_t mark; /* the packet's mark as it came */
} nfq_meta;

struct wr_backend {
  wr_engine *engine;
  wr_capture *capture;
  wr_thread thread;
  int stop_fd;
  struct mnl_socket *nl;
  uint32_t portid;
  uint16_t queue;
  int lo_ifindex;
  wr_rules rules;
  wr_owners *owners;
  wr_ancestor chain[WR_ANCESTRY_CAP]; /* the last owner found's ancestry */
  /* The watch thread: lists new processes every WR_OWNERS_WATCH_MS while
   * watch is set (the policy names process trees), waits on watch_fd
   * otherwise; watch_stop ends it. */
  wr_thread watch_thread;
  int watch_started;
  int watch_fd; /* eventfd: watch or watch_stop changed */
  atomic_int watch, watch_stop;
  /* receive batch */
  uint8_t *rx;
  struct iovec rx_iov[BATCH];
  struct mmsghdr rx_msg[BATCH];
  wr_packet pkts[BATCH];
  nfq_meta metas[BATCH];
  /* verdicts to send */
  uint8_t *tx;
  size_t tx_len;
};

/* ------------------------------------------------------------------------
 * Verdicts */

static void flush(wr_backend *b) {
  if (b->tx_len == 0) return;
  if (mnl_socket_sendto(b->nl, b->tx, b->tx_len) < 0) {
    /* Too large for the socket at once (or a transient error): one verdict
     * per message, so no packet is left without its verdict. */
    for (size_t off = 0; off < b->tx_len;) {
      struct nlmsghdr *nlh = (struct nlmsghdr *)(b->tx + off);
      mnl_socket_sendto(b->nl, nlh, nlh->nlmsg_len);
      off += MNL_ALIGN(nlh->nlmsg_len);
    }
  }
  b->tx_len = 0;
}

static void verdict(wr_backend *b, uint32_t id, int v, uint32_t mark, const uint8_t *data, uint32_t len) {
  size_t need = MNL_ALIGN(sizeof(struct nlmsghdr)) + 64 + MNL_ALIGN(len) + 16;
  if (b->tx_len + need > TX_CAP) flush(b);
  struct nlmsghdr *nlh = nfq_nlmsg_put((char *)b->tx + b->tx_len, NFQNL_MSG_VERDICT, b->queue);
  nfq_nlmsg_verdict_put(nlh, (int)id, v);
  if (data) {
    nfq_nlmsg_verdict_put_mark(nlh, mark);
    nfq_nlmsg_verdict_put_pkt(nlh, data, len);
  }
  b->tx_len += MNL_ALIGN(nlh->nlmsg_len);
}

/* The core's send: a verdict for the packet's queue ID. */
static void on_send(void *io, const void *meta, const wr_packet *p, uint32_t v, uint32_t out_flags) {
  wr_backend *b = io;
  const nfq_meta *m = meta;
  (void)out_flags;
  if (!m) return; /* no queue ID: nothing to answer */
  if (v == WR_V_MODIFIED) verdict(b, m->id, NF_ACCEPT, m->mark | WR_MARK, p->data, p->len);
  else if (v == WR_V_DROP) verdict(b, m->id, NF_DROP, 0, NULL, 0);
  else verdict(b, m->id, NF_ACCEPT, 0, NULL, 0);
}

static void on_flush(void *io) { flush(io); }

/* ------------------------------------------------------------------------
 * Owners */

static int is_candidate(void *ctx, const wr_ancestor *chain, size_t n) {
  wr_backend *b = ctx;
  return wr_engine_would_intercept_tree(b->engine, chain, n, (uint32_t)wr_now_ms()) == 1;
}

/* The core's owner query: the socket's owner from sock_diag, or "unknown"
 * (the engine then decides without one). */
static int find_owner(void *io, const wr_query *q, wr_owner_fact *f, char *path, size_t cap) {
  wr_backend *b = io;
  uint32_t pid = 0;
  size_t n = 0;
  if (wr_owners_find(b->owners, q->proto, q->family, q->inbound, q->local, q->local_port, q->remote, q->remote_port,
                     &pid, path, cap, b->chain, &n)) {
    wr_fact_for_query(f, q, q->inbound ? WR_OWNER_ACCEPT : WR_OWNER_CONNECT);
    f->pid = pid;
    f->path = path;
    f->path_len = strlen(path);
    f->ancestry = n ? b->chain : NULL;
    f->n_ancestry = n;
  } else {
    wr_fact_for_query(f, q, WR_OWNER_UNKNOWN);
  }
  return 1;
}

static void wake_watch(wr_backend *b) {
  uint64_t one = 1;
  if (write(b->watch_fd, &one, sizeof one) < 0) {
    /* the eventfd cannot be full; nothing to do */
  }
}

/* The watch thread: new processes are read while their parents live
 * (owners.h), off the packet thread. */
static void watch_run(void *arg) {
  wr_backend *b = arg;
  uint64_t watched = 0;
  while (!atomic_load(&b->watch_stop)) {
    int wait = -1;
    if (atomic_load(&b->watch)) {
      uint64_t now = wr_now_ms();
      if (now - watched >= WR_OWNERS_WATCH_MS) {
        wr_owners_watch(b->owners);
        watched = now;
      }
      uint64_t since = wr_now_ms() - watched;
      wait = since >= WR_OWNERS_WATCH_MS ? 0 : (int)(WR_OWNERS_WATCH_MS - since);
    }
    struct pollfd p = {b->watch_fd, POLLIN, 0};
    if (poll(&p, 1, wait) > 0) {
      uint64_t v;
      if (read(b->watch_fd, &v, sizeof v) < 0) {
        /* EAGAIN: another read took it */
      }
    }
  }
}

static void stop_watch(wr_backend *b) {
  if (!b->watch_started) return;
  atomic_store(&b->watch_stop, 1);
  wake_watch(b);
  wr_thread_join(&b->watch_thread);
  b->watch_started = 0;
}

static void policy_changed(void *io) {
  wr_backend *b = io;
  wr_owners_policy_changed(b->owners);
  int w = wr_engine_tree_count(b->engine) > 0;
  if (atomic_exchange(&b->watch, w) != w) wake_watch(b);
}

/* ------------------------------------------------------------------------
 * Receiving */

static int parse_packet(wr_backend *b, const struct nlmsghdr *nlh, wr_packet *out, nfq_meta *meta) {
  struct nlattr *attr[NFQA_MAX + 1];
  memset(attr, 0, sizeof attr);
  if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR] || !attr[NFQA_PAYLOAD]) return -1;
  const struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
  uint32_t id = ntohl(ph->packet_id);
  uint32_t mark = attr[NFQA_MARK] ? ntohl(mnl_attr_get_u32(attr[NFQA_MARK])) : 0;
  uint32_t info = attr[NFQA_SKB_INFO] ? ntohl(mnl_attr_get_u32(attr[NFQA_SKB_INFO])) : 0;
  int outbound = ph->hook == NF_INET_LOCAL_OUT || ph->hook == NF_INET_POST_ROUTING;
  uint32_t dev = 0;
  if (outbound && attr[NFQA_IFINDEX_OUTDEV]) dev = ntohl(mnl_attr_get_u32(attr[NFQA_IFINDEX_OUTDEV]));
  if (!outbound && attr[NFQA_IFINDEX_INDEV]) dev = ntohl(mnl_attr_get_u32(attr[NFQA_IFINDEX_INDEV]));
  meta->id = id;
  meta->mark = mark;
  out->cookie = 0; /* the core's to set */
  out->data = mnl_attr_get_payload(attr[NFQA_PAYLOAD]);
  out->len = mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]);
  out->flags = (outbound ? WR_PKT_OUTBOUND : 0) | ((info & NFQA_SKB_CSUMNOTREADY) ? WR_PKT_CSUM_PARTIAL : 0) |
               (dev != 0 && (int)dev == b->lo_ifindex ? WR_PKT_LOOPBACK : 0);
  out->if_idx = dev;
  out->sub_if_idx = 0;
  return 0;
}

/* Reads up to BATCH packets without blocking (after poll said one is
 * there), in one system call: each message into a buffer of its own, where
 * its payload stays for the engine. */
static size_t receive(wr_backend *b) {
  int got = recvmmsg(mnl_socket_get_fd(b->nl), b->rx_msg, BATCH, MSG_DONTWAIT, NULL);
  if (got <= 0) return 0; /* EAGAIN, or ENOBUFS after an overflow: go on */
  size_t n = 0;
  for (int i = 0; i < got; i++) {
    int left = (int)b->rx_msg[i].msg_len;
    for (struct nlmsghdr *nlh = (struct nlmsghdr *)(b->rx + (size_t)i * PKT_BUF); mnl_nlmsg_ok(nlh, left);
         nlh = mnl_nlmsg_next(nlh, &left)) {
      if (nlh->nlmsg_type == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET) &&
          parse_packet(b, nlh, &b->pkts[n], &b->metas[n]) == 0) {
        n++;
        break; /* one packet per buffer */
      }
    }
  }
  return n;
}

static void run(void *arg) {
  wr_backend *b = arg;
  struct pollfd fds[2] = {{mnl_socket_get_fd(b->nl), POLLIN, 0}, {b->stop_fd, POLLIN, 0}};
  int wait = 0;
  for (;;) {
    int pr = poll(fds, 2, wait);
    if (pr < 0) {
      int e = errno;
      /* EINTR, or ENOMEM for a moment: ending here would leave the queue
       * unread and the intercepted traffic stuck, so try again (stop is
       * still seen: its eventfd is read directly). */
      uint64_t v;
      if (read(b->stop_fd, &v, sizeof v) == (ssize_t)sizeof v) break;
      if (e != EINTR) wr_sleep_ms(1);
      continue;
    }
    if (fds[1].revents) break;
    if (fds[0].revents & POLLIN) {
      size_t n = receive(b);
      if (n) wr_capture_process(b->capture, b->pkts, b->metas, n);
    }
    wait = (int)wr_capture_poll(b->capture);
  }
}

/* ------------------------------------------------------------------------
 * Start and stop */

/* Sends a config message and waits for the kernel's answer. */
static int config(wr_backend *b, struct nlmsghdr *nlh) {
  nlh->nlmsg_flags |= NLM_F_ACK;
  nlh->nlmsg_seq = (uint32_t)time(NULL);
  if (mnl_socket_sendto(b->nl, nlh, nlh->nlmsg_len) < 0) return -1;
  char buf[MNL_SOCKET_BUFFER_SIZE];
  ssize_t r = mnl_socket_recvfrom(b->nl, buf, sizeof buf);
  if (r < 0) return -1;
  return mnl_cb_run(buf, (size_t)r, nlh->nlmsg_seq, b->portid, NULL, NULL) < 0 ? -1 : 0;
}

/* Does this thread have CAP_NET_ADMIN in its effective set? */
static int has_net_admin(void) {
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
  memset(d, 0, sizeof d);
  if (syscall(SYS_capget, &h, d) != 0) return geteuid() == 0;
  return (d[CAP_NET_ADMIN / 32].effective >> (CAP_NET_ADMIN % 32)) & 1;
}

static int open_queue(wr_backend *b, char *err, size_t errlen) {
  b->nl = mnl_socket_open(NETLINK_NETFILTER);
  if (!b->nl) {
    snprintf(err, errlen, "could not open a netfilter netlink socket: %s", strerror(errno));
    return -1;
  }
  if (mnl_socket_bind(b->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    snprintf(err, errlen, "could not bind the netlink socket: %s", strerror(errno));
    return -1;
  }
  b->portid = mnl_socket_get_portid(b->nl);
  char buf[MNL_SOCKET_BUFFER_SIZE];
  memset(buf, 0, sizeof buf);
  struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, b->queue);
  nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND);
  if (config(b, nlh) < 0) {
    int e = errno;
    /* The kernel answers EPERM both without CAP_NET_ADMIN and when another
     * socket has bound the queue. */
    if (e == EPERM && !has_net_admin()) {
      snprintf(err, errlen, "not allowed to use NFQUEUE: run as root (or with CAP_NET_ADMIN)");
    } else if (e == EPERM || e == EBUSY) {
      snprintf(err, errlen,
               "NFQUEUE queue %u is in use by another program: stop it, or choose another queue with "
               "redirector_set_nfqueue_num",
               (unsigned)b->queue);
    } else {
      snprintf(err, errlen, "could not bind NFQUEUE queue %u: %s (is nfnetlink_queue available?)",
               (unsigned)b->queue, strerror(e));
    }
    return -1;
  }
  memset(buf, 0, sizeof buf);
  nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, b->queue);
  struct nfqnl_msg_config_params params;
  memset(&params, 0, sizeof params); /* no uninitialised padding on the wire */
  params.copy_range = htonl(0xffff);
  params.copy_mode = NFQNL_COPY_PACKET;
  mnl_attr_put(nlh, NFQA_CFG_PARAMS, sizeof params, &params);
  mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(NFQA_CFG_F_GSO));
  mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO));
  nfq_nlmsg_cfg_put_qmaxlen(nlh, 16384);
  if (config(b, nlh) < 0) {
    snprintf(err, errlen, "could not configure NFQUEUE queue %u: %s", (unsigned)b->queue, strerror(errno));
    return -1;
  }
  int fd = mnl_socket_get_fd(b->nl);
  int size = RCVBUF, one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  /* Verdict batches carry rewritten packets: room for a whole batch. */
  size = 2 * TX_CAP;
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) < 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  }
  setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
  return 0;
}

static void destroy(wr_backend *b) {
  stop_watch(b); /* before the owners and the engine's users go */
  wr_capture_free(b->capture); /* accepts what the engine still holds */
  if (b->nl) mnl_socket_close(b->nl);
  if (b->stop_fd >= 0) close(b->stop_fd);
  if (b->watch_fd >= 0) close(b->watch_fd);
  wr_owners_free(b->owners);
  free(b->rx);
  free(b->tx);
  free(b);
}

wr_backend *wr_backend_start(const wr_backend_options *opts, char *err, size_t errlen) {
  wr_backend *b = calloc(1, sizeof *b);
  if (!b) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  b->engine = opts->engine;
  b->queue = opts->nfqueue_num;
  b->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  b->watch_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  b->lo_ifindex = (int)if_nametoindex("lo");
  b->rx = malloc((size_t)BATCH * PKT_BUF);
  b->tx = malloc(TX_CAP);
  b->owners = wr_owners_new(is_candidate, b);
  static const wr_capture_io ops = {sizeof(nfq_meta), 0, on_send, on_flush, find_owner, policy_changed, NULL};
  b->capture = wr_capture_new(b->engine, &ops, b);
  if (b->stop_fd < 0 || b->watch_fd < 0 || !b->rx || !b->tx || !b->capture) {
    snprintf(err, errlen, "out of memory");
    destroy(b);
    return NULL;
  }
  for (size_t i = 0; i < BATCH; i++) {
    b->rx_iov[i] = (struct iovec){b->rx + i * PKT_BUF, PKT_BUF};
    b->rx_msg[i].msg_hdr = (struct msghdr){.msg_iov = &b->rx_iov[i], .msg_iovlen = 1};
  }
  if (!b->owners) {
    snprintf(err, errlen, "could not open a sock_diag socket: %s", strerror(errno));
    destroy(b);
    return NULL;
  }
  atomic_store(&b->watch, wr_engine_tree_count(b->engine) > 0);
  if (open_queue(b, err, errlen) != 0) {
    destroy(b);
    return NULL;
  }
  if (wr_rules_install(&b->rules, b->queue, opts->app_port, err, errlen) != 0) {
    destroy(b);
    return NULL;
  }
  int rc = wr_thread_start(&b->watch_thread, watch_run, b);
  if (rc != 0) {
    wr_rules_remove(b->queue);
    destroy(b);
    snprintf(err, errlen, "could not start the watch thread (error %d)", rc);
    return NULL;
  }
  b->watch_started = 1;
  rc = wr_thread_start(&b->thread, run, b);
  if (rc != 0) {
    wr_rules_remove(b->queue);
    destroy(b);
    snprintf(err, errlen, "could not start the packet thread (error %d)", rc);
    return NULL;
  }
  return b;
}

void wr_backend_stop(wr_backend *b) {
  if (!b) return;
  /* Rules first: from now on traffic flows directly. */
  wr_rules_remove(b->queue);
  uint64_t one = 1;
  if (write(b->stop_fd, &one, sizeof one) < 0) {
    /* the eventfd cannot be full; nothing to do */
  }
  wr_thread_join(&b->thread);
  /* Packets still queued or held: accept them as they are. */
  size_t n;
  while ((n = receive(b)) > 0) {
    for (size_t i = 0; i < n; i++) verdict(b, b->metas[i].id, NF_ACCEPT, 0, NULL, 0);
  }
  flush(b);
  destroy(b);
}

int wr_exclude_socket(intptr_t socket, wr_exclusion *x, char *err, size_t errlen) {
  (void)x; /* marked packets never reach the queue: nothing for the engine */
  int fd = (int)socket;
  if (socket < 0 || (intptr_t)fd != socket) {
    snprintf(err, errlen, "%ld is not a file descriptor", (long)socket);
    return -1;
  }
  uint32_t mark = 0;
  socklen_t len = sizeof mark;
  if (getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &len) != 0) mark = 0;
  mark |= WR_EXCLUDE_MARK;
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    int e = errno;
    snprintf(err, errlen, "could not mark socket %d: %s%s", fd, strerror(e),
             e == EPERM ? " (needs CAP_NET_ADMIN)" : "");
    return -1;
  }
  return 0;
}

/* Linux has no process that is never a user's (PID 1 is init, which a
 * configuration may name). */
size_t wr_backend_never_intercept(const uint32_t **pids) {
  *pids = NULL;
  return 0;
}

/* The rules queue every new connection, whatever the configuration: nothing
 * to follow. */
int wr_backend_config_changed(wr_backend *b, char *err, size_t errlen) {
  (void)b;
  (void)err;
  (void)errlen;
  return 0;
}

int wr_backend_set_app_port(wr_backend *b, uint16_t port, char *err, size_t errlen) {
  return wr_rules_add_app_port(&b->rules, port, err, errlen);
}

size_t wr_backend_diagnostics(wr_backend *b, char *buf, size_t len) {
  char syns[768];
  wr_capture_syn_report(b->capture,
                        "a firewall rule (iptables, nftables: INPUT) dropping packets to the app port, or the proxy "
                        "not accepting (its listen backlog full)",
                        "the proxy not listening on the app port in that family, or bound to another address (a "
                        "redirected connection arrives addressed to the client's own address: listen on 0.0.0.0 "
                        "and [::])",
                        syns, sizeof syns);
  int n = snprintf(buf, len, "nfqueue %u; ipv6 rules %s; packets held now: %zu%s", (unsigned)b->queue,
                   b->rules.have_v6 ? "on" : "off", wr_capture_held(b->capture), syns);
  return n < 0 ? 0 : (size_t)n;
}

