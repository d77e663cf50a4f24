/* A stand-in WinDivert.dll for the tests: the WinDivert 2.x functions the
 * library uses, behaving as the documentation says where the library
 * depends on it, with no driver behind them. It plays a SCRIPT and RECORDS
 * what the library does.
 *
 * Environment (read at every WinDivertOpen):
 *   WR_FAKE_WINDIVERT_SCRIPT  the script (below); none: no traffic
 *   WR_FAKE_WINDIVERT_LIVE    A.B.C.D:PORT: live mode (fake_live.h), the
 *                             NETWORK layer carries real packets from a
 *                             relay, besides the script's
 *   WR_FAKE_WINDIVERT_LOG     the record, appended one line per action
 *   WR_FAKE_WINDIVERT_RECORD  what went between the library and the
 *                             stand-in, for the real WinDivert.dll to judge
 *                             (test_wd_oracle.c); appended by every process:
 *     deliver layer=N addr=HEX80 len=L data=HEX|- script=LINE filter=TEXT
 *                             one per packet or event a receive returned
 *                             (LINE: the script line it came from, without
 *                             hex=; filter: the receiving handle's, to the
 *                             end)
 *     nomatch layer=0 addr=HEX80 len=L data=HEX script=LINE filter=TEXT
 *                             one per NETWORK handle a packet was offered
 *                             to whose filter did not match it (so the
 *                             packet went on to the next handle, or on its
 *                             way)
 *     send addr=HEX80 len=L data=HEX
 *                             one per packet sent, as the library gave it
 *
 * The driver's diversion, as sys/windivert.c (2.2) does it: a packet (or
 * event) is offered to the open handles of its layer, highest place first:
 * higher priority, and of one priority the later opened (the driver gives
 * it a higher weight). A handle whose receive side is shut down, or whose
 * filter (the stand-in's evaluator, fake_filter.c) does not match, passes
 * it on; the first that matches queues it (a SNIFF handle queues a copy and
 * passes it on). A packet a handle injects is offered only to the handles
 * below that handle's place. A handle closed with packets queued re-injects
 * them (unless older than its queue time), so they go on to the handles
 * below it. After SHUTDOWN_RECV what is queued can still be received; then
 * a receive fails with ERROR_NO_DATA.
 *
 * Script lines (# starts a comment):
 *   open_error CODE [LAYER]   WinDivertOpen fails with CODE (for LAYER only)
 *   recv_error CODE COUNT     the NETWORK handle's next COUNT receives fail
 *                             with CODE at once
 *   driver_version MAJOR MINOR
 *                             what WinDivertGetParam says of the driver
 *                             (default 2 2)
 *   reflect pid=N layer=NAME priority=P flags=F [object=OBJ]
 *                             an open handle of another program, reported
 *                             by a REFLECT-layer open; OBJ: its filter as
 *                             WinDivertHelperCompileFilter writes it
 *                             (@WinDiv_...), the event's packet
 *   Played in order by a thread started when a NETWORK handle opens:
 *   delay MS
 *   gate NAME                 waits for the named event WrFakeGate_PID_NAME
 *                             (PID: this process's)
 *   wait_sent N               waits until N packets were sent this session
 *   batch_begin / batch_end   the packets between are queued at once
 *   mark TEXT                 writes "mark TEXT" to the record
 *   recv_block / recv_unblock NETWORK receives return nothing (what is
 *                             diverted stays queued) until recv_unblock
 *   include PATH              plays the lines of the file PATH, read when
 *                             this line is reached (after a gate, the test
 *                             can write into it what it learnt after start)
 *   socket EVENT pid=N proto=tcp|udp local=A:P remote=A:P [loopback]
 *          [ts=+-MS]          EVENT: bind connect listen accept close;
 *                             IPv6 as [addr]:port; loopback: the driver's
 *                             Loopback flag (a connection on the loopback
 *                             interface). close without remote= is a
 *                             binding's release, with it a connection's
 *                             end (see socket_endpoint)
 *   packet out|in [loopback] [impostor] [if=N] [sub=N] [ipcsum=0|1]
 *          [tcpcsum=0|1] [udpcsum=0|1] hex=BYTES
 *
 * Record lines:
 *   open id=N layer=NAME priority=P flags=0xF filter=TEXT
 *   open_failed layer=NAME error=CODE
 *   param id=N param=NAME value=V
 *   recv id=N count=C
 *   send id=N outbound=B loopback=B impostor=B ipcsum=B tcpcsum=B udpcsum=B
 *        if=N sub=N len=L csum_ok=B hex=BYTES     (one per packet; the bytes
 *        as they would go on the wire: a checksum whose flag is 0 is
 *        recomputed, as the driver does)
 *   sendex id=N count=C
 *   send_failed id=N error=CODE
 *   dropped id=N layer=NAME age_ms=A   (older than the queue time, as the
 *                             driver drops it)
 *   undiverted layer=NAME script=LINE  (no handle diverted it: on its way)
 *   rediverted id=N from=M len=L hex=BYTES   (a packet handle M sent,
 *                             diverted again by handle N below it)
 *   reinjected id=N len=L hex=BYTES    (queued in handle N when it was
 *                             closed: the driver sent it on)
 *   filter_error id=N         (the stand-in could not evaluate its filter)
 *   shutdown id=N how=H
 *   close id=N
 *   mark TEXT
 *
 * Address layout: written byte by byte at the offsets WinDivert documents
 * (WINDIVERT_ADDRESS, 80 bytes), independently of the library's struct. */
#define WIN32_LEAN_AND_MEAN
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_filter.h"
#include "fake_live.h"
#include "wd_test_util.h"

#define FAKE_API __declspec(dllexport)

/* WINDIVERT_ADDRESS byte offsets (WinDivert 2.2 windivert.h / docs). */
#define A_SIZE 80
#define A_TIMESTAMP 0
#define A_BITS 8 /* layer 0-7, event 8-15, then flag bits: */
#define BIT_SNIFFED 16
#define BIT_OUTBOUND 17
#define BIT_LOOPBACK 18
#define BIT_IMPOSTOR 19
#define BIT_IPV6 20
#define BIT_IPCSUM 21
#define BIT_TCPCSUM 22
#define BIT_UDPCSUM 23
#define A_IFIDX 16
#define A_SUBIFIDX 20
#define A_S_ENDPOINT 16
#define A_S_PARENT 24
#define A_S_PID 32
#define A_S_LADDR 36
#define A_S_RADDR 52
#define A_S_LPORT 68
#define A_S_RPORT 70
#define A_S_PROTO 72
#define A_R_TIMESTAMP 16
#define A_R_PID 24
#define A_R_LAYER 28
#define A_R_FLAGS 32
#define A_R_PRIORITY 40

#define L_NETWORK 0
#define L_SOCKET 3
#define L_REFLECT 4
#define NLAYERS 5

#define MAX_HANDLES 64
#define MAX_LINE 70000

typedef struct item {
  struct item *next;
  uint8_t addr[A_SIZE];
  uint8_t *data;
  uint32_t len;
  char *line; /* the script line it came from, for the record */
} item;

typedef struct {
  int used, closed, id, layer;
  char *filter; /* as opened */
  int16_t priority;
  uint64_t flags;
  int shut_recv, shut_send;
  uint64_t queue_length, queue_time, queue_size;
  item *head, *tail; /* what the driver queued for it */
} fake_handle;

static SRWLOCK g_lock = SRWLOCK_INIT; /* handles and queues */
static CONDITION_VARIABLE g_cond = CONDITION_VARIABLE_INIT;
static fake_handle g_handles[MAX_HANDLES];
static int g_next_id = 1;
static int g_recv_blocked; /* recv_block: NETWORK receives wait */
static volatile LONG g_sent; /* packets sent this session */
static uint64_t g_endpoint = 100;

static SRWLOCK g_log_lock = SRWLOCK_INIT;

static DWORD g_recv_error; /* NETWORK receives fail with this ... */
static long g_recv_errors_left; /* ... this many more times */

static HANDLE g_player;
static HANDLE g_player_stop;
static char *g_script; /* the script text for the player */

/* ------------------------------------------------------------------------
 * Small helpers */

static void put32(uint8_t *a, size_t off, uint32_t v) { memcpy(a + off, &v, 4); }
static void put16(uint8_t *a, size_t off, uint16_t v) { memcpy(a + off, &v, 2); }
static void put64(uint8_t *a, size_t off, uint64_t v) { memcpy(a + off, &v, 8); }
static uint64_t get64(const uint8_t *a, size_t off) {
  uint64_t v;
  memcpy(&v, a + off, 8);
  return v;
}
static uint32_t get32(const uint8_t *a, size_t off) {
  uint32_t v;
  memcpy(&v, a + off, 4);
  return v;
}
static int bit(const uint8_t *a, int b) { return (int)((get32(a, A_BITS) >> b) & 1); }
static void set_bit(uint8_t *a, int b, int on) {
  uint32_t v = get32(a, A_BITS);
  v = on ? v | (1u << b) : v & ~(1u << b);
  put32(a, A_BITS, v);
}

static const char *layer_name(int layer) {
  static const char *const names[] = {"NETWORK", "NETWORK_FORWARD", "FLOW", "SOCKET", "REFLECT"};
  return layer >= 0 && layer < NLAYERS ? names[layer] : "?";
}

static int layer_of(const char *s) {
  for (int i = 0; i < NLAYERS; i++) {
    if (_stricmp(s, layer_name(i)) == 0) return i;
  }
  return atoi(s);
}

static void logf_(const char *fmt, ...) {
  char path[MAX_PATH];
  DWORD n = GetEnvironmentVariableA("WR_FAKE_WINDIVERT_LOG", path, sizeof path);
  if (n == 0 || n >= sizeof path) return;
  AcquireSRWLockExclusive(&g_log_lock);
  FILE *f = fopen(path, "ab");
  if (f) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
  }
  ReleaseSRWLockExclusive(&g_log_lock);
}

/* One line of the oracle's record (WR_FAKE_WINDIVERT_RECORD): the address
 * and the bytes in hex, then `tail`. Several test processes may append at
 * once, so each line is written whole under a machine-wide mutex. */
static void record(const char *what, const uint8_t *a, const uint8_t *data, uint32_t len, const char *tail) {
  char path[MAX_PATH];
  DWORD n = GetEnvironmentVariableA("WR_FAKE_WINDIVERT_RECORD", path, sizeof path);
  if (n == 0 || n >= sizeof path) return;
  size_t cap = strlen(what) + 2 * A_SIZE + 2 * (size_t)len + strlen(tail) + 64;
  char *line = malloc(cap);
  if (!line) return;
  int k = snprintf(line, cap, "%s addr=", what);
  tu_hex(a, A_SIZE, line + k);
  k += 2 * A_SIZE;
  k += snprintf(line + k, cap - (size_t)k, " len=%lu data=", (unsigned long)len);
  if (len) tu_hex(data, len, line + k);
  else strcpy(line + k, "-");
  k += len ? 2 * (int)len : 1;
  snprintf(line + k, cap - (size_t)k, "%s\n", tail);
  HANDLE mutex = CreateMutexA(NULL, FALSE, "WrFakeWinDivertRecord");
  if (mutex) WaitForSingleObject(mutex, 10000);
  FILE *f = fopen(path, "ab");
  if (f) {
    fputs(line, f);
    fclose(f);
  }
  if (mutex) {
    ReleaseMutex(mutex);
    CloseHandle(mutex);
  }
  free(line);
}

/* A whole file as text, or NULL. */
static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)size + 1);
  if (s) {
    size_t got = fread(s, 1, (size_t)size, f);
    s[got] = '\0';
  }
  fclose(f);
  return s;
}

static char *read_script(void) {
  char path[MAX_PATH];
  DWORD n = GetEnvironmentVariableA("WR_FAKE_WINDIVERT_SCRIPT", path, sizeof path);
  if (n == 0 || n >= sizeof path) return NULL;
  return read_text(path);
}

/* The value of key=VALUE in a line (copied into out), or NULL. */
static const char *field(const char *line, const char *key, char *out, size_t outlen) {
  size_t k = strlen(key);
  for (const char *p = line; (p = strstr(p, key)) != NULL; p++) {
    if ((p == line || p[-1] == ' ') && p[k] == '=') {
      const char *v = p + k + 1;
      size_t n = strcspn(v, " \r\n");
      if (n >= outlen) n = outlen - 1;
      memcpy(out, v, n);
      out[n] = '\0';
      return out;
    }
  }
  return NULL;
}

static long field_num(const char *line, const char *key, long dflt) {
  char buf[64];
  return field(line, key, buf, sizeof buf) ? strtol(buf, NULL, 0) : dflt;
}

static int has_word(const char *line, const char *word) {
  size_t k = strlen(word);
  for (const char *p = line; (p = strstr(p, word)) != NULL; p++) {
    if ((p == line || p[-1] == ' ') && (p[k] == ' ' || p[k] == '\0' || p[k] == '\r' || p[k] == '\n')) return 1;
  }
  return 0;
}

/* Calls fn for each non-empty, non-comment line of the script. */
static void each_line(const char *script, int (*fn)(void *ctx, const char *line), void *ctx) {
  if (!script) return;
  char *line = malloc(MAX_LINE);
  if (!line) return;
  for (const char *p = script; *p;) {
    size_t n = strcspn(p, "\n");
    size_t k = n < MAX_LINE - 1 ? n : MAX_LINE - 1;
    memcpy(line, p, k);
    line[k] = '\0';
    while (k > 0 && (line[k - 1] == '\r' || line[k - 1] == ' ')) line[--k] = '\0';
    const char *s = line;
    while (*s == ' ') s++;
    if (*s && *s != '#' && fn(ctx, s)) break;
    p += n;
    if (*p) p++;
  }
  free(line);
}

/* ------------------------------------------------------------------------
 * Queues (g_lock held) */

static void item_free(item *it) {
  free(it->data);
  free(it->line);
  free(it);
}

static item *item_copy(const item *it) {
  item *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  memcpy(c->addr, it->addr, A_SIZE);
  c->len = it->len;
  c->data = malloc(it->len ? it->len : 1);
  c->line = it->line ? _strdup(it->line) : NULL;
  if (!c->data) {
    item_free(c);
    return NULL;
  }
  memcpy(c->data, it->data, it->len);
  return c;
}

static void enqueue_locked(fake_handle *h, item *it) {
  it->next = NULL;
  if (h->tail) h->tail->next = it;
  else h->head = it;
  h->tail = it;
}

/* Unlinks the first item of a handle's queue and returns it. */
static item *dequeue_locked(fake_handle *h) {
  item *it = h->head;
  h->head = it->next;
  if (!h->head) h->tail = NULL;
  return it;
}

/* Does handle a have a higher place than b (priority, then the later
 * opened)? */
static int placed_above(const fake_handle *a, const fake_handle *b) {
  return a->priority != b->priority ? a->priority > b->priority : a->id > b->id;
}

/* The driver diverts one packet or event of `layer` (the comment at the
 * top): offered to its open handles from the highest place down (only
 * those below `injector`, when a handle sent it). Takes the item. Returns
 * the id of the handle that queued it (or a copy of it), or 0. */
static int divert_locked(int layer, item *it, const fake_handle *injector) {
  int offered[MAX_HANDLES] = {0}, queued = 0;
  for (;;) {
    fake_handle *h = NULL;
    for (int i = 0; i < MAX_HANDLES; i++) {
      fake_handle *c = &g_handles[i];
      if (!c->used || c->closed || c->layer != layer || offered[i] || (injector && !placed_above(injector, c))) continue;
      if (!h || placed_above(c, h)) h = c;
    }
    if (!h) break;
    offered[h - g_handles] = 1;
    if (h->shut_recv) continue; /* it queues nothing new */
    int m = ff_matches(h->filter, it->addr, it->data, it->len);
    if (m < 0) logf_("filter_error id=%d", h->id);
    if (m != 1) {
      if (layer == L_NETWORK) {
        const char *src = it->line ? it->line : "-";
        const char *hex = strstr(src, " hex=");
        char tail[1200];
        snprintf(tail, sizeof tail, " script=%.*s filter=%s", (int)(hex ? (size_t)(hex - src) : strlen(src)), src,
                 h->filter);
        record("nomatch layer=0", it->addr, it->data, it->len, tail);
      }
      continue;
    }
    queued = h->id;
    if (h->flags & 1) { /* SNIFF: a copy, and the packet goes on */
      item *c = item_copy(it);
      if (c) enqueue_locked(h, c);
      continue;
    }
    enqueue_locked(h, it);
    return queued;
  }
  item_free(it);
  return queued;
}

static fake_handle *lookup_handle(HANDLE h) {
  fake_handle *f = (fake_handle *)h;
  if (f < g_handles || f >= g_handles + MAX_HANDLES || !f->used || f->closed) return NULL;
  return f;
}

/* ------------------------------------------------------------------------
 * Script items */

static int64_t qpc_now(void) {
  LARGE_INTEGER t;
  QueryPerformanceCounter(&t);
  return t.QuadPart;
}

/* "a.b.c.d:port" or "[v6]:port" -> 16 network-order bytes, port; 4 or 6. */
static int parse_endpoint(const char *s, uint8_t addr[16], uint16_t *port) {
  char host[80];
  memset(addr, 0, 16);
  const char *colon;
  int v6 = s[0] == '[';
  if (v6) {
    const char *end = strchr(s, ']');
    if (!end || (size_t)(end - s - 1) >= sizeof host) return 0;
    memcpy(host, s + 1, (size_t)(end - s - 1));
    host[end - s - 1] = '\0';
    colon = end + 1;
  } else {
    colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return 0;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
  }
  *port = (uint16_t)atoi(colon + 1);
  if (InetPtonA(v6 ? AF_INET6 : AF_INET, host, addr) != 1) return 0;
  return v6 ? 6 : 4;
}

/* 16 network-order bytes as WinDivert's four host-order words, most
 * significant last; IPv4 as ::ffff:a.b.c.d. */
static void put_socket_addr(uint8_t *a, size_t off, const uint8_t net[16], int family) {
  uint8_t full[16] = {0};
  if (family == 4) {
    full[10] = full[11] = 0xff;
    memcpy(full + 12, net, 4);
  } else {
    memcpy(full, net, 16);
  }
  for (int w = 0; w < 4; w++) {
    const uint8_t *b = full + 4 * (3 - w);
    put32(a, off + 4 * (size_t)w, (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]);
  }
}

/* The driver's socket endpoints (sys/windivert.c), as the script makes
 * them. Every SOCKET event names the WFP endpoint it is about (EndpointId)
 * and, for a connection, its parent (ParentEndpointId); a socket keeps its
 * endpoint through its events. The driver sends a CLOSE from two places:
 *   - a binding's release (ALE_RESOURCE_RELEASE): the local address and
 *     port as bound, the remote end zero, parent 0. A script writes it as
 *     `socket close` without remote=, after the socket's bind or listen.
 *   - an endpoint's closure (ALE_ENDPOINT_CLOSURE): the end of every
 *     connection, one a listener accepted too (then with the listener's
 *     port, the PID and the connection's remote end). A script writes it as
 *     `socket close ... remote=R:r`, after the connection's connect or
 *     accept.
 * BIND and LISTEN have parent 0 (the driver sets it so); an accepted
 * connection has the listener's endpoint as parent, a connect 0. */
typedef struct {
  uint64_t id, parent;
  int proto, family, connection;
  uint8_t local[16], remote[16];
  uint16_t lport, rport;
  uint32_t pid;
} endpoint;

#define MAX_ENDPOINTS 256
static endpoint g_endpoints[MAX_ENDPOINTS];
static int g_nendpoints;

static int zero16(const uint8_t a[16]) {
  static const uint8_t z[16];
  return memcmp(a, z, 16) == 0;
}

/* The endpoint the script made with this key (a connection's 5-tuple, or a
 * binding's local end and PID), or NULL. */
static endpoint *find_endpoint(int connection, int proto, int family, const uint8_t local[16], uint16_t lport,
                               const uint8_t remote[16], uint16_t rport, uint32_t pid) {
  for (int i = 0; i < g_nendpoints; i++) {
    endpoint *e = &g_endpoints[i];
    if (e->connection == connection && e->proto == proto && e->family == family && e->lport == lport &&
        memcmp(e->local, local, 16) == 0 &&
        (connection ? e->rport == rport && memcmp(e->remote, remote, 16) == 0 : e->pid == pid)) {
      return e;
    }
  }
  return NULL;
}

/* The listener an accepted connection to (family, local, lport) came
 * through: one bound to its address, else a wildcard of its family, else
 * (IPv4) one on [::]. */
static endpoint *accepting_listener(int family, const uint8_t local[16], uint16_t lport) {
  endpoint *best = NULL;
  int best_rank = 0;
  for (int i = 0; i < g_nendpoints; i++) {
    endpoint *e = &g_endpoints[i];
    if (e->connection || e->proto != 6 || e->lport != lport) continue;
    int rank = e->family != family ? (e->family == 6 && zero16(e->local) ? 1 : 0)
               : memcmp(e->local, local, 16) == 0 ? 3
               : zero16(e->local)                  ? 2
                                                   : 0;
    if (rank > best_rank) {
      best = e;
      best_rank = rank;
    }
  }
  return best;
}

/* Sets the event's EndpointId and ParentEndpointId, and keeps or forgets
 * its endpoint. event: the driver's code (3 bind ... 7 close). */
static void socket_endpoint(uint8_t *a, int event, int proto, int family, const uint8_t local[16], uint16_t lport,
                            const uint8_t remote[16], uint16_t rport, uint32_t pid) {
  int connection = event == 4 || event == 6 || (event == 7 && (rport != 0 || !zero16(remote)));
  endpoint *e = find_endpoint(connection, proto, family, local, lport, remote, rport, pid);
  endpoint made;
  if (!e || event == 4 || event == 6) {
    memset(&made, 0, sizeof made);
    made.id = ++g_endpoint;
    made.proto = proto;
    made.family = family;
    made.connection = connection;
    memcpy(made.local, local, 16);
    memcpy(made.remote, remote, 16);
    made.lport = lport;
    made.rport = rport;
    made.pid = pid;
    if (event == 6) {
      endpoint *l = accepting_listener(family, local, lport);
      made.parent = l ? l->id : 0;
    }
    e = &made;
    if (event != 7 && g_nendpoints < MAX_ENDPOINTS) {
      g_endpoints[g_nendpoints] = made;
      e = &g_endpoints[g_nendpoints++];
    }
  }
  put64(a, A_S_ENDPOINT, e->id);
  put64(a, A_S_PARENT, e->parent);
  if (event == 7 && e != &made) *e = g_endpoints[--g_nendpoints]; /* closed: forgotten */
}

static item *socket_item(const char *line) {
  static const char *const events[] = {"bind", "connect", "listen", "accept", "close"};
  static const int codes[] = {3, 4, 5, 6, 7};
  char word[32] = "", buf[96];
  sscanf(line, "socket %31s", word);
  int event = -1;
  for (int i = 0; i < 5; i++) {
    if (strcmp(word, events[i]) == 0) event = codes[i];
  }
  if (event < 0) return NULL;
  item *it = calloc(1, sizeof *it);
  if (!it) return NULL;
  uint8_t *a = it->addr;
  uint8_t laddr[16], raddr[16];
  uint16_t lport = 0, rport = 0;
  int fam = 4;
  if (field(line, "local", buf, sizeof buf)) fam = parse_endpoint(buf, laddr, &lport);
  else memset(laddr, 0, 16);
  int has_remote = field(line, "remote", buf, sizeof buf) != NULL;
  if (has_remote) parse_endpoint(buf, raddr, &rport);
  else memset(raddr, 0, 16);
  LARGE_INTEGER freq;
  QueryPerformanceFrequency(&freq);
  put64(a, A_TIMESTAMP, (uint64_t)(qpc_now() + field_num(line, "ts", 0) * (freq.QuadPart / 1000)));
  put32(a, A_BITS, (uint32_t)L_SOCKET | (uint32_t)event << 8);
  set_bit(a, BIT_SNIFFED, 1);
  set_bit(a, BIT_OUTBOUND, event != 6); /* ACCEPT is inbound */
  set_bit(a, BIT_LOOPBACK, has_word(line, "loopback"));
  set_bit(a, BIT_IPV6, fam == 6);
  put32(a, A_S_PID, (uint32_t)field_num(line, "pid", 0));
  put_socket_addr(a, A_S_LADDR, laddr, fam);
  /* No remote end (bind, listen, a release): all zero, not ::ffff:0.0.0.0,
   * as the driver zeroes it. */
  if (has_remote) put_socket_addr(a, A_S_RADDR, raddr, fam);
  put16(a, A_S_LPORT, lport);
  put16(a, A_S_RPORT, rport);
  field(line, "proto", buf, sizeof buf);
  a[A_S_PROTO] = (uint8_t)(strcmp(buf, "udp") == 0 ? 17 : 6);
  socket_endpoint(a, event, a[A_S_PROTO], fam, laddr, lport, raddr, rport, get32(a, A_S_PID));
  return it;
}

static item *packet_item(const char *line) {
  const char *hex = strstr(line, "hex=");
  if (!hex) return NULL;
  item *it = calloc(1, sizeof *it);
  if (!it) return NULL;
  it->data = malloc(strlen(hex) / 2 + 1);
  if (!it->data) {
    free(it);
    return NULL;
  }
  it->len = (uint32_t)tu_unhex(hex + 4, it->data, strlen(hex));
  uint8_t *a = it->addr;
  put64(a, A_TIMESTAMP, (uint64_t)qpc_now());
  put32(a, A_BITS, L_NETWORK);
  set_bit(a, BIT_OUTBOUND, strncmp(line, "packet out", 10) == 0);
  set_bit(a, BIT_LOOPBACK, has_word(line, "loopback"));
  set_bit(a, BIT_IMPOSTOR, has_word(line, "impostor"));
  set_bit(a, BIT_IPV6, it->len > 0 && (it->data[0] >> 4) == 6);
  set_bit(a, BIT_IPCSUM, field_num(line, "ipcsum", 1) != 0);
  set_bit(a, BIT_TCPCSUM, field_num(line, "tcpcsum", 1) != 0);
  set_bit(a, BIT_UDPCSUM, field_num(line, "udpcsum", 1) != 0);
  put32(a, A_IFIDX, (uint32_t)field_num(line, "if", 1));
  put32(a, A_SUBIFIDX, (uint32_t)field_num(line, "sub", 0));
  return it;
}

/* ------------------------------------------------------------------------
 * The player */

typedef struct {
  int batching;
} player_state;

/* Sleeps ms unless stopped; 1 when stopped. */
static int player_wait(DWORD ms) { return WaitForSingleObject(g_player_stop, ms) == WAIT_OBJECT_0; }

static int play_line(void *ctx, const char *line) {
  player_state *st = ctx;
  char word[32] = "";
  sscanf(line, "%31s", word);
  item *it = NULL;
  int layer = -1;
  if (strcmp(word, "delay") == 0) {
    return player_wait((DWORD)atol(line + 5));
  } else if (strcmp(word, "gate") == 0) {
    char name[64], full[100];
    sscanf(line, "gate %63s", name);
    snprintf(full, sizeof full, "WrFakeGate_%lu_%s", (unsigned long)GetCurrentProcessId(), name);
    HANDLE ev = CreateEventA(NULL, TRUE, FALSE, full);
    HANDLE both[2] = {g_player_stop, ev};
    DWORD r = WaitForMultipleObjects(2, both, FALSE, 60000);
    CloseHandle(ev);
    return r != WAIT_OBJECT_0 + 1;
  } else if (strcmp(word, "wait_sent") == 0) {
    LONG want = atol(line + 9);
    for (int i = 0; i < 2000 && InterlockedCompareExchange(&g_sent, 0, 0) < want; i++) {
      if (player_wait(5)) return 1;
    }
    if (InterlockedCompareExchange(&g_sent, 0, 0) < want) logf_("wait_sent_timeout %ld", (long)want);
    return 0;
  } else if (strcmp(word, "batch_begin") == 0) {
    AcquireSRWLockExclusive(&g_lock);
    st->batching = 1;
    return 0;
  } else if (strcmp(word, "batch_end") == 0) {
    if (st->batching) {
      st->batching = 0;
      ReleaseSRWLockExclusive(&g_lock);
      WakeAllConditionVariable(&g_cond);
    }
    return 0;
  } else if (strcmp(word, "mark") == 0) {
    logf_("%s", line);
    return 0;
  } else if (strcmp(word, "recv_block") == 0 || strcmp(word, "recv_unblock") == 0) {
    if (!st->batching) AcquireSRWLockExclusive(&g_lock);
    g_recv_blocked = strcmp(word, "recv_block") == 0;
    if (!st->batching) ReleaseSRWLockExclusive(&g_lock);
    WakeAllConditionVariable(&g_cond);
    logf_("%s", line);
    return 0;
  } else if (strcmp(word, "include") == 0) {
    char *text = read_text(line + 8);
    if (!text) logf_("bad_script_line %s", line);
    each_line(text, play_line, st);
    free(text);
    return WaitForSingleObject(g_player_stop, 0) == WAIT_OBJECT_0;
  } else if (strcmp(word, "socket") == 0) {
    it = socket_item(line);
    layer = L_SOCKET;
  } else if (strcmp(word, "packet") == 0) {
    it = packet_item(line);
    layer = L_NETWORK;
  } else {
    return 0; /* directives for WinDivertOpen */
  }
  if (!it) {
    logf_("bad_script_line %s", line);
    return 0;
  }
  it->line = _strdup(line);
  if (!st->batching) AcquireSRWLockExclusive(&g_lock);
  if (!divert_locked(layer, it, NULL)) {
    const char *hex = strstr(line, " hex=");
    logf_("undiverted layer=%s script=%.*s", layer_name(layer), (int)(hex ? (size_t)(hex - line) : strlen(line)), line);
  }
  if (!st->batching) {
    ReleaseSRWLockExclusive(&g_lock);
    WakeAllConditionVariable(&g_cond);
  }
  return 0;
}

static DWORD WINAPI player(LPVOID arg) {
  (void)arg;
  player_state st = {0};
  each_line(g_script, play_line, &st);
  if (st.batching) {
    ReleaseSRWLockExclusive(&g_lock);
    WakeAllConditionVariable(&g_cond);
  }
  return 0;
}

static void player_start(void) {
  free(g_script);
  g_script = read_script();
  InterlockedExchange(&g_sent, 0);
  g_nendpoints = 0;
  g_player_stop = CreateEventA(NULL, TRUE, FALSE, NULL);
  g_player = CreateThread(NULL, 0, player, NULL, 0, NULL);
}

static void player_stop(void) {
  if (!g_player) return;
  SetEvent(g_player_stop);
  WaitForSingleObject(g_player, INFINITE);
  CloseHandle(g_player);
  CloseHandle(g_player_stop);
  g_player = NULL;
  g_player_stop = NULL;
}

/* Live mode (fake_live.h): a packet the relay captured, diverted as a
 * scripted one is (its script line, in the record, says "live"). 1 when a
 * handle took it; 0 when none did (none open, its receive side shut down,
 * or no handle's filter matches): then it goes on unchanged, as the driver
 * lets it. */
static int live_packet(int outbound, int loopback, uint32_t if_idx, const uint8_t *data, uint32_t len) {
  size_t cap = 64 + 2 * (size_t)len;
  char *line = malloc(cap);
  if (!line) return 0;
  int k = snprintf(line, cap, "packet %s%s if=%lu sub=0 live hex=", outbound ? "out" : "in",
                   loopback ? " loopback" : "", (unsigned long)if_idx);
  tu_hex(data, len, line + k);
  item *it = packet_item(line);
  line[k - 5] = '\0'; /* the line without its bytes */
  if (!it) {
    free(line);
    return 0;
  }
  it->line = line;
  AcquireSRWLockExclusive(&g_lock);
  int taken = divert_locked(L_NETWORK, it, NULL) != 0;
  ReleaseSRWLockExclusive(&g_lock);
  WakeAllConditionVariable(&g_cond);
  return taken;
}

/* Live mode: a socket event, played as a script line is; returns once a
 * receive has taken it (at most 1 s), and 20 ms more for the library to act
 * on it, so the packet that follows comes after it as on Windows (where the
 * event happens at the system call, well before the packet). */
static void live_event(const char *line) {
  player_state st = {0};
  play_line(&st, line);
  int queued = 1;
  for (int i = 0; i < 500 && queued; i++) {
    AcquireSRWLockShared(&g_lock);
    queued = 0;
    for (int h = 0; h < MAX_HANDLES; h++) {
      const fake_handle *f = &g_handles[h];
      if (f->used && !f->closed && f->layer == L_SOCKET && f->head) queued = 1;
    }
    ReleaseSRWLockShared(&g_lock);
    if (queued) Sleep(2);
  }
  Sleep(20);
}

/* ------------------------------------------------------------------------
 * Open */

typedef struct {
  int layer;
  DWORD error;
} open_check;

static int find_open_error(void *ctx, const char *line) {
  open_check *c = ctx;
  char layer[32] = "";
  unsigned long code = 0;
  int n = sscanf(line, "open_error %lu %31s", &code, layer);
  if (n >= 1 && (n == 1 || layer_of(layer) == c->layer)) {
    c->error = (DWORD)code;
    return 1;
  }
  return 0;
}

static int find_recv_error(void *ctx, const char *line) {
  (void)ctx;
  unsigned long code = 0;
  long count = 0;
  if (sscanf(line, "recv_error %lu %ld", &code, &count) == 2) {
    g_recv_error = (DWORD)code;
    g_recv_errors_left = count;
  }
  return 0;
}

/* The driver's version, as the script says (WinDivertGetParam). */
static uint64_t g_version[2] = {2, 2};

static int find_driver_version(void *ctx, const char *line) {
  (void)ctx;
  unsigned long major = 0, minor = 0;
  if (sscanf(line, "driver_version %lu %lu", &major, &minor) == 2) {
    g_version[0] = major;
    g_version[1] = minor;
  }
  return 0;
}

/* Queues a scripted REFLECT OPEN event for the REFLECT handle `ctx`. */
static int queue_reflect(void *ctx, const char *line) {
  if (strncmp(line, "reflect ", 8) != 0) return 0;
  item *it = calloc(1, sizeof *it);
  if (!it) return 0;
  char buf[64] = "NETWORK";
  field(line, "layer", buf, sizeof buf);
  char object[512] = "-"; /* none given: no filter object (the oracle says so) */
  field(line, "object", object, sizeof object);
  it->len = (uint32_t)strlen(object) + 1;
  it->data = malloc(it->len);
  if (it->data) memcpy(it->data, object, it->len);
  else it->len = 0;
  uint8_t *a = it->addr;
  put64(a, A_TIMESTAMP, (uint64_t)qpc_now());
  put32(a, A_BITS, (uint32_t)L_REFLECT | 8u << 8); /* REFLECT_OPEN */
  set_bit(a, BIT_SNIFFED, 1);
  put64(a, A_R_TIMESTAMP, (uint64_t)qpc_now());
  put32(a, A_R_PID, (uint32_t)field_num(line, "pid", 0));
  put32(a, A_R_LAYER, (uint32_t)layer_of(buf));
  put64(a, A_R_FLAGS, (uint64_t)field_num(line, "flags", 0));
  put16(a, A_R_PRIORITY, (uint16_t)(int16_t)field_num(line, "priority", 0));
  it->line = _strdup(line);
  enqueue_locked(ctx, it);
  return 0;
}

/* Is a NETWORK handle other than h open? */
static int other_network_open_locked(const fake_handle *h) {
  for (int i = 0; i < MAX_HANDLES; i++) {
    const fake_handle *c = &g_handles[i];
    if (c != h && c->used && !c->closed && c->layer == L_NETWORK) return 1;
  }
  return 0;
}

FAKE_API HANDLE WinDivertOpen(const char *filter, int layer, int16_t priority, uint64_t flags) {
  char *script = read_script();
  open_check c = {layer, 0};
  each_line(script, find_open_error, &c);
  g_version[0] = 2;
  g_version[1] = 2;
  each_line(script, find_driver_version, NULL);
  DWORD error = c.error;
  /* The DLL's checks (layer, flags, priority, filter), then the driver's:
   * FLOW and REFLECT need SNIFF|RECV_ONLY, SOCKET needs RECV_ONLY. */
  if (!error && (layer < 0 || layer >= NLAYERS || priority < -30000 || priority > 30000 || (flags & ~0x3full) ||
                 (flags & 3) == 3 || (flags & 0xc) == 0xc || !ff_compiles(filter, layer) ||
                 ((layer == L_REFLECT || layer == 2) && (flags & 5) != 5) || (layer == L_SOCKET && !(flags & 4)))) {
    error = 87;
  }
  /* Live mode: the NETWORK layer carries the relay's packets from now on. */
  if (!error && layer == L_NETWORK && fl_configured()) error = fl_start(live_packet, live_event, logf_);
  if (error) {
    free(script);
    logf_("open_failed layer=%s error=%lu", layer_name(layer), (unsigned long)error);
    SetLastError(error);
    return INVALID_HANDLE_VALUE;
  }
  AcquireSRWLockExclusive(&g_lock);
  fake_handle *h = NULL;
  for (int i = 0; i < MAX_HANDLES && !h; i++) {
    if (!g_handles[i].used) h = &g_handles[i];
  }
  if (!h) {
    ReleaseSRWLockExclusive(&g_lock);
    free(script);
    SetLastError(ERROR_TOO_MANY_OPEN_FILES);
    return INVALID_HANDLE_VALUE;
  }
  memset(h, 0, sizeof *h);
  h->used = 1;
  h->id = g_next_id++;
  h->layer = layer;
  h->priority = priority;
  h->flags = flags;
  h->filter = _strdup(filter);
  h->queue_length = 4096;
  h->queue_time = 2000;
  h->queue_size = 4194304;
  if (layer == L_REFLECT) each_line(script, queue_reflect, h);
  if (layer == L_NETWORK && !other_network_open_locked(h)) {
    /* A session's first NETWORK handle (a filter change opens a second). */
    g_recv_errors_left = 0;
    g_recv_blocked = 0;
    each_line(script, find_recv_error, NULL);
  }
  ReleaseSRWLockExclusive(&g_lock);
  free(script);
  logf_("open id=%d layer=%s priority=%d flags=0x%llx filter=%s", h->id, layer_name(layer), (int)priority,
        (unsigned long long)flags, filter);
  if (layer == L_NETWORK && !g_player) player_start();
  return (HANDLE)h;
}

/* ------------------------------------------------------------------------
 * Receive and send */

FAKE_API BOOL WinDivertRecvEx(HANDLE handle, void *packet, UINT packet_len, UINT *recv_len, uint64_t flags,
                              uint8_t *addr, UINT *addr_len, LPOVERLAPPED overlapped) {
  AcquireSRWLockExclusive(&g_lock);
  fake_handle *h = lookup_handle(handle);
  UINT max_addr = addr_len ? *addr_len : A_SIZE;
  if (!h || flags || overlapped || !addr || max_addr < A_SIZE || max_addr > 255 * A_SIZE ||
      (h->flags & 8) /* SEND_ONLY */) {
    ReleaseSRWLockExclusive(&g_lock);
    SetLastError(h ? ERROR_INVALID_PARAMETER : ERROR_INVALID_HANDLE);
    return FALSE;
  }
  int layer = h->layer;
  if (layer == L_NETWORK && g_recv_errors_left > 0) {
    g_recv_errors_left--;
    ReleaseSRWLockExclusive(&g_lock);
    logf_("recv_failed id=%d error=%lu", h->id, (unsigned long)g_recv_error);
    SetLastError(g_recv_error);
    return FALSE;
  }
  /* recv_block: NETWORK receives wait (what is diverted stays queued). */
  while (!h->closed && ((layer == L_NETWORK && g_recv_blocked) || (!h->head && !h->shut_recv))) {
    SleepConditionVariableSRW(&g_cond, &g_lock, INFINITE, 0);
  }
  if (!h->head) {
    ReleaseSRWLockExclusive(&g_lock);
    SetLastError(h->closed ? ERROR_OPERATION_ABORTED : 232 /* ERROR_NO_DATA */);
    return FALSE;
  }
  /* Take what is queued: up to the address room, while each whole packet
   * fits (the first one is cut if it must be). As the driver does, what
   * waited longer than the handle's queue time (by its timestamp) is
   * dropped instead. */
  UINT count = 0, used = 0, cut = 0;
  LARGE_INTEGER freq;
  QueryPerformanceFrequency(&freq);
  int64_t oldest = qpc_now() - (int64_t)h->queue_time * (freq.QuadPart / 1000);
  while (h->head && count < max_addr / A_SIZE) {
    item *it = h->head;
    int64_t ts = (int64_t)get64(it->addr, A_TIMESTAMP);
    if (ts < oldest) {
      logf_("dropped id=%d layer=%s age_ms=%lld", h->id, layer_name(layer),
            (long long)((qpc_now() - ts) / (freq.QuadPart / 1000)));
      item_free(dequeue_locked(h));
      continue;
    }
    uint32_t len = it->len;
    if (used + len > packet_len) {
      if (count > 0) break;
      len = packet_len;
      cut = 1;
    }
    if (len && packet) memcpy((uint8_t *)packet + used, it->data, len);
    memcpy(addr + (size_t)count * A_SIZE, it->addr, A_SIZE);
    /* The script line without its bytes (they are in data=). */
    const char *src = it->line ? it->line : "-";
    const char *hex = strstr(src, " hex=");
    char tail[1200];
    snprintf(tail, sizeof tail, " script=%.*s filter=%s", (int)(hex ? (size_t)(hex - src) : strlen(src)), src,
             h->filter ? h->filter : "");
    char what[32];
    snprintf(what, sizeof what, "deliver layer=%d", layer);
    if (len == it->len) record(what, it->addr, it->data, len, tail); /* a cut packet was not delivered */
    used += len;
    count++;
    item_free(dequeue_locked(h));
    if (cut) break;
  }
  int id = h->id;
  ReleaseSRWLockExclusive(&g_lock);
  if (addr_len) *addr_len = count * A_SIZE;
  logf_("recv id=%d count=%u", id, count);
  if (cut) {
    SetLastError(ERROR_INSUFFICIENT_BUFFER);
    return FALSE;
  }
  if (recv_len) *recv_len = used;
  return TRUE;
}

/* An injected packet as it goes on the wire: the driver recomputes each
 * checksum whose flag is 0. NULL when out of memory. */
static uint8_t *wire_copy(const uint8_t *a, const uint8_t *p, uint32_t len) {
  uint8_t *wire = malloc(len ? len : 1);
  if (!wire) return NULL;
  memcpy(wire, p, len);
  int which = (bit(a, BIT_IPCSUM) ? 0 : 1);
  tu_layout l;
  if (tu_parse(wire, len, &l) && ((l.proto == 6 && !bit(a, BIT_TCPCSUM)) || (l.proto == 17 && !bit(a, BIT_UDPCSUM)))) {
    which |= 2;
  }
  if (which) tu_fill_checksums(wire, len, which);
  return wire;
}

/* A packet a handle injects (or re-injects at its close) goes on to the
 * handles below `from`'s place, as a packet the driver diverts anew: seen
 * again by one of them, or on its way. Returns the id of the handle that
 * diverted it, or 0. */
static int inject_below(const fake_handle *from, const uint8_t *a, const uint8_t *wire, uint32_t len) {
  item *it = calloc(1, sizeof *it);
  char line[128];
  snprintf(line, sizeof line, "packet %s%s if=%lu sub=%lu injected_by=%d", bit(a, BIT_OUTBOUND) ? "out" : "in",
           bit(a, BIT_LOOPBACK) ? " loopback" : "", (unsigned long)get32(a, A_IFIDX),
           (unsigned long)get32(a, A_SUBIFIDX), from->id);
  if (!it || !(it->data = malloc(len ? len : 1)) || !(it->line = _strdup(line))) {
    if (it) item_free(it);
    return 0;
  }
  memcpy(it->data, wire, len);
  it->len = len;
  /* A NETWORK packet event, injected by WinDivert itself (no impostor), its
   * checksums as on the wire. */
  memcpy(it->addr, a, A_SIZE);
  put64(it->addr, A_TIMESTAMP, (uint64_t)qpc_now());
  put32(it->addr, A_BITS, (get32(a, A_BITS) & ~0xffffu) | L_NETWORK);
  set_bit(it->addr, BIT_SNIFFED, 0);
  set_bit(it->addr, BIT_IMPOSTOR, 0);
  set_bit(it->addr, BIT_IPV6, len > 0 && (wire[0] >> 4) == 6);
  set_bit(it->addr, BIT_IPCSUM, 1);
  set_bit(it->addr, BIT_TCPCSUM, 1);
  set_bit(it->addr, BIT_UDPCSUM, 1);
  AcquireSRWLockExclusive(&g_lock);
  int id = divert_locked(L_NETWORK, it, from);
  ReleaseSRWLockExclusive(&g_lock);
  WakeAllConditionVariable(&g_cond);
  return id;
}

/* Logs one injected packet as it would go on the wire. */
static void log_send(int id, const uint8_t *a, const uint8_t *p, uint32_t len) {
  uint8_t *wire = wire_copy(a, p, len);
  char *hex = malloc(2 * (size_t)len + 1);
  if (!wire || !hex) {
    free(wire);
    free(hex);
    return;
  }
  int ok_as_given = tu_checksums_ok(p, len);
  tu_hex(wire, len, hex);
  logf_("send id=%d outbound=%d loopback=%d impostor=%d ipcsum=%d tcpcsum=%d udpcsum=%d if=%lu sub=%lu len=%lu "
        "csum_ok=%d given_ok=%d hex=%s",
        id, bit(a, BIT_OUTBOUND), bit(a, BIT_LOOPBACK), bit(a, BIT_IMPOSTOR), bit(a, BIT_IPCSUM), bit(a, BIT_TCPCSUM),
        bit(a, BIT_UDPCSUM), (unsigned long)get32(a, A_IFIDX), (unsigned long)get32(a, A_SUBIFIDX),
        (unsigned long)len, tu_checksums_ok(wire, len), ok_as_given, hex);
  free(wire);
  free(hex);
}

FAKE_API BOOL WinDivertSendEx(HANDLE handle, const void *packet, UINT packet_len, UINT *send_len, uint64_t flags,
                              const uint8_t *addr, UINT addr_len, LPOVERLAPPED overlapped) {
  AcquireSRWLockExclusive(&g_lock);
  fake_handle *h = lookup_handle(handle);
  int id = h ? h->id : 0;
  fake_handle place; /* its place among the handles, for what it injects */
  memset(&place, 0, sizeof place);
  if (h) {
    place.id = h->id;
    place.priority = h->priority;
  }
  DWORD error = 0;
  if (!h) error = ERROR_INVALID_HANDLE;
  else if (flags || overlapped || !addr || addr_len < A_SIZE || addr_len > 255 * A_SIZE || addr_len % A_SIZE ||
           (h->flags & 4) /* RECV_ONLY */ || (h->layer != L_NETWORK && h->layer != 1))
    error = ERROR_INVALID_PARAMETER;
  else if (h->shut_send)
    error = 232;
  ReleaseSRWLockExclusive(&g_lock);
  if (error) {
    logf_("send_failed id=%d error=%lu", id, (unsigned long)error);
    SetLastError(error);
    return FALSE;
  }
  UINT n = addr_len / A_SIZE, off = 0;
  logf_("sendex id=%d count=%u", id, n);
  for (UINT i = 0; i < n; i++) {
    const uint8_t *p = (const uint8_t *)packet + off;
    UINT avail = packet_len - off;
    UINT len = 0;
    if (avail >= 4 && (p[0] >> 4) == 4) len = tu_rd16(p + 2);
    else if (avail >= 6 && (p[0] >> 4) == 6) len = 40u + tu_rd16(p + 4);
    if (len == 0 || len > avail) {
      logf_("send_failed id=%d error=122 packet=%u", id, i);
      SetLastError(ERROR_INSUFFICIENT_BUFFER);
      return FALSE;
    }
    const uint8_t *a = addr + (size_t)i * A_SIZE;
    log_send(id, a, p, len);
    record("send", a, p, len, "");
    /* The handles below this one's place see it (a second NETWORK handle
     * of one priority: the one opened earlier); if none takes it, in live
     * mode it goes on its way. */
    uint8_t *wire = wire_copy(a, p, len);
    int again = wire ? inject_below(&place, a, wire, len) : 0;
    if (wire && !again) fl_send(bit(a, BIT_OUTBOUND), get32(a, A_IFIDX), wire, len);
    free(wire);
    if (again) logf_("rediverted id=%d from=%d len=%u", again, id, len);
    off += len;
    InterlockedIncrement(&g_sent);
  }
  if (send_len) *send_len = off;
  return TRUE;
}

/* ------------------------------------------------------------------------
 * Shutdown, close, parameters, filters */

FAKE_API BOOL WinDivertShutdown(HANDLE handle, int how) {
  AcquireSRWLockExclusive(&g_lock);
  fake_handle *h = lookup_handle(handle);
  if (!h || how < 1 || how > 3) {
    ReleaseSRWLockExclusive(&g_lock);
    SetLastError(h ? ERROR_INVALID_PARAMETER : ERROR_INVALID_HANDLE);
    return FALSE;
  }
  if (how & 1) h->shut_recv = 1;
  if (how & 2) h->shut_send = 1;
  int id = h->id;
  ReleaseSRWLockExclusive(&g_lock);
  WakeAllConditionVariable(&g_cond);
  logf_("shutdown id=%d how=%d", id, how);
  return TRUE;
}

FAKE_API BOOL WinDivertClose(HANDLE handle) {
  AcquireSRWLockExclusive(&g_lock);
  fake_handle *h = lookup_handle(handle);
  if (!h) {
    ReleaseSRWLockExclusive(&g_lock);
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  h->closed = 1;
  int id = h->id, layer = h->layer;
  int last_network = layer == L_NETWORK && !other_network_open_locked(h);
  ReleaseSRWLockExclusive(&g_lock);
  WakeAllConditionVariable(&g_cond);
  if (last_network) player_stop();
  AcquireSRWLockExclusive(&g_lock);
  item *left = h->head;
  h->head = h->tail = NULL;
  fake_handle place; /* its place, for what it re-injects */
  memset(&place, 0, sizeof place);
  place.id = id;
  place.priority = h->priority;
  int reinject = layer == L_NETWORK && !(h->flags & 1);
  uint64_t queue_time = h->queue_time;
  free(h->filter);
  h->filter = NULL;
  h->used = 0;
  ReleaseSRWLockExclusive(&g_lock);
  /* What is still queued: re-injected by the driver (a NETWORK handle that
   * does not sniff, the packet younger than the queue time), else freed. */
  LARGE_INTEGER freq;
  QueryPerformanceFrequency(&freq);
  int64_t oldest = qpc_now() - (int64_t)queue_time * (freq.QuadPart / 1000);
  while (left) {
    item *it = left;
    left = it->next;
    if (reinject && (int64_t)get64(it->addr, A_TIMESTAMP) >= oldest) {
      char *hex = malloc(2 * (size_t)it->len + 1);
      if (hex) tu_hex(it->data, it->len, hex);
      logf_("reinjected id=%d len=%lu hex=%s", id, (unsigned long)it->len, hex ? hex : "");
      free(hex);
      int again = inject_below(&place, it->addr, it->data, it->len);
      if (again) logf_("rediverted id=%d from=%d len=%lu", again, id, (unsigned long)it->len);
      else fl_send(bit(it->addr, BIT_OUTBOUND), get32(it->addr, A_IFIDX), it->data, it->len); /* live mode */
    } else if (layer == L_NETWORK) {
      logf_("dropped id=%d layer=%s at close", id, layer_name(layer));
    }
    item_free(it);
  }
  if (last_network) fl_stop(); /* live mode: no handle diverts any more */
  logf_("close id=%d", id);
  return TRUE;
}

static const char *param_name(int p) {
  static const char *const names[] = {"QUEUE_LENGTH", "QUEUE_TIME", "QUEUE_SIZE", "VERSION_MAJOR", "VERSION_MINOR"};
  return p >= 0 && p <= 4 ? names[p] : "?";
}

FAKE_API BOOL WinDivertSetParam(HANDLE handle, int param, uint64_t value) {
  AcquireSRWLockExclusive(&g_lock);
  fake_handle *h = lookup_handle(handle);
  int ok = h != NULL;
  if (ok && param == 0 && value >= 32 && value <= 16384) h->queue_length = value;
  else if (ok && param == 1 && value >= 100 && value <= 16000) h->queue_time = value;
  else if (ok && param == 2 && value >= 65535 && value <= 33554432) h->queue_size = value;
  else ok = 0;
  int id = h ? h->id : 0;
  ReleaseSRWLockExclusive(&g_lock);
  logf_("param id=%d param=%s value=%llu%s", id, param_name(param), (unsigned long long)value, ok ? "" : " rejected");
  if (!ok) SetLastError(h ? ERROR_INVALID_PARAMETER : ERROR_INVALID_HANDLE);
  return ok;
}

#ifndef FAKE_WITHOUT_GETPARAM
FAKE_API BOOL WinDivertGetParam(HANDLE handle, int param, uint64_t *value) {
  AcquireSRWLockExclusive(&g_lock);
  fake_handle *h = lookup_handle(handle);
  int ok = h != NULL && value != NULL && param >= 0 && param <= 4;
  if (ok) {
    const uint64_t v[] = {h->queue_length, h->queue_time, h->queue_size, g_version[0], g_version[1]};
    *value = v[param];
  }
  ReleaseSRWLockExclusive(&g_lock);
  if (!ok) SetLastError(h ? ERROR_INVALID_PARAMETER : ERROR_INVALID_HANDLE);
  return ok;
}
#endif

FAKE_API BOOL WinDivertHelperCompileFilter(const char *filter, int layer, char *object, UINT object_len,
                                           const char **error_str, UINT *error_pos) {
  (void)object;
  (void)object_len;
  if (!ff_compiles(filter, layer)) {
    if (error_str) *error_str = filter && filter[0] ? "Filter not understood by the stand-in" : "Filter expression is empty";
    if (error_pos) *error_pos = 0;
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  return TRUE;
}

/* Whether the filter matches the packet or event, with the stand-in's
 * evaluator (test_wd_oracle.c compares it with the real one). */
FAKE_API BOOL WinDivertHelperEvalFilter(const char *filter, const void *packet, UINT packet_len, const uint8_t *addr) {
  int eventonly = addr && (addr[8] == 2 || addr[8] == 3);
  int m = (eventonly && packet) ? -1 : ff_matches(filter, addr, packet, packet_len);
  if (m < 0) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  return m == 1;
}

/* Plain WinDivertRecv/Send, as in the real DLL (the library uses the Ex
 * forms). */
FAKE_API BOOL WinDivertRecv(HANDLE handle, void *packet, UINT packet_len, UINT *recv_len, uint8_t *addr) {
  UINT addr_len = A_SIZE;
  return WinDivertRecvEx(handle, packet, packet_len, recv_len, 0, addr, &addr_len, NULL);
}

FAKE_API BOOL WinDivertSend(HANDLE handle, const void *packet, UINT packet_len, UINT *send_len, const uint8_t *addr) {
  return WinDivertSendEx(handle, packet, packet_len, send_len, 0, addr, A_SIZE, NULL);
}
