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
 *     send addr=HEX80 len=L data=HEX
 *                             one per packet sent, as the library gave it
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
 *   socket EVENT pid=N proto=tcp|udp local=A:P remote=A:P [loopback]
 *          [ts=+-MS]          EVENT: bind connect listen accept close;
 *                             IPv6 as [addr]:port; loopback: the driver's
 *                             Loopback flag (a connection on the loopback
 *                             interface)
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
  char *filter; /* as opened, for the record */
  int16_t priority;
  uint64_t flags;
  int shut_recv, shut_send;
  uint64_t queue_length, queue_time, queue_size;
} fake_handle;

static SRWLOCK g_lock = SRWLOCK_INIT; /* handles and queues */
static CONDITION_VARIABLE g_cond = CONDITION_VARIABLE_INIT;
static fake_handle g_handles[MAX_HANDLES];
static item *g_head[NLAYERS], *g_tail[NLAYERS];
static int g_next_id = 1;
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

static char *read_script(void) {
  char path[MAX_PATH];
  DWORD n = GetEnvironmentVariableA("WR_FAKE_WINDIVERT_SCRIPT", path, sizeof path);
  if (n == 0 || n >= sizeof path) return NULL;
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

static void enqueue_locked(int layer, item *it) {
  it->next = NULL;
  if (g_tail[layer]) g_tail[layer]->next = it;
  else g_head[layer] = it;
  g_tail[layer] = it;
}

/* Unlinks the first item of a layer's queue and frees it. */
static void pop_locked(int layer) {
  item *it = g_head[layer];
  g_head[layer] = it->next;
  if (!g_head[layer]) g_tail[layer] = NULL;
  free(it->data);
  free(it->line);
  free(it);
}

static void clear_queue_locked(int layer) {
  while (g_head[layer]) pop_locked(layer);
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
  if (field(line, "remote", buf, sizeof buf)) parse_endpoint(buf, raddr, &rport);
  else memset(raddr, 0, 16);
  LARGE_INTEGER freq;
  QueryPerformanceFrequency(&freq);
  put64(a, A_TIMESTAMP, (uint64_t)(qpc_now() + field_num(line, "ts", 0) * (freq.QuadPart / 1000)));
  put32(a, A_BITS, (uint32_t)L_SOCKET | (uint32_t)event << 8);
  set_bit(a, BIT_SNIFFED, 1);
  set_bit(a, BIT_OUTBOUND, event != 6); /* ACCEPT is inbound */
  set_bit(a, BIT_LOOPBACK, has_word(line, "loopback"));
  set_bit(a, BIT_IPV6, fam == 6);
  put64(a, A_S_ENDPOINT, ++g_endpoint);
  put64(a, A_S_PARENT, 1);
  put32(a, A_S_PID, (uint32_t)field_num(line, "pid", 0));
  put_socket_addr(a, A_S_LADDR, laddr, fam);
  put_socket_addr(a, A_S_RADDR, raddr, fam);
  put16(a, A_S_LPORT, lport);
  put16(a, A_S_RPORT, rport);
  field(line, "proto", buf, sizeof buf);
  a[A_S_PROTO] = (uint8_t)(strcmp(buf, "udp") == 0 ? 17 : 6);
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
  enqueue_locked(layer, it);
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

/* Live mode (fake_live.h): a packet the relay captured, queued for the
 * NETWORK handle as a scripted one is (its script line, in the record, says
 * "live"). 1 when queued; 0 when no NETWORK handle takes packets (none is
 * open, or its receive side is shut down): then it goes on unchanged, as
 * the driver lets it. */
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
  int taken = 0;
  AcquireSRWLockExclusive(&g_lock);
  for (int i = 0; i < MAX_HANDLES && !taken; i++) {
    const fake_handle *h = &g_handles[i];
    taken = h->used && !h->closed && h->layer == L_NETWORK && !h->shut_recv;
  }
  if (taken) enqueue_locked(L_NETWORK, it);
  ReleaseSRWLockExclusive(&g_lock);
  if (!taken) {
    free(it->data);
    free(it->line);
    free(it);
    return 0;
  }
  WakeAllConditionVariable(&g_cond);
  return 1;
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
    queued = g_head[L_SOCKET] != NULL;
    ReleaseSRWLockShared(&g_lock);
    if (queued) Sleep(2);
  }
  Sleep(20);
}

/* ------------------------------------------------------------------------
 * Filters: a syntax check, so the stand-in refuses what WinDivert's filter
 * compiler refuses (test_wd_oracle.c compares the two). It knows the fields
 * and the layers each is valid at (WinDivert 2.2's filter compiler), tests
 * `field` and `field OP value` joined by and/or/&&/|| with not/! and
 * parentheses; anything else (packet[i], payloads, ?:) it refuses. */

#define LN (1 << 0) /* NETWORK */
#define LM (1 << 1) /* NETWORK_FORWARD */
#define LF (1 << 2) /* FLOW */
#define LS (1 << 3) /* SOCKET */
#define LR (1 << 4) /* REFLECT */
#define L_PACKET (LN | LM)
#define L_ALL (LN | LM | LF | LS | LR)

static const struct {
  const char *name;
  int layers;
} FILTER_FIELDS[] = {
    {"true", L_ALL}, {"false", L_ALL}, {"zero", L_ALL}, {"event", L_ALL}, {"timestamp", L_ALL},
    {"inbound", LN | LF | LS}, {"outbound", LN | LF | LS}, {"loopback", LN | LF | LS},
    {"ip", L_PACKET | LF | LS}, {"ipv6", L_PACKET | LF | LS}, {"icmp", L_PACKET | LF | LS},
    {"icmpv6", L_PACKET | LF | LS}, {"tcp", L_PACKET | LF | LS}, {"udp", L_PACKET | LF | LS},
    {"localAddr", LN | LF | LS}, {"remoteAddr", LN | LF | LS}, {"localPort", LN | LF | LS},
    {"remotePort", LN | LF | LS}, {"protocol", LN | LF | LS}, {"processId", LF | LS | LR},
    {"endpointId", LF | LS}, {"parentEndpointId", LF | LS}, {"layer", LR}, {"priority", LR},
    {"ifIdx", L_PACKET}, {"subIfIdx", L_PACKET}, {"impostor", L_PACKET}, {"fragment", L_PACKET},
    {"length", L_PACKET}, {"ip.SrcAddr", L_PACKET}, {"ip.DstAddr", L_PACKET}, {"ip.Protocol", L_PACKET},
    {"ip.TTL", L_PACKET}, {"ipv6.SrcAddr", L_PACKET}, {"ipv6.DstAddr", L_PACKET}, {"ipv6.NextHdr", L_PACKET},
    {"ipv6.HopLimit", L_PACKET}, {"tcp.SrcPort", L_PACKET}, {"tcp.DstPort", L_PACKET}, {"tcp.Syn", L_PACKET},
    {"tcp.Ack", L_PACKET}, {"tcp.Fin", L_PACKET}, {"tcp.Rst", L_PACKET}, {"tcp.PayloadLength", L_PACKET},
    {"udp.SrcPort", L_PACKET}, {"udp.DstPort", L_PACKET}, {"udp.PayloadLength", L_PACKET},
    {"icmp.Type", L_PACKET}, {"icmp.Code", L_PACKET}, {"icmpv6.Type", L_PACKET}, {"icmpv6.Code", L_PACKET},
};

/* The symbolic values (WinDivert's upper-case macros). */
static const char *const FILTER_CONSTANTS[] = {"TRUE", "FALSE", "TCP", "UDP", "ICMP", "ICMPV6", "PACKET",
                                               "ESTABLISHED", "DELETED", "BIND", "CONNECT", "LISTEN", "ACCEPT",
                                               "CLOSE", "OPEN", "NETWORK", "NETWORK_FORWARD", "FLOW", "SOCKET",
                                               "REFLECT"};

typedef struct {
  const char *p;
  int layer_bit;
  char tok[64];
} filter_parser;

static int word_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == '.' || c == ':'; }

/* The next token into f->tok ("" at the end); 0 on a character no token
 * starts with. */
static int next_token(filter_parser *f) {
  while (*f->p == ' ' || *f->p == '\t' || *f->p == '\r' || *f->p == '\n') f->p++;
  const char *s = f->p;
  size_t n = 0;
  static const char *const ops[] = {"&&", "||", "==", "!=", "<=", ">=", "=", "<", ">", "!", "(", ")", "-"};
  if (!*s) {
    f->tok[0] = '\0';
    return 1;
  }
  for (size_t i = 0; i < sizeof ops / sizeof ops[0] && !n; i++) {
    if (strncmp(s, ops[i], strlen(ops[i])) == 0) n = strlen(ops[i]);
  }
  if (!n) {
    while (word_char(s[n])) n++;
  }
  if (!n || n >= sizeof f->tok) return 0;
  memcpy(f->tok, s, n);
  f->tok[n] = '\0';
  f->p = s + n;
  return 1;
}

/* A number (decimal or 0x hex), an IPv4 or IPv6 address, or a constant. */
static int is_value(const char *t) {
  uint8_t a[16];
  if (strchr(t, ':')) return InetPtonA(AF_INET6, t, a) == 1;
  if (strchr(t, '.')) return InetPtonA(AF_INET, t, a) == 1;
  if (t[0] == '0' && t[1] == 'x') return t[2] && strspn(t + 2, "0123456789abcdefABCDEF") == strlen(t + 2);
  if (isdigit((unsigned char)t[0])) return strspn(t, "0123456789") == strlen(t);
  for (size_t i = 0; i < sizeof FILTER_CONSTANTS / sizeof FILTER_CONSTANTS[0]; i++) {
    if (strcmp(t, FILTER_CONSTANTS[i]) == 0) return 1;
  }
  return 0;
}

static int parse_or(filter_parser *f);

/* test := not* ( '(' or ')' | field [OP ['-'] value] ) */
static int parse_test(filter_parser *f) {
  while (strcmp(f->tok, "not") == 0 || strcmp(f->tok, "!") == 0) {
    if (!next_token(f)) return 0;
  }
  if (strcmp(f->tok, "(") == 0) {
    if (!next_token(f) || !parse_or(f) || strcmp(f->tok, ")") != 0) return 0;
    return next_token(f);
  }
  int known = 0;
  for (size_t i = 0; i < sizeof FILTER_FIELDS / sizeof FILTER_FIELDS[0]; i++) {
    if (strcmp(f->tok, FILTER_FIELDS[i].name) == 0) known = (FILTER_FIELDS[i].layers & f->layer_bit) != 0;
  }
  if (!known || !next_token(f)) return 0;
  static const char *const cmps[] = {"==", "=", "!=", "<", "<=", ">", ">="};
  for (size_t i = 0; i < sizeof cmps / sizeof cmps[0]; i++) {
    if (strcmp(f->tok, cmps[i]) == 0) {
      if (!next_token(f)) return 0;
      if (strcmp(f->tok, "-") == 0 && !next_token(f)) return 0;
      return is_value(f->tok) && next_token(f);
    }
  }
  return 1;
}

/* or := test (('and'|'&&'|'or'|'||') test)* */
static int parse_or(filter_parser *f) {
  if (!parse_test(f)) return 0;
  while (strcmp(f->tok, "and") == 0 || strcmp(f->tok, "&&") == 0 || strcmp(f->tok, "or") == 0 ||
         strcmp(f->tok, "||") == 0) {
    if (!next_token(f) || !parse_test(f)) return 0;
  }
  return 1;
}

/* 1 when WinDivert compiles the filter at this layer (as far as the
 * stand-in knows filters). */
static int filter_compiles(const char *filter, int layer) {
  if (!filter || layer < 0 || layer >= NLAYERS) return 0;
  filter_parser f = {filter, 1 << layer, ""};
  return next_token(&f) && f.tok[0] && parse_or(&f) && f.tok[0] == '\0';
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

static int queue_reflect(void *ctx, const char *line) {
  (void)ctx;
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
  enqueue_locked(L_REFLECT, it);
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
                 (flags & 3) == 3 || (flags & 0xc) == 0xc || !filter_compiles(filter, layer) ||
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
  if (layer == L_REFLECT) {
    clear_queue_locked(L_REFLECT);
    each_line(script, queue_reflect, NULL);
  }
  if (layer == L_SOCKET) clear_queue_locked(L_SOCKET);
  if (layer == L_NETWORK) {
    clear_queue_locked(L_NETWORK);
    g_recv_errors_left = 0;
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
  while (!g_head[layer] && !h->shut_recv && !h->closed) SleepConditionVariableSRW(&g_cond, &g_lock, INFINITE, 0);
  if (!g_head[layer]) {
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
  while (g_head[layer] && count < max_addr / A_SIZE) {
    item *it = g_head[layer];
    int64_t ts = (int64_t)get64(it->addr, A_TIMESTAMP);
    if (ts < oldest) {
      logf_("dropped id=%d layer=%s age_ms=%lld", h->id, layer_name(layer),
            (long long)((qpc_now() - ts) / (freq.QuadPart / 1000)));
      pop_locked(layer);
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
    pop_locked(layer);
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

/* Logs one injected packet as it would go on the wire. */
static void log_send(int id, const uint8_t *a, const uint8_t *p, uint32_t len) {
  uint8_t *wire = malloc(len ? len : 1);
  char *hex = malloc(2 * (size_t)len + 1);
  if (!wire || !hex) {
    free(wire);
    free(hex);
    return;
  }
  memcpy(wire, p, len);
  int ok_as_given = tu_checksums_ok(wire, len);
  /* The driver recomputes each checksum whose flag is 0. */
  int which = (bit(a, BIT_IPCSUM) ? 0 : 1);
  tu_layout l;
  if (tu_parse(wire, len, &l) && ((l.proto == 6 && !bit(a, BIT_TCPCSUM)) || (l.proto == 17 && !bit(a, BIT_UDPCSUM)))) {
    which |= 2;
  }
  if (which) tu_fill_checksums(wire, len, which);
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
    fl_send(bit(a, BIT_OUTBOUND), get32(a, A_IFIDX), bit(a, BIT_IPCSUM), bit(a, BIT_TCPCSUM), bit(a, BIT_UDPCSUM), p,
            len); /* live mode */
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
  ReleaseSRWLockExclusive(&g_lock);
  WakeAllConditionVariable(&g_cond);
  if (layer == L_NETWORK) {
    player_stop();
    fl_stop();
  }
  AcquireSRWLockExclusive(&g_lock);
  clear_queue_locked(layer);
  free(h->filter);
  h->filter = NULL;
  h->used = 0;
  ReleaseSRWLockExclusive(&g_lock);
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
  if (!filter_compiles(filter, layer)) {
    if (error_str) *error_str = filter && filter[0] ? "Filter not understood by the stand-in" : "Filter expression is empty";
    if (error_pos) *error_pos = 0;
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  return TRUE;
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
