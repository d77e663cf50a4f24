/* The WinDivert backend under wine, against the stand-in WinDivert.dll
 * (fake_windivert.c), through the library's public ABI. Each case writes a
 * script for the stand-in, starts the redirector with the stand-in's folder
 * as its WinDivert path, and checks the exact bytes and address flags the
 * library injected (the stand-in's record), lookups, stop and errors.
 *
 *   test_windivert.exe CASE      (CTest runs one process per case)
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <tlhelp32.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "wd_sockets.h"
#include "wd_test_util.h"
#include "wd_tree.h"
#include "windows_redirector.h"

#define APP_PORT 8080
#define FAKE_PID 1234  /* not a multiple of 4: never a real (wine) PID */
#define OTHER_PID 5678
#define WR_TREE_WATCH_MS 250 /* how often the backend lists processes while trees are configured */
/* What every NETWORK filter ORs in (the ICMP errors the engine translates),
 * without loopback ones while loopback is bypassed (every filter here). */
#define ICMP_ERRORS \
  "((icmp.Type == 3 or icmp.Type == 11 or icmp.Type == 12 or (icmpv6.Type >= 1 and icmpv6.Type <= 4)) and not " \
  "loopback)"

static char g_dir[MAX_PATH];    /* this program's folder */
static char g_fakewd[MAX_PATH]; /* the stand-in WinDivert.dll's */
static char g_log[MAX_PATH];
static char g_script[MAX_PATH];

/* ------------------------------------------------------------------------
 * Text, files, the stand-in's record */

typedef struct {
  char *s;
  size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (b->len + (size_t)n + 1 > b->cap) {
    b->cap = (b->len + (size_t)n + 1) * 2;
    b->s = realloc(b->s, b->cap);
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* A packet line for the script. */
static void sb_packet(sbuf *b, const char *opts, const uint8_t *p, size_t n) {
  char *hex = malloc(2 * n + 1);
  tu_hex(p, n, hex);
  sb_printf(b, "packet %s hex=%s\n", opts, hex);
  free(hex);
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return calloc(1, 1);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = '\0';
  fclose(f);
  return s;
}

static void write_script(const char *text) {
  FILE *f = fopen(g_script, "wb");
  fputs(text, f);
  fclose(f);
}

/* How many record lines start with prefix. */
static int count_lines(const char *log, const char *prefix) {
  int n = 0;
  size_t k = strlen(prefix);
  for (const char *p = log; *p;) {
    if (strncmp(p, prefix, k) == 0) n++;
    p = strchr(p, '\n');
    if (!p) break;
    p++;
  }
  return n;
}

/* Waits until the record has n lines starting with prefix. */
static int wait_lines(const char *prefix, int n, int timeout_ms) {
  for (int waited = 0;; waited += 10) {
    char *log = read_file(g_log);
    int have = count_lines(log, prefix);
    free(log);
    if (have >= n) return 1;
    if (waited >= timeout_ms) return 0;
    Sleep(10);
  }
}

typedef struct {
  int outbound, loopback, impostor, ipcsum, tcpcsum, udpcsum, csum_ok, given_ok;
  unsigned long ifidx, sub;
  char hex[4096];
} sent_packet;

/* The packets the library sent, in order. */
static int sent_packets(sent_packet *out, int max) {
  char *log = read_file(g_log);
  int n = 0;
  for (char *p = log; p && *p && n < max;) {
    char *eol = strchr(p, '\n');
    if (eol) *eol = '\0';
    if (strncmp(p, "send id=", 8) == 0) {
      sent_packet *s = &out[n];
      const char *hex = strstr(p, " hex=");
      if (sscanf(strstr(p, "outbound="),
                 "outbound=%d loopback=%d impostor=%d ipcsum=%d tcpcsum=%d udpcsum=%d if=%lu sub=%lu", &s->outbound,
                 &s->loopback, &s->impostor, &s->ipcsum, &s->tcpcsum, &s->udpcsum, &s->ifidx, &s->sub) == 8 &&
          hex) {
        s->csum_ok = strstr(p, " csum_ok=1") != NULL;
        s->given_ok = strstr(p, " given_ok=1") != NULL;
        snprintf(s->hex, sizeof s->hex, "%s", hex + 5);
        n++;
      }
    }
    p = eol ? eol + 1 : NULL;
  }
  free(log);
  return n;
}

/* Checks one sent packet: exact bytes, direction, interface, checksum
 * flags set (the library vouches for its checksums) and right. */
static void expect_packet(const sent_packet *s, const char *what, const uint8_t *p, size_t n, int outbound,
                          unsigned long ifidx, unsigned long sub) {
  char *hex = malloc(2 * n + 1);
  tu_hex(p, n, hex);
  CHECK(strcmp(s->hex, hex) == 0, "%s: bytes\n  sent     %s\n  expected %s", what, s->hex, hex);
  CHECK(s->outbound == outbound, "%s: outbound=%d, expected %d", what, s->outbound, outbound);
  CHECK(s->ifidx == ifidx && s->sub == sub, "%s: interface %lu.%lu, expected %lu.%lu", what, s->ifidx, s->sub,
        ifidx, sub);
  CHECK(s->csum_ok && s->given_ok, "%s: checksums as sent are %s", what, s->given_ok ? "right" : "wrong");
  CHECK(s->ipcsum && s->tcpcsum && s->udpcsum, "%s: checksum flags %d%d%d, expected 111", what, s->ipcsum,
        s->tcpcsum, s->udpcsum);
  free(hex);
}

/* Waits for n sent packets and reads them. */
static int wait_sent(sent_packet *out, int n, int timeout_ms) {
  CHECK(wait_lines("send id=", n, timeout_ms), "timed out waiting for %d sent packets", n);
  return sent_packets(out, 64);
}

/* ------------------------------------------------------------------------
 * Gates: named events the stand-in's script waits on. Kept open until the
 * session ends, so the event exists when the script reaches it. */

static HANDLE g_gates[16];
static int g_ngates;

static void open_gate(const char *name) {
  char full[100];
  snprintf(full, sizeof full, "WrFakeGate_%lu_%s", (unsigned long)GetCurrentProcessId(), name);
  HANDLE ev = CreateEventA(NULL, TRUE, FALSE, full);
  SetEvent(ev);
  if (g_ngates < 16) g_gates[g_ngates++] = ev;
}

static void close_gates(void) {
  while (g_ngates > 0) CloseHandle(g_gates[--g_ngates]);
}

/* ------------------------------------------------------------------------
 * Threads */

static int thread_count(void) {
  HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
  THREADENTRY32 te;
  te.dwSize = sizeof te;
  int n = 0;
  DWORD self = GetCurrentProcessId();
  if (Thread32First(snap, &te)) {
    do {
      if (te.th32OwnerProcessID == self) n++;
    } while (Thread32Next(snap, &te));
  }
  CloseHandle(snap);
  return n;
}

/* ------------------------------------------------------------------------
 * Addresses */

static const uint8_t C4[4] = {10, 0, 0, 5};
static const uint8_t D4[4] = {93, 184, 216, 34};
static const uint8_t R4[4] = {198, 51, 100, 7};
static const uint8_t R2[4] = {198, 51, 100, 8};
static const uint8_t S4[4] = {192, 0, 2, 53};
static const uint8_t C6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5};
static const uint8_t D6[16] = {0x26, 0x06, 0x28, 0x00, 0x02, 0x20, 0, 1, 0x02, 0x48, 0x18, 0x93, 0x25, 0xc8, 0x19, 0x46};

static tu_tuple tuple(int v6, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport) {
  tu_tuple t;
  memset(&t, 0, sizeof t);
  t.v6 = v6;
  memcpy(t.src, src, v6 ? 16 : 4);
  memcpy(t.dst, dst, v6 ? 16 : 4);
  t.sport = sport;
  t.dport = dport;
  return t;
}

/* "a.b.c.d:port" or "[v6]:port" for the script. */
static const char *ep(int v6, const uint8_t *a, uint16_t port) {
  static char bufs[4][80];
  static int i;
  char *b = bufs[i++ & 3], host[64];
  InetNtopA(v6 ? AF_INET6 : AF_INET, (void *)a, host, sizeof host);
  snprintf(b, 80, v6 ? "[%s]:%u" : "%s:%u", host, port);
  return b;
}

static redirector_endpoint endpoint(int v6, const uint8_t *a, uint16_t port) {
  redirector_endpoint e;
  memset(&e, 0, sizeof e);
  e.family = v6 ? 6 : 4;
  e.port = port;
  memcpy(e.addr, a, v6 ? 16 : 4);
  return e;
}

static int same_endpoint(const redirector_endpoint *e, int v6, const uint8_t *a, uint16_t port) {
  return e->family == (v6 ? 6 : 4) && e->port == port && memcmp(e->addr, a, v6 ? 16 : 4) == 0;
}

/* What the proxy would ask about its peer, on the app port of `local`. */
static int lookup_peer(int proto, int v6, const uint8_t *peer_addr, uint16_t peer_port, const uint8_t *local_addr,
                       redirector_origin *o) {
  redirector_endpoint peer = endpoint(v6, peer_addr, peer_port), local = endpoint(v6, local_addr, APP_PORT);
  memset(o, 0, sizeof *o);
  o->size = sizeof *o;
  return redirector_lookup(proto, &peer, &local, o);
}

/* ------------------------------------------------------------------------
 * Sessions */

static void reset_log(void) { DeleteFileA(g_log); }

/* Configures (app port `port`), writes the script, starts. */
static int session_start_on(uint16_t port, const char *config, const char *script) {
  CHECK(set_redirector_config(config) == 0, "config %s: %s", config, last_error());
  update_app_port(port);
  CHECK(redirector_set_windivert_path(g_fakewd) == 0, "set path");
  reset_log();
  write_script(script);
  int rc = start_redirector();
  CHECK(rc == 0, "start_redirector = %d: %s", rc, last_error());
  return rc == 0;
}

static int session_start(const char *config, const char *script) {
  return session_start_on(APP_PORT, config, script);
}

static void session_stop(void) {
  int rc = stop_redirector();
  CHECK(rc == 0, "stop_redirector = %d", rc);
  close_gates();
}

static char g_config[512];

static const char *config_pids(const char *pids, const char *extra) {
  snprintf(g_config, sizeof g_config, "{\"intercept_pids\": [%s]%s%s}", pids, extra ? ", " : "", extra ? extra : "");
  return g_config;
}

/* ------------------------------------------------------------------------
 * Cases: redirects */

/* An intercepted process's TCP connection C:c -> D:80, all of it. */
/* A reader waiting in redirector_next_event on its own thread. */
typedef struct {
  redirector_event ev;
  int32_t rc;
  ULONGLONG ms;
} event_wait;

static DWORD WINAPI wait_for_event(void *arg) {
  event_wait *w = arg;
  memset(&w->ev, 0, sizeof w->ev);
  w->ev.size = sizeof w->ev;
  ULONGLONG t0 = GetTickCount64();
  w->rc = redirector_next_event(&w->ev, 30000);
  w->ms = GetTickCount64() - t0;
  return 0;
}

static void tcp_session(int v6) {
  const uint8_t *C = v6 ? C6 : C4, *D = v6 ? D6 : D4;
  uint16_t c = 50000, d = 80;
  uint8_t pk[7][256], ex[7][256];
  size_t pn[7], en[7];
  /* What the client and the proxy send (outbound), and what must be
   * injected instead (inbound). */
  tu_tuple up = tuple(v6, C, c, D, d), proxy = tuple(v6, C, APP_PORT, D, c);
  tu_tuple up_x = tuple(v6, D, c, C, APP_PORT), proxy_x = tuple(v6, D, d, C, c);
  pn[0] = tu_tcp(pk[0], &up, 1000, 0, TU_SYN, NULL);
  en[0] = tu_tcp(ex[0], &up_x, 1000, 0, TU_SYN, NULL);
  pn[1] = tu_tcp(pk[1], &proxy, 5000, 1001, TU_SYN | TU_ACK, NULL);
  en[1] = tu_tcp(ex[1], &proxy_x, 5000, 1001, TU_SYN | TU_ACK, NULL);
  pn[2] = tu_tcp(pk[2], &up, 1001, 5001, TU_ACK, NULL);
  en[2] = tu_tcp(ex[2], &up_x, 1001, 5001, TU_ACK, NULL);
  pn[3] = tu_tcp(pk[3], &up, 1001, 5001, TU_PSH | TU_ACK, "GET / HTTP/1.1\r\nHost: example\r\n\r\n");
  en[3] = tu_tcp(ex[3], &up_x, 1001, 5001, TU_PSH | TU_ACK, "GET / HTTP/1.1\r\nHost: example\r\n\r\n");
  pn[4] = tu_tcp(pk[4], &proxy, 5001, 1034, TU_PSH | TU_ACK, "HTTP/1.1 204 No Content\r\n\r\n");
  en[4] = tu_tcp(ex[4], &proxy_x, 5001, 1034, TU_PSH | TU_ACK, "HTTP/1.1 204 No Content\r\n\r\n");
  pn[5] = tu_tcp(pk[5], &up, 1034, 5028, TU_FIN | TU_ACK, NULL);
  en[5] = tu_tcp(ex[5], &up_x, 1034, 5028, TU_FIN | TU_ACK, NULL);
  pn[6] = tu_tcp(pk[6], &proxy, 5028, 1035, TU_FIN | TU_ACK, NULL);
  en[6] = tu_tcp(ex[6], &proxy_x, 5028, 1035, TU_FIN | TU_ACK, NULL);
  /* The SYN comes with an offloaded (garbage) checksum and its flag clear:
   * the engine must compute it in full. */
  tu_layout l;
  tu_parse(pk[0], pn[0], &l);
  tu_wr16(pk[0] + tu_l4csum_at(&l), 0xdead);

  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\ndelay 100\n", FAKE_PID, ep(v6, C, c),
            ep(v6, D, d));
  sb_packet(&s, "out if=7 sub=3 tcpcsum=0", pk[0], pn[0]);
  sb_printf(&s, "wait_sent 1\ngate lookup\n");
  sb_packet(&s, "out if=7 sub=3", pk[1], pn[1]);
  sb_printf(&s, "wait_sent 2\n");
  for (int i = 2; i < 7; i++) {
    sb_packet(&s, "out if=7 sub=3", pk[i], pn[i]);
    sb_printf(&s, "wait_sent %d\n", i + 1);
  }
  if (!session_start(config_pids("1234", NULL), s.s)) return;
  sent_packet sp[64];
  int n = wait_sent(sp, 1, 5000);
  if (n >= 1) expect_packet(&sp[0], "client SYN", ex[0], en[0], 0, 7, 3);
  /* The proxy asks where its accepted connection (peer D:c) was going. */
  redirector_origin o;
  int rc = lookup_peer(REDIRECTOR_TCP, v6, D, c, C, &o);
  CHECK(rc == 0, "lookup = %d: %s", rc, last_error());
  CHECK(same_endpoint(&o.destination, v6, D, d), "lookup: original destination");
  CHECK(same_endpoint(&o.client, v6, C, c), "lookup: client");
  CHECK(o.pid == FAKE_PID && o.direction == REDIRECTOR_OUTBOUND && o.app_port == APP_PORT, "lookup: pid %u dir %u",
        o.pid, o.direction);
  if (!v6) {
    /* A dual-stack proxy sees the same connection as IPv4-mapped addresses,
     * and a socket of its bound to any reads as ::; a caller may also mix
     * an IPv4 peer with an IPv6 local. All find the IPv4 flow. */
    uint8_t dm[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, cm[16], any6[16] = {0};
    memcpy(cm, dm, 12);
    memcpy(dm + 12, D, 4);
    memcpy(cm + 12, C, 4);
    redirector_endpoint pm = endpoint(1, dm, c), p4 = endpoint(0, D, c);
    redirector_endpoint lm = endpoint(1, cm, APP_PORT), la = endpoint(1, any6, APP_PORT);
    const struct {
      const redirector_endpoint *peer, *local;
      const char *what;
    } asks[] = {{&pm, &lm, "mapped peer and local"},
                {&pm, &la, "mapped peer, local ::"},
                {&p4, &la, "IPv4 peer, local ::"},
                {&p4, &lm, "IPv4 peer, mapped local"}};
    for (size_t i = 0; i < sizeof asks / sizeof asks[0]; i++) {
      redirector_origin m;
      memset(&m, 0, sizeof m);
      m.size = sizeof m;
      rc = redirector_lookup(REDIRECTOR_TCP, asks[i].peer, asks[i].local, &m);
      CHECK(rc == 0 && same_endpoint(&m.destination, 0, D, d) && m.flow_id == o.flow_id, "lookup, %s: %d %s",
            asks[i].what, rc, rc ? last_error() : "");
    }
  }
  /* The opened event waits already; a reader then waiting is woken by the
   * closed one (both FINs), well before its 30 s. */
  CHECK(redirector_wait_event(5000) == 1, "an event waits: the connection opened");
  redirector_event ev;
  memset(&ev, 0, sizeof ev);
  ev.size = sizeof ev;
  rc = redirector_next_event(&ev, 0);
  CHECK(rc == 0 && ev.type == REDIRECTOR_EVENT_OPENED && same_endpoint(&ev.origin.destination, v6, D, d),
        "opened event: rc %d type %u", rc, ev.type);
  event_wait w;
  HANDLE waiter = CreateThread(NULL, 0, wait_for_event, &w, 0, NULL);
  CHECK(waiter != NULL, "start a waiting reader");
  Sleep(100);
  open_gate("lookup");
  n = wait_sent(sp, 7, 5000);
  static const char *const what[] = {"client SYN", "proxy SYN-ACK", "client ACK", "client data",
                                     "proxy data", "client FIN",    "proxy FIN"};
  for (int i = 0; i < n && i < 7; i++) expect_packet(&sp[i], what[i], ex[i], en[i], 0, 7, 3);
  CHECK(n == 7, "%d packets sent, expected 7", n);
  if (waiter) {
    WaitForSingleObject(waiter, INFINITE);
    CloseHandle(waiter);
    CHECK(w.rc == 0 && w.ev.type == REDIRECTOR_EVENT_CLOSED, "closed event: rc %d type %u", w.rc, w.ev.type);
    CHECK(w.ev.origin.bytes_up == 33 && w.ev.origin.bytes_down == 27, "closed event bytes %llu/%llu",
          (unsigned long long)w.ev.origin.bytes_up, (unsigned long long)w.ev.origin.bytes_down);
    CHECK(w.ms < 20000, "the reader was woken by the event, not its timeout (%llu ms)", w.ms);
  }
  session_stop();
  free(s.s);
}

TEST_CASE(tcp_v4) { tcp_session(0); }
TEST_CASE(tcp_v6) { tcp_session(1); }

TEST_CASE(udp) {
  uint8_t q[256], qx[256], a[256], ax[256];
  tu_tuple up = tuple(0, C4, 53000, S4, 53), proxy = tuple(0, C4, APP_PORT, S4, 53000);
  tu_tuple up_x = tuple(0, S4, 53000, C4, APP_PORT), proxy_x = tuple(0, S4, 53, C4, 53000);
  size_t qn = tu_udp(q, &up, "query example.com A"), qxn = tu_udp(qx, &up_x, "query example.com A");
  size_t an = tu_udp(a, &proxy, "answer 93.184.216.34"), axn = tu_udp(ax, &proxy_x, "answer 93.184.216.34");
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=udp local=%s remote=%s\ndelay 100\n", FAKE_PID, ep(0, C4, 53000),
            ep(0, S4, 53));
  sb_packet(&s, "out if=4 sub=1", q, qn);
  sb_printf(&s, "wait_sent 1\ngate lookup\n");
  sb_packet(&s, "out if=4 sub=1", a, an);
  sb_printf(&s, "wait_sent 2\n");
  if (!session_start(config_pids("1234", NULL), s.s)) return;
  sent_packet sp[64];
  int n = wait_sent(sp, 1, 5000);
  if (n >= 1) expect_packet(&sp[0], "request", qx, qxn, 0, 4, 1);
  redirector_origin o;
  CHECK(lookup_peer(REDIRECTOR_UDP, 0, S4, 53000, C4, &o) == 0, "UDP lookup: %s", last_error());
  CHECK(same_endpoint(&o.destination, 0, S4, 53) && o.pid == FAKE_PID && o.protocol == REDIRECTOR_UDP,
        "UDP lookup: destination, pid");
  open_gate("lookup");
  n = wait_sent(sp, 2, 5000);
  if (n >= 2) expect_packet(&sp[1], "response", ax, axn, 0, 4, 1);
  CHECK(n == 2, "%d packets sent, expected 2", n);
  session_stop();
  free(s.s);
}

/* A redirected SYN the proxy never answers counts once, after a second; one
 * it refuses (RST) counts at once; the diagnostics name each counter with its
 * likely causes. */
TEST_CASE(syn_unanswered) {
  uint16_t c1 = 50001, c2 = 50002;
  uint8_t pk[3][128];
  size_t pn[3];
  tu_tuple up1 = tuple(0, C4, c1, D4, 80), up2 = tuple(0, C4, c2, D4, 80), proxy2 = tuple(0, C4, APP_PORT, D4, c2);
  pn[0] = tu_tcp(pk[0], &up1, 1000, 0, TU_SYN, NULL);
  pn[1] = tu_tcp(pk[1], &up2, 2000, 0, TU_SYN, NULL);
  pn[2] = tu_tcp(pk[2], &proxy2, 0, 2001, TU_RST | TU_ACK, NULL);
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\n", FAKE_PID, ep(0, C4, c1), ep(0, D4, 80));
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\ndelay 100\n", FAKE_PID, ep(0, C4, c2),
            ep(0, D4, 80));
  for (int i = 0; i < 3; i++) {
    sb_packet(&s, "out if=7 sub=3", pk[i], pn[i]);
    sb_printf(&s, "wait_sent %d\n", i + 1);
  }
  if (!session_start(config_pids("1234", NULL), s.s)) return;
  sent_packet sp[64];
  CHECK(wait_sent(sp, 3, 5000) == 3, "both SYNs to the proxy, the RST back to the client");
  redirector_stats st;
  for (int waited = 0; waited < 10000; waited += 50) {
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK(redirector_get_stats(&st) == 0, "stats: %s", last_error());
    if (st.redirected_syn_unanswered > 0) break;
    Sleep(50);
  }
  CHECK(st.redirected_syn_unanswered == 1 && st.redirected_syn_refused == 1, "unanswered %llu, refused %llu",
        (unsigned long long)st.redirected_syn_unanswered, (unsigned long long)st.redirected_syn_refused);
  char diag[8192];
  int32_t n = redirector_diagnostics(diag, sizeof diag);
  CHECK(n > 0 && (size_t)n < sizeof diag, "diagnostics: %d", n);
  CHECK(strstr(diag, "redirected_syn_unanswered 1: redirected connections got no answer from app port 8080 within "
                     "1 s. Likely: no inbound rule of Windows Defender Firewall allows the app port") != NULL,
        "unanswered, with its causes: %s", diag);
  CHECK(strstr(diag, "redirected_syn_refused 1: app port 8080 answered redirected connections with a RST. Likely: "
                     "the proxy not listening on the wildcard address") != NULL,
        "refused, with its causes: %s", diag);
  session_stop();
  free(s.s);
}

/* start_redirector does not refuse to start while the app port is not
 * listened on as redirects need (the proxy may listen later), but it looks:
 * redirector_diagnostics then begins with a warning naming what to listen
 * on, for the protocols the configuration intercepts. */
TEST_CASE(start_warning) {
  uint16_t port = free_port();
  char diag[8192], want[256];
  SOCKET lo = listen_on(4, "127.0.0.1", port);
  CHECK(lo != INVALID_SOCKET, "listen on 127.0.0.1");
  const char *tcp_only = config_pids("1234", "\"protocols\": [\"tcp\"]");
  if (session_start_on(port, tcp_only, "")) {
    redirector_diagnostics(diag, sizeof diag);
    snprintf(want, sizeof want,
             "warning at start: app port %u: TCP bound to a specific address only (127.0.0.1), not 0.0.0.0 or [::]: "
             "redirects will be refused; a redirected connection arrives addressed to the client's own address, so "
             "listen on 0.0.0.0 and [::]",
             (unsigned)port);
    CHECK(strncmp(diag, want, strlen(want)) == 0, "127.0.0.1 only:\n  %s\nexpected it to begin with\n  %s", diag, want);
    CHECK(strstr(diag, "UDP") == NULL, "UDP is not intercepted, so not looked at: %s", diag);
    session_stop();
  }
  closesocket(lo);
  SOCKET any4 = listen_on(4, NULL, port), any6 = listen_on(6, NULL, port);
  CHECK(any4 != INVALID_SOCKET && any6 != INVALID_SOCKET, "listen on 0.0.0.0 and [::]");
  if (session_start_on(port, tcp_only, "")) {
    redirector_diagnostics(diag, sizeof diag);
    CHECK(strstr(diag, "warning") == NULL, "both wildcards: no warning: %s", diag);
    CHECK(strstr(diag, "TCP on 0.0.0.0 and [::];") != NULL, "both wildcards: %s", diag);
    session_stop();
  }
  /* Both protocols intercepted: UDP, not listened on, is what is wrong. */
  if (session_start_on(port, config_pids("1234", NULL), "")) {
    redirector_diagnostics(diag, sizeof diag);
    snprintf(want, sizeof want, "warning at start: app port %u: UDP not listening: its redirects will be refused;",
             (unsigned)port);
    CHECK(strncmp(diag, want, strlen(want)) == 0, "no UDP:\n  %s\nexpected it to begin with\n  %s", diag, want);
    session_stop();
  }
  closesocket(any4);
  closesocket(any6);
}

/* A connection to a listener of an intercepted process goes to the app port. */
TEST_CASE(inbound) {
  uint8_t syn[256], synx[256], sa[256], sax[256], ack[256], ackx[256];
  tu_tuple in = tuple(0, R4, 40000, C4, 8443), in_x = tuple(0, R4, 40000, C4, APP_PORT);
  tu_tuple reply = tuple(0, C4, APP_PORT, R4, 40000), reply_x = tuple(0, C4, 8443, R4, 40000);
  size_t sn = tu_tcp(syn, &in, 7000, 0, TU_SYN, NULL), sxn = tu_tcp(synx, &in_x, 7000, 0, TU_SYN, NULL);
  size_t an = tu_tcp(sa, &reply, 9000, 7001, TU_SYN | TU_ACK, NULL);
  size_t axn = tu_tcp(sax, &reply_x, 9000, 7001, TU_SYN | TU_ACK, NULL);
  size_t kn = tu_tcp(ack, &in, 7001, 9001, TU_ACK, NULL), kxn = tu_tcp(ackx, &in_x, 7001, 9001, TU_ACK, NULL);
  sbuf s = {0};
  sb_printf(&s, "socket listen pid=%d proto=tcp local=0.0.0.0:8443\ndelay 100\n", FAKE_PID);
  sb_packet(&s, "in if=9 sub=2", syn, sn);
  sb_printf(&s, "wait_sent 1\ngate lookup\n");
  sb_packet(&s, "out if=9 sub=2", sa, an);
  sb_printf(&s, "wait_sent 2\n");
  sb_packet(&s, "in if=9 sub=2", ack, kn);
  if (!session_start(config_pids("1234", NULL), s.s)) return;
  sent_packet sp[64];
  int n = wait_sent(sp, 1, 5000);
  if (n >= 1) expect_packet(&sp[0], "remote SYN", synx, sxn, 0, 9, 2);
  redirector_origin o;
  CHECK(lookup_peer(REDIRECTOR_TCP, 0, R4, 40000, C4, &o) == 0, "inbound lookup: %s", last_error());
  CHECK(o.direction == REDIRECTOR_INBOUND && same_endpoint(&o.destination, 0, C4, 8443) &&
            same_endpoint(&o.client, 0, R4, 40000) && o.pid == FAKE_PID,
        "inbound lookup: direction %u, destination, client, pid %u", o.direction, o.pid);
  open_gate("lookup");
  n = wait_sent(sp, 3, 5000);
  if (n >= 3) {
    expect_packet(&sp[1], "proxy SYN-ACK", sax, axn, 1, 9, 2); /* stays outbound */
    expect_packet(&sp[2], "remote ACK", ackx, kxn, 0, 9, 2);
  }
  session_stop();
  free(s.s);
}

static redirector_stats get_stats(void) {
  redirector_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  redirector_get_stats(&st);
  return st;
}

/* The events the SOCKET handle has received so far (the stand-in's
 * record: its open line, then "recv id=N count=C" per receive). */
static int socket_events(void) {
  char *log = read_file(g_log);
  int id = -1, n = 0;
  for (const char *p = log; p && *p;) {
    int a, c;
    char layer[16];
    if (id < 0 && sscanf(p, "open id=%d layer=%15s", &a, layer) == 2 && strcmp(layer, "SOCKET") == 0) id = a;
    else if (id >= 0 && sscanf(p, "recv id=%d count=%d", &a, &c) == 2 && a == id) n += c;
    p = strchr(p, '\n');
    if (p) p++;
  }
  free(log);
  return n;
}

static int wait_socket_events(int n, int timeout_ms) {
  for (int waited = 0; socket_events() < n; waited += 10) {
    if (waited >= timeout_ms) return 0;
    Sleep(10);
  }
  return 1;
}

/* A script step after SOCKET events the library must have taken before the
 * script goes on: a gate, then a marker event (another process's connect). */
static void sb_taken(sbuf *s, const char *gate) {
  sb_printf(s, "gate %s\nsocket connect pid=%d proto=tcp local=%s remote=%s\n", gate, OTHER_PID, ep(0, C4, 50999),
            ep(0, D4, 80));
}

/* The test's side of sb_taken: once the SOCKET handle has received
 * `events`, opens the gate, and waits for the marker's receive: the
 * library's socket thread takes a receive's events before its next
 * receive, so by then it has taken the first `events`. */
static int taken(int events, const char *gate) {
  if (!wait_socket_events(events, 5000)) return 0;
  open_gate(gate);
  return wait_socket_events(events + 1, 5000);
}

/* Two connections to a listener of FAKE_PID on 0.0.0.0:8443 (from R4:40001
 * and R2:40002, to C4) and, between them, `closes`: SOCKET events (`ncloses`
 * of them) the library has taken before the second SYN comes. The first SYN
 * must be redirected; the record's sent packets go to sp. */
typedef struct {
  uint8_t syn[2][256], synx[2][256]; /* the SYNs, and as redirected */
  size_t sn[2], sxn[2];
  sent_packet sp[8];
  int sent;
} listener_session;

static int listener_run(listener_session *l, const char *closes, int ncloses, int hold_ms) {
  for (int i = 0; i < 2; i++) {
    tu_tuple in = tuple(0, i ? R2 : R4, (uint16_t)(40001 + i), C4, 8443);
    tu_tuple in_x = tuple(0, i ? R2 : R4, (uint16_t)(40001 + i), C4, APP_PORT);
    l->sn[i] = tu_tcp(l->syn[i], &in, 7000, 0, TU_SYN, NULL);
    l->sxn[i] = tu_tcp(l->synx[i], &in_x, 7000, 0, TU_SYN, NULL);
  }
  sbuf s = {0};
  sb_printf(&s, "socket listen pid=%d proto=tcp local=0.0.0.0:8443\n", FAKE_PID);
  sb_taken(&s, "listen");
  sb_printf(&s, "gate first\n");
  sb_packet(&s, "in if=9 sub=2", l->syn[0], l->sn[0]);
  sb_printf(&s, "wait_sent 1\n%s", closes);
  sb_taken(&s, "closed");
  sb_printf(&s, "gate second\n");
  sb_packet(&s, "in if=9 sub=2", l->syn[1], l->sn[1]);
  char extra[64];
  snprintf(extra, sizeof extra, "\"hold_timeout_ms\": %d", hold_ms);
  int ok = session_start(config_pids("1234", extra), s.s);
  free(s.s);
  if (!ok) return 0;
  CHECK(taken(1, "listen"), "the listen taken");
  open_gate("first");
  l->sent = wait_sent(l->sp, 1, 5000);
  if (l->sent >= 1) expect_packet(&l->sp[0], "first SYN", l->synx[0], l->sxn[0], 0, 9, 2);
  CHECK(taken(2 + ncloses, "closed"), "the closes taken");
  open_gate("second");
  l->sent = wait_sent(l->sp, 2, 5000);
  return 1;
}

/* A listener of an intercepted process on 0.0.0.0 accepts a connection,
 * which ends: the driver's CLOSE names the listener's port and PID with the
 * connection's remote end (the stand-in sends it as the driver does). The
 * listener is still there: the next connection is redirected at once, with
 * no hold and no look-up in the socket tables (which know no such listener
 * here). */
TEST_CASE(listener_outlives_its_connections) {
  char closes[256];
  snprintf(closes, sizeof closes,
           "socket accept pid=%d proto=tcp local=%s remote=%s\nsocket close pid=%d proto=tcp local=%s remote=%s\n",
           FAKE_PID, ep(0, C4, 8443), ep(0, R4, 40001), FAKE_PID, ep(0, C4, 8443), ep(0, R4, 40001));
  listener_session l;
  if (!listener_run(&l, closes, 2, 10000)) return;
  if (l.sent >= 2) {
    expect_packet(&l.sp[1], "second SYN, after the first connection's close", l.synx[1], l.sxn[1], 0, 9, 2);
  }
  redirector_stats st = get_stats();
  CHECK(st.held == 0 && st.owner_queries == 0 && st.hold_timeouts == 0, "held %llu, look-ups %llu, hold timeouts %llu",
        (unsigned long long)st.held, (unsigned long long)st.owner_queries, (unsigned long long)st.hold_timeouts);
  redirector_origin o;
  CHECK(lookup_peer(REDIRECTOR_TCP, 0, R2, 40002, C4, &o) == 0 && o.pid == FAKE_PID &&
            same_endpoint(&o.destination, 0, C4, 8443),
        "second connection's origin: %s", last_error());
  session_stop();
}

/* The listener's own release (a CLOSE with no remote end, its address and
 * port as bound) does remove it: the next connection's owner is unknown
 * (held, looked up, passed at the hold timeout). */
TEST_CASE(listener_release) {
  char closes[128];
  snprintf(closes, sizeof closes, "socket close pid=%d proto=tcp local=0.0.0.0:8443\n", FAKE_PID);
  listener_session l;
  if (!listener_run(&l, closes, 1, 300)) return;
  if (l.sent >= 2) {
    char hex[600];
    tu_hex(l.syn[1], l.sn[1], hex);
    CHECK(strcmp(l.sp[1].hex, hex) == 0 && l.sp[1].outbound == 0, "second SYN passed unchanged: %s", l.sp[1].hex);
  }
  redirector_stats st = get_stats();
  CHECK(st.held == 1 && st.owner_queries == 1 && st.hold_timeouts == 1, "held %llu, look-ups %llu, hold timeouts %llu",
        (unsigned long long)st.held, (unsigned long long)st.owner_queries, (unsigned long long)st.hold_timeouts);
  session_stop();
}

/* ICMP errors about rewritten packets go to the socket that sent the
 * packet, quoting it as that socket sent it; others go on as they came. */
TEST_CASE(icmp_errors) {
  static const uint8_t X4[4] = {198, 51, 100, 1}; /* a router */
  uint8_t syn[256], sa[256], sax[256], pmtu[512], pmtux[512], stray[256], other[512];
  uint8_t q6[256], q6x[256], un6[512], un6x[512];
  /* An inbound redirect: R4:40000 -> C4:8443, the proxy's SYN-ACK from the
   * app port goes out from 8443. */
  tu_tuple in = tuple(0, R4, 40000, C4, 8443);
  tu_tuple reply = tuple(0, C4, APP_PORT, R4, 40000), reply_x = tuple(0, C4, 8443, R4, 40000);
  tu_tuple router = tuple(0, X4, 0, C4, 0);
  size_t sn = tu_tcp(syn, &in, 7000, 0, TU_SYN, NULL);
  size_t an = tu_tcp(sa, &reply, 9000, 7001, TU_SYN | TU_ACK, NULL);
  size_t axn = tu_tcp(sax, &reply_x, 9000, 7001, TU_SYN | TU_ACK, NULL);
  /* A router's "fragmentation needed, next-hop MTU 1280" about the segment as
   * it went out; the proxy must get it about the segment it sent. */
  size_t pn = tu_icmp(pmtu, &router, 3, 4, 1280, sax, axn);
  size_t pxn = tu_icmp(pmtux, &router, 3, 4, 1280, sa, an);
  /* "Time exceeded" about a connection of no one intercepted: as it came. */
  tu_tuple up = tuple(0, C4, 50002, D4, 443);
  size_t on = tu_tcp(stray, &up, 1, 0, TU_SYN, NULL);
  on = tu_icmp(other, &router, 11, 0, 0, stray, on);
  /* An outbound redirect over IPv6, nothing listening on the app port: this
   * host's "port unreachable" about the datagram it got goes to the client,
   * from D6 about the client's own datagram. */
  tu_tuple up6 = tuple(1, C6, 53000, D6, 53), up6_x = tuple(1, D6, 53000, C6, APP_PORT);
  size_t qn = tu_udp(q6, &up6, "query"), qxn = tu_udp(q6x, &up6_x, "query");
  tu_tuple stack6 = tuple(1, C6, 0, D6, 0), client6 = tuple(1, D6, 0, C6, 0);
  size_t un = tu_icmp(un6, &stack6, 1, 4, 0, q6x, qxn), uxn = tu_icmp(un6x, &client6, 1, 4, 0, q6, qn);

  sbuf s = {0};
  sb_printf(&s, "socket listen pid=%d proto=tcp local=0.0.0.0:8443\n", FAKE_PID);
  sb_printf(&s, "socket connect pid=%d proto=udp local=%s remote=%s\ndelay 100\n", FAKE_PID, ep(1, C6, 53000),
            ep(1, D6, 53));
  sb_packet(&s, "in if=9 sub=2", syn, sn);
  sb_printf(&s, "wait_sent 1\n");
  sb_packet(&s, "out if=9 sub=2", sa, an);
  sb_printf(&s, "wait_sent 2\n");
  sb_packet(&s, "in if=9 sub=2", pmtu, pn);
  sb_printf(&s, "wait_sent 3\n");
  sb_packet(&s, "in if=9 sub=2", other, on);
  sb_printf(&s, "wait_sent 4\n");
  sb_packet(&s, "out if=5 sub=1", q6, qn);
  sb_printf(&s, "wait_sent 5\n");
  sb_packet(&s, "out if=5 sub=1", un6, un);
  if (!session_start(config_pids("1234", NULL), s.s)) return;
  sent_packet sp[64];
  int n = wait_sent(sp, 6, 5000);
  if (n >= 6) {
    expect_packet(&sp[1], "proxy SYN-ACK", sax, axn, 1, 9, 2);
    expect_packet(&sp[2], "fragmentation needed, to the proxy", pmtux, pxn, 0, 9, 2);
    expect_packet(&sp[3], "time exceeded, not ours", other, on, 0, 9, 2);
    expect_packet(&sp[4], "datagram to the proxy", q6x, qxn, 0, 5, 1);
    expect_packet(&sp[5], "port unreachable, to the client", un6x, uxn, 0, 5, 1);
  }
  CHECK(n == 6, "%d packets sent, expected 6", n);
  session_stop();
  free(s.s);
}

/* Traffic of processes not intercepted goes out exactly as it came, with
 * its own address flags (a checksum left to offload stays flagged so). */
TEST_CASE(passthrough) {
  uint8_t syn[256], good[256], sa[256], dg[256];
  tu_tuple up = tuple(0, C4, 50001, D4, 443), down = tuple(0, D4, 443, C4, 50001);
  tu_tuple udp = tuple(0, C4, 53001, S4, 53);
  size_t sn = tu_tcp(syn, &up, 1, 0, TU_SYN, NULL);
  memcpy(good, syn, sn);
  tu_layout l;
  tu_parse(syn, sn, &l);
  tu_wr16(syn + tu_l4csum_at(&l), 0xbeef); /* offloaded: not computed yet */
  size_t an = tu_tcp(sa, &down, 9, 2, TU_SYN | TU_ACK, NULL);
  size_t dn = tu_udp(dg, &udp, "not intercepted");
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\n", OTHER_PID, ep(0, C4, 50001), ep(0, D4, 443));
  sb_printf(&s, "socket connect pid=%d proto=udp local=%s remote=%s\ndelay 100\n", OTHER_PID, ep(0, C4, 53001),
            ep(0, S4, 53));
  sb_packet(&s, "out if=7 sub=3 tcpcsum=0", syn, sn);
  sb_printf(&s, "wait_sent 1\n");
  sb_packet(&s, "in if=7 sub=3", sa, an);
  sb_printf(&s, "wait_sent 2\n");
  sb_packet(&s, "out loopback impostor if=7 sub=3", dg, dn);
  /* Loopback intercepted: loopback packets are diverted (and pass). */
  if (!session_start(config_pids("1234", "\"bypass\": []"), s.s)) return;
  sent_packet sp[64];
  int n = wait_sent(sp, 3, 5000);
  if (n >= 3) {
    char hex[600];
    tu_hex(good, sn, hex);
    CHECK(strcmp(sp[0].hex, hex) == 0, "SYN on the wire: %s", sp[0].hex);
    CHECK(!sp[0].given_ok && sp[0].tcpcsum == 0 && sp[0].ipcsum == 1 && sp[0].outbound == 1,
          "SYN re-injected as captured: its checksum untouched and still flagged for offload");
    expect_packet(&sp[1], "SYN-ACK", sa, an, 0, 7, 3);
    expect_packet(&sp[2], "datagram", dg, dn, 1, 7, 3);
    CHECK(sp[2].loopback == 1 && sp[2].impostor == 1, "address flags kept");
  }
  CHECK(n == 3, "%d packets sent, expected 3", n);
  session_stop();
  free(s.s);
}

/* The SOCKET event comes after the first packet: the packet waits for it,
 * and is redirected (not passed on a timeout). */
TEST_CASE(socket_after_packet) {
  uint8_t syn[256], synx[256];
  tu_tuple up = tuple(0, C4, 50002, D4, 80), up_x = tuple(0, D4, 50002, C4, APP_PORT);
  size_t sn = tu_tcp(syn, &up, 1, 0, TU_SYN, NULL), sxn = tu_tcp(synx, &up_x, 1, 0, TU_SYN, NULL);
  sbuf s = {0};
  sb_packet(&s, "out if=7 sub=3", syn, sn);
  sb_printf(&s, "delay 400\nmark event\nsocket connect pid=%d proto=tcp local=%s remote=%s\n", FAKE_PID,
            ep(0, C4, 50002), ep(0, D4, 80));
  DWORD t0 = GetTickCount();
  if (!session_start(config_pids("1234", "\"hold_timeout_ms\": 10000"), s.s)) return;
  sent_packet sp[64];
  int n = wait_sent(sp, 1, 5000);
  DWORD took = GetTickCount() - t0;
  if (n >= 1) expect_packet(&sp[0], "held SYN", synx, sxn, 0, 7, 3);
  CHECK(took < 5000, "released after %lu ms: by the event, not the 10 s hold timeout", (unsigned long)took);
  char *log = read_file(g_log);
  const char *mark = strstr(log, "mark event"), *send = strstr(log, "send id=");
  CHECK(mark && send && mark < send, "nothing was sent before the event");
  free(log);
  redirector_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  redirector_get_stats(&st);
  CHECK(st.held >= 1 && st.hold_timeouts == 0, "held %llu, hold timeouts %llu", (unsigned long long)st.held,
        (unsigned long long)st.hold_timeouts);
  session_stop();
  free(s.s);
}

/* A SOCKET event made while the library was still reading the existing
 * sockets at start (here: 5 s before its first receive) is not lost: the
 * driver drops events older than the handle's queue time (2 s by default),
 * and the stand-in does the same. */
TEST_CASE(early_socket_event) {
  uint8_t syn[256], synx[256];
  tu_tuple up = tuple(0, C4, 50020, D4, 80), up_x = tuple(0, D4, 50020, C4, APP_PORT);
  size_t sn = tu_tcp(syn, &up, 1, 0, TU_SYN, NULL), sxn = tu_tcp(synx, &up_x, 1, 0, TU_SYN, NULL);
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s ts=-5000\n", FAKE_PID, ep(0, C4, 50020),
            ep(0, D4, 80));
  sb_packet(&s, "out if=7 sub=3", syn, sn);
  if (!session_start(config_pids("1234", NULL), s.s)) return;
  sent_packet sp[8];
  int n = wait_sent(sp, 1, 5000);
  if (n >= 1) expect_packet(&sp[0], "the SYN, redirected by the early event's owner", synx, sxn, 0, 7, 3);
  redirector_origin o;
  CHECK(lookup_peer(REDIRECTOR_TCP, 0, D4, 50020, C4, &o) == 0 && o.pid == FAKE_PID, "owner from the early event: %s",
        last_error());
  char *log = read_file(g_log);
  CHECK(strstr(log, "dropped ") == NULL, "nothing dropped:\n%s", log);
  free(log);
  session_stop();
  free(s.s);
}

/* Packets of a connection opened before start (no SYN, no event) pass at
 * once, unchanged. */
TEST_CASE(existing_connection) {
  uint8_t dat[256], ack[256];
  tu_tuple up = tuple(0, C4, 50003, D4, 80), down = tuple(0, D4, 80, C4, 50003);
  size_t dn = tu_tcp(dat, &up, 77, 88, TU_PSH | TU_ACK, "more of an old connection");
  size_t an = tu_tcp(ack, &down, 88, 103, TU_ACK, NULL);
  sbuf s = {0};
  sb_packet(&s, "out if=7 sub=3", dat, dn);
  sb_printf(&s, "wait_sent 1\n");
  sb_packet(&s, "in if=7 sub=3", ack, an);
  DWORD t0 = GetTickCount();
  if (!session_start(config_pids("1234", "\"hold_timeout_ms\": 10000"), s.s)) return;
  sent_packet sp[64];
  int n = wait_sent(sp, 2, 5000);
  if (n >= 2) {
    expect_packet(&sp[0], "old data", dat, dn, 1, 7, 3);
    expect_packet(&sp[1], "old ACK", ack, an, 0, 7, 3);
  }
  CHECK(GetTickCount() - t0 < 3000, "not held");
  session_stop();
  free(s.s);
}

/* The library's own process and PID 4 are never intercepted, even when
 * listed; PID 4's packet is released by its event, not a timeout. */
TEST_CASE(excluded_pids) {
  uint8_t a[256], b[256];
  tu_tuple t1 = tuple(0, C4, 50004, D4, 80), t2 = tuple(0, C4, 445, R4, 50005);
  size_t an = tu_tcp(a, &t1, 1, 0, TU_SYN, NULL), bn = tu_tcp(b, &t2, 1, 0, TU_SYN, NULL);
  char pids[64];
  snprintf(pids, sizeof pids, "%lu, 4", (unsigned long)GetCurrentProcessId());
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%lu proto=tcp local=%s remote=%s\ndelay 100\n",
            (unsigned long)GetCurrentProcessId(), ep(0, C4, 50004), ep(0, D4, 80));
  sb_packet(&s, "out if=7 sub=3", a, an);
  sb_printf(&s, "wait_sent 1\n");
  sb_packet(&s, "out if=7 sub=3", b, bn);
  sb_printf(&s, "delay 200\nsocket connect pid=4 proto=tcp local=%s remote=%s\n", ep(0, C4, 445), ep(0, R4, 50005));
  DWORD t0 = GetTickCount();
  if (!session_start(config_pids(pids, "\"hold_timeout_ms\": 10000"), s.s)) return;
  sent_packet sp[64];
  int n = wait_sent(sp, 2, 5000);
  if (n >= 2) {
    expect_packet(&sp[0], "own SYN", a, an, 1, 7, 3);
    expect_packet(&sp[1], "PID 4 SYN", b, bn, 1, 7, 3);
  }
  CHECK(GetTickCount() - t0 < 5000, "PID 4 released by its event");
  session_stop();
  free(s.s);
}

/* A socket's local port (0 when unbound). */
static uint16_t local_port(SOCKET sock) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockname(sock, (struct sockaddr *)&ss, &len) != 0) return 0;
  return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                         : ((struct sockaddr_in *)&ss)->sin_port);
}

static uint64_t stat_held(void) {
  redirector_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  redirector_get_stats(&st);
  return st.held;
}

/* redirector_exclude_socket on sockets of this process (real wine sockets)
 * while the redirector runs: each is bound by the library, so its port is
 * known before it connects, and its packets pass at once, both ways, with
 * no SOCKET event (no hold, no redirect): a TCP socket, its SYN-ACK, a
 * dual-stack IPv6 one (IPv6 and IPv4), a UDP socket's reply. A socket
 * excluded before start is not remembered: its SYN waits for its CONNECT
 * event, like any new flow of this process. After a socket's CLOSE event its
 * port waits again. */
TEST_CASE(exclude_socket) {
  WSADATA w;
  WSAStartup(MAKEWORD(2, 2), &w);
  unsigned long self = (unsigned long)GetCurrentProcessId();
  SOCKET early = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(redirector_exclude_socket((intptr_t)early) == 0, "excluded while stopped: %s", last_error());
  uint16_t pe = local_port(early);
  CHECK(pe != 0, "bound while stopped too");
  char more[MAX_PATH];
  snprintf(more, sizeof more, "%s.more", g_script);
  DeleteFileA(more);
  sbuf s = {0};
  sb_printf(&s, "gate excluded\ninclude %s\n", more);
  char pids[32];
  snprintf(pids, sizeof pids, "%lu", self);
  if (!session_start(config_pids(pids, "\"hold_timeout_ms\": 10000"), s.s)) return;
  SOCKET t4 = socket(AF_INET, SOCK_STREAM, 0), t6 = socket(AF_INET6, SOCK_STREAM, 0);
  SOCKET u4 = socket(AF_INET, SOCK_DGRAM, 0);
  DWORD off = 0;
  CHECK(setsockopt(t6, IPPROTO_IPV6, IPV6_V6ONLY, (const char *)&off, sizeof off) == 0, "dual stack");
  CHECK(local_port(t4) == 0 && local_port(t6) == 0 && local_port(u4) == 0, "unbound at first");
  CHECK(redirector_exclude_socket((intptr_t)t4) == 0, "exclude TCP: %s", last_error());
  CHECK(redirector_exclude_socket((intptr_t)t6) == 0, "exclude TCP6: %s", last_error());
  CHECK(redirector_exclude_socket((intptr_t)u4) == 0, "exclude UDP: %s", last_error());
  uint16_t p4 = local_port(t4), p6 = local_port(t6), pu = local_port(u4);
  CHECK(p4 && p6 && pu, "bound by the library: ports %u %u %u", p4, p6, pu);
  enum { N = 7 };
  uint8_t pk[N][256];
  size_t pn[N];
  tu_tuple t[N] = {tuple(0, C4, p4, D4, 80), tuple(0, D4, 80, C4, p4),    tuple(1, C6, p6, D6, 443),
                   tuple(0, C4, p6, D4, 443), tuple(0, R4, 53, C4, pu),   tuple(0, C4, pe, D4, 80),
                   tuple(0, C4, p4, D4, 81)};
  const uint8_t flags[N] = {TU_SYN, TU_SYN | TU_ACK, TU_SYN, TU_SYN, 0, TU_SYN, TU_SYN};
  const char *what[N] = {"SYN", "its SYN-ACK", "IPv6 SYN", "IPv4 SYN of the dual-stack socket", "UDP reply",
                         "SYN of the socket excluded before start", "SYN from the port after its CLOSE"};
  const int out[N] = {1, 0, 1, 1, 0, 1, 1};
  for (int i = 0; i < N; i++) pn[i] = i == 4 ? tu_udp(pk[i], &t[i], "answer") : tu_tcp(pk[i], &t[i], 1, 0, flags[i], NULL);
  sbuf m = {0};
  for (int i = 0; i < 6; i++) sb_packet(&m, out[i] ? "out if=7 sub=3" : "in if=7 sub=3", pk[i], pn[i]);
  sb_printf(&m, "wait_sent 5\ngate released\nsocket connect pid=%lu proto=tcp local=%s remote=%s\nwait_sent 6\n", self,
            ep(0, C4, pe), ep(0, D4, 80));
  sb_printf(&m, "socket close pid=%lu proto=tcp local=%s remote=%s\ndelay 300\n", self, ep(0, C4, p4),
            ep(0, D4, 80));
  sb_packet(&m, "out if=7 sub=3", pk[6], pn[6]);
  FILE *f = fopen(more, "wb");
  fputs(m.s, f);
  fclose(f);
  DWORD t0 = GetTickCount();
  open_gate("excluded");
  sent_packet sp[64];
  int n = wait_sent(sp, 5, 5000);
  CHECK(GetTickCount() - t0 < 5000, "passed at once, not after the 10 s hold timeout");
  for (int i = 0; i < 5 && i < n; i++) expect_packet(&sp[i], what[i], pk[i], pn[i], out[i], 7, 3);
  Sleep(300);
  CHECK(sent_packets(sp, 64) == 5, "the early socket's SYN waits for its owner");
  CHECK(stat_held() == 1, "held: %llu, the early socket's SYN only", (unsigned long long)stat_held());
  open_gate("released");
  n = wait_sent(sp, 6, 5000);
  if (n >= 6) expect_packet(&sp[5], what[5], pk[5], pn[5], 1, 7, 3);
  for (int i = 0; i < 300 && stat_held() < 2; i++) Sleep(10);
  CHECK(stat_held() == 2, "after the CLOSE, the port's new SYN is held (held %llu)", (unsigned long long)stat_held());
  redirector_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  redirector_get_stats(&st);
  CHECK(st.flows_redirected == 0 && st.rewritten == 0, "nothing redirected");
  session_stop();
  closesocket(early);
  closesocket(t4);
  closesocket(t6);
  closesocket(u4);
  DeleteFileA(more);
  free(s.s);
  free(m.s);
}

/* The table of excluded sockets holds max_flows of them: one more is
 * refused with REDIRECTOR_ENOMEM, and the reason. */
TEST_CASE(exclude_socket_table_full) {
  WSADATA w;
  WSAStartup(MAKEWORD(2, 2), &w);
  char pids[32];
  snprintf(pids, sizeof pids, "%d", FAKE_PID);
  if (!session_start(config_pids(pids, "\"max_flows\": 16"), "")) return;
  SOCKET socks[17];
  for (int i = 0; i < 17; i++) {
    socks[i] = socket(AF_INET, SOCK_DGRAM, 0);
    int32_t rc = redirector_exclude_socket((intptr_t)socks[i]);
    if (i < 16) CHECK(rc == 0, "socket %d excluded: %s", i, last_error());
    else CHECK(rc == REDIRECTOR_ENOMEM && error_mentions("table of excluded sockets is full (16 sockets"),
               "the 17th: %d %s", rc, last_error());
  }
  session_stop();
  for (int i = 0; i < 17; i++) closesocket(socks[i]);
}

/* A child process with a UDP socket open before start: its owner comes from
 * the socket table (real GetExtendedUdpTable under wine), so a datagram to
 * it is redirected with no SOCKET event, and the lookup names the child's
 * executable. */
static HANDLE spawn_child(const char *mode, uint16_t *port, uint16_t *port2, DWORD *pid) {
  char cmd[MAX_PATH + 32];
  char exe[MAX_PATH];
  GetModuleFileNameA(NULL, exe, sizeof exe);
  snprintf(cmd, sizeof cmd, "\"%s\" %s", exe, mode);
  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE rd, wr;
  CreatePipe(&rd, &wr, &sa, 0);
  SetHandleInformation(rd, HANDLE_FLAG_INHERIT, 0);
  STARTUPINFOA si;
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdOutput = wr;
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
  PROCESS_INFORMATION pi;
  if (!CreateProcessA(exe, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) {
    CloseHandle(rd);
    CloseHandle(wr);
    return NULL;
  }
  CloseHandle(wr);
  CloseHandle(pi.hThread);
  char line[64] = "";
  DWORD got = 0, total = 0;
  while (total < sizeof line - 1 && ReadFile(rd, line + total, 1, &got, NULL) && got == 1 && line[total] != '\n') {
    total++;
  }
  line[total] = '\0';
  CloseHandle(rd);
  unsigned p1 = 0, p2 = 0;
  sscanf(line, "%u %u", &p1, &p2);
  *port = (uint16_t)p1;
  *port2 = (uint16_t)p2;
  *pid = pi.dwProcessId;
  return pi.hProcess;
}

/* The child's side: waits to be told to exit. */
static void child_wait(void) {
  char event[64];
  snprintf(event, sizeof event, "WrTestChildExit_%lu", (unsigned long)GetCurrentProcessId());
  HANDLE ev = CreateEventA(NULL, TRUE, FALSE, event);
  WaitForSingleObject(ev, 60000);
}

static void child_stop(HANDLE child, DWORD pid) {
  char event[64];
  snprintf(event, sizeof event, "WrTestChildExit_%lu", (unsigned long)pid);
  HANDLE ev = CreateEventA(NULL, TRUE, FALSE, event);
  SetEvent(ev);
  WaitForSingleObject(child, 10000);
  CloseHandle(ev);
  CloseHandle(child);
}

/* A UDP socket on 0.0.0.0 (datagrams to any local address are its): prints
 * its port. */
static int child_udp(void) {
  struct sockaddr_in a;
  SOCKET u = used_udp_socket(&a, INADDR_ANY, 0);
  printf("%u 0\n", ntohs(a.sin_port));
  fflush(stdout);
  child_wait();
  closesocket(u);
  return 0;
}

/* Named events between the test and its child: WrTest<what>_<child PID>. */
static HANDLE child_event(const char *what, DWORD pid) {
  char name[64];
  snprintf(name, sizeof name, "WrTest%s_%lu", what, (unsigned long)pid);
  return CreateEventA(NULL, TRUE, FALSE, name);
}

/* A UDP socket on 0.0.0.0:PORT made only when the test says so (after the
 * redirector started, so only a look-up in the socket tables finds it):
 * prints the port at once, binds at the event Go, sets Bound. */
static int child_udp_late(uint16_t port) {
  printf("%u 0\n", port);
  fflush(stdout);
  DWORD self = GetCurrentProcessId();
  HANDLE go = child_event("Go", self), bound = child_event("Bound", self);
  WaitForSingleObject(go, 60000);
  struct sockaddr_in a;
  SOCKET u = used_udp_socket(&a, INADDR_ANY, port);
  SetEvent(bound);
  child_wait();
  closesocket(u);
  CloseHandle(go);
  CloseHandle(bound);
  return 0;
}

/* A TCP connection of the child's own on 127.0.0.1: prints the client's
 * port and the listener's. */
static int child_tcp(void) {
  struct sockaddr_in a, ca;
  SOCKET u = used_udp_socket(&a, INADDR_LOOPBACK, 0); /* (starts winsock) */
  SOCKET lst = socket(AF_INET, SOCK_STREAM, 0);
  a.sin_port = 0;
  bind(lst, (struct sockaddr *)&a, sizeof a);
  listen(lst, 1);
  int len = sizeof a;
  getsockname(lst, (struct sockaddr *)&a, &len);
  SOCKET cli = socket(AF_INET, SOCK_STREAM, 0);
  connect(cli, (struct sockaddr *)&a, sizeof a);
  SOCKET acc = accept(lst, NULL, NULL);
  char buf[4];
  send(cli, "x", 1, 0); /* wine learns the client socket's owner */
  recv(acc, buf, sizeof buf, 0);
  len = sizeof ca;
  getsockname(cli, (struct sockaddr *)&ca, &len);
  printf("%u %u\n", ntohs(ca.sin_port), ntohs(a.sin_port));
  fflush(stdout);
  child_wait();
  closesocket(cli);
  closesocket(acc);
  closesocket(lst);
  closesocket(u);
  return 0;
}

/* spawn_child, checked: NULL (and no child left) unless it reported its port. */
static HANDLE start_child(const char *mode, uint16_t *port, uint16_t *port2, DWORD *pid) {
  HANDLE child = spawn_child(mode, port, port2, pid);
  CHECK(child && *port, "%s started", mode);
  if (child && !*port) {
    child_stop(child, *pid);
    child = NULL;
  }
  return child;
}

/* A socket opened before start (the child's, on 0.0.0.0) is known from the
 * socket tables: a datagram to its port is redirected, not passed at the
 * hold timeout. */
TEST_CASE(existing_socket) {
  uint16_t port = 0, unused = 0;
  DWORD pid = 0;
  HANDLE child = start_child("child_udp", &port, &unused, &pid);
  if (!child) return;
  uint8_t dg[256], dgx[256];
  tu_tuple in = tuple(0, R4, 5300, C4, port), in_x = tuple(0, R4, 5300, C4, APP_PORT);
  size_t dn = tu_udp(dg, &in, "to a socket opened before start");
  size_t dxn = tu_udp(dgx, &in_x, "to a socket opened before start");
  sbuf s = {0};
  sb_printf(&s, "delay 200\n");
  sb_packet(&s, "in if=7 sub=3", dg, dn);
  char pids[32];
  snprintf(pids, sizeof pids, "%lu", (unsigned long)pid);
  if (session_start(config_pids(pids, "\"hold_timeout_ms\": 10000"), s.s)) {
    sent_packet sp[64];
    int n = wait_sent(sp, 1, 8000);
    if (n >= 1) expect_packet(&sp[0], "datagram to the child", dgx, dxn, 0, 7, 3);
    redirector_origin o;
    CHECK(lookup_peer(REDIRECTOR_UDP, 0, R4, 5300, C4, &o) == 0, "lookup: %s", last_error());
    char exe[MAX_PATH];
    GetModuleFileNameA(NULL, exe, sizeof exe);
    CHECK(o.pid == pid && o.direction == REDIRECTOR_INBOUND, "owner pid %u (child %lu)", o.pid, (unsigned long)pid);
    CHECK(_stricmp(o.process_path, exe) == 0, "process path \"%s\", expected \"%s\"", o.process_path, exe);
    session_stop();
  }
  child_stop(child, pid);
  free(s.s);
}

/* A SOCKET event older than the process that now has its PID names a
 * process that is gone: the connection gets no path (the PID was reused),
 * while a current event of the same PID gets the executable's path. */
TEST_CASE(pid_reuse) {
  uint16_t port = 0, unused = 0;
  DWORD pid = 0;
  ULONGLONG before_child = GetTickCount64();
  HANDLE child = start_child("child_udp", &port, &unused, &pid);
  if (!child) return;
  /* The old event: 3 s before the child was created, yet young enough for
   * the SOCKET handle's queue time (which the driver enforces). */
  unsigned long long old_ms = GetTickCount64() - before_child + 3000;
  uint8_t old[256], cur[256];
  tu_tuple t_old = tuple(0, C4, 50015, D4, 80), t_cur = tuple(0, C4, 50016, D4, 80);
  size_t on = tu_tcp(old, &t_old, 1, 0, TU_SYN, NULL), cn = tu_tcp(cur, &t_cur, 1, 0, TU_SYN, NULL);
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%lu proto=tcp local=%s remote=%s ts=-%llu\ndelay 100\n", (unsigned long)pid,
            ep(0, C4, 50015), ep(0, D4, 80), old_ms);
  sb_packet(&s, "out if=7 sub=3", old, on);
  sb_printf(&s, "wait_sent 1\nsocket connect pid=%lu proto=tcp local=%s remote=%s\ndelay 100\n", (unsigned long)pid,
            ep(0, C4, 50016), ep(0, D4, 80));
  sb_packet(&s, "out if=7 sub=3", cur, cn);
  char pids[32];
  snprintf(pids, sizeof pids, "%lu", (unsigned long)pid);
  if (session_start(config_pids(pids, NULL), s.s)) {
    sent_packet sp[4];
    wait_sent(sp, 2, 5000);
    char exe[MAX_PATH];
    GetModuleFileNameA(NULL, exe, sizeof exe);
    redirector_origin o;
    CHECK(lookup_peer(REDIRECTOR_TCP, 0, D4, 50015, C4, &o) == 0 && o.pid == pid, "old event's flow: %s",
          last_error());
    CHECK(o.process_path[0] == '\0', "an event from before the process started gets no path: \"%s\"",
          o.process_path);
    CHECK(lookup_peer(REDIRECTOR_TCP, 0, D4, 50016, C4, &o) == 0 && o.pid == pid, "current event's flow: %s",
          last_error());
    CHECK(_stricmp(o.process_path, exe) == 0, "a current event gets the path: \"%s\"", o.process_path);
    session_stop();
  }
  child_stop(child, pid);
  free(s.s);
}

/* No SOCKET event at all: the engine asks for the owner of the pending
 * flow, and the backend finds it in the TCP table (real, under wine): a
 * child's own connection on 127.0.0.1, with the loopback bypass off. */
TEST_CASE(owner_from_table) {
  uint16_t cport = 0, lport = 0;
  DWORD pid = 0;
  HANDLE child = start_child("child_tcp", &cport, &lport, &pid);
  if (!child) return;
  static const uint8_t L[4] = {127, 0, 0, 1};
  uint8_t syn[256], synx[256];
  tu_tuple up = tuple(0, L, cport, L, lport), up_x = tuple(0, L, cport, L, APP_PORT);
  size_t sn = tu_tcp(syn, &up, 1, 0, TU_SYN, NULL), sxn = tu_tcp(synx, &up_x, 1, 0, TU_SYN, NULL);
  sbuf s = {0};
  sb_packet(&s, "out loopback if=1 sub=0", syn, sn);
  char pids[32];
  snprintf(pids, sizeof pids, "%lu", (unsigned long)pid);
  if (session_start(config_pids(pids, "\"bypass\": [], \"hold_timeout_ms\": 10000"), s.s)) {
    sent_packet sp[64];
    int n = wait_sent(sp, 1, 5000);
    if (n >= 1) {
      /* Loopback: re-injected outbound (inbound it would never arrive). */
      expect_packet(&sp[0], "SYN of a socket found in the table", synx, sxn, 1, 1, 0);
      CHECK(sp[0].loopback == 1, "loopback flag kept");
    }
    redirector_origin o;
    CHECK(lookup_peer(REDIRECTOR_TCP, 0, L, cport, L, &o) == 0, "lookup: %s", last_error());
    CHECK(o.pid == pid && same_endpoint(&o.destination, 0, L, lport), "owner pid %u (child %lu)", o.pid,
          (unsigned long)pid);
    redirector_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    redirector_get_stats(&st);
    CHECK(st.owner_queries >= 1 && st.hold_timeouts == 0, "asked (%llu queries), no timeout",
          (unsigned long long)st.owner_queries);
    session_stop();
  }
  child_stop(child, pid);
  free(s.s);
}

/* Process trees ("tree:PID"): the configured process is a real child of
 * this program, and the connecting process is that child's own child. Its
 * connection is redirected, with its own PID and path in the origin; a
 * process outside the tree (another child of this program) goes direct;
 * and after the tree's root has exited, the grandchild's next connection is
 * still redirected (its membership was decided, by identity, while the root
 * lived). */
TEST_CASE(tree) {
  DWORD mid_pid = 0, leaf_pid = 0, other_pid = 0;
  HANDLE mid = tree_start(&mid_pid, &leaf_pid);
  HANDLE other = tree_spawn("tree_leaf", NULL, &other_pid);
  CHECK(mid && leaf_pid && other, "a child, its child, and another child started");
  if (!mid || !leaf_pid || !other) {
    if (mid) tree_stop(mid, mid_pid);
    if (leaf_pid) tree_stop_pid(leaf_pid);
    if (other) tree_stop(other, other_pid);
    return;
  }
  uint8_t pk[3][256], ex[3][256];
  size_t pn[3], en[3];
  const uint16_t ports[3] = {50031, 50032, 50033};
  for (int i = 0; i < 3; i++) {
    tu_tuple up = tuple(0, C4, ports[i], D4, 80), up_x = tuple(0, D4, ports[i], C4, APP_PORT);
    pn[i] = tu_tcp(pk[i], &up, 1000, 0, TU_SYN, NULL);
    en[i] = tu_tcp(ex[i], &up_x, 1000, 0, TU_SYN, NULL);
  }
  const DWORD by[3] = {leaf_pid, other_pid, leaf_pid};
  sbuf s = {0};
  for (int i = 0; i < 3; i++) {
    if (i == 2) sb_printf(&s, "gate root_gone\n");
    sb_printf(&s, "socket connect pid=%lu proto=tcp local=%s remote=%s\ndelay 100\n", (unsigned long)by[i],
              ep(0, C4, ports[i]), ep(0, D4, 80));
    sb_packet(&s, "out if=7 sub=3", pk[i], pn[i]);
    sb_printf(&s, "wait_sent %d\n", i + 1);
  }
  char config[128];
  snprintf(config, sizeof config, "{\"intercept\": \"tree:%lu\", \"hold_timeout_ms\": 10000}", (unsigned long)mid_pid);
  char exe[MAX_PATH];
  GetModuleFileNameA(NULL, exe, sizeof exe);
  if (session_start(config, s.s)) {
    sent_packet sp[64];
    int n = wait_sent(sp, 2, 8000);
    if (n >= 1) expect_packet(&sp[0], "the grandchild's SYN, redirected", ex[0], en[0], 0, 7, 3);
    if (n >= 2) expect_packet(&sp[1], "another child's SYN, untouched", pk[1], pn[1], 1, 7, 3);
    redirector_origin o;
    CHECK(lookup_peer(REDIRECTOR_TCP, 0, D4, ports[0], C4, &o) == 0, "lookup: %s", last_error());
    CHECK(o.pid == leaf_pid && same_endpoint(&o.destination, 0, D4, 80), "origin: pid %u (the grandchild: %lu)",
          o.pid, (unsigned long)leaf_pid);
    CHECK(_stricmp(o.process_path, exe) == 0, "origin: path \"%s\"", o.process_path);
    CHECK(lookup_peer(REDIRECTOR_TCP, 0, D4, ports[1], C4, &o) != 0, "no origin for the process outside the tree");
    /* The root exits; the grandchild connects again. */
    unsigned long long c_mid = tree_ctime(mid_pid);
    tree_stop(mid, mid_pid);
    mid = NULL;
    CHECK(tree_gone(mid_pid, c_mid), "the tree's root is gone");
    open_gate("root_gone");
    n = wait_sent(sp, 3, 8000);
    if (n >= 3) expect_packet(&sp[2], "the grandchild's SYN after its parent exited, redirected", ex[2], en[2], 0, 7, 3);
    CHECK(lookup_peer(REDIRECTOR_TCP, 0, D4, ports[2], C4, &o) == 0 && o.pid == leaf_pid, "lookup after: %s",
          last_error());
    session_stop();
  }
  if (mid) tree_stop(mid, mid_pid);
  tree_stop_pid(leaf_pid);
  tree_stop(other, other_pid);
  free(s.s);
}

/* A launcher ("tree:PID") starts a child and exits before that child opens
 * any socket: the backend's listing of processes (every 250 ms while the
 * policy names trees) saw the launcher alive after the child was created,
 * so the child's first connection is redirected all the same. */
TEST_CASE(tree_launcher) {
  DWORD mid_pid = 0, leaf_pid = 0;
  HANDLE mid = tree_start(&mid_pid, &leaf_pid);
  CHECK(mid && leaf_pid, "a child and its child started");
  if (!mid || !leaf_pid) {
    if (mid) tree_stop(mid, mid_pid);
    return;
  }
  uint8_t syn[256], synx[256];
  tu_tuple up = tuple(0, C4, 50041, D4, 80), up_x = tuple(0, D4, 50041, C4, APP_PORT);
  size_t sn = tu_tcp(syn, &up, 1000, 0, TU_SYN, NULL), sxn = tu_tcp(synx, &up_x, 1000, 0, TU_SYN, NULL);
  sbuf s = {0};
  sb_printf(&s, "gate launcher_gone\nsocket connect pid=%lu proto=tcp local=%s remote=%s\ndelay 100\n",
            (unsigned long)leaf_pid, ep(0, C4, 50041), ep(0, D4, 80));
  sb_packet(&s, "out if=7 sub=3", syn, sn);
  char config[128];
  snprintf(config, sizeof config, "{\"intercept\": \"tree:%lu\", \"hold_timeout_ms\": 10000}", (unsigned long)mid_pid);
  if (session_start(config, s.s)) {
    Sleep(6 * WR_TREE_WATCH_MS); /* listed alive, even on a loaded machine */
    unsigned long long c_mid = tree_ctime(mid_pid);
    tree_stop(mid, mid_pid);
    mid = NULL;
    CHECK(tree_gone(mid_pid, c_mid), "the launcher is gone");
    open_gate("launcher_gone");
    sent_packet sp[64];
    int n = wait_sent(sp, 1, 8000);
    if (n >= 1) expect_packet(&sp[0], "the launched child's first SYN, redirected", synx, sxn, 0, 7, 3);
    redirector_origin o;
    memset(&o, 0, sizeof o);
    CHECK(lookup_peer(REDIRECTOR_TCP, 0, D4, 50041, C4, &o) == 0 && o.pid == leaf_pid, "lookup: pid %u: %s", o.pid,
          last_error());
    session_stop();
  }
  if (mid) tree_stop(mid, mid_pid);
  tree_stop_pid(leaf_pid);
  free(s.s);
}

/* Loopback interception (a configuration whose bypass leaves out
 * "loopback"): an intercepted process's TCP and UDP exchanges with a service
 * on 127.0.0.1 or ::1, IPv4 and IPv6. The driver sees loopback traffic only
 * as outbound, and an inbound injection on loopback is never received, so
 * every rewritten packet, both ways, goes out outbound with its loopback
 * flag; the proxy's look-up finds the original destination. */
static void loopback_session(int v6) {
  static const uint8_t L4[4] = {127, 0, 0, 1}, L6[16] = {[15] = 1};
  const uint8_t *L = v6 ? L6 : L4;
  uint16_t c = 51000, d = 5432, u = 51001, ud = 5353;
  uint8_t pk[6][256], ex[6][256];
  size_t pn[6], en[6];
  tu_tuple up = tuple(v6, L, c, L, d), up_x = tuple(v6, L, c, L, APP_PORT);
  tu_tuple proxy = tuple(v6, L, APP_PORT, L, c), proxy_x = tuple(v6, L, d, L, c);
  tu_tuple q = tuple(v6, L, u, L, ud), q_x = tuple(v6, L, u, L, APP_PORT);
  tu_tuple a = tuple(v6, L, APP_PORT, L, u), a_x = tuple(v6, L, ud, L, u);
  pn[0] = tu_tcp(pk[0], &up, 100, 0, TU_SYN, NULL);
  en[0] = tu_tcp(ex[0], &up_x, 100, 0, TU_SYN, NULL);
  pn[1] = tu_tcp(pk[1], &proxy, 700, 101, TU_SYN | TU_ACK, NULL);
  en[1] = tu_tcp(ex[1], &proxy_x, 700, 101, TU_SYN | TU_ACK, NULL);
  pn[2] = tu_tcp(pk[2], &up, 101, 701, TU_PSH | TU_ACK, "ping");
  en[2] = tu_tcp(ex[2], &up_x, 101, 701, TU_PSH | TU_ACK, "ping");
  pn[3] = tu_tcp(pk[3], &proxy, 701, 105, TU_PSH | TU_ACK, "pong");
  en[3] = tu_tcp(ex[3], &proxy_x, 701, 105, TU_PSH | TU_ACK, "pong");
  pn[4] = tu_udp(pk[4], &q, "query");
  en[4] = tu_udp(ex[4], &q_x, "query");
  pn[5] = tu_udp(pk[5], &a, "answer");
  en[5] = tu_udp(ex[5], &a_x, "answer");
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s loopback\n", FAKE_PID, ep(v6, L, c),
            ep(v6, L, d));
  sb_printf(&s, "socket connect pid=%d proto=udp local=%s remote=%s loopback\ndelay 100\n", FAKE_PID,
            ep(v6, L, u), ep(v6, L, ud));
  for (int i = 0; i < 6; i++) {
    sb_packet(&s, "out loopback if=1 sub=0", pk[i], pn[i]);
    sb_printf(&s, "wait_sent %d\n", i + 1);
  }
  if (!session_start(config_pids("1234", "\"bypass\": []"), s.s)) return;
  sent_packet sp[64];
  int n = wait_sent(sp, 6, 5000);
  static const char *const what[] = {"client SYN", "proxy SYN-ACK", "client data",
                                     "proxy data", "UDP query",     "UDP answer"};
  for (int i = 0; i < n && i < 6; i++) {
    expect_packet(&sp[i], what[i], ex[i], en[i], 1, 1, 0);
    CHECK(sp[i].loopback == 1, "%s: loopback flag kept", what[i]);
  }
  CHECK(n == 6, "%d packets sent, expected 6", n);
  redirector_origin o;
  CHECK(lookup_peer(REDIRECTOR_TCP, v6, L, c, L, &o) == 0, "TCP lookup: %s", last_error());
  CHECK(same_endpoint(&o.destination, v6, L, d) && o.pid == FAKE_PID, "TCP origin: the loopback service, pid %u",
        o.pid);
  CHECK(lookup_peer(REDIRECTOR_UDP, v6, L, u, L, &o) == 0, "UDP lookup: %s", last_error());
  CHECK(same_endpoint(&o.destination, v6, L, ud) && o.pid == FAKE_PID, "UDP origin: the loopback service, pid %u",
        o.pid);
  session_stop();
  free(s.s);
}

TEST_CASE(loopback_v4) { loopback_session(0); }
TEST_CASE(loopback_v6) { loopback_session(1); }

/* A local client of an intercepted process's listener: on loopback the
 * driver sees the client's packets and the listener's replies only as
 * outbound, never an inbound connection to the listener, so the connection
 * is not taken for an inbound one. It is the client's outbound flow, and the
 * client is not intercepted: every packet passes unchanged. */
TEST_CASE(loopback_local_client) {
  static const uint8_t L[4] = {127, 0, 0, 1};
  uint8_t syn[256], sa[256], ack[256];
  tu_tuple in = tuple(0, L, 41000, L, 8443), reply = tuple(0, L, 8443, L, 41000);
  size_t sn = tu_tcp(syn, &in, 1, 0, TU_SYN, NULL), an = tu_tcp(sa, &reply, 9, 2, TU_SYN | TU_ACK, NULL);
  size_t kn = tu_tcp(ack, &in, 2, 10, TU_ACK, NULL);
  sbuf s = {0};
  sb_printf(&s, "socket listen pid=%d proto=tcp local=127.0.0.1:8443\n", FAKE_PID);
  sb_printf(&s, "socket connect pid=%d proto=tcp local=127.0.0.1:41000 remote=127.0.0.1:8443 loopback\n"
            "delay 100\n",
            OTHER_PID);
  sb_packet(&s, "out loopback if=1 sub=0", syn, sn);
  sb_printf(&s, "wait_sent 1\n");
  sb_packet(&s, "out loopback if=1 sub=0", sa, an);
  sb_printf(&s, "wait_sent 2\n");
  sb_packet(&s, "out loopback if=1 sub=0", ack, kn);
  if (!session_start(config_pids("1234", "\"bypass\": []"), s.s)) return;
  sent_packet sp[64];
  int n = wait_sent(sp, 3, 5000);
  const uint8_t *want[] = {syn, sa, ack};
  const size_t wn[] = {sn, an, kn};
  static const char *const what[] = {"client SYN", "listener SYN-ACK", "client ACK"};
  for (int i = 0; i < n && i < 3; i++) {
    char *hex = malloc(2 * wn[i] + 1);
    tu_hex(want[i], wn[i], hex);
    CHECK(strcmp(sp[i].hex, hex) == 0 && sp[i].outbound == 1 && sp[i].loopback == 1, "%s passes unchanged",
          what[i]);
    free(hex);
  }
  CHECK(n == 3, "%d packets sent, expected 3", n);
  redirector_origin o;
  CHECK(lookup_peer(REDIRECTOR_TCP, 0, L, 41000, L, &o) != 0, "no origin for a connection that was not redirected");
  session_stop();
  free(s.s);
}

/* A socket found by a look-up in the socket tables (no SOCKET event: a
 * child's UDP socket on 0.0.0.0, made after start) owns its port until its
 * release, the driver's CLOSE with the address as bound. The look-up's
 * answer names that address, so the release removes the engine's entry: a
 * datagram after the socket is gone is not redirected on its behalf (held,
 * looked up, passed at the hold timeout). */
TEST_CASE(looked_up_socket_release) {
  /* A free port: bound once, then let go. */
  struct sockaddr_in pa;
  SOCKET probe = used_udp_socket(&pa, INADDR_ANY, 0);
  uint16_t port = ntohs(pa.sin_port), unused = 0;
  closesocket(probe);
  char mode[40];
  snprintf(mode, sizeof mode, "child_udp_late %u", port);
  DWORD pid = 0;
  HANDLE child = start_child(mode, &port, &unused, &pid);
  if (!child) return;
  uint8_t dg[2][256], dgx[256];
  size_t dn[2];
  tu_tuple in0 = tuple(0, R4, 5300, C4, port), in1 = tuple(0, R2, 5301, C4, port);
  tu_tuple in_x = tuple(0, R4, 5300, C4, APP_PORT);
  dn[0] = tu_udp(dg[0], &in0, "to the socket");
  dn[1] = tu_udp(dg[1], &in1, "after the socket");
  size_t dxn = tu_udp(dgx, &in_x, "to the socket");
  sbuf s = {0};
  /* A first event: once it is received, the library has read the socket
   * tables at start (before its first receive), without the child's
   * socket. */
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\n", OTHER_PID, ep(0, C4, 50998), ep(0, D4, 80));
  sb_printf(&s, "gate bound\n");
  sb_packet(&s, "in if=9 sub=2", dg[0], dn[0]);
  sb_printf(&s, "wait_sent 1\ngate released\n");
  sb_printf(&s, "socket close pid=%lu proto=udp local=0.0.0.0:%u\n", (unsigned long)pid, port);
  sb_taken(&s, "closed");
  sb_printf(&s, "gate second\n");
  sb_packet(&s, "in if=9 sub=2", dg[1], dn[1]);
  char pids[32];
  snprintf(pids, sizeof pids, "%lu", (unsigned long)pid);
  HANDLE go = child_event("Go", pid), bound = child_event("Bound", pid);
  if (session_start(config_pids(pids, "\"hold_timeout_ms\": 2000"), s.s)) {
    CHECK(wait_socket_events(1, 5000), "the first event received");
    SetEvent(go);
    CHECK(WaitForSingleObject(bound, 10000) == WAIT_OBJECT_0, "the child bound its socket");
    open_gate("bound");
    sent_packet sp[8];
    int n = wait_sent(sp, 1, 5000);
    if (n >= 1) expect_packet(&sp[0], "datagram to the socket found in the table", dgx, dxn, 0, 9, 2);
    /* The socket goes, and the driver says so. */
    child_stop(child, pid);
    child = NULL;
    open_gate("released");
    CHECK(taken(2, "closed"), "the release taken");
    open_gate("second");
    n = wait_sent(sp, 2, 8000);
    if (n >= 2) {
      char hex[600];
      tu_hex(dg[1], dn[1], hex);
      CHECK(strcmp(sp[1].hex, hex) == 0, "the next datagram passed unchanged: %s", sp[1].hex);
    }
    redirector_stats st = get_stats();
    CHECK(st.owner_queries == 2 && st.hold_timeouts == 1, "look-ups %llu, hold timeouts %llu",
          (unsigned long long)st.owner_queries, (unsigned long long)st.hold_timeouts);
  session_stop();
  }
  if (child) child_stop(child, pid);
  CloseHandle(go);
  CloseHandle(bound);
  free(s.s);
}

/* ------------------------------------------------------------------------
 * Cases: stop, configuration, batches, traps */

/* Stop during a redirected connection and with a packet held: the held
 * packet goes out unchanged, every handle is shut down and closed, no
 * thread is left, and the redirector starts again. */
TEST_CASE(stop_mid_connection) {
  uint8_t syn[256], synx[256], held[256];
  tu_tuple up = tuple(0, C4, 50006, D4, 80), up_x = tuple(0, D4, 50006, C4, APP_PORT);
  tu_tuple other = tuple(0, C4, 50007, D4, 80);
  size_t sn = tu_tcp(syn, &up, 1, 0, TU_SYN, NULL), sxn = tu_tcp(synx, &up_x, 1, 0, TU_SYN, NULL);
  size_t hn = tu_tcp(held, &other, 1, 0, TU_SYN, NULL);
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\ndelay 100\n", FAKE_PID, ep(0, C4, 50006),
            ep(0, D4, 80));
  sb_packet(&s, "out if=7 sub=3", syn, sn);
  sb_printf(&s, "wait_sent 1\n");
  sb_packet(&s, "out if=5 sub=6", held, hn); /* no owner yet: held */
  sb_printf(&s, "gate never\n");
  int before = thread_count();
  if (!session_start(config_pids("1234", "\"hold_timeout_ms\": 30000"), s.s)) return;
  sent_packet sp[64];
  wait_sent(sp, 1, 5000);
  CHECK(wait_lines("recv id=", 3, 5000), "the held SYN was received"); /* socket + 2 packets */
  Sleep(200);
  CHECK(sent_packets(sp, 64) == 1, "the second SYN is held");
  DWORD t0 = GetTickCount();
  CHECK(stop_redirector() == 0, "stop");
  CHECK(GetTickCount() - t0 < 3000, "stop took %lu ms", (unsigned long)(GetTickCount() - t0));
  int n = sent_packets(sp, 64);
  if (n >= 2) {
    expect_packet(&sp[0], "redirected SYN", synx, sxn, 0, 7, 3);
    expect_packet(&sp[1], "held SYN at stop", held, hn, 1, 5, 6);
  }
  CHECK(n == 2, "%d packets sent, expected 2", n);
  char *log = read_file(g_log);
  CHECK(count_lines(log, "open id=") == 3 && count_lines(log, "close id=") == 3, "every handle closed:\n%s", log);
  CHECK(count_lines(log, "shutdown id=") >= 2, "handles shut down before close");
  const char *last_send = NULL;
  for (const char *p = log; (p = strstr(p, "send id=")) != NULL; p++) last_send = p;
  const char *first_close = strstr(log, "close id=2"), *net_close = strstr(log, "close id=3");
  CHECK(last_send && net_close && last_send < net_close, "held packet sent before the NETWORK handle closed");
  (void)first_close;
  free(log);
  close_gates();
  CHECK(thread_count() == before, "threads: %d before start, %d after stop", before, thread_count());
  /* And again. */
  sbuf s2 = {0};
  uint8_t old[256];
  size_t on = tu_tcp(old, &other, 2, 3, TU_ACK, NULL); /* not a SYN: passes at once */
  sb_packet(&s2, "out if=7 sub=3", old, on);
  if (session_start(config_pids("1234", NULL), s2.s)) {
    wait_sent(sp, 1, 5000);
    session_stop();
  }
  CHECK(thread_count() == before, "threads after a second run: %d, expected %d", thread_count(), before);
  free(s.s);
  free(s2.s);
}

/* A new configuration applies to new connections; a redirected connection
 * keeps its redirect. */
TEST_CASE(config_change) {
  uint8_t syn[256], synx[256], ack[256], ackx[256], b[256], c[256], cx[256];
  tu_tuple up = tuple(0, C4, 50008, D4, 80), up_x = tuple(0, D4, 50008, C4, APP_PORT);
  tu_tuple tb = tuple(0, C4, 50009, D4, 80), tc = tuple(0, C4, 50010, D4, 80);
  tu_tuple tc_x = tuple(0, D4, 50010, C4, APP_PORT);
  size_t sn = tu_tcp(syn, &up, 1, 0, TU_SYN, NULL), sxn = tu_tcp(synx, &up_x, 1, 0, TU_SYN, NULL);
  size_t kn = tu_tcp(ack, &up, 2, 9, TU_ACK, NULL), kxn = tu_tcp(ackx, &up_x, 2, 9, TU_ACK, NULL);
  size_t bn = tu_tcp(b, &tb, 1, 0, TU_SYN, NULL);
  size_t cn = tu_tcp(c, &tc, 1, 0, TU_SYN, NULL), cxn = tu_tcp(cx, &tc_x, 1, 0, TU_SYN, NULL);
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\ndelay 100\n", FAKE_PID, ep(0, C4, 50008),
            ep(0, D4, 80));
  sb_packet(&s, "out if=7 sub=3", syn, sn);
  sb_printf(&s, "wait_sent 1\ngate config\n");
  sb_packet(&s, "out if=7 sub=3", ack, kn);
  sb_printf(&s, "wait_sent 2\nsocket connect pid=%d proto=tcp local=%s remote=%s\n", FAKE_PID, ep(0, C4, 50009),
            ep(0, D4, 80));
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\ndelay 100\n", OTHER_PID, ep(0, C4, 50010),
            ep(0, D4, 80));
  sb_packet(&s, "out if=7 sub=3", b, bn);
  sb_printf(&s, "wait_sent 3\n");
  sb_packet(&s, "out if=7 sub=3", c, cn);
  if (!session_start(config_pids("1234", NULL), s.s)) return;
  sent_packet sp[64];
  wait_sent(sp, 1, 5000);
  CHECK(set_redirector_config(config_pids("5678", NULL)) == 0, "new config: %s", last_error());
  open_gate("config");
  int n = wait_sent(sp, 4, 5000);
  if (n >= 4) {
    expect_packet(&sp[0], "SYN under the first config", synx, sxn, 0, 7, 3);
    expect_packet(&sp[1], "same connection after the change", ackx, kxn, 0, 7, 3);
    expect_packet(&sp[2], "new connection of 1234 (no longer intercepted)", b, bn, 1, 7, 3);
    expect_packet(&sp[3], "new connection of 5678 (now intercepted)", cx, cxn, 0, 7, 3);
  }
  session_stop();
  free(s.s);
}

/* Packets queued together come in one receive and leave in one send, in
 * their order. */
TEST_CASE(batch) {
  enum { N = 40 };
  static uint8_t pk[N][256];
  size_t pn[N];
  sbuf s = {0};
  sb_printf(&s, "batch_begin\n");
  for (int i = 0; i < N; i++) {
    tu_tuple t = tuple(0, C4, (uint16_t)(51000 + i), D4, 443);
    pn[i] = tu_tcp(pk[i], &t, (uint32_t)i, 1, TU_ACK, "old");
    sb_packet(&s, "out if=7 sub=3", pk[i], pn[i]);
  }
  sb_printf(&s, "batch_end\n");
  if (!session_start(config_pids("1234", NULL), s.s)) return;
  static sent_packet sp[64];
  int n = wait_sent(sp, N, 5000);
  for (int i = 0; i < n && i < N; i++) expect_packet(&sp[i], "batched packet", pk[i], pn[i], 1, 7, 3);
  char *log = read_file(g_log);
  char want[64];
  snprintf(want, sizeof want, "recv id=3 count=%d", N);
  CHECK(strstr(log, want) != NULL, "one receive of %d packets", N);
  snprintf(want, sizeof want, "sendex id=3 count=%d", N);
  CHECK(strstr(log, want) != NULL, "one send of %d packets", N);
  free(log);
  session_stop();
  free(s.s);
}

/* The engine fails while a packet is held: the held packet, then the
 * packet being decided, go out unchanged (fail open). */
TEST_CASE(engine_trap) {
  uint8_t a[256], b[256];
  tu_tuple ta = tuple(0, C4, 50011, D4, 80), tb = tuple(0, C4, 50012, D4, 80);
  size_t an = tu_tcp(a, &ta, 1, 0, TU_SYN, NULL), bn = tu_tcp(b, &tb, 5, 6, TU_ACK, "x");
  sbuf s = {0};
  sb_packet(&s, "out if=7 sub=3", a, an);
  sb_printf(&s, "gate trap\n");
  sb_packet(&s, "out if=7 sub=3", b, bn);
  if (!session_start(config_pids("1234", "\"hold_timeout_ms\": 30000"), s.s)) return;
  CHECK(wait_lines("recv id=3", 1, 5000), "first packet received");
  Sleep(200);
  CHECK(redirector_debug_inject_fault(REDIRECTOR_FAULT_PACKETS) == 0, "arm fault");
  open_gate("trap");
  sent_packet sp[64];
  int n = wait_sent(sp, 2, 5000);
  if (n >= 2) {
    expect_packet(&sp[0], "held SYN after the trap", a, an, 1, 7, 3);
    expect_packet(&sp[1], "packet of the trapped batch", b, bn, 1, 7, 3);
  }
  redirector_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  redirector_get_stats(&st);
  CHECK(st.engine_restarts >= 1, "the engine was rebuilt");
  session_stop();
  free(s.s);
}

/* Receive errors: a few are survived; a receive that keeps failing ends the
 * packet thread, which first shuts the receive side so that the driver
 * passes packets on instead of queueing them for no one. */
TEST_CASE(recv_errors) {
  uint8_t a[256];
  tu_tuple t = tuple(0, C4, 50014, D4, 80);
  size_t an = tu_tcp(a, &t, 1, 2, TU_ACK, NULL);
  sbuf s = {0};
  sb_printf(&s, "recv_error 31 5\n");
  sb_packet(&s, "out if=7 sub=3", a, an);
  if (session_start(config_pids("1234", NULL), s.s)) {
    sent_packet sp[4];
    if (wait_sent(sp, 1, 5000) >= 1) expect_packet(&sp[0], "packet after 5 receive errors", a, an, 1, 7, 3);
    char *log = read_file(g_log);
    CHECK(count_lines(log, "recv_failed id=3 error=31") == 5, "5 failed receives");
    CHECK(count_lines(log, "shutdown id=3") == 0, "still receiving");
    free(log);
    session_stop();
  }
  if (session_start(config_pids("1234", NULL), "recv_error 31 100000\n")) {
    CHECK(wait_lines("shutdown id=3 how=1", 1, 10000), "the receive side shut when the thread gave up");
    char *log = read_file(g_log);
    int failed = count_lines(log, "recv_failed id=3");
    CHECK(failed >= 50 && failed <= 1000, "gave up after %d failures", failed);
    free(log);
    session_stop();
    log = read_file(g_log);
    CHECK(count_lines(log, "close id=") == 3, "closed");
    free(log);
  }
  free(s.s);
}

/* What the library opens and sets, in which order. */
TEST_CASE(handles) {
  if (!session_start(config_pids("1234", NULL), "")) return;
  session_stop();
  char *log = read_file(g_log);
  const char *reflect = strstr(log, "open id=1 layer=REFLECT priority=0 flags=0x15 filter=true");
  const char *sock = strstr(log, "open id=2 layer=SOCKET priority=-1000 flags=0x5 filter=tcp or udp");
  /* Every TCP/UDP packet but loopback ones (bypassed by default), and ICMP errors. */
  const char *net = strstr(log, "open id=3 layer=NETWORK priority=-1000 flags=0x0 filter=((ip or ipv6) and "
                                "(tcp or udp) and not loopback) or " ICMP_ERRORS "\n");
  CHECK(reflect && sock && net && reflect < sock && sock < net, "REFLECT, SOCKET, NETWORK opened in order:\n%s", log);
  CHECK(strstr(log, "shutdown id=1 how=3") != NULL, "REFLECT shut down to list handles");
  for (int id = 2; id <= 3; id++) {
    char want[96];
    snprintf(want, sizeof want, "param id=%d param=QUEUE_LENGTH value=8192\n", id);
    CHECK(strstr(log, want) != NULL, "%s", want);
    /* SOCKET keeps its events as long as the driver allows: the existing
     * sockets are read before its first receive. */
    snprintf(want, sizeof want, "param id=%d param=QUEUE_TIME value=%d\n", id, id == 2 ? 16000 : 2000);
    CHECK(strstr(log, want) != NULL, "%s", want);
    snprintf(want, sizeof want, "param id=%d param=QUEUE_SIZE value=8388608\n", id);
    CHECK(strstr(log, want) != NULL, "%s", want);
  }
  CHECK(count_lines(log, "open id=") == 3 && count_lines(log, "close id=") == 3, "each handle closed");
  CHECK(strstr(log, "rejected") == NULL, "no parameter rejected");
  free(log);
}

/* Twenty start/stop cycles: no thread or handle left behind. */
TEST_CASE(cycles) {
  uint8_t a[256];
  tu_tuple t = tuple(0, C4, 50013, D4, 80);
  size_t an = tu_tcp(a, &t, 1, 2, TU_ACK, NULL); /* passes at once */
  sbuf s = {0};
  sb_packet(&s, "out if=7 sub=3", a, an);
  int before = thread_count();
  HANDLE proc = GetCurrentProcess();
  DWORD handles_before = 0, handles_after = 0;
  GetProcessHandleCount(proc, &handles_before);
  for (int i = 0; i < 20; i++) {
    if (!session_start(config_pids("1234", NULL), s.s)) break;
    sent_packet sp[4];
    wait_sent(sp, 1, 5000);
    session_stop();
    char *log = read_file(g_log);
    CHECK(count_lines(log, "open id=") == count_lines(log, "close id="), "cycle %d: opens = closes", i);
    free(log);
  }
  GetProcessHandleCount(proc, &handles_after);
  CHECK(thread_count() == before, "threads %d, before %d", thread_count(), before);
  CHECK(handles_after <= handles_before + 2, "process handles %lu, before %lu", (unsigned long)handles_after,
        (unsigned long)handles_before);
  free(s.s);
}

/* ------------------------------------------------------------------------
 * Cases: the NETWORK filter, built from the configuration */

/* The filter NETWORK handle `id` was opened with ("" when none was). */
static void opened_filter(const char *log, int id, char *out, size_t cap) {
  char want[64];
  snprintf(want, sizeof want, "open id=%d layer=NETWORK ", id);
  out[0] = '\0';
  const char *p = strstr(log, want), *f = p ? strstr(p, " filter=") : NULL;
  if (!f) return;
  f += 8;
  size_t n = strcspn(f, "\r\n");
  snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), f);
}

/* Packets handle `id` handed the library (its "recv id=N count=C" lines). */
static int received_by(const char *log, int id) {
  char want[32];
  snprintf(want, sizeof want, "recv id=%d count=", id);
  int n = 0;
  for (const char *p = log; (p = strstr(p, want)) != NULL; p++) n += atoi(p + strlen(want));
  return n;
}

static redirector_stats stats_now(void) {
  redirector_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  redirector_get_stats(&st);
  return st;
}

/* The issue: with loopback bypassed (the default), loopback packets are not
 * diverted at all, so local traffic never waits on the packet thread (nor
 * is dropped after the queue time while the host is paused). The stand-in
 * diverts by the handle's filter, as the driver does; the oracle test holds
 * its "no" to the real DLL's WinDivertHelperEvalFilter. */
TEST_CASE(loopback_not_diverted) {
  static const uint8_t L[4] = {127, 0, 0, 1};
  uint8_t lo[256], syn[256], synx[256];
  tu_tuple tl = tuple(0, L, 50070, L, 5432), up = tuple(0, C4, 50071, D4, 80), up_x = tuple(0, D4, 50071, C4, APP_PORT);
  size_t ln = tu_tcp(lo, &tl, 1, 0, TU_SYN, NULL);
  size_t sn = tu_tcp(syn, &up, 1, 0, TU_SYN, NULL), sxn = tu_tcp(synx, &up_x, 1, 0, TU_SYN, NULL);
  /* This host's "port unreachable" about a loopback datagram: an ICMP error,
   * but loopback, so not diverted either. */
  uint8_t dg[256], unreach[512];
  tu_tuple tdg = tuple(0, L, 50072, L, 5353), tstack = tuple(0, L, 0, L, 0);
  size_t un = tu_icmp(unreach, &tstack, 3, 3, 0, dg, tu_udp(dg, &tdg, "query"));
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s loopback\n", FAKE_PID, ep(0, L, 50070),
            ep(0, L, 5432));
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\ndelay 100\n", FAKE_PID, ep(0, C4, 50071),
            ep(0, D4, 80));
  sb_packet(&s, "out loopback if=1 sub=0", lo, ln);
  sb_packet(&s, "out loopback if=1 sub=0", unreach, un);
  sb_packet(&s, "out if=7 sub=3", syn, sn);
  if (!session_start(config_pids("1234", NULL), s.s)) return;
  sent_packet sp[8];
  int n = wait_sent(sp, 1, 5000);
  if (n >= 1) expect_packet(&sp[0], "the SYN that is not loopback, redirected", synx, sxn, 0, 7, 3);
  Sleep(200);
  char *log = read_file(g_log);
  char filter[512];
  opened_filter(log, 3, filter, sizeof filter);
  CHECK(strstr(filter, "not loopback") != NULL, "the NETWORK filter leaves loopback out: \"%s\"", filter);
  CHECK(count_lines(log, "undiverted layer=NETWORK script=packet out loopback") == 2,
        "the loopback SYN and ICMP error were not diverted:\n%s", log);
  CHECK(received_by(log, 3) == 1, "one packet reached the library (%d)", received_by(log, 3));
  redirector_stats st = stats_now();
  CHECK(st.packets == 1 && st.bypassed == 0, "the engine saw 1 packet (%llu), bypassed none (%llu)",
        (unsigned long long)st.packets, (unsigned long long)st.bypassed);
  free(log);
  session_stop();
  free(s.s);
}

/* A configuration that narrows protocols, ports and destinations: only its
 * flows are diverted (the destination's end outbound, the listener's
 * inbound), and the proxy's replies from the app port. */
TEST_CASE(filter_from_config) {
  uint8_t a[256], ax[256], b[256], u[256], r[256], rx[256], in[256];
  tu_tuple ta = tuple(0, C4, 50040, D4, 443), ta_x = tuple(0, D4, 50040, C4, APP_PORT);
  tu_tuple tb = tuple(0, C4, 50041, D4, 80), tu_ = tuple(0, C4, 53040, S4, 53);
  tu_tuple tr = tuple(0, C4, APP_PORT, D4, 50040), tr_x = tuple(0, D4, 443, C4, 50040);
  tu_tuple tin = tuple(0, R4, 40000, C4, 443);
  size_t an = tu_tcp(a, &ta, 1, 0, TU_SYN, NULL), axn = tu_tcp(ax, &ta_x, 1, 0, TU_SYN, NULL);
  size_t bn = tu_tcp(b, &tb, 1, 0, TU_SYN, NULL), un = tu_udp(u, &tu_, "not tcp");
  size_t rn = tu_tcp(r, &tr, 9, 2, TU_SYN | TU_ACK, NULL), rxn = tu_tcp(rx, &tr_x, 9, 2, TU_SYN | TU_ACK, NULL);
  size_t inn = tu_tcp(in, &tin, 5, 0, TU_SYN, NULL);
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\n", FAKE_PID, ep(0, C4, 50040), ep(0, D4, 443));
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\n", FAKE_PID, ep(0, C4, 50041), ep(0, D4, 80));
  sb_printf(&s, "socket connect pid=%d proto=udp local=%s remote=%s\n", FAKE_PID, ep(0, C4, 53040), ep(0, S4, 53));
  sb_printf(&s, "socket listen pid=%d proto=tcp local=0.0.0.0:443\ndelay 100\n", FAKE_PID);
  sb_packet(&s, "out if=7 sub=3", a, an);
  sb_printf(&s, "wait_sent 1\n");
  sb_packet(&s, "out if=7 sub=3", b, bn);
  sb_packet(&s, "out if=7 sub=3", u, un);
  sb_packet(&s, "in if=7 sub=3", in, inn);
  sb_packet(&s, "out if=7 sub=3", r, rn);
  if (!session_start(config_pids("1234", "\"protocols\": [\"tcp\"], \"ports\": [443], "
                                 "\"destinations\": [\"93.184.216.0/24\"]"),
                     s.s)) {
    return;
  }
  sent_packet sp[8];
  int n = wait_sent(sp, 2, 5000);
  if (n >= 2) {
    expect_packet(&sp[0], "SYN to D:443, redirected", ax, axn, 0, 7, 3);
    expect_packet(&sp[1], "the proxy's SYN-ACK from the app port, rewritten", rx, rxn, 0, 7, 3);
  }
  Sleep(200);
  char *log = read_file(g_log);
  char filter[1024];
  opened_filter(log, 3, filter, sizeof filter);
  const char *want = "((ip or ipv6) and tcp and not loopback and ((remotePort == 443 and (remoteAddr >= 93.184.216.0 "
                     "and remoteAddr <= 93.184.216.255)) or (localPort == 443 and (localAddr >= 93.184.216.0 and "
                     "localAddr <= 93.184.216.255)) or localPort == 8080)) or " ICMP_ERRORS;
  CHECK(strcmp(filter, want) == 0, "the NETWORK filter\n  is       %s\n  expected %s", filter, want);
  CHECK(count_lines(log, "undiverted layer=NETWORK") == 3,
        "D:80, the UDP datagram and the connection to a listener at an address outside the destinations were not "
        "diverted:\n%s",
        log);
  CHECK(n == 2 && received_by(log, 3) == 2, "%d sent, %d received", n, received_by(log, 3));
  free(log);
  session_stop();
  free(s.s);
}

/* A configuration change that changes the filter, with packets in flight:
 * the new NETWORK handle opens (above the old one: it diverts first), the
 * old one's receive side is shut, the packet thread drains it, then takes
 * the new one and closes the old. Every packet is handled once, in order;
 * what the library sends meanwhile goes through the new handle, the old
 * one's receive side shut already, so the stand-in (which, like the driver,
 * offers a packet a handle sends to the handles below it) never diverts it
 * again. */
TEST_CASE(filter_switch) {
  uint8_t s1[256], s1x[256], k1[256], k1x[256], s2[256], s3[256], s3x[256];
  tu_tuple f1 = tuple(0, C4, 50030, D4, 80), f1x = tuple(0, D4, 50030, C4, APP_PORT);
  tu_tuple f2 = tuple(0, C4, 50031, D4, 443);
  tu_tuple f3 = tuple(0, C4, 50032, D4, 443), f3x = tuple(0, D4, 50032, C4, APP_PORT);
  size_t s1n = tu_tcp(s1, &f1, 1, 0, TU_SYN, NULL), s1xn = tu_tcp(s1x, &f1x, 1, 0, TU_SYN, NULL);
  size_t k1n = tu_tcp(k1, &f1, 2, 7, TU_ACK, NULL), k1xn = tu_tcp(k1x, &f1x, 2, 7, TU_ACK, NULL);
  size_t s2n = tu_tcp(s2, &f2, 1, 0, TU_SYN, NULL);
  size_t s3n = tu_tcp(s3, &f3, 1, 0, TU_SYN, NULL), s3xn = tu_tcp(s3x, &f3x, 1, 0, TU_SYN, NULL);
  sbuf s = {0};
  for (uint16_t port = 50030; port <= 50032; port++) {
    sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\n", FAKE_PID, ep(0, C4, port),
              ep(0, D4, port == 50030 ? 80 : 443));
  }
  sb_printf(&s, "delay 100\nrecv_block\n");
  sb_packet(&s, "out if=7 sub=3", s1, s1n); /* both filters: queued in the old handle */
  sb_packet(&s, "out if=7 sub=3", s2, s2n); /* the new filter only: not diverted yet */
  sb_printf(&s, "mark queued\ngate switch\n");
  sb_packet(&s, "out if=7 sub=3", k1, k1n); /* both: the new handle, above */
  sb_packet(&s, "out if=7 sub=3", s3, s3n); /* the new filter only */
  sb_printf(&s, "recv_unblock\n");
  const char *tcp80 = "\"protocols\": [\"tcp\"], \"ports\": [80]";
  if (!session_start(config_pids("1234", tcp80), s.s)) return;
  CHECK(wait_lines("mark queued", 1, 5000), "the first packets were queued");
  CHECK(set_redirector_config(config_pids("1234", "\"protocols\": [\"tcp\"], \"ports\": [80, 443]")) == 0,
        "new config: %s", last_error());
  CHECK(wait_lines("shutdown id=3 how=1", 1, 5000), "the old handle's receive side was shut down");
  char *log = read_file(g_log);
  const char *opened = strstr(log, "open id=4 layer=NETWORK"), *shut = strstr(log, "shutdown id=3 how=1");
  CHECK(opened && shut && opened < shut, "the new NETWORK handle opened before the old one stopped diverting:\n%s",
        log);
  CHECK(received_by(log, 3) == 0 && count_lines(log, "close id=3") == 0,
        "the old handle is still to be drained (its queue is held back)");
  free(log);
  open_gate("switch");
  sent_packet sp[8];
  int n = wait_sent(sp, 3, 5000);
  if (n >= 3) {
    expect_packet(&sp[0], "f1's SYN, from the old handle", s1x, s1xn, 0, 7, 3);
    expect_packet(&sp[1], "f1's ACK, from the new handle", k1x, k1xn, 0, 7, 3);
    expect_packet(&sp[2], "f3's SYN, from the new handle", s3x, s3xn, 0, 7, 3);
  }
  Sleep(300);
  log = read_file(g_log);
  char f_old[512], f_new[512];
  opened_filter(log, 3, f_old, sizeof f_old);
  opened_filter(log, 4, f_new, sizeof f_new);
  CHECK(strstr(f_old, "remotePort == 80") && !strstr(f_old, "443"), "old filter: %s", f_old);
  CHECK(strstr(f_new, "remotePort == 80") && strstr(f_new, "remotePort == 443"), "new filter: %s", f_new);
  CHECK(n == 3 && count_lines(log, "send id=") == 3, "3 packets sent once each (%d)", count_lines(log, "send id="));
  CHECK(received_by(log, 3) == 1 && received_by(log, 4) == 2, "received: %d from the old handle, %d from the new",
        received_by(log, 3), received_by(log, 4));
  CHECK(count_lines(log, "undiverted layer=NETWORK") == 1, "only f2's SYN (before the change) was not diverted");
  CHECK(count_lines(log, "rediverted") == 0 && count_lines(log, "reinjected") == 0 && count_lines(log, "dropped") == 0,
        "nothing diverted twice, re-injected at close, or dropped:\n%s", log);
  const char *shut_old = strstr(log, "shutdown id=3 how=1"), *send_new = strstr(log, "sendex id=4");
  CHECK(shut_old && send_new && shut_old < send_new && count_lines(log, "sendex id=3") == 0,
        "from the switch on, sent through the new handle only, after the old one's receive side was shut:\n%s", log);
  redirector_stats st = stats_now();
  CHECK(st.packets == 3 && st.rewritten == 3, "the engine saw 3 packets (%llu), rewrote 3 (%llu)",
        (unsigned long long)st.packets, (unsigned long long)st.rewritten);
  char diag[4096];
  redirector_diagnostics(diag, sizeof diag);
  CHECK(strstr(diag, "1 changes") && strstr(diag, "remotePort == 443") && !strstr(diag, "last change failed"),
        "diagnostics: %s", diag);
  free(log);
  session_stop();
  free(s.s);
}

/* A configuration that widens the capture is in the driver's hands when
 * set_redirector_config returns: a connection opened at once after it is
 * diverted (the acceptance program's first connection, started as soon as
 * its PID was configured, went out directly while the filter waited for
 * the timer's next tick). */
TEST_CASE(filter_when_config_returns) {
  if (!session_start(config_pids("", NULL), "")) return;
  char *log = read_file(g_log);
  char before[512], after[512];
  opened_filter(log, 3, before, sizeof before);
  CHECK(strcmp(before, ICMP_ERRORS) == 0, "nothing intercepted: the NETWORK filter takes ICMP errors only: %s",
        before);
  free(log);
  CHECK(set_redirector_config(config_pids("1234", NULL)) == 0, "config: %s", last_error());
  log = read_file(g_log); /* at once */
  opened_filter(log, 4, after, sizeof after);
  CHECK(strcmp(after, "((ip or ipv6) and (tcp or udp) and not loopback) or " ICMP_ERRORS) == 0,
        "the wider NETWORK filter is open when set_redirector_config returns: \"%s\"\n%s", after, log);
  free(log);
  session_stop();
}

/* A narrower configuration does not strand a redirected flow: its packets
 * stay diverted (and redirected) until it ends; then the filter narrows. */
TEST_CASE(filter_keeps_flow) {
  uint8_t q[3][256], qx[3][256];
  size_t qn[3], qxn[3];
  tu_tuple up = tuple(0, C4, 53050, S4, 53), up_x = tuple(0, S4, 53050, C4, APP_PORT);
  for (int i = 0; i < 3; i++) {
    char text[32];
    snprintf(text, sizeof text, "query %d", i);
    qn[i] = tu_udp(q[i], &up, text);
    qxn[i] = tu_udp(qx[i], &up_x, text);
  }
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=udp local=%s remote=%s\ndelay 100\n", FAKE_PID, ep(0, C4, 53050),
            ep(0, S4, 53));
  sb_packet(&s, "out if=7 sub=3", q[0], qn[0]);
  sb_printf(&s, "wait_sent 1\ngate changed\n");
  sb_packet(&s, "out if=7 sub=3", q[1], qn[1]);
  sb_printf(&s, "wait_sent 2\ngate narrowed\n");
  sb_packet(&s, "out if=7 sub=3", q[2], qn[2]);
  const char *udp = "\"protocols\": [\"udp\"], \"udp_idle_timeout_ms\": 1000, \"ports\": ";
  char a[128], b[128];
  snprintf(a, sizeof a, "%s[53]", udp);
  snprintf(b, sizeof b, "%s[443]", udp);
  if (!session_start(config_pids("1234", a), s.s)) return;
  sent_packet sp[8];
  wait_sent(sp, 1, 5000);
  CHECK(set_redirector_config(config_pids("1234", b)) == 0, "new config: %s", last_error());
  CHECK(wait_lines("open id=4 layer=NETWORK", 1, 5000), "a new filter");
  open_gate("changed");
  int n = wait_sent(sp, 2, 5000);
  /* Idle for the flow's 1 s: it ends, and the filter narrows again. */
  CHECK(wait_lines("open id=5 layer=NETWORK", 1, 8000), "a narrower filter once the flow ended");
  open_gate("narrowed");
  CHECK(wait_lines("undiverted layer=NETWORK", 1, 5000), "the flow's next datagram is not diverted any more");
  for (int i = 0; i < n && i < 2; i++) {
    expect_packet(&sp[i], "a datagram of the flow, redirected", qx[i], qxn[i], 0, 7, 3);
  }
  CHECK(n == 2, "%d sent", n);
  char *log = read_file(g_log);
  char f3[512], f4[512], f5[512];
  opened_filter(log, 3, f3, sizeof f3);
  opened_filter(log, 4, f4, sizeof f4);
  opened_filter(log, 5, f5, sizeof f5);
  CHECK(strcmp(f3, "((ip or ipv6) and udp and not loopback and (remotePort == 53 or localPort == 53 or "
                   "localPort == 8080)) or " ICMP_ERRORS) == 0,
        "first: %s", f3);
  CHECK(strcmp(f4, "((ip or ipv6) and udp and not loopback and ((remotePort == 53 or remotePort == 443) or "
                   "localPort == 443 or localPort == 8080)) or " ICMP_ERRORS) == 0,
        "while the flow lives: %s", f4);
  CHECK(strcmp(f5, "((ip or ipv6) and udp and not loopback and (remotePort == 443 or localPort == 443 or "
                   "localPort == 8080)) or " ICMP_ERRORS) == 0,
        "after it: %s", f5);
  CHECK(count_lines(log, "rediverted") == 0 && count_lines(log, "reinjected") == 0, "no packet seen twice");
  free(log);
  session_stop();
  free(s.s);
}

/* A new app port: the filter diverts it before the engine redirects to it,
 * and keeps the old one while a flow redirected there lives. */
TEST_CASE(filter_app_port) {
  enum { NEW_PORT = 9090 };
  uint8_t s1[256], s1x[256], r1[256], r1x[256], s2[256], s2x[256], r2[256], r2x[256];
  tu_tuple f1 = tuple(0, C4, 50060, D4, 443), f1x = tuple(0, D4, 50060, C4, APP_PORT);
  tu_tuple p1 = tuple(0, C4, APP_PORT, D4, 50060), p1x = tuple(0, D4, 443, C4, 50060);
  tu_tuple f2 = tuple(0, C4, 50061, D4, 443), f2x = tuple(0, D4, 50061, C4, NEW_PORT);
  tu_tuple p2 = tuple(0, C4, NEW_PORT, D4, 50061), p2x = tuple(0, D4, 443, C4, 50061);
  size_t s1n = tu_tcp(s1, &f1, 1, 0, TU_SYN, NULL), s1xn = tu_tcp(s1x, &f1x, 1, 0, TU_SYN, NULL);
  size_t r1n = tu_tcp(r1, &p1, 9, 2, TU_SYN | TU_ACK, NULL), r1xn = tu_tcp(r1x, &p1x, 9, 2, TU_SYN | TU_ACK, NULL);
  size_t s2n = tu_tcp(s2, &f2, 1, 0, TU_SYN, NULL), s2xn = tu_tcp(s2x, &f2x, 1, 0, TU_SYN, NULL);
  size_t r2n = tu_tcp(r2, &p2, 9, 2, TU_SYN | TU_ACK, NULL), r2xn = tu_tcp(r2x, &p2x, 9, 2, TU_SYN | TU_ACK, NULL);
  sbuf s = {0};
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\n", FAKE_PID, ep(0, C4, 50060), ep(0, D4, 443));
  sb_printf(&s, "socket connect pid=%d proto=tcp local=%s remote=%s\ndelay 100\n", FAKE_PID, ep(0, C4, 50061),
            ep(0, D4, 443));
  sb_packet(&s, "out if=7 sub=3", s1, s1n);
  sb_printf(&s, "wait_sent 1\ngate port\n");
  sb_packet(&s, "out if=7 sub=3", r1, r1n);
  sb_printf(&s, "wait_sent 2\n");
  sb_packet(&s, "out if=7 sub=3", s2, s2n);
  sb_printf(&s, "wait_sent 3\n");
  sb_packet(&s, "out if=7 sub=3", r2, r2n);
  if (!session_start(config_pids("1234", "\"ports\": [443]"), s.s)) return;
  sent_packet sp[8];
  wait_sent(sp, 1, 5000);
  CHECK(redirector_set_app_port(NEW_PORT) == 0, "new app port: %s", last_error());
  char *log = read_file(g_log);
  char f[512];
  opened_filter(log, 4, f, sizeof f);
  CHECK(strstr(f, "localPort == 8080 or localPort == 9090)") != NULL,
        "the new port is diverted when the call returns, the old one still: %s", f);
  free(log);
  open_gate("port");
  int n = wait_sent(sp, 4, 5000);
  if (n >= 4) {
    expect_packet(&sp[0], "f1's SYN to the old port", s1x, s1xn, 0, 7, 3);
    expect_packet(&sp[1], "the proxy's SYN-ACK from the old port", r1x, r1xn, 0, 7, 3);
    expect_packet(&sp[2], "f2's SYN to the new port", s2x, s2xn, 0, 7, 3);
    expect_packet(&sp[3], "the proxy's SYN-ACK from the new port", r2x, r2xn, 0, 7, 3);
  }
  session_stop();
  free(s.s);
}

/* ------------------------------------------------------------------------
 * Cases: failures */

static void expect_start_error(const char *what, const char *needle1, const char *needle2) {
  int before = thread_count();
  int rc = start_redirector();
  CHECK(rc == -2, "%s: start_redirector = %d", what, rc);
  CHECK(strstr(last_error(), needle1) != NULL, "%s: \"%s\" not in: %s", what, needle1, last_error());
  CHECK(!needle2 || strstr(last_error(), needle2) != NULL, "%s: \"%s\" not in: %s", what, needle2, last_error());
  CHECK(redirector_last_error_code() == REDIRECTOR_EINIT, "%s: EINIT", what);
  CHECK(get_redirector_status() == 0, "%s: stopped", what);
  CHECK(thread_count() == before, "%s: threads %d, before %d", what, thread_count(), before);
  char *log = read_file(g_log);
  CHECK(count_lines(log, "open id=") == count_lines(log, "close id="), "%s: every opened handle closed:\n%s", what,
        log);
  free(log);
}

TEST_CASE(dll_missing) {
  CHECK(set_redirector_config(config_pids("1234", NULL)) == 0, "config");
  update_app_port(APP_PORT);
  char nowhere[MAX_PATH + 16];
  snprintf(nowhere, sizeof nowhere, "%s\\no-windivert-here", g_dir);
  redirector_set_windivert_path(nowhere);
  expect_start_error("DLL missing", "WinDivert driver not found", "no-windivert-here");
  redirector_set_windivert_path(NULL); /* the default search: not beside the library or this program either */
  expect_start_error("DLL missing (default search)", "WinDivert driver not found", "beside windows_redirector.dll");
  CHECK(error_mentions("and the application") && error_mentions("System32"), "every place tried is named: %s",
        last_error());
  /* A WinDivert.dll without a function the library needs. */
  char partial[MAX_PATH + 32];
  snprintf(partial, sizeof partial, "%s\\fakewd-nogetparam", g_dir);
  redirector_set_windivert_path(partial);
  expect_start_error("function missing", "has no function WinDivertGetParam", "fakewd-nogetparam");
}

/* Starts and stops the copy of the library loaded as m (the default
 * WinDivert search, from where that copy lies): start_redirector's code,
 * and its error text into why. */
static int32_t start_copy(HMODULE m, char *why, size_t len) {
  int32_t (*set_config)(const char *) = (int32_t(*)(const char *))(void *)GetProcAddress(m, "set_redirector_config");
  void (*set_port)(uint16_t) = (void (*)(uint16_t))(void *)GetProcAddress(m, "update_app_port");
  int32_t (*start)(void) = (int32_t(*)(void))(void *)GetProcAddress(m, "start_redirector");
  int32_t (*stop)(void) = (int32_t(*)(void))(void *)GetProcAddress(m, "stop_redirector");
  int32_t (*get_error)(char *, size_t) = (int32_t(*)(char *, size_t))(void *)GetProcAddress(m, "redirector_last_error");
  why[0] = '\0';
  CHECK(set_config(config_pids("1234", NULL)) == 0, "config");
  set_port(APP_PORT);
  int32_t rc = start();
  if (rc != 0) get_error(why, len);
  if (rc == 0) CHECK(stop() == 0, "stop");
  return rc;
}

/* A folder of its own in the temp folder, with a copy of the library; the
 * copy's path into lib. */
static void library_copy(const char *name, char *dir, size_t dlen, char *lib, size_t llen) {
  char tmp[MAX_PATH], from[MAX_PATH + 32];
  GetTempPathA(sizeof tmp, tmp);
  snprintf(dir, dlen, "%swr-%s-%lu", tmp, name, (unsigned long)GetCurrentProcessId());
  snprintf(lib, llen, "%s\\windows_redirector.dll", dir);
  CreateDirectoryA(dir, NULL);
  snprintf(from, sizeof from, "%s\\windows_redirector.dll", g_dir);
  CHECK(CopyFileA(from, lib, FALSE), "copy the library (%lu)", (unsigned long)GetLastError());
}

/* Copies a stand-in WinDivert.dll (from folder `from`) into folder `to`;
 * its path into path. */
static void put_windivert(const char *from, const char *to, char *path, size_t len) {
  char src[MAX_PATH + 32];
  snprintf(src, sizeof src, "%s\\WinDivert.dll", from);
  snprintf(path, len, "%s\\WinDivert.dll", to);
  CHECK(CopyFileA(src, path, FALSE), "copy %s to %s (%lu)", src, path, (unsigned long)GetLastError());
}

/* WinDivert.dll beside windows_redirector.dll is found first: the host
 * program (Python, .NET) lives elsewhere, and nothing is beside it. */
TEST_CASE(beside_library) {
  char dir[MAX_PATH], lib[MAX_PATH + 32], wd[MAX_PATH + 32];
  library_copy("beside", dir, sizeof dir, lib, sizeof lib);
  put_windivert(g_fakewd, dir, wd, sizeof wd);
  reset_log();
  write_script("");
  HMODULE m = LoadLibraryA(lib);
  CHECK(m != NULL, "load the copied library (%lu)", (unsigned long)GetLastError());
  if (m) {
    char why[1024];
    int32_t rc = start_copy(m, why, sizeof why);
    CHECK(rc == 0, "start with WinDivert.dll beside the library only: %d %s", rc, why);
    FreeLibrary(m);
  }
  DeleteFileA(lib);
  DeleteFileA(wd);
  RemoveDirectoryA(dir);
}

/* The whole default search, in order: beside windows_redirector.dll, the
 * application's folder, System32. A WinDivert.dll without WinDivertGetParam
 * (fakewd-nogetparam) where a place must not be reached shows which one was
 * taken: its start fails naming the missing function. */
TEST_CASE(search_order) {
  char dir[MAX_PATH], lib[MAX_PATH + 32], sys[MAX_PATH], in_sys[MAX_PATH + 32], in_app[MAX_PATH + 32];
  char in_lib[MAX_PATH + 32], partial[MAX_PATH + 32], why[1024];
  snprintf(partial, sizeof partial, "%s\\fakewd-nogetparam", g_dir);
  UINT sn = GetSystemDirectoryA(sys, sizeof sys);
  CHECK(sn > 0 && sn < sizeof sys, "System32 (%lu)", (unsigned long)GetLastError());
  if (sn == 0 || sn >= sizeof sys) return;
  library_copy("order", dir, sizeof dir, lib, sizeof lib);
  reset_log();
  write_script("");
  /* System32 is searched: only a broken one there. */
  put_windivert(partial, sys, in_sys, sizeof in_sys);
  redirector_set_windivert_path(NULL);
  CHECK(set_redirector_config(config_pids("1234", NULL)) == 0, "config");
  update_app_port(APP_PORT);
  expect_start_error("only System32's", "has no function WinDivertGetParam", sys);
  HMODULE m = LoadLibraryA(lib);
  CHECK(m != NULL, "load the copied library (%lu)", (unsigned long)GetLastError());
  if (m) {
    /* The application's folder before System32: the library's copy has
     * nothing beside it, this program's folder a whole stand-in. */
    put_windivert(g_fakewd, g_dir, in_app, sizeof in_app);
    int32_t rc = start_copy(m, why, sizeof why);
    CHECK(rc == 0, "the application's folder before System32: %d %s", rc, why);
    /* Beside the library before the application's folder. */
    put_windivert(partial, dir, in_lib, sizeof in_lib);
    rc = start_copy(m, why, sizeof why);
    CHECK(rc != 0 && strstr(why, "has no function WinDivertGetParam") && strstr(why, dir),
          "beside the library before the application's folder: %d %s", rc, why);
    DeleteFileA(in_lib);
    DeleteFileA(in_app);
    FreeLibrary(m);
  }
  CHECK(DeleteFileA(in_sys), "remove %s (%lu)", in_sys, (unsigned long)GetLastError());
  DeleteFileA(lib);
  RemoveDirectoryA(dir);
}

TEST_CASE(open_errors) {
  static const struct {
    const char *script;
    const char *needle1, *needle2;
  } cases[] = {
      {"open_error 5\n", "Access denied: run as Administrator", "Windows error 5"},
      {"open_error 577\n", "signature", "Windows error 577"},
      {"open_error 654\n", "a different WinDivert driver version is already loaded", "reboot"},
      {"open_error 2 SOCKET\n", "WinDivert driver not found", "WinDivert64.sys"},
      {"open_error 87 NETWORK\n", "invalid parameter", "NETWORK layer"},
      {"open_error 1058\n", "service is disabled", "Windows error 1058"},
      {"open_error 1060 SOCKET\n", "service is missing", "Windows error 1060"},
      {"open_error 1275\n", "driver is blocked", "Windows error 1275"},
      {"open_error 31 NETWORK\n", "Windows error 31", "NETWORK layer"},
      {"driver_version 2 1\n", "the WinDivert driver is version 2.1", "needs 2.2 or newer"},
      {"driver_version 2 0\n", "version 2.0", "crash bug"},
      {"driver_version 1 4\n", "version 1.4", "needs 2.2 or newer"},
  };
  CHECK(set_redirector_config(config_pids("1234", NULL)) == 0, "config");
  update_app_port(APP_PORT);
  redirector_set_windivert_path(g_fakewd);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    reset_log();
    write_script(cases[i].script);
    expect_start_error(cases[i].script, cases[i].needle1, cases[i].needle2);
  }
  /* Another program's NETWORK handle at our priority: refused, since the
   * driver would split packets between the two; at another priority, or
   * another layer at ours, fine. */
  reset_log();
  write_script("reflect pid=5555 layer=NETWORK priority=-1000 flags=0 object=@WinDiv_WX_WWWWAA\n");
  expect_start_error("a rival at our priority", "another program (PID 5555)", "priority -1000");
  write_script("reflect pid=5555 layer=NETWORK priority=-999 flags=0 object=@WinDiv_WX_WWWWAA\n"
               "reflect pid=5556 layer=SOCKET priority=-1000 flags=5 object=@WinDiv_WX_WWWWAA\n");
  CHECK(start_redirector() == 0, "other priorities and layers are fine: %s", last_error());
  stop_redirector();
  /* The NETWORK open fails after SOCKET opened: SOCKET is closed again. */
  reset_log();
  write_script("open_error 5 NETWORK\n");
  expect_start_error("NETWORK only", "Access denied", "NETWORK layer");
  char *log = read_file(g_log);
  CHECK(strstr(log, "open id=") && strstr(log, "layer=SOCKET") && count_lines(log, "close id=") >= 2,
        "SOCKET opened and closed:\n%s", log);
  free(log);
  /* After all that, a start works. */
  reset_log();
  write_script("");
  CHECK(start_redirector() == 0, "start after failures: %s", last_error());
  CHECK(stop_redirector() == 0, "stop");
}

/* ------------------------------------------------------------------------ */


static void stop_if_running(void) {
  if (get_redirector_status() == 1) stop_redirector();
}

int main(int argc, char **argv) {
  int child_rc = 0;
  if (tree_child_main(argc, argv, &child_rc)) return child_rc;
  if (argc > 1 && strcmp(argv[1], "child_udp") == 0) return child_udp();
  if (argc > 1 && strcmp(argv[1], "child_tcp") == 0) return child_tcp();
  if (argc > 2 && strcmp(argv[1], "child_udp_late") == 0) return child_udp_late((uint16_t)atoi(argv[2]));
  GetModuleFileNameA(NULL, g_dir, sizeof g_dir);
  char *slash = strrchr(g_dir, '\\');
  if (slash) *slash = '\0';
  snprintf(g_fakewd, sizeof g_fakewd, "%s\\fakewd", g_dir);
  char tmp[MAX_PATH];
  GetTempPathA(sizeof tmp, tmp);
  snprintf(g_log, sizeof g_log, "%swr-fake-windivert-%lu.log", tmp, (unsigned long)GetCurrentProcessId());
  snprintf(g_script, sizeof g_script, "%swr-fake-windivert-%lu.script", tmp, (unsigned long)GetCurrentProcessId());
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_LOG", g_log);
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_SCRIPT", g_script);
  tests_after_failure(stop_if_running);
  int rc = tests_main(argc, argv);
  DeleteFileA(g_log);
  DeleteFileA(g_script);
  return rc;
}
