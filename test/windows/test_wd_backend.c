/* The Windows backend's pieces, below the public ABI (linked with the static
 * library): the WINDIVERT_ADDRESS layout against WinDivert's documented
 * one, the NETWORK filter built from a capture scope, the socket tables,
 * process paths and ancestries with real Win32 calls under wine, the
 * backend's diagnostics and the stand-in WinDivert.dll's driver behaviour.
 *
 *   test_wd_backend.exe CASE
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/backend.h"
#include "check.h"
#include "wd_sockets.h"
#include "host.h"
#include "os/platform.h"
#include "capture/windivert/filter.h"
#include "capture/windivert/handles.h"
#include "capture/windivert/owners.h"
#include "capture/windivert/windivert.h"
#include "wd_scopes.h"
#include "wd_test_util.h"
#include "wd_tree.h"

/* ------------------------------------------------------------------------
 * Layout. The numbers are WinDivert 2.2's documented WINDIVERT_ADDRESS
 * (include/windivert.h and doc/windivert.html): 80 bytes; INT64 Timestamp
 * at 0; a UINT32 of bitfields at 8, from its least significant bit: Layer:8,
 * Event:8, Sniffed:1, Outbound:1, Loopback:1, Impostor:1, IPv6:1,
 * IPChecksum:1, TCPChecksum:1, UDPChecksum:1, Reserved1:8; UINT32 Reserved2
 * at 12; the union at 16. Network: IfIdx 16, SubIfIdx 20. Socket/Flow:
 * EndpointId 16, ParentEndpointId 24, ProcessId 32, LocalAddr[4] 36,
 * RemoteAddr[4] 52, LocalPort 68, RemotePort 70, Protocol 72. Reflect:
 * Timestamp 16, ProcessId 24, Layer 28, Flags 32, Priority 40. (WinDivert's
 * DLL itself refuses to open when the size, the union offset 16, Protocol at
 * 56 within the union, or Reflect.Priority at 24 within it, differ.) */

static uint32_t word_at(const wd_address *a, size_t off) {
  uint32_t v;
  memcpy(&v, (const uint8_t *)a + off, 4);
  return v;
}

/* Sets one flag through the struct and checks that exactly that bit of the
 * word at offset 8 changed. */
#define FLAG_BIT(field, bitno)                                                                      \
  do {                                                                                              \
    wd_address a;                                                                                   \
    memset(&a, 0, sizeof a);                                                                        \
    a.field = 1;                                                                                    \
    CHECK(word_at(&a, 8) == (1u << (bitno)), #field " is bit %d of the word at 8 (got 0x%08x)", bitno, \
          word_at(&a, 8));                                                                          \
  } while (0)

/* Event times: a counter reading becomes wall-clock time on the clocks read
 * when the event is converted, so a correction of the wall clock after start
 * moves the conversions with it. */
TEST_CASE(clock) {
  const int64_t freq = 3579545; /* an odd frequency, as some machines have */
  const uint64_t t0 = 133000000000000000ull;
  /* Two seconds before "now", on the clocks read now. */
  CHECK(wr_qpc_to_filetime(1000000000 - 2 * freq, 1000000000, t0, freq) == t0 - 20000000, "2 s before now");
  CHECK(wr_qpc_to_filetime(1000000000 + 3 * freq, 1000000000, t0, freq) == t0 + 30000000, "3 s ahead");
  /* The wall clock is set forward by an hour between start and an event;
   * the same counter reading then converts an hour later. */
  const uint64_t hour = 36000000000ull;
  CHECK(wr_qpc_to_filetime(5000, 5000 + freq, t0 + hour, freq) == t0 + hour - 10000000, "after a correction");
  /* Sub-tick precision: 1 tick at this frequency is 2.79 units of 100 ns. */
  uint64_t one = wr_qpc_to_filetime(999, 1000, t0, freq);
  CHECK(one == t0 - 2, "one tick before: %llu", (unsigned long long)(t0 - one));
  /* Through the owners, on this machine's clocks: now converts to now. */
  wr_owners *o = wr_owners_new();
  LARGE_INTEGER c;
  QueryPerformanceCounter(&c);
  uint64_t conv = wr_owners_qpc_to_filetime(o, c.QuadPart);
  FILETIME ft;
  GetSystemTimePreciseAsFileTime(&ft);
  uint64_t now = ((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime;
  CHECK(conv <= now && now - conv < 5000000, "a reading taken now converts to now (%lld units off)",
        (long long)(now - conv));
  wr_owners_free(o);
}

static uint64_t wall_100ns(void) {
  FILETIME ft;
  GetSystemTimePreciseAsFileTime(&ft);
  return ((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime;
}

/* wr_now_ms, the engine's clock: the configuration's time, compared with
 * exact process ages (lineage.ts), so it must move by the millisecond and
 * never back. It was GetTickCount64, which on real Windows moves in steps
 * of about 15.6 ms; wine's GetTickCount64 already moves by the millisecond,
 * so this case cannot show those steps here: it checks that the clock never
 * goes back and that it moves in steps under 5 ms, which real Windows with
 * the old clock would fail. The arithmetic's overflow is checked apart. */
TEST_CASE(now_ms) {
  /* floor(ticks * 1000 / hz) where ticks * 1000 does not fit in 64 bits. */
  const uint64_t hzs[] = {10000000u, 3579545u, 2400000000u, 1u, 1000u};
  const uint64_t ticks[] = {0, 1, 9999999u, 1ull << 62, UINT64_MAX / 3, UINT64_MAX};
  for (size_t i = 0; i < sizeof hzs / sizeof hzs[0]; i++) {
    for (size_t j = 0; j < sizeof ticks / sizeof ticks[0]; j++) {
      unsigned __int128 exact = (unsigned __int128)ticks[j] * 1000u / hzs[i];
      if (exact > UINT64_MAX) continue; /* not a millisecond count */
      uint64_t got = wr_ticks_scale(ticks[j], hzs[i], 1000u);
      CHECK(got == (uint64_t)exact, "%llu ticks at %llu Hz: %llu ms, not %llu", (unsigned long long)ticks[j],
            (unsigned long long)hzs[i], (unsigned long long)got, (unsigned long long)exact);
    }
  }

  /* A spin of about 100 ms: every reading at least the one before; the
   * smallest step it took under 5 ms; and it moved as the wall clock did
   * (each span bracketed by the other clock's readings). */
  uint64_t w0 = wall_100ns();
  uint64_t first = wr_now_ms(), last = first, min_step = UINT64_MAX;
  long back = 0, steps = 0;
  while (last - first < 100 && wall_100ns() - w0 < 50000000u) { /* at most 5 s */
    uint64_t t = wr_now_ms();
    if (t < last) back++;
    if (t > last) {
      steps++;
      if (t - last < min_step) min_step = t - last;
    }
    last = t;
  }
  uint64_t w1 = wall_100ns();
  CHECK(back == 0, "wr_now_ms went back %ld times", back);
  CHECK(last - first >= 100, "wr_now_ms moved %llu ms in %llu ms of wall clock", (unsigned long long)(last - first),
        (unsigned long long)((w1 - w0) / 10000u));
  CHECK(steps > 0 && min_step < 5, "wr_now_ms moved in %ld steps, the smallest %llu ms", steps,
        (unsigned long long)min_step);
  /* (last - first) within the wall clock's span, with 1 ms for rounding. */
  CHECK(last - first <= (w1 - w0) / 10000u + 1, "wr_now_ms moved %llu ms while the wall clock moved %llu ms",
        (unsigned long long)(last - first), (unsigned long long)((w1 - w0) / 10000u));
  uint64_t a = wr_now_ms(), v0 = wall_100ns();
  Sleep(50);
  uint64_t v1 = wall_100ns(), b = wr_now_ms();
  CHECK(b - a + 1 >= (v1 - v0) / 10000u, "a sleep of %llu ms of wall clock was %llu ms of wr_now_ms",
        (unsigned long long)((v1 - v0) / 10000u), (unsigned long long)(b - a));
}

TEST_CASE(layout) {
  CHECK(sizeof(wd_address) == 80, "size %u", (unsigned)sizeof(wd_address));
  CHECK(_Alignof(wd_address) == 8, "alignment %u", (unsigned)_Alignof(wd_address));
  CHECK(offsetof(wd_address, timestamp) == 0, "Timestamp");
  CHECK(offsetof(wd_address, reserved2) == 12, "Reserved2");
  CHECK(offsetof(wd_address, u) == 16, "union");
  wd_address a;
  memset(&a, 0, sizeof a);
  a.layer = 0xab;
  CHECK(word_at(&a, 8) == 0xab, "Layer is bits 0-7");
  memset(&a, 0, sizeof a);
  a.event = 0xcd;
  CHECK(word_at(&a, 8) == 0xcd00, "Event is bits 8-15");
  FLAG_BIT(sniffed, 16);
  FLAG_BIT(outbound, 17);
  FLAG_BIT(loopback, 18);
  FLAG_BIT(impostor, 19);
  FLAG_BIT(ipv6, 20);
  FLAG_BIT(ip_checksum, 21);
  FLAG_BIT(tcp_checksum, 22);
  FLAG_BIT(udp_checksum, 23);
  CHECK(offsetof(wd_address, u.network.if_idx) == 16, "IfIdx");
  CHECK(offsetof(wd_address, u.network.sub_if_idx) == 20, "SubIfIdx");
  CHECK(offsetof(wd_address, u.socket.endpoint_id) == 16, "EndpointId");
  CHECK(offsetof(wd_address, u.socket.parent_endpoint_id) == 24, "ParentEndpointId");
  CHECK(offsetof(wd_address, u.socket.process_id) == 32, "ProcessId");
  CHECK(offsetof(wd_address, u.socket.local_addr) == 36, "LocalAddr");
  CHECK(offsetof(wd_address, u.socket.remote_addr) == 52, "RemoteAddr");
  CHECK(offsetof(wd_address, u.socket.local_port) == 68, "LocalPort");
  CHECK(offsetof(wd_address, u.socket.remote_port) == 70, "RemotePort");
  CHECK(offsetof(wd_address, u.socket.protocol) == 72, "Protocol");
  CHECK(offsetof(wd_address, u.reflect.timestamp) == 16, "Reflect.Timestamp");
  CHECK(offsetof(wd_address, u.reflect.process_id) == 24, "Reflect.ProcessId");
  CHECK(offsetof(wd_address, u.reflect.layer) == 28, "Reflect.Layer");
  CHECK(offsetof(wd_address, u.reflect.flags) == 32, "Reflect.Flags");
  CHECK(offsetof(wd_address, u.reflect.priority) == 40, "Reflect.Priority");
  /* The documented constants. */
  CHECK(WD_LAYER_NETWORK == 0 && WD_LAYER_SOCKET == 3 && WD_LAYER_REFLECT == 4, "layers");
  CHECK(WD_FLAG_SNIFF == 1 && WD_FLAG_RECV_ONLY == 4 && WD_FLAG_NO_INSTALL == 0x10, "flags");
  CHECK(WD_EVENT_SOCKET_BIND == 3 && WD_EVENT_SOCKET_CONNECT == 4 && WD_EVENT_SOCKET_LISTEN == 5 &&
            WD_EVENT_SOCKET_ACCEPT == 6 && WD_EVENT_SOCKET_CLOSE == 7 && WD_EVENT_REFLECT_OPEN == 8,
        "events");
  CHECK(WD_PARAM_QUEUE_LENGTH == 0 && WD_PARAM_QUEUE_TIME == 1 && WD_PARAM_QUEUE_SIZE == 2 &&
            WD_PARAM_VERSION_MAJOR == 3 && WD_PARAM_VERSION_MINOR == 4,
        "params");
  CHECK(WD_SHUTDOWN_RECV == 1 && WD_SHUTDOWN_SEND == 2 && WD_SHUTDOWN_BOTH == 3, "shutdown");
}

/* ------------------------------------------------------------------------
 * Socket tables and process paths: real calls */

typedef struct {
  uint8_t proto;
  uint16_t port;
  uint32_t pid;
  int found;
} find_ctx;

static int find_port(void *ctx, const wr_socket_row *r) {
  find_ctx *c = ctx;
  if (r->proto == c->proto && r->local_port == c->port) {
    c->pid = r->pid;
    c->found = 1;
    return 1;
  }
  return 0;
}

TEST_CASE(tables) {
  WSADATA w;
  WSAStartup(MAKEWORD(2, 2), &w);
  struct sockaddr_in a;
  int len = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* A connected TCP pair and a UDP socket that has carried a datagram
   * (wine learns a socket's owner once the process has used it). */
  SOCKET lst = socket(AF_INET, SOCK_STREAM, 0);
  bind(lst, (struct sockaddr *)&a, sizeof a);
  listen(lst, 1);
  getsockname(lst, (struct sockaddr *)&a, &len);
  SOCKET cli = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(connect(cli, (struct sockaddr *)&a, sizeof a) == 0, "connect");
  SOCKET acc = accept(lst, NULL, NULL);
  struct sockaddr_in ca;
  len = sizeof ca;
  getsockname(cli, (struct sockaddr *)&ca, &len);
  char buf[8];
  send(cli, "x", 1, 0);
  recv(acc, buf, sizeof buf, 0);
  struct sockaddr_in ua;
  SOCKET u = used_udp_socket(&ua, INADDR_LOOPBACK, 0);
  wr_owners *o = wr_owners_new();
  CHECK(o && wr_owners_tables_error(o)[0] == '\0', "iphlpapi loaded: %s", o ? wr_owners_tables_error(o) : "");
  uint32_t self = GetCurrentProcessId(), err = 0;
  find_ctx c = {6, ntohs(ca.sin_port), 0, 0};
  int rows = wr_owners_walk(o, WR_TABLE_TCP_ALL, 4, find_port, &c, &err);
  CHECK(rows > 0 && c.found, "TCP table lists our connection (rows %d, error %u)", rows, err);
  CHECK(c.pid == self, "TCP row PID %u, ours %u", c.pid, self);
  find_ctx l = {6, ntohs(a.sin_port), 0, 0};
  wr_owners_walk(o, WR_TABLE_TCP_LISTENERS, 4, find_port, &l, &err);
  CHECK(l.found, "the listener table lists our listener");
  find_ctx cu = {17, ntohs(ua.sin_port), 0, 0};
  rows = wr_owners_walk(o, WR_TABLE_UDP, 4, find_port, &cu, &err);
  CHECK(rows > 0 && cu.found && cu.pid == self, "UDP table lists our socket with our PID (found %d, pid %u)",
        cu.found, cu.pid);
  CHECK(wr_owners_walk(o, WR_TABLE_TCP_ALL, 6, find_port, &c, &err) >= 0, "the IPv6 table reads");

  /* Process paths. */
  char exe[MAX_PATH], path[4096];
  GetModuleFileNameA(NULL, exe, sizeof exe);
  size_t n = wr_owners_process_path(o, self, 0, path, sizeof path);
  CHECK(n > 0 && _stricmp(path, exe) == 0, "own path \"%s\", expected \"%s\"", path, exe);
  /* From the cache, the same answer. */
  n = wr_owners_process_path(o, self, 0, path, sizeof path);
  CHECK(n > 0 && _stricmp(path, exe) == 0, "own path again");
  /* An event from before this process existed: the PID was someone else's. */
  FILETIME ft;
  GetSystemTimeAsFileTime(&ft);
  uint64_t now = ((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime;
  uint64_t hour_ago = now - 3600ull * 10000000ull;
  CHECK(wr_owners_process_path(o, self, hour_ago, path, sizeof path) == 0, "an older event gets no path");
  CHECK(wr_owners_process_path(o, self, now, path, sizeof path) > 0, "a current event gets the path");
  LARGE_INTEGER q;
  QueryPerformanceCounter(&q);
  uint64_t conv = wr_owners_qpc_to_filetime(o, q.QuadPart);
  CHECK(conv > now - 10000000ull && conv < now + 10000000ull, "QPC converts to about now");
  CHECK(wr_owners_process_path(o, 1234, 0, path, sizeof path) == 0, "no such process");
  CHECK(wr_owners_process_path(o, 4, 0, path, sizeof path) == 0 && path[0] == '\0', "PID 4 has no path");
  /* A short buffer keeps the tail (the file name). */
  n = wr_owners_process_path(o, self, 0, path, 12);
  CHECK(n == 11 && strcmp(path, exe + strlen(exe) - 11) == 0, "tail kept: \"%s\"", path);
  wr_owners_free(o);
  closesocket(cli);
  closesocket(acc);
  closesocket(lst);
  closesocket(u);
}

/* ------------------------------------------------------------------------
 * Diagnostics: other WinDivert users, priorities, version. */

/* Starts a backend with the stand-in playing `text`, reads its
 * diagnostics (and a cut copy, which must report the same length), stops. */
static size_t diagnostics_with(const wr_backend_options *opts, const char *script, const char *text, char *diag,
                               size_t len) {
  FILE *f = fopen(script, "wb");
  fputs(text, f);
  fclose(f);
  char err[512], small[16];
  diag[0] = '\0';
  wr_backend *b = wr_backend_start(opts, err, sizeof err);
  CHECK(b != NULL, "backend start: %s", err);
  if (!b) return 0;
  size_t n = wr_backend_diagnostics(b, diag, len);
  CHECK(wr_backend_diagnostics(b, small, sizeof small) == n && strlen(small) == sizeof small - 1,
        "cut to fit, full length back");
  wr_backend_stop(b);
  return n;
}

/* ------------------------------------------------------------------------
 * The NETWORK filter from a capture scope (filter.c). The real DLL compiles
 * each of these texts in test_wd_oracle.c. */

/* NET_FILTER_ALSO: OR-ed into every NETWORK filter, without loopback
 * unless the scope takes loopback (one comparison more). */
#define ICMP NET_ICMP_ERRORS
#define ICMP_NL "(" NET_ICMP_ERRORS " and not loopback)"

static void expect_filter(const wr_capture_scope *s, const char *want, int narrowed, int tests) {
  char out[WR_WD_FILTER_CAP];
  wr_wd_filter_info info;
  size_t n = wr_wd_net_filter(s, out, sizeof out, &info);
  CHECK(n == strlen(out) && strcmp(out, want) == 0, "filter\n  is       %s\n  expected %s", out, want);
  CHECK(info.narrowed == narrowed && info.tests == tests && !info.too_long,
        "%s: narrowed %d (expected %d), %d tests (expected %d), too long %d", want, info.narrowed, narrowed, info.tests,
        tests, info.too_long);
}

TEST_CASE(filter_text) {
  wr_capture_scope s;
  /* Nothing to capture: the ICMP errors only (NET_FILTER_ALSO: 5 comparisons). */
  ws_clear(&s, 0);
  expect_filter(&s, ICMP_NL, 0, 6);
  /* The protocols but nothing of theirs to capture (no side, no app port). */
  ws_clear(&s, WR_SCOPE_TCP | WR_SCOPE_UDP);
  expect_filter(&s, ICMP_NL, 0, 6);
  ws_clear(&s, WR_SCOPE_TCP | WR_SCOPE_UDP | WR_SCOPE_LOOPBACK);
  expect_filter(&s, ICMP, 0, 5);
  ws_clear(&s, WR_SCOPE_ALL | WR_SCOPE_TCP | WR_SCOPE_UDP | WR_SCOPE_LOOPBACK);
  expect_filter(&s, NET_FILTER, 0, 4 + 5);
  ws_clear(&s, WR_SCOPE_ALL | WR_SCOPE_TCP | WR_SCOPE_UDP);
  expect_filter(&s, "((ip or ipv6) and (tcp or udp) and not loopback) or " ICMP_NL, 0, 5 + 6);
  /* A side with any port and any network is everything: the app ports add nothing. */
  ws_clear(&s, WR_SCOPE_TCP | WR_SCOPE_REMOTE | WR_SCOPE_REMOTE_ANY_PORT | WR_SCOPE_REMOTE_ANY_NET);
  ws_app(&s, 8080);
  expect_filter(&s, "((ip or ipv6) and tcp and not loopback) or " ICMP_NL, 0, 4 + 6);
  /* Ports on the remote side (outbound), the app port. */
  ws_clear(&s, WR_SCOPE_TCP | WR_SCOPE_REMOTE | WR_SCOPE_REMOTE_ANY_NET | WR_SCOPE_LOOPBACK);
  ws_range(&s.remote, 443, 443);
  ws_range(&s.remote, 8000, 8100);
  ws_app(&s, 8080);
  expect_filter(&s,
                "((ip or ipv6) and tcp and ((remotePort == 443 or (remotePort >= 8000 and remotePort <= 8100)) or "
                "localPort == 8080)) or " ICMP,
                1, 7 + 5);
  /* Networks of both families on the local side (inbound), several app ports. */
  ws_clear(&s, WR_SCOPE_UDP | WR_SCOPE_LOCAL | WR_SCOPE_LOCAL_ANY_PORT);
  ws_net(&s.local, "10.1.2.3", 8); /* host bits: cleared */
  ws_net(&s.local, "192.0.2.7", 32);
  ws_net(&s.local, "0.0.0.0", 0);
  ws_net(&s.local, "fd00::", 8);
  ws_net(&s.local, "2001:db8::5", 128);
  ws_app(&s, 8080);
  ws_app(&s, 9090);
  expect_filter(&s,
                "((ip or ipv6) and udp and not loopback and (((localAddr >= 10.0.0.0 and localAddr <= "
                "10.255.255.255) or localAddr == 192.0.2.7 or (localAddr >= 0.0.0.0 and localAddr <= "
                "255.255.255.255) or (localAddr >= fd00:0:0:0:0:0:0:0 and localAddr <= "
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff) or localAddr == 2001:db8:0:0:0:0:0:5) or localPort == 8080 "
                "or localPort == 9090)) or " ICMP_NL,
                1, 4 + 8 + 2 + 6);
  /* Both sides with ports and networks. */
  ws_clear(&s, WR_SCOPE_TCP | WR_SCOPE_UDP | WR_SCOPE_REMOTE | WR_SCOPE_LOCAL);
  ws_range(&s.remote, 53, 53);
  ws_net(&s.remote, "198.18.0.0", 15);
  ws_range(&s.local, 22, 22);
  ws_range(&s.local, 80, 81);
  ws_net(&s.local, "10.0.0.5", 32);
  expect_filter(&s,
                "((ip or ipv6) and (tcp or udp) and not loopback and ((remotePort == 53 and (remoteAddr >= 198.18.0.0 "
                "and remoteAddr <= 198.19.255.255)) or ((localPort == 22 or (localPort >= 80 and localPort <= 81)) and "
                "localAddr == 10.0.0.5))) or " ICMP_NL,
                1, 5 + 3 + 4 + 6);
  /* A side whose list is empty (not any) matches nothing: only the app port is left. */
  ws_clear(&s, WR_SCOPE_TCP | WR_SCOPE_REMOTE | WR_SCOPE_REMOTE_ANY_NET);
  ws_app(&s, 8080);
  expect_filter(&s, "((ip or ipv6) and tcp and not loopback and (localPort == 8080)) or " ICMP_NL, 1, 5 + 6);
}

TEST_CASE(filter_limits) {
  wr_capture_scope s;
  char out[WR_WD_FILTER_CAP];
  wr_wd_filter_info info;
  ws_at_limit(&s, 0);
  size_t n = wr_wd_net_filter(&s, out, sizeof out, &info);
  CHECK(n > 0 && info.narrowed && !info.too_long && info.tests == WR_WD_FILTER_TESTS_MAX,
        "at the limit: narrowed %d, too long %d, %d tests", info.narrowed, info.too_long, info.tests);
  CHECK(info.tokens > 0 && info.tokens <= WR_WD_FILTER_TOKENS_MAX, "%d tokens", info.tokens);
  ws_at_limit(&s, 1);
  n = wr_wd_net_filter(&s, out, sizeof out, &info);
  CHECK(n > 0 && !info.narrowed && info.too_long &&
            strcmp(out, "((ip or ipv6) and (tcp or udp) and not loopback) or " ICMP_NL) == 0,
        "one more: the protocols' whole traffic (%s), too long %d", out, info.too_long);
  ws_largest(&s);
  n = wr_wd_net_filter(&s, out, sizeof out, &info);
  CHECK(n > 0 && info.too_long && strcmp(out, "((ip or ipv6) and (tcp or udp) and not loopback) or " ICMP_NL) == 0,
        "the largest scope: %s", out);
  /* Arguments. */
  CHECK(wr_wd_net_filter(&s, out, WR_WD_FILTER_CAP - 1, &info) == 0, "a buffer below WR_WD_FILTER_CAP: 0");
  CHECK(wr_wd_net_filter(NULL, out, sizeof out, &info) == 0, "no scope: 0");
  CHECK(wr_wd_net_filter(&s, NULL, sizeof out, &info) == 0, "no buffer: 0");
  ws_clear(&s, 0);
  CHECK(wr_wd_net_filter(&s, out, sizeof out, NULL) == strlen(ICMP_NL) && strcmp(out, ICMP_NL) == 0,
        "info may be NULL");
}

TEST_CASE(diagnostics) {
  char dir[MAX_PATH], tmp[MAX_PATH], script[MAX_PATH], log[MAX_PATH];
  GetModuleFileNameA(NULL, dir, sizeof dir);
  *strrchr(dir, '\\') = '\0';
  strcat(dir, "\\fakewd");
  GetTempPathA(sizeof tmp, tmp);
  snprintf(script, sizeof script, "%swr-diag-%lu.script", tmp, (unsigned long)GetCurrentProcessId());
  snprintf(log, sizeof log, "%swr-diag-%lu.log", tmp, (unsigned long)GetCurrentProcessId());
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_SCRIPT", script);
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_LOG", log);
  char err[512];
  wr_engine *e = wr_engine_new(GetCurrentProcessId(), err, sizeof err);
  CHECK(e != NULL, "engine: %s", err);
  if (!e) return;
  wr_engine_set_app_port(e, 8080);
  CHECK(wr_engine_start(e, (uint32_t)GetTickCount64(), err, sizeof err) == 0, "engine start");
  wr_backend_options opts = {e, dir, 8080, 0};
  char diag[2048];
  size_t n = diagnostics_with(&opts, script,
                              /* "true" and "tcp or udp", compiled by the real DLL */
                              "reflect pid=777 layer=NETWORK priority=0 flags=0 object=@WinDiv_WX_WWWWAA\n"
                              "reflect pid=888 layer=SOCKET priority=1041 flags=5 object=@WinDiv_WY_eXWWALX_fXWWAX\n",
                              diag, sizeof diag);
  printf("diagnostics: %s\n", diag);
  CHECK(n == strlen(diag), "length");
  CHECK(strstr(diag, "other WinDivert handles: 2 (pids 777, 888; layers NETWORK, SOCKET; priorities 0, 1041)") != NULL,
        "other handles listed");
  CHECK(strstr(diag, "driver version 2.2") != NULL, "version");
  CHECK(strstr(diag, "NETWORK handle: priority -1000") && strstr(diag, "SOCKET handle: priority -1000"),
        "priorities");
  CHECK(strstr(diag, "fakewd\\WinDivert.dll") != NULL, "the DLL's path");
  CHECK(strstr(diag, "send errors: 0") != NULL, "counters");
  /* No other users. */
  diagnostics_with(&opts, script, "", diag, sizeof diag);
  CHECK(strstr(diag, "other WinDivert handles: 0;") != NULL, "none: %s", diag);
  /* The driver is not loaded (REFLECT with NO_INSTALL fails with 1060). */
  diagnostics_with(&opts, script, "open_error 1060 REFLECT\n", diag, sizeof diag);
  CHECK(strstr(diag, "other WinDivert handles: 0 (the driver was not loaded)") != NULL, "not loaded: %s", diag);
  wr_engine_free(e);
  DeleteFileA(script);
  DeleteFileA(log);
}

/* The diagnostics say where the app port is listened on, and what is
 * wrong: redirected connections arrive addressed to the client's own
 * address, so only a wildcard listener of each family gets them. */
TEST_CASE(listening) {
  char dir[MAX_PATH], tmp[MAX_PATH], script[MAX_PATH];
  GetModuleFileNameA(NULL, dir, sizeof dir);
  *strrchr(dir, '\\') = '\0';
  strcat(dir, "\\fakewd");
  GetTempPathA(sizeof tmp, tmp);
  snprintf(script, sizeof script, "%swr-listen-%lu.script", tmp, (unsigned long)GetCurrentProcessId());
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_SCRIPT", script);
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_LOG", "");
  char err[512];
  wr_engine *e = wr_engine_new(GetCurrentProcessId(), err, sizeof err);
  CHECK(e != NULL, "engine: %s", err);
  if (!e) return;
  uint16_t port = free_port();
  wr_engine_set_app_port(e, port);
  CHECK(wr_engine_start(e, (uint32_t)GetTickCount64(), err, sizeof err) == 0, "engine start");
  wr_backend_options opts = {e, dir, port, 0};
  char diag[4096], want[128];
  diagnostics_with(&opts, script, "", diag, sizeof diag);
  snprintf(want, sizeof want, "app port %u: TCP not listening", (unsigned)port);
  CHECK(strstr(diag, want) && strstr(diag, "Windows Firewall"), "nothing listening: %s", diag);
  SOCKET lo = listen_on(4, "127.0.0.1", port);
  CHECK(lo != INVALID_SOCKET, "listen on 127.0.0.1");
  diagnostics_with(&opts, script, "", diag, sizeof diag);
  CHECK(strstr(diag, "TCP bound to a specific address only (127.0.0.1), not 0.0.0.0 or [::]") != NULL,
        "127.0.0.1 only: %s", diag);
  closesocket(lo);
  lo = listen_on(6, "::1", port);
  CHECK(lo != INVALID_SOCKET, "listen on [::1]");
  diagnostics_with(&opts, script, "", diag, sizeof diag);
  CHECK(strstr(diag, "TCP bound to a specific address only ([::1])") != NULL, "[::1] only: %s", diag);
  closesocket(lo);
  SOCKET any4 = listen_on(4, NULL, port), any6 = listen_on(6, NULL, port);
  CHECK(any4 != INVALID_SOCKET && any6 != INVALID_SOCKET, "listen on 0.0.0.0 and [::]");
  diagnostics_with(&opts, script, "", diag, sizeof diag);
  CHECK(strstr(diag, "TCP on 0.0.0.0 and [::];") != NULL, "both wildcards: %s", diag);
  CHECK(strstr(diag, "UDP not listening") != NULL, "no UDP: %s", diag);
  closesocket(any6);
  diagnostics_with(&opts, script, "", diag, sizeof diag);
  CHECK(strstr(diag, "TCP on 0.0.0.0 only: IPv6 redirects will be refused") != NULL, "IPv4 only: %s", diag);
  closesocket(any4);
  wr_engine_free(e);
  DeleteFileA(script);
}

/* ------------------------------------------------------------------------
 * The stand-in itself, where the library depends on it behaving like
 * WinDivert: Shutdown completes a blocked receive with ERROR_NO_DATA (232),
 * a send after SHUTDOWN_SEND fails with 232, wrong layer flags give 87. */

static wd_recv_ex_fn g_recv_ex;

static DWORD WINAPI blocked_receive(LPVOID h) {
  uint8_t buf[2048];
  wd_address addr[4];
  UINT n = 0, alen = sizeof addr;
  BOOL ok = g_recv_ex((HANDLE)h, buf, sizeof buf, &n, 0, addr, &alen, NULL);
  return ok ? 0 : GetLastError();
}

typedef struct {
  HMODULE dll;
  wd_open_fn open;
  wd_send_ex_fn send_ex;
  wd_shutdown_fn shutdown;
  wd_close_fn close;
} standin_api;

/* The stand-in, loaded directly, to play `script` (a path; NULL: none), its
 * record going to `log` (NULL: none). 0 when it cannot be loaded. */
static int load_standin(standin_api *api, const char *script, const char *log) {
  char path[MAX_PATH];
  GetModuleFileNameA(NULL, path, sizeof path);
  strcpy(strrchr(path, '\\'), "\\fakewd\\WinDivert.dll");
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_SCRIPT", script);
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_LOG", log);
  memset(api, 0, sizeof *api);
  api->dll = LoadLibraryA(path);
  CHECK(api->dll != NULL, "load %s", path);
  if (!api->dll) return 0;
  api->open = (wd_open_fn)(void (*)(void))GetProcAddress(api->dll, "WinDivertOpen");
  api->send_ex = (wd_send_ex_fn)(void (*)(void))GetProcAddress(api->dll, "WinDivertSendEx");
  api->shutdown = (wd_shutdown_fn)(void (*)(void))GetProcAddress(api->dll, "WinDivertShutdown");
  api->close = (wd_close_fn)(void (*)(void))GetProcAddress(api->dll, "WinDivertClose");
  g_recv_ex = (wd_recv_ex_fn)(void (*)(void))GetProcAddress(api->dll, "WinDivertRecvEx");
  CHECK(api->open && api->send_ex && api->shutdown && api->close && g_recv_ex, "exports");
  return api->open && api->send_ex && api->shutdown && api->close && g_recv_ex;
}

TEST_CASE(standin) {
  standin_api api;
  if (!load_standin(&api, NULL, NULL)) return;
  HMODULE dll = api.dll;
  wd_open_fn open = api.open;
  wd_send_ex_fn send_ex = api.send_ex;
  wd_shutdown_fn shutdown_fn = api.shutdown;
  wd_close_fn close_fn = api.close;
  CHECK(open("true", WD_LAYER_SOCKET, 0, WD_FLAG_SNIFF) == INVALID_HANDLE_VALUE && GetLastError() == 87,
        "SOCKET without RECV_ONLY is 87");
  HANDLE h = open("true", WD_LAYER_NETWORK, 0, 0);
  CHECK(h != INVALID_HANDLE_VALUE, "open");
  HANDLE t = CreateThread(NULL, 0, blocked_receive, h, 0, NULL);
  CHECK(WaitForSingleObject(t, 200) == WAIT_TIMEOUT, "a receive with nothing queued blocks");
  shutdown_fn(h, WD_SHUTDOWN_RECV);
  DWORD code = 0;
  CHECK(WaitForSingleObject(t, 5000) == WAIT_OBJECT_0 && GetExitCodeThread(t, &code) && code == 232,
        "shutdown completes it with 232 (got %lu)", (unsigned long)code);
  CloseHandle(t);
  /* A valid IPv4 header is enough for the stand-in to take a packet. */
  uint8_t pkt[20] = {0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6};
  wd_address a;
  memset(&a, 0, sizeof a);
  UINT sent = 0;
  CHECK(send_ex(h, pkt, sizeof pkt, &sent, 0, &a, sizeof a, NULL) && sent == 20, "send before SHUTDOWN_SEND");
  shutdown_fn(h, WD_SHUTDOWN_SEND);
  CHECK(!send_ex(h, pkt, sizeof pkt, &sent, 0, &a, sizeof a, NULL) && GetLastError() == 232,
        "send after SHUTDOWN_SEND is 232");
  CHECK(close_fn(h), "close");
  FreeLibrary(dll);
}

/* What a receive gives now: 1 a packet (its bytes' length in *len), 0 none
 * (the handle shut down first, so it does not block), -1 an error. */
static int take_one(HANDLE h, wd_shutdown_fn shutdown_fn, int shut, UINT *len) {
  uint8_t buf[2048];
  wd_address addr[4];
  UINT alen = sizeof addr;
  if (shut) shutdown_fn(h, WD_SHUTDOWN_RECV);
  *len = 0;
  if (g_recv_ex(h, buf, sizeof buf, len, 0, addr, &alen, NULL)) return alen == WD_ADDRESS_SIZE ? 1 : -1;
  return GetLastError() == 232 ? 0 : -1;
}

/* The stand-in's driver, where the filter switch depends on it (the driver,
 * sys/windivert.c 2.2): of two NETWORK handles at one priority the later
 * opened is placed above; a packet one injects is diverted again by a
 * handle below it whose filter matches and whose receive side is open,
 * never by one above; after SHUTDOWN_RECV what is queued is still received;
 * closing a handle with packets queued re-injects them. */
TEST_CASE(standin_driver) {
  char tmp[MAX_PATH], log[MAX_PATH];
  GetTempPathA(sizeof tmp, tmp);
  snprintf(log, sizeof log, "%swr-standin-%lu.log", tmp, (unsigned long)GetCurrentProcessId());
  DeleteFileA(log);
  standin_api api;
  if (!load_standin(&api, NULL, log)) return;
  uint8_t pkt[128];
  static const uint8_t c[4] = {10, 0, 0, 5}, d[4] = {93, 184, 216, 34};
  tu_tuple t;
  memset(&t, 0, sizeof t);
  memcpy(t.src, c, 4);
  memcpy(t.dst, d, 4);
  t.sport = 50000;
  t.dport = 443;
  UINT n = (UINT)tu_tcp(pkt, &t, 1, 0, TU_SYN, NULL), sent = 0, got = 0;
  wd_address a;
  memset(&a, 0, sizeof a);
  a.outbound = 1;
  a.ip_checksum = a.tcp_checksum = a.udp_checksum = 1;
  HANDLE old_h = api.open("tcp", WD_LAYER_NETWORK, -1000, 0);
  HANDLE new_h = api.open("tcp.DstPort == 443", WD_LAYER_NETWORK, -1000, 0);
  HANDLE udp_h = api.open("udp", WD_LAYER_NETWORK, -2000, 0);
  CHECK(old_h != INVALID_HANDLE_VALUE && new_h != INVALID_HANDLE_VALUE && udp_h != INVALID_HANDLE_VALUE, "open");
  /* Sent through the later (upper) one: the earlier one diverts it again. */
  CHECK(api.send_ex(new_h, pkt, n, &sent, 0, &a, sizeof a, NULL), "send through the upper handle");
  CHECK(api.send_ex(old_h, pkt, n, &sent, 0, &a, sizeof a, NULL), "send through the lower handle");
  CHECK(take_one(old_h, api.shutdown, 0, &got) == 1 && got == n, "the lower handle diverted what the upper one sent");
  /* What the lower one sent went past both (the UDP handle below does not match). */
  CHECK(take_one(new_h, api.shutdown, 1, &got) == 0, "the upper handle never sees what either sends");
  /* Shut down: it diverts nothing more, but what it queued is still received. */
  CHECK(api.send_ex(new_h, pkt, n, &sent, 0, &a, sizeof a, NULL), "queued for the lower handle");
  api.shutdown(old_h, WD_SHUTDOWN_RECV);
  CHECK(api.send_ex(new_h, pkt, n, &sent, 0, &a, sizeof a, NULL), "sent after its SHUTDOWN_RECV");
  CHECK(take_one(old_h, api.shutdown, 0, &got) == 1, "queued before the shutdown: still received");
  CHECK(take_one(old_h, api.shutdown, 0, &got) == 0, "nothing more: ERROR_NO_DATA");
  CHECK(api.close(old_h) && api.close(new_h), "close");
  /* Closed with a packet queued: the driver re-injects it. */
  HANDLE lower = api.open("true", WD_LAYER_NETWORK, 5, 0), upper = api.open("true", WD_LAYER_NETWORK, 6, 0);
  CHECK(api.send_ex(upper, pkt, n, &sent, 0, &a, sizeof a, NULL), "queued for the lower handle");
  CHECK(api.close(lower) && api.close(upper) && api.close(udp_h), "close with it queued");
  char *text = NULL;
  FILE *f = fopen(log, "rb");
  if (f) {
    text = calloc(1, 1 << 16);
    fread(text, 1, (1 << 16) - 1, f);
    fclose(f);
  }
  CHECK(text && strstr(text, "rediverted id=1 from=2") && strstr(text, "reinjected id=4"),
        "the log says so:\n%s", text ? text : "(none)");
  free(text);
  DeleteFileA(log);
  FreeLibrary(api.dll);
}

/* The stand-in's SOCKET events carry endpoints as the driver's do: a
 * socket keeps its EndpointId through its events; an accepted connection's
 * parent is its listener; a connection's CLOSE has its remote end, the
 * listener's release (ALE resource release) none and parent 0. */
TEST_CASE(standin_socket_endpoints) {
  char tmp[MAX_PATH], script[MAX_PATH];
  GetTempPathA(sizeof tmp, tmp);
  snprintf(script, sizeof script, "%swr-endpoints-%lu.script", tmp, (unsigned long)GetCurrentProcessId());
  FILE *f = fopen(script, "wb");
  fputs("socket listen pid=7 proto=tcp local=0.0.0.0:8443\n"
        "socket accept pid=7 proto=tcp local=10.0.0.5:8443 remote=198.51.100.7:40001\n"
        "socket accept pid=7 proto=tcp local=10.0.0.5:8443 remote=198.51.100.8:40002\n"
        "socket close pid=7 proto=tcp local=10.0.0.5:8443 remote=198.51.100.7:40001\n"
        "socket close pid=7 proto=tcp local=0.0.0.0:8443\n",
        f);
  fclose(f);
  standin_api api;
  if (!load_standin(&api, script, NULL)) return;
  HMODULE dll = api.dll;
  wd_open_fn open = api.open;
  wd_recv_ex_fn recv_ex = g_recv_ex;
  wd_close_fn close_fn = api.close;
  HANDLE sock = open("true", WD_LAYER_SOCKET, 0, WD_FLAG_SNIFF | WD_FLAG_RECV_ONLY);
  HANDLE net = open("false", WD_LAYER_NETWORK, 0, 0); /* starts the script */
  CHECK(sock != INVALID_HANDLE_VALUE && net != INVALID_HANDLE_VALUE, "open");
  wd_address ev[5];
  UINT n = 0;
  while (n < 5) {
    UINT alen = (UINT)((5 - n) * sizeof ev[0]), got = 0;
    if (!recv_ex(sock, NULL, 0, &got, 0, &ev[n], &alen, NULL)) break;
    n += alen / (UINT)sizeof ev[0];
  }
  CHECK(n == 5, "%u events", n);
  if (n == 5) {
    const wd_socket_data *listen = &ev[0].u.socket, *acc1 = &ev[1].u.socket, *acc2 = &ev[2].u.socket;
    const wd_socket_data *end1 = &ev[3].u.socket, *release = &ev[4].u.socket;
    CHECK(listen->parent_endpoint_id == 0, "LISTEN: parent 0");
    CHECK(acc1->endpoint_id != listen->endpoint_id && acc2->endpoint_id != acc1->endpoint_id,
          "each accepted connection an endpoint of its own");
    CHECK(acc1->parent_endpoint_id == listen->endpoint_id && acc2->parent_endpoint_id == listen->endpoint_id,
          "accepted connections: the listener is their parent");
    CHECK(ev[3].event == WD_EVENT_SOCKET_CLOSE && end1->endpoint_id == acc1->endpoint_id &&
              end1->parent_endpoint_id == listen->endpoint_id,
          "a connection's CLOSE: its own endpoint and parent");
    CHECK(end1->local_port == 8443 && end1->remote_port == 40001 && end1->remote_addr[0] == 0xc6336407 &&
              end1->process_id == 7,
          "a connection's CLOSE: the listener's port and PID, the remote end");
    CHECK(release->endpoint_id == listen->endpoint_id && release->parent_endpoint_id == 0,
          "the listener's release: its endpoint, parent 0");
    static const uint32_t zero[4];
    CHECK(release->remote_port == 0 && memcmp(release->remote_addr, zero, sizeof zero) == 0 &&
              release->local_port == 8443 && release->local_addr[0] == 0 && release->local_addr[1] == 0xffff,
          "the listener's release: its address as bound (::ffff:0.0.0.0), no remote end");
  }
  close_fn(net);
  close_fn(sock);
  FreeLibrary(dll);
  DeleteFileA(script);
}

/* ------------------------------------------------------------------------
 * Process ancestry (process trees). Real wine processes: this program, its
 * child and the child's child; then the rules on a table of processes of
 * the test's own (a reused PID cannot be had on demand from wine). */

/* ancestry chain[i] is (pid, ctime) with the path `path`. */
static int chain_is(const wr_ancestry *a, size_t i, uint32_t pid, uint64_t ctime, const char *path) {
  if (i >= a->n) return 0;
  const wr_ancestor *x = &a->chain[i];
  if (x->pid != pid || x->ctime != ctime) return 0;
  if (!path) return 1;
  return x->path && x->path_len == strlen(path) && _strnicmp(x->path, path, x->path_len) == 0;
}

TEST_CASE(ancestry_processes) {
  DWORD mid_pid = 0, leaf_pid = 0, self = GetCurrentProcessId();
  HANDLE mid = tree_start(&mid_pid, &leaf_pid);
  CHECK(mid && leaf_pid, "a child (%lu) and its child (%lu) started", (unsigned long)mid_pid,
        (unsigned long)leaf_pid);
  if (!mid || !leaf_pid) {
    if (mid) tree_stop(mid, mid_pid);
    return;
  }
  uint64_t c_self = tree_ctime(self), c_mid = tree_ctime(mid_pid), c_leaf = tree_ctime(leaf_pid);
  CHECK(c_self && c_mid && c_leaf, "GetProcessTimes answers for all three");
  char exe[MAX_PATH], path[4096];
  GetModuleFileNameA(NULL, exe, sizeof exe);
  wr_owners *o = wr_owners_new();
  wr_ancestry *a = malloc(sizeof *a);
  if (!o || !a) {
    CHECK(0, "out of memory");
    return;
  }
  size_t n = wr_owners_process(o, leaf_pid, 0, path, sizeof path, a);
  CHECK(n > 0 && _stricmp(path, exe) == 0, "the grandchild's path \"%s\"", path);
  CHECK(a->n >= 3, "the grandchild's ancestry has %zu processes, expected at least 3", a->n);
  CHECK(chain_is(a, 0, leaf_pid, c_leaf, exe), "first the grandchild itself (%u, %llu)", a->n ? a->chain[0].pid : 0,
        a->n ? (unsigned long long)a->chain[0].ctime : 0ull);
  CHECK(chain_is(a, 1, mid_pid, c_mid, exe), "then the child (%u, %llu), expected (%lu, %llu)",
        a->n > 1 ? a->chain[1].pid : 0, a->n > 1 ? (unsigned long long)a->chain[1].ctime : 0ull,
        (unsigned long)mid_pid, (unsigned long long)c_mid);
  CHECK(chain_is(a, 2, self, c_self, exe), "then this program (%u), expected %lu", a->n > 2 ? a->chain[2].pid : 0,
        (unsigned long)self);
  for (size_t i = 0; i + 1 < a->n; i++) {
    CHECK(a->chain[i + 1].ctime <= a->chain[i].ctime, "creation times never decrease from parent to child (%zu)", i);
    CHECK(a->chain[i + 1].age_ms >= a->chain[i].age_ms, "nor do ages grow from parent to child (%zu)", i);
  }
  CHECK(a->n && a->chain[0].age_ms < 600000, "the grandchild's age %llu ms", a->n ? a->chain[0].age_ms : 0ull);
  /* The same again, from the cache. */
  wr_owners_process(o, leaf_pid, 0, path, sizeof path, a);
  CHECK(a->n >= 3 && chain_is(a, 1, mid_pid, c_mid, exe) && chain_is(a, 2, self, c_self, exe), "the same again");

  wr_owners *listed = wr_owners_new();
  int listed_ok = listed ? wr_owners_watch(listed) : -1;
  CHECK(listed_ok >= 3, "the processes listed: %d", listed_ok);
  /* The child exits (no handle of it is left open): a new look-up stops at
   * the grandchild, which still reports itself... */
  tree_stop(mid, mid_pid);
  CHECK(tree_gone(mid_pid, c_mid), "the child is gone");
  wr_owners *fresh = wr_owners_new();
  n = fresh ? wr_owners_process(fresh, leaf_pid, 0, path, sizeof path, a) : 0;
  CHECK(n > 0 && a->n == 1 && chain_is(a, 0, leaf_pid, c_leaf, exe),
        "with its parent gone, the grandchild alone (%zu processes, first %u)", a->n, a->n ? a->chain[0].pid : 0);
  /* ...while a cache that saw the child alive after the grandchild was
   * created still knows it as the parent, and goes on past it. */
  wr_owners_process(o, leaf_pid, 0, path, sizeof path, a);
  CHECK(a->n >= 3 && chain_is(a, 1, mid_pid, c_mid, exe) && chain_is(a, 2, self, c_self, exe),
        "a parent seen alive stays the parent after it exits (%zu processes)", a->n);
  /* A cache that never looked at the grandchild while the child lived, but
   * listed every process then (wr_owners_watch, NtQuerySystemInformation),
   * knows the child too: by its image file name. */
  n = listed && listed_ok ? wr_owners_process(listed, leaf_pid, 0, path, sizeof path, a) : 0;
  const char *exe_name = strrchr(exe, '\\') ? strrchr(exe, '\\') + 1 : exe;
  CHECK(a->n >= 3 && chain_is(a, 1, mid_pid, c_mid, exe_name) && chain_is(a, 2, self, c_self, NULL),
        "a parent listed alive stays the parent after it exits (%zu processes, second %u \"%.*s\")", a->n,
        a->n > 1 ? a->chain[1].pid : 0, a->n > 1 ? (int)a->chain[1].path_len : 0,
        a->n > 1 && a->chain[1].path ? a->chain[1].path : "");
  wr_owners_free(listed);
  /* The grandchild gone too: nothing new is learnt about it. */
  tree_stop_pid(leaf_pid);
  CHECK(tree_gone(leaf_pid, c_leaf), "the grandchild is gone");
  wr_owners_free(fresh);
  fresh = wr_owners_new();
  n = fresh ? wr_owners_process(fresh, leaf_pid, 0, path, sizeof path, a) : 1;
  CHECK(n == 0 && a->n == 0, "a process gone before its first look-up: no path, no ancestry");
  wr_owners_free(fresh);
  wr_owners_free(o);
  free(a);
}

/* A table of processes standing in for the OS. */
typedef struct {
  uint32_t pid;
  uint64_t created;
  uint32_t ppid;
  const char *path;
  int alive;  /* 0: no such process (exited) */
  int denied; /* 1: cannot be opened (access) */
} fake_proc;

typedef struct {
  fake_proc *procs;
  size_t n;
  int opens;
  uint64_t now;
} fake_os;

static int fk_open(void *ctx, uint32_t pid, void **h, uint64_t *created) {
  fake_os *f = ctx;
  f->opens++;
  for (size_t i = 0; i < f->n; i++) {
    fake_proc *p = &f->procs[i];
    if (p->pid != pid || !p->alive) continue;
    if (p->denied) return -1;
    *h = p;
    *created = p->created;
    return 1;
  }
  return 0;
}

static int fk_parent(void *ctx, void *h, uint32_t *ppid) {
  (void)ctx;
  *ppid = ((fake_proc *)h)->ppid;
  return 1;
}

static size_t fk_path(void *ctx, void *h, char *buf, size_t cap) {
  (void)ctx;
  const char *p = ((fake_proc *)h)->path;
  size_t n = strlen(p) < cap ? strlen(p) : cap;
  memcpy(buf, p, n);
  return n;
}

static void fk_close(void *ctx, void *h) { (void)ctx, (void)h; }
static uint64_t fk_now(void *ctx) { return ((fake_os *)ctx)->now; }

static int fk_list(void *ctx, wr_process_row_fn fn, void *fctx) {
  fake_os *f = ctx;
  int n = 0;
  for (size_t i = 0; i < f->n; i++) {
    const fake_proc *p = &f->procs[i];
    if (!p->alive) continue;
    fn(fctx, p->pid, p->created, p->ppid, p->path, strlen(p->path));
    n++;
  }
  return n;
}

#define FT_S 10000000ull /* FILETIME units per second */
#define T0 133000000000000000ull

static fake_proc *fk_find(fake_os *f, uint32_t pid) {
  for (size_t i = 0; i < f->n; i++) {
    if (f->procs[i].pid == pid) return &f->procs[i];
  }
  return NULL;
}

/* The PIDs of an ancestry as text ("108 104 100"). */
static const char *pids_of(const wr_ancestry *a) {
  static char buf[512];
  size_t at = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < a->n && at < sizeof buf - 12; i++) {
    at += (size_t)snprintf(buf + at, sizeof buf - at, i ? " %u" : "%u", a->chain[i].pid);
  }
  return buf;
}

/* Looks pid up (at `when`; 0 now), counting the processes it opened. */
static const char *look(wr_owners *o, fake_os *f, uint32_t pid, uint64_t when, wr_ancestry *a, int *opens) {
  char path[256];
  f->opens = 0;
  wr_owners_process(o, pid, when, path, sizeof path, a);
  *opens = f->opens;
  return pids_of(a);
}

TEST_CASE(ancestry_rules) {
  static fake_proc procs[64] = {
      {100, T0, 0, "C:\\a.exe", 1, 0},
      {104, T0 + 10 * FT_S, 100, "C:\\b.exe", 1, 0},
      {108, T0 + 20 * FT_S, 104, "C:\\c.exe", 1, 0},
      /* 204 was created after its "child": the PID 200 recorded was reused. */
      {200, T0 + 30 * FT_S, 204, "C:\\d.exe", 1, 0},
      {204, T0 + 40 * FT_S, 100, "C:\\e.exe", 1, 0},
      /* 304: no such process any more. */
      {300, T0 + 30 * FT_S, 304, "C:\\f.exe", 1, 0},
      /* Created in the same clock tick as its child: its parent. */
      {400, T0 + 30 * FT_S, 404, "C:\\g.exe", 1, 0},
      {404, T0 + 30 * FT_S, 0, "C:\\h.exe", 1, 0},
      /* A loop (no real ancestry has one). */
      {500, T0 + 30 * FT_S, 504, "C:\\i.exe", 1, 0},
      {504, T0 + 30 * FT_S, 500, "C:\\j.exe", 1, 0},
      /* 604 cannot be opened (not for lack of rights for ever). */
      {600, T0 + 30 * FT_S, 604, "C:\\k.exe", 1, 0},
      {604, T0 + 20 * FT_S, 0, "C:\\l.exe", 1, 1},
      /* A launcher that starts a child and exits. */
      {700, T0 + 50 * FT_S, 100, "launcher.exe", 1, 0},
      {704, T0 + 51 * FT_S, 700, "C:\\m.exe", 1, 0},
  };
  size_t np = 14;
  /* A chain of 40: 1000 <- 1004 <- ... <- 1156. */
  for (uint32_t i = 0; i < 40; i++) {
    procs[np++] = (fake_proc){1000 + 4 * i, T0 + i * FT_S, i ? 1000 + 4 * (i - 1) : 0, "C:\\deep.exe", 1, 0};
  }
  fake_os f = {procs, np, 0, T0 + 100 * FT_S};
  wr_process_source src = {fk_open, fk_parent, fk_path, fk_close, fk_now, fk_list, &f};
  wr_owners *o = wr_owners_new();
  wr_ancestry *a = malloc(sizeof *a);
  if (!o || !a) {
    CHECK(0, "out of memory");
    return;
  }
  wr_owners_set_process_source(o, &src);
  int opens = 0;
  const char *got;

  got = look(o, &f, 108, 0, a, &opens);
  CHECK(strcmp(got, "108 104 100") == 0, "a chain to the top: \"%s\"", got);
  CHECK(chain_is(a, 0, 108, T0 + 20 * FT_S, "C:\\c.exe") && chain_is(a, 1, 104, T0 + 10 * FT_S, "C:\\b.exe") &&
            chain_is(a, 2, 100, T0, "C:\\a.exe"),
        "each with its creation time and path");
  CHECK(a->n == 3 && a->chain[0].age_ms == 80000 && a->chain[2].age_ms == 100000, "ages %llu, %llu ms",
        a->n ? a->chain[0].age_ms : 0ull, a->n > 2 ? a->chain[2].age_ms : 0ull);
  CHECK(opens == 3, "each process opened once: %d", opens);
  got = look(o, &f, 108, 0, a, &opens);
  CHECK(strcmp(got, "108 104 100") == 0 && opens == 1, "again: only the process itself is opened (%d), \"%s\"",
        opens, got);

  got = look(o, &f, 200, 0, a, &opens);
  CHECK(strcmp(got, "200") == 0, "a parent PID now of a process created after its child is not the parent: \"%s\"",
        got);
  got = look(o, &f, 200, 0, a, &opens);
  CHECK(strcmp(got, "200") == 0 && opens == 1, "and is not asked again (%d opens)", opens);
  got = look(o, &f, 300, 0, a, &opens);
  CHECK(strcmp(got, "300") == 0, "a parent gone: the chain ends: \"%s\"", got);
  got = look(o, &f, 300, 0, a, &opens);
  CHECK(opens == 1, "and is not asked again (%d opens)", opens);
  got = look(o, &f, 400, 0, a, &opens);
  CHECK(strcmp(got, "400 404") == 0, "a parent of the same creation time: \"%s\"", got);
  got = look(o, &f, 500, 0, a, &opens);
  CHECK(strcmp(got, "500 504") == 0, "a loop ends: \"%s\"", got);
  got = look(o, &f, 600, 0, a, &opens);
  CHECK(strcmp(got, "600") == 0, "a parent that cannot be opened: the chain ends: \"%s\"", got);
  got = look(o, &f, 600, 0, a, &opens);
  CHECK(opens == 2, "and it is asked again next time (%d opens)", opens);
  got = look(o, &f, 1000 + 4 * 39, 0, a, &opens);
  CHECK(a->n == WR_ANCESTRY_CAP && a->chain[0].pid == 1156 && a->chain[WR_ANCESTRY_CAP - 1].pid == 1156 - 4 * 31,
        "a deep chain: the first %d (%zu)", WR_ANCESTRY_CAP, a->n);
  got = look(o, &f, 4, 0, a, &opens);
  CHECK(a->n == 0 && opens == 0, "System (PID 4): none");

  /* An event from before the process was created: the PID was someone
   * else's then. */
  got = look(o, &f, 108, T0 + 5 * FT_S, a, &opens);
  CHECK(a->n == 0, "an event older than the process: no ancestry (\"%s\")", got);
  got = look(o, &f, 108, T0 + 25 * FT_S, a, &opens);
  CHECK(strcmp(got, "108 104 100") == 0, "a later event: \"%s\"", got);

  /* The parent exits: this cache saw it alive after the child's creation,
   * so it stays the parent; a new cache cannot tell. */
  fk_find(&f, 104)->alive = 0;
  got = look(o, &f, 108, 0, a, &opens);
  CHECK(strcmp(got, "108 104 100") == 0, "a parent seen alive, then gone: still the parent: \"%s\"", got);
  wr_owners_set_process_source(o, &src); /* (empties the cache) */
  got = look(o, &f, 108, 0, a, &opens);
  CHECK(strcmp(got, "108") == 0, "a parent gone before its first look-up: the chain ends: \"%s\"", got);

  /* The process itself exits: its cached ancestry stands for an event it
   * was seen alive after, not for one later than that. */
  fk_find(&f, 104)->alive = 1;
  wr_owners_set_process_source(o, &src);
  look(o, &f, 108, 0, a, &opens);
  fk_find(&f, 108)->alive = 0;
  got = look(o, &f, 108, f.now, a, &opens);
  CHECK(strcmp(got, "108 104 100") == 0, "gone, an event it was seen alive at: \"%s\"", got);
  f.now += 60 * FT_S;
  got = look(o, &f, 108, f.now - FT_S, a, &opens);
  CHECK(a->n == 0, "gone, an event long after it was last seen: none (\"%s\")", got);

  /* Its PID reused: the new process, with its own parent. */
  fk_find(&f, 108)->alive = 1;
  fk_find(&f, 108)->created = T0 + 150 * FT_S;
  fk_find(&f, 108)->ppid = 100;
  got = look(o, &f, 108, 0, a, &opens);
  CHECK(strcmp(got, "108 100") == 0 && a->chain[0].ctime == T0 + 150 * FT_S, "the PID's new process: \"%s\"", got);
  got = look(o, &f, 108, T0 + 25 * FT_S, a, &opens);
  CHECK(a->n == 0, "an event of the old one: no ancestry (\"%s\")", got);

  /* A launcher exits right after starting its child: known as the parent
   * when a listing (wr_owners_watch) saw it alive after the child's
   * creation, with its listed name for a path; not otherwise. */
  wr_owners_set_process_source(o, &src);
  CHECK(wr_owners_watch(o) == (int)np, "a listing of every process");
  fk_find(&f, 700)->alive = 0;
  got = look(o, &f, 704, 0, a, &opens);
  CHECK(strcmp(got, "704 700 100") == 0 && chain_is(a, 1, 700, T0 + 50 * FT_S, "launcher.exe"),
        "a parent listed alive, then gone: still the parent: \"%s\"", got);
  wr_owners_set_process_source(o, &src);
  got = look(o, &f, 704, 0, a, &opens);
  CHECK(strcmp(got, "704") == 0, "not listed: the chain ends: \"%s\"", got);
  /* The child gone too before its first look-up: a listing saw it. */
  fk_find(&f, 700)->alive = 1;
  wr_owners_set_process_source(o, &src);
  CHECK(wr_owners_watch(o) == (int)np, "listed again");
  fk_find(&f, 700)->alive = 0;
  fk_find(&f, 704)->alive = 0;
  got = look(o, &f, 704, f.now, a, &opens);
  CHECK(strcmp(got, "704 700 100") == 0, "a process gone before its first look-up, listed alive: \"%s\"", got);
  got = look(o, &f, 704, f.now + 60 * FT_S, a, &opens);
  CHECK(a->n == 0, "not for an event long after that listing (\"%s\")", got);
  /* A listed process's PID reused since: an event of the time it was
   * listed is the listed one's, a later one the new process's. */
  fk_find(&f, 704)->alive = 1;
  fk_find(&f, 704)->created = T0 + 200 * FT_S;
  fk_find(&f, 704)->ppid = 100;
  got = look(o, &f, 704, f.now, a, &opens);
  CHECK(strcmp(got, "704 700 100") == 0 && a->chain[0].ctime == T0 + 51 * FT_S,
        "an event of the listed process, its PID now another's: \"%s\"", got);
  f.now = T0 + 300 * FT_S;
  got = look(o, &f, 704, 0, a, &opens);
  CHECK(strcmp(got, "704 100") == 0 && a->chain[0].ctime == T0 + 200 * FT_S, "now: the new process: \"%s\"", got);
  /* Cached, gone, its PID taken by a process that was listed and is gone
   * too: an event of the listing's time is the later one's. */
  fk_find(&f, 704)->alive = 0;
  procs[np++] = (fake_proc){704, T0 + 310 * FT_S, 104, "C:\\n.exe", 1, 0};
  f.n = np;
  f.now = T0 + 320 * FT_S;
  CHECK(wr_owners_watch(o) > 0, "listed");
  procs[np - 1].alive = 0;
  got = look(o, &f, 704, f.now, a, &opens);
  CHECK(strcmp(got, "704 104 100") == 0 && a->chain[0].ctime == T0 + 310 * FT_S,
        "the listed process, not the cached older one: \"%s\"", got);

  /* A launcher whose PID shares its place in the listing's table with
   * another live process (800 and 17524 do): it stays known as its child's
   * parent after it exits, also once later listings no longer have it. */
  wr_owners_set_process_source(o, &src);
  procs[np++] = (fake_proc){17524, T0 + 1 * FT_S, 100, "C:\\svc.exe", 1, 0};
  procs[np++] = (fake_proc){800, T0 + 330 * FT_S, 100, "launcher2.exe", 1, 0};
  procs[np++] = (fake_proc){900, T0 + 331 * FT_S, 800, "C:\\o.exe", 1, 0};
  f.n = np;
  f.now = T0 + 332 * FT_S;
  CHECK(wr_owners_watch(o) > 0, "listed with the launcher");
  fk_find(&f, 800)->alive = 0;
  f.now += FT_S / 4;
  CHECK(wr_owners_watch(o) > 0, "listed without it");
  got = look(o, &f, 900, 0, a, &opens);
  CHECK(strcmp(got, "900 800 100") == 0 && chain_is(a, 1, 800, T0 + 330 * FT_S, "launcher2.exe"),
        "a listed launcher gone, its place in the table another live process's: still the parent: \"%s\"", got);
  got = look(o, &f, 17524, 0, a, &opens);
  CHECK(strcmp(got, "17524 100") == 0, "and the other process is itself: \"%s\"", got);

  wr_owners_free(o);
  free(a);
}

int main(int argc, char **argv) {
  int rc = 0;
  if (tree_child_main(argc, argv, &rc)) return rc;
  return tests_main(argc, argv);
}
