/* The real WinDivert.dll (2.2.2, fetched by build/setup.sh) as the oracle
 * for the backend and the stand-in. Under wine the real DLL cannot reach its
 * driver, but its filter compiler and evaluator, its checksum helper and
 * WinDivertOpen's argument checks run as on Windows.
 *
 *   filters    every handle the backend opens (shim/capture/windivert/handles.h): its
 *              filter compiles at its layer
 *   built_filters  the NETWORK filters the backend builds from capture
 *              scopes (filter.c), for a table of configurations (through
 *              the real engine) and of scopes at WinDivert's limits:
 *              each compiles at the NETWORK layer, into fewer than 256
 *              tests (what the driver takes) and no more than the builder
 *              counted, the stand-in compiles it too, and the real
 *              WinDivertOpen passes it
 *   eval       on a table of filters (the built ones among them) and of
 *              packets and events, the stand-in's WinDivertHelperEvalFilter
 *              (the evaluator it diverts with) agrees with the real one
 *   compile    on a table of filters and layers, the stand-in's
 *              WinDivertHelperCompileFilter agrees with the real one
 *   delivered  every packet and event the stand-in handed the library in
 *              the other windivert tests (its WR_FAKE_WINDIVERT_RECORD)
 *              matches the receiving handle's filter: the real driver would
 *              have delivered it; every packet it offered a NETWORK handle
 *              and did not divert to it does not match that handle's filter
 *              (the real driver would not have diverted it either: a
 *              loopback packet and a `not loopback` filter); and its
 *              address holds, as the real DLL
 *              reads it, what the script line it came from says (event,
 *              PID, protocol, endpoints, direction, interface, flags); and
 *              no loopback packet arrives inbound, and a connection to a
 *              loopback address has the Loopback flag (the driver's rules); a
 *              REFLECT event's packet is a filter object the real DLL reads
 *   checksums  every packet the library sent parses as one whole packet
 *              (WinDivertHelperParsePacket), and one sent with a checksum
 *              marked valid keeps that checksum through
 *              WinDivertHelperCalcChecksums, as does every ICMP/ICMPv6
 *              message's (the driver has no flag for it: it takes it as
 *              right)
 *   open_args  WinDivertOpen on a table of argument sets, the backend's
 *              among them: the real DLL's argument checks pass the
 *              backend's, and the stand-in refuses what the real DLL (or,
 *              past it, the driver) refuses
 *
 * Environment (set by CTest): WR_REAL_WINDIVERT, the real DLL's path;
 * WR_FAKE_WINDIVERT_RECORD, the stand-in's record. */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "capture/windivert/filter.h"
#include "capture/windivert/handles.h"
#include "host.h"
#include "wd_scopes.h"
#include "wd_test_util.h"

typedef BOOL(__cdecl *eval_filter_fn)(const char *filter, const void *packet, UINT packet_len, const void *addr);
typedef BOOL(__cdecl *calc_checksums_fn)(void *packet, UINT packet_len, void *addr, uint64_t flags);
typedef BOOL(__cdecl *format_filter_fn)(const char *filter, int layer, char *buffer, UINT buffer_len);
typedef BOOL(__cdecl *parse_packet_fn)(const void *packet, UINT packet_len, void **ip, void **ipv6, uint8_t *protocol,
                                       void **icmp, void **icmpv6, void **tcp, void **udp, void **data,
                                       UINT *data_len, void **next, UINT *next_len);

/* WinDivertHelperCalcChecksums flags: leave this checksum alone. */
#define NO_IP_CHECKSUM 1ull
#define NO_TCP_CHECKSUM 8ull
#define NO_UDP_CHECKSUM 16ull

/* The address's flag bits (WINDIVERT_ADDRESS, the word at offset 8). */
#define BIT_OUTBOUND 17
#define BIT_LOOPBACK 18
#define BIT_IPCSUM 21
#define BIT_TCPCSUM 22
#define BIT_UDPCSUM 23

typedef struct {
  HMODULE dll;
  wd_open_fn open;
  wd_close_fn close;
  wd_compile_filter_fn compile;
  eval_filter_fn eval;
  calc_checksums_fn calc;
  parse_packet_fn parse;
  format_filter_fn format;
} wd_dll;

/* A path CTest gave in Unix form (/work/...) as wine sees it (Z:\work\...). */
static void windows_path(const char *in, char *out, size_t cap) {
  snprintf(out, cap, "%s%s", in[0] == '/' ? "Z:" : "", in);
  for (char *p = out; *p; p++) {
    if (*p == '/') *p = '\\';
  }
}

static int load(wd_dll *d, const char *path) {
  memset(d, 0, sizeof *d);
  d->dll = LoadLibraryA(path);
  if (!d->dll) {
    CHECK(0, "LoadLibrary(%s) failed with Windows error %lu", path, (unsigned long)GetLastError());
    return 0;
  }
  d->open = (wd_open_fn)(void *)GetProcAddress(d->dll, "WinDivertOpen");
  d->close = (wd_close_fn)(void *)GetProcAddress(d->dll, "WinDivertClose");
  d->compile = (wd_compile_filter_fn)(void *)GetProcAddress(d->dll, "WinDivertHelperCompileFilter");
  d->eval = (eval_filter_fn)(void *)GetProcAddress(d->dll, "WinDivertHelperEvalFilter");
  d->calc = (calc_checksums_fn)(void *)GetProcAddress(d->dll, "WinDivertHelperCalcChecksums");
  d->parse = (parse_packet_fn)(void *)GetProcAddress(d->dll, "WinDivertHelperParsePacket");
  d->format = (format_filter_fn)(void *)GetProcAddress(d->dll, "WinDivertHelperFormatFilter");
  CHECK(d->open && d->close && d->compile, "%s exports WinDivertOpen, WinDivertClose, WinDivertHelperCompileFilter",
        path);
  return d->open && d->close && d->compile;
}

/* The real DLL, with every helper the oracle needs. A missing DLL fails
 * the test and says how to get it. */
static int load_real(wd_dll *d) {
  const char *env = getenv("WR_REAL_WINDIVERT");
  char path[MAX_PATH];
  if (!env || !env[0]) {
    CHECK(0, "WR_REAL_WINDIVERT is not set (CTest sets it to build/vendor/windivert-2.2.2/WinDivert64.dll)");
    return 0;
  }
  windows_path(env, path, sizeof path);
  if (GetFileAttributesA(path) == INVALID_FILE_ATTRIBUTES) {
    CHECK(0,
          "the real WinDivert64.dll 2.2.2 is missing at %s: build/setup.sh fetches it from PyPI (pydivert 4.0.1's "
          "win_amd64 wheel); run it on a machine that reaches PyPI",
          path);
    return 0;
  }
  if (!load(d, path)) return 0;
  CHECK(d->eval && d->calc && d->parse && d->format,
        "the real DLL exports WinDivertHelperEvalFilter, WinDivertHelperCalcChecksums, WinDivertHelperParsePacket, "
        "WinDivertHelperFormatFilter");
  return d->eval && d->calc && d->parse && d->format;
}

/* The stand-in, built into fakewd beside this program. */
static int load_standin(wd_dll *d) {
  char path[MAX_PATH];
  GetModuleFileNameA(NULL, path, sizeof path);
  strcpy(strrchr(path, '\\'), "\\fakewd\\WinDivert.dll");
  return load(d, path);
}

static const char *layer_name(int layer) {
  static const char *const names[] = {"NETWORK", "NETWORK_FORWARD", "FLOW", "SOCKET", "REFLECT"};
  return layer >= 0 && layer <= 4 ? names[layer] : "(invalid)";
}

/* ------------------------------------------------------------------------
 * filters */

static int compiles(const wd_dll *d, const char *filter, int layer, const char **why, UINT *pos) {
  char object[8192];
  *why = "";
  *pos = 0;
  return d->compile(filter, layer, object, sizeof object, why, pos);
}

TEST_CASE(filters) {
  wd_dll real;
  if (!load_real(&real)) return;
  const char *why;
  UINT pos;
#define COMPILE_ONE(name, filter, layer, priority, flags)                                                   \
  CHECK(compiles(&real, filter, layer, &why, &pos), "the %s handle's filter \"%s\" at layer %s: %s at %u", \
        name, filter, layer_name(layer), why ? why : "?", pos);
  WR_WD_HANDLES(COMPILE_ONE)
#undef COMPILE_ONE
  /* The oracle can say no: a TCP port is no SOCKET-layer field, and a
   * comparison needs its right-hand side. */
  CHECK(!compiles(&real, "tcp.DstPort == 80", WD_LAYER_SOCKET, &why, &pos),
        "the real DLL refuses tcp.DstPort at the SOCKET layer");
  CHECK(!compiles(&real, "tcp.DstPort ==", WD_LAYER_NETWORK, &why, &pos), "the real DLL refuses \"tcp.DstPort ==\"");
  FreeLibrary(real.dll);
}

/* Filters the backend may open (issue 15: built from the configuration,
 * loopback excluded, ICMP errors) and ones WinDivert refuses, at their
 * layer: the stand-in's compiler must agree with the real one. */
typedef struct {
  const char *filter;
  int layer;
} filter_row;

static const filter_row FILTER_ROWS[] = {
    {"!loopback and (tcp or udp)", WD_LAYER_NETWORK},
    {"not (tcp or udp)", WD_LAYER_NETWORK},
    {"not not loopback and tcp", WD_LAYER_NETWORK},
    {"(ip or ipv6) and tcp and not loopback and ((remotePort == 443 and (remoteAddr >= 93.184.216.0 and "
     "remoteAddr <= 93.184.216.255)) or localPort == 8080)",
     WD_LAYER_NETWORK},
    {"remoteAddr >= fd00:0:0:0:0:0:0:0 and remoteAddr <= fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", WD_LAYER_NETWORK},
    {"localAddr == 2001:db8:0:0:0:0:0:5", WD_LAYER_NETWORK},
    {"not loopback && (ip || ipv6) && (tcp || udp)", WD_LAYER_NETWORK},
    {"outbound and tcp.DstPort == 443", WD_LAYER_NETWORK},
    {"tcp.SrcPort == 8080 or udp.SrcPort == 8080", WD_LAYER_NETWORK},
    {"tcp.DstPort = 80", WD_LAYER_NETWORK},
    {"ip.DstAddr == 198.18.0.1", WD_LAYER_NETWORK},
    {"ip.DstAddr >= 198.18.0.0 and ip.DstAddr <= 198.19.255.255", WD_LAYER_NETWORK},
    {"ipv6.DstAddr == fd00::1", WD_LAYER_NETWORK},
    {"ip.DstAddr == 300.1.1.1", WD_LAYER_NETWORK},
    {"icmp.Type == 3 and icmp.Code == 4", WD_LAYER_NETWORK},
    {"icmpv6.Type == 2", WD_LAYER_NETWORK},
    {"localPort == 80 and protocol == TCP", WD_LAYER_NETWORK},
    {"processId == 4", WD_LAYER_NETWORK},
    {"event == PACKET", WD_LAYER_NETWORK},
    {"false", WD_LAYER_NETWORK},
    {"tcp and", WD_LAYER_NETWORK},
    {"tcp udp", WD_LAYER_NETWORK},
    {"loopback", WD_LAYER_NETWORK_FORWARD},
    {"event == CONNECT or event == ACCEPT", WD_LAYER_SOCKET},
    {"processId != 4 and (tcp or udp)", WD_LAYER_SOCKET},
    {"not loopback and localPort == 80", WD_LAYER_SOCKET},
    {"remoteAddr == ::1 or remoteAddr == 127.0.0.1", WD_LAYER_SOCKET},
    {"ifIdx == 1", WD_LAYER_SOCKET},
    {"ip.DstAddr == 1.2.3.4", WD_LAYER_SOCKET},
    {"layer == NETWORK and priority == -1000", WD_LAYER_REFLECT},
    {"processId == 1", WD_LAYER_REFLECT},
    {"tcp", WD_LAYER_REFLECT},
};

TEST_CASE(compile) {
  wd_dll real, standin;
  if (!load_real(&real) || !load_standin(&standin)) return;
  const char *why;
  UINT pos;
  for (size_t i = 0; i < sizeof FILTER_ROWS / sizeof FILTER_ROWS[0]; i++) {
    const filter_row *r = &FILTER_ROWS[i];
    int real_ok = compiles(&real, r->filter, r->layer, &why, &pos);
    char real_why[200];
    snprintf(real_why, sizeof real_why, "%s at %u", why ? why : "?", pos);
    int standin_ok = compiles(&standin, r->filter, r->layer, &why, &pos);
    printf("%-8s %-58s real DLL: %-40s stand-in: %s\n", layer_name(r->layer), r->filter,
           real_ok ? "compiles" : real_why, standin_ok ? "compiles" : "refuses");
    CHECK(real_ok == standin_ok, "\"%s\" at layer %s: the real DLL %s it (%s), the stand-in %s", r->filter,
          layer_name(r->layer), real_ok ? "compiles" : "refuses", real_ok ? "" : real_why,
          standin_ok ? "compiles it" : "refuses it");
  }
  FreeLibrary(standin.dll);
  FreeLibrary(real.dll);
}

/* ------------------------------------------------------------------------
 * built_filters */

/* How many tests a compiled filter object holds: "@WinDiv_", a version and
 * a length, each a number of 5-bit digits, most significant first, the
 * last one marked (dll/windivert_shared.c, WinDivertSerializeFilter). -1
 * when it is no such object. */
static int object_length(const char *object) {
  static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+=";
  if (strncmp(object, "@WinDiv_", 8) != 0) return -1;
  const char *p = object + 8;
  long value = -1;
  for (int number = 0; number < 2; number++) {
    value = 0;
    for (;; p++) {
      const char *d = *p ? strchr(digits, *p) : NULL;
      if (!d) return -1;
      int digit = (int)(d - digits);
      value = value * 32 + (digit & 31);
      if (digit >= 32) {
        p++;
        break;
      }
    }
  }
  return (int)value;
}

typedef struct {
  const char *what;
  const char *config; /* NULL: the scope is made by hand */
  uint16_t app_port;
  int narrowed, too_long; /* what the builder must say */
} built_row;

static const built_row BUILT_ROWS[] = {
    {"nothing to intercept", "{}", 8080, 0, 0},
    {"no app port", "{\"intercept_pids\": [1234]}", 0, 0, 0},
    {"loopback bypassed (the defaults)", "{\"intercept_pids\": [1234]}", 8080, 0, 0},
    {"loopback intercepted", "{\"intercept_pids\": [1234], \"bypass\": []}", 8080, 0, 0},
    {"tcp only", "{\"intercept\": \"curl\", \"protocols\": [\"tcp\"]}", 8080, 0, 0},
    {"udp, inbound only", "{\"intercept\": \"curl\", \"protocols\": \"udp\", \"directions\": [\"inbound\"]}",
     8080, 0, 0},
    {"ports and ranges", "{\"intercept_pids\": [1], \"ports\": [443, \"8000-8100\", 53, \"1-1023\"]}", 8080, 1, 0},
    {"destinations v4 and v6",
     "{\"intercept_pids\": [1], \"destinations\": [\"198.18.0.0/15\", \"10.0.0.1\", \"fd00::/8\", \"2001:db8::1\", "
     "\"0.0.0.0/0\", \"::/1\"]}",
     8080, 1, 0},
    {"ports, destinations, outbound only",
     "{\"intercept_pids\": [1], \"ports\": [443], \"destinations\": [\"93.184.216.0/24\"], \"directions\": "
     "[\"outbound\"], \"bypass\": [\"multicast\"]}",
     65535, 1, 0},
    {"128 ports outbound (fits)", NULL, 0, 1, 0},
    {"128 ports both ways (too long)", NULL, 0, 0, 1},
    {"at the builder's limit", NULL, 0, 1, 0},
    {"one past it", NULL, 0, 0, 1},
    {"the largest lists", NULL, 0, 0, 1},
};

/* The scope of a row: through the real engine (configuration and app port)
 * or by hand. */
static int row_scope(const built_row *r, wr_capture_scope *s) {
  if (!r->config) {
    if (strstr(r->what, "limit")) ws_at_limit(s, 0);
    else if (strstr(r->what, "past")) ws_at_limit(s, 1);
    else if (strstr(r->what, "largest")) ws_largest(s);
    else {
      ws_clear(s, WR_SCOPE_TCP | WR_SCOPE_UDP | WR_SCOPE_REMOTE | WR_SCOPE_REMOTE_ANY_NET |
                      (strstr(r->what, "both") ? WR_SCOPE_LOCAL | WR_SCOPE_LOCAL_ANY_NET : 0));
      ws_app(s, 8080);
      ws_ports(&s->remote, WR_SCOPE_PORTS_CAP, 2);
      if (strstr(r->what, "both")) ws_ports(&s->local, WR_SCOPE_PORTS_CAP, 2);
    }
    return 1;
  }
  char err[256];
  wr_engine *e = wr_engine_new(GetCurrentProcessId(), err, sizeof err);
  CHECK(e != NULL, "engine: %s", err);
  if (!e) return 0;
  int ok = wr_engine_config(e, r->config, strlen(r->config), err, sizeof err) == 0;
  CHECK(ok, "%s: config %s: %s", r->what, r->config, err);
  wr_engine_set_app_port(e, r->app_port);
  ok = ok && wr_engine_capture_scope(e, s) == 0;
  wr_engine_free(e);
  return ok;
}

/* Every row's filter, into filters[i] (each WR_WD_FILTER_CAP). */
static void built_filters(char (*filters)[WR_WD_FILTER_CAP], wr_wd_filter_info *infos) {
  for (size_t i = 0; i < sizeof BUILT_ROWS / sizeof BUILT_ROWS[0]; i++) {
    wr_capture_scope s;
    filters[i][0] = '\0';
    memset(&infos[i], 0, sizeof infos[i]);
    if (row_scope(&BUILT_ROWS[i], &s)) wr_wd_net_filter(&s, filters[i], WR_WD_FILTER_CAP, &infos[i]);
  }
}

#define BUILT_N (sizeof BUILT_ROWS / sizeof BUILT_ROWS[0])
static char g_built[BUILT_N][WR_WD_FILTER_CAP];
static wr_wd_filter_info g_built_info[BUILT_N];

TEST_CASE(built_filters) {
  wd_dll real, standin;
  if (!load_real(&real) || !load_standin(&standin)) return;
  built_filters(g_built, g_built_info);
  static char object[65536];
  for (size_t i = 0; i < BUILT_N; i++) {
    const built_row *r = &BUILT_ROWS[i];
    const char *f = g_built[i];
    const wr_wd_filter_info *in = &g_built_info[i];
    const char *why = "";
    UINT pos = 0;
    BOOL ok = f[0] && real.compile(f, WD_LAYER_NETWORK, object, sizeof object, &why, &pos);
    int tests = ok ? object_length(object) : -1;
    printf("%-34s %3d tests (builder %3d, %d tokens)%s: %.110s%s\n", r->what, tests, in->tests, in->tokens,
           in->too_long ? ", lists left out" : "", f, strlen(f) > 110 ? "..." : "");
    CHECK(ok, "%s: the real DLL compiles \"%.200s\": %s at %u", r->what, f, why ? why : "?", pos);
    CHECK(tests >= 1 && tests < 256 && tests <= (in->tests ? in->tests : 1),
          "%s: %d tests in the compiled object (the driver takes fewer than 256; the builder counted %d)", r->what,
          tests, in->tests);
    CHECK(in->narrowed == r->narrowed && in->too_long == r->too_long, "%s: narrowed %d (expected %d), too long %d (%d)",
          r->what, in->narrowed, r->narrowed, in->too_long, r->too_long);
    CHECK(standin.compile(f, WD_LAYER_NETWORK, NULL, 0, &why, &pos), "%s: the stand-in compiles it too", r->what);
    /* Past the DLL's own checks: it stops at the missing driver (1060). */
    SetLastError(0);
    HANDLE h = real.open(f, WD_LAYER_NETWORK, NET_PRIORITY, NET_FLAGS | WD_FLAG_NO_INSTALL);
    DWORD e = GetLastError();
    if (h != INVALID_HANDLE_VALUE && h != NULL) real.close(h);
    CHECK(e == WD_ERROR_SERVICE_DOES_NOT_EXIST, "%s: the real WinDivertOpen passes it (error %lu)", r->what,
          (unsigned long)e);
  }
  /* The rows say what they are. */
#define ICMP_NL "(" NET_ICMP_ERRORS " and not loopback)"
  CHECK(strcmp(g_built[0], ICMP_NL) == 0 && strcmp(g_built[1], ICMP_NL) == 0,
        "nothing to capture: the ICMP errors only, not loopback ones: %s", g_built[0]);
  CHECK(strcmp(g_built[2], "((ip or ipv6) and (tcp or udp) and not loopback) or " ICMP_NL) == 0,
        "the defaults: %s", g_built[2]);
  CHECK(strcmp(g_built[3], NET_FILTER) == 0, "loopback intercepted: %s", g_built[3]);
  FreeLibrary(standin.dll);
  FreeLibrary(real.dll);
}

/* ------------------------------------------------------------------------
 * eval */

typedef struct {
  const char *what;
  wd_address addr;
  uint8_t data[128];
  UINT len;
} eval_event;

static void packet_event(eval_event *e, const char *what, int v6, const char *src, uint16_t sport, const char *dst,
                         uint16_t dport, int udp, int outbound, int loopback) {
  memset(e, 0, sizeof *e);
  e->what = what;
  tu_tuple t;
  memset(&t, 0, sizeof t);
  t.v6 = v6;
  inet_pton(v6 ? AF_INET6 : AF_INET, src, t.src);
  inet_pton(v6 ? AF_INET6 : AF_INET, dst, t.dst);
  t.sport = sport;
  t.dport = dport;
  e->len = (UINT)(udp ? tu_udp(e->data, &t, "datagram") : tu_tcp(e->data, &t, 1, 0, TU_SYN, NULL));
  e->addr.layer = WD_LAYER_NETWORK;
  e->addr.outbound = (unsigned)outbound;
  e->addr.loopback = (unsigned)loopback;
  e->addr.ipv6 = (unsigned)v6;
  e->addr.ip_checksum = e->addr.tcp_checksum = e->addr.udp_checksum = 1;
  e->addr.u.network.if_idx = 7;
  e->addr.u.network.sub_if_idx = 3;
}

/* An ICMP (v4: destination unreachable) or ICMPv6 (packet too big) error
 * arriving, quoting zeros. */
static void icmp_event(eval_event *e, const char *what, int v6) {
  memset(e, 0, sizeof *e);
  e->what = what;
  uint8_t *p = e->data;
  if (!v6) {
    static const uint8_t h[20] = {0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 1, 10, 0, 0, 5};
    memcpy(p, h, sizeof h);
    p[20] = 3; /* type */
    p[21] = 4; /* code */
    e->len = 56;
  } else {
    p[0] = 0x60;
    p[5] = 48; /* payload length */
    p[6] = 58;
    p[7] = 64;
    inet_pton(AF_INET6, "2001:db8::1", p + 8);
    inet_pton(AF_INET6, "fd00::2", p + 24);
    p[40] = 2; /* type: packet too big */
    e->len = 88;
  }
  e->addr.layer = WD_LAYER_NETWORK;
  e->addr.ipv6 = (unsigned)v6;
  e->addr.ip_checksum = e->addr.tcp_checksum = e->addr.udp_checksum = 1;
  e->addr.u.network.if_idx = 7;
}

/* A SOCKET CONNECT event (no packet): IPv4 ends as ::ffff:a.b.c.d. */
static void socket_event(eval_event *e, const char *what, const char *local, uint16_t lport, const char *remote,
                         uint16_t rport, int loopback) {
  memset(e, 0, sizeof *e);
  e->what = what;
  e->addr.layer = WD_LAYER_SOCKET;
  e->addr.event = WD_EVENT_SOCKET_CONNECT;
  e->addr.sniffed = 1;
  e->addr.outbound = 1;
  e->addr.loopback = (unsigned)loopback;
  uint8_t l[4], r[4];
  inet_pton(AF_INET, local, l);
  inet_pton(AF_INET, remote, r);
  e->addr.u.socket.local_addr[0] = (uint32_t)l[0] << 24 | (uint32_t)l[1] << 16 | (uint32_t)l[2] << 8 | l[3];
  e->addr.u.socket.remote_addr[0] = (uint32_t)r[0] << 24 | (uint32_t)r[1] << 16 | (uint32_t)r[2] << 8 | r[3];
  e->addr.u.socket.local_addr[1] = e->addr.u.socket.remote_addr[1] = 0xffff;
  e->addr.u.socket.local_port = lport;
  e->addr.u.socket.remote_port = rport;
  e->addr.u.socket.process_id = 1234;
  e->addr.u.socket.protocol = 6;
}

static const char *const EVAL_FILTERS[] = {
    "true", "false", "zero", "tcp", "udp", "not udp", "ip", "ipv6", "icmp", "loopback", "not loopback", "!loopback",
    "impostor", "outbound", "inbound and tcp", "tcp.DstPort == 443", "not tcp.DstPort == 443", "tcp.DstPort != 443",
    "not tcp.DstPort != 443", "udp.SrcPort == 53 or udp.DstPort == 53", "tcp.Syn and not tcp.Ack", "tcp.Syn == 0",
    "remotePort == 443", "localPort == 50000", "remotePort >= 50 and remotePort <= 60", "remotePort < 1024",
    "remotePort > 1023", "protocol == TCP", "protocol == 17", "length > 60", "length <= 60",
    "ifIdx == 7 and subIfIdx == 3", "remoteAddr == 93.184.216.34", "localAddr == 10.0.0.5",
    "remoteAddr >= 93.184.216.0 and remoteAddr <= 93.184.216.255",
    "remoteAddr >= 0.0.0.0 and remoteAddr <= 255.255.255.255",
    "remoteAddr >= fd00:0:0:0:0:0:0:0 and remoteAddr <= fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "localAddr == fd00::2", "remoteAddr == ::1 or remoteAddr == 127.0.0.1", "ip.DstAddr == 93.184.216.34",
    "ip.SrcAddr < 10.0.0.6", "ipv6.SrcAddr == fd00::2", "ip.TTL > 0", "ipv6.HopLimit > 0", "event == PACKET",
    "tcp and (remotePort == 443 or localPort == 443) or udp and remotePort == 53",
    "not loopback and (tcp or udp) and (remotePort == 80 or localPort == 8080)",
    "icmp.Type == 3 and icmp.Code == 4", "icmpv6.Type >= 1 and icmpv6.Type <= 4", "not icmp.Type == 3",
    "icmp and remotePort == 3", "icmpv6 and localPort == 0",
};

static const char *const EVAL_SOCKET_FILTERS[] = {
    "tcp or udp", "udp", "loopback", "not loopback", "remoteAddr == 127.0.0.1 or remoteAddr == ::1",
    "processId == 1234 and localPort == 50000", "event == CONNECT", "remotePort == 443", "localAddr == 10.0.0.5",
    "remoteAddr >= 93.184.216.0 and remoteAddr <= 93.184.216.255", "ipv6",
};

/* Both DLLs' verdict: 1 match, 0 no match, -1 an error (with its code). */
static int eval_with(const wd_dll *d, const char *filter, const eval_event *e, DWORD *err) {
  int eventonly = e->addr.layer == WD_LAYER_SOCKET;
  SetLastError(0);
  BOOL m = d->eval(filter, eventonly ? NULL : e->data, eventonly ? 0 : e->len, &e->addr);
  *err = GetLastError();
  return m ? 1 : *err ? -1 : 0;
}

static int g_evaluated, g_matched;

static void eval_agree(const wd_dll *real, const wd_dll *standin, const char *filter, const eval_event *e) {
  DWORD re = 0, se = 0;
  int r = eval_with(real, filter, e, &re), st = eval_with(standin, filter, e, &se);
  g_evaluated++;
  g_matched += r == 1;
  CHECK(r == st, "\"%.200s\" on %s: the real DLL says %d (error %lu), the stand-in %d (error %lu)", filter, e->what,
        r, (unsigned long)re, st, (unsigned long)se);
}

TEST_CASE(eval) {
  wd_dll real, standin;
  if (!load_real(&real) || !load_standin(&standin)) return;
  standin.eval = (eval_filter_fn)(void *)GetProcAddress(standin.dll, "WinDivertHelperEvalFilter");
  CHECK(standin.eval != NULL, "the stand-in exports WinDivertHelperEvalFilter");
  if (!standin.eval) return;
  eval_event ev[12];
  packet_event(&ev[0], "a TCP SYN out to 93.184.216.34:443", 0, "10.0.0.5", 50000, "93.184.216.34", 443, 0, 1, 0);
  packet_event(&ev[1], "a TCP reply in from 93.184.216.34:443", 0, "93.184.216.34", 443, "10.0.0.5", 50000, 0, 0, 0);
  packet_event(&ev[2], "a UDP query out to 192.0.2.53:53", 0, "10.0.0.5", 53000, "192.0.2.53", 53, 1, 1, 0);
  packet_event(&ev[3], "an IPv6 TCP SYN out", 1, "fd00::2", 40000, "fd00:198:18::10", 80, 0, 1, 0);
  packet_event(&ev[4], "an IPv6 UDP datagram in", 1, "2001:db8::9", 5353, "fd00::2", 8080, 1, 0, 0);
  packet_event(&ev[5], "a loopback TCP SYN", 0, "127.0.0.1", 50070, "127.0.0.1", 5432, 0, 1, 1);
  packet_event(&ev[6], "a proxy reply from the app port", 0, "10.0.0.5", 8080, "93.184.216.34", 50000, 0, 1, 0);
  icmp_event(&ev[7], "an ICMP destination unreachable in", 0);
  icmp_event(&ev[8], "an ICMPv6 packet too big in", 1);
  icmp_event(&ev[9], "a loopback ICMP destination unreachable", 0);
  ev[9].addr.loopback = 1;
  ev[9].addr.outbound = 1;
  socket_event(&ev[10], "a SOCKET CONNECT to 93.184.216.34:443", "10.0.0.5", 50000, "93.184.216.34", 443, 0);
  socket_event(&ev[11], "a SOCKET CONNECT to 127.0.0.1:5432", "127.0.0.1", 50070, "127.0.0.1", 5432, 1);
  built_filters(g_built, g_built_info);
  for (size_t i = 0; i < 10; i++) {
    for (size_t k = 0; k < sizeof EVAL_FILTERS / sizeof EVAL_FILTERS[0]; k++) {
      eval_agree(&real, &standin, EVAL_FILTERS[k], &ev[i]);
    }
    for (size_t k = 0; k < BUILT_N; k++) {
      if (g_built[k][0]) eval_agree(&real, &standin, g_built[k], &ev[i]);
    }
  }
  for (size_t i = 10; i < 12; i++) {
    for (size_t k = 0; k < sizeof EVAL_SOCKET_FILTERS / sizeof EVAL_SOCKET_FILTERS[0]; k++) {
      eval_agree(&real, &standin, EVAL_SOCKET_FILTERS[k], &ev[i]);
    }
  }
  /* A filter neither compiles, and a packet field at the SOCKET layer: errors both. */
  eval_agree(&real, &standin, "tcp and", &ev[0]);
  eval_agree(&real, &standin, "tcp.DstPort == 443", &ev[10]);
  printf("%d evaluations, %d matches: the stand-in agrees with the real DLL on each\n", g_evaluated, g_matched);
  CHECK(g_matched > 50 && g_evaluated - g_matched > 50, "the table has matches and misses both");
  FreeLibrary(standin.dll);
  FreeLibrary(real.dll);
}

/* ------------------------------------------------------------------------
 * The stand-in's record */

typedef struct {
  char kind[16];
  int layer;
  uint8_t addr[WD_ADDRESS_SIZE];
  uint8_t *data;
  UINT len;
  const char *filter; /* into the line */
  const char *script; /* the stand-in's script line (deliveries) */
} record_line;

static char *read_record(void) {
  const char *path = getenv("WR_FAKE_WINDIVERT_RECORD");
  if (!path || !path[0]) {
    CHECK(0, "WR_FAKE_WINDIVERT_RECORD is not set (CTest sets it for every windivert test)");
    return NULL;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    CHECK(0, "no record at %s: run the whole windivert label (ctest -L windivert), whose scenarios write it", path);
    return NULL;
  }
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)size + 1);
  size_t got = s ? fread(s, 1, (size_t)size, f) : 0;
  fclose(f);
  if (s) s[got] = '\0';
  return s;
}

/* Parses one record line in place; 0 when malformed. */
static int parse_record(char *line, record_line *r) {
  memset(r, 0, sizeof *r);
  if (sscanf(line, "%15s", r->kind) != 1) return 0;
  char *layer = strstr(line, " layer=");
  r->layer = layer ? atoi(layer + 7) : 0;
  char *addr = strstr(line, " addr=");
  char *len = strstr(line, " len=");
  char *data = strstr(line, " data=");
  if (!addr || !len || !data) return 0;
  if (tu_unhex(addr + 6, r->addr, sizeof r->addr) != sizeof r->addr) return 0;
  r->len = (UINT)strtoul(len + 5, NULL, 10);
  char *filter = strstr(data, " filter=");
  if (filter) {
    *filter = '\0';
    r->filter = filter + 8;
  }
  char *script = strstr(data, " script=");
  if (script) {
    *script = '\0';
    r->script = script + 8;
  }
  r->data = malloc(r->len ? r->len : 1);
  if (!r->data) return 0;
  if (r->len && tu_unhex(data + 6, r->data, r->len) != r->len) {
    free(r->data);
    return 0;
  }
  return 1;
}

static int addr_bit(const uint8_t *a, int b) {
  uint32_t v;
  memcpy(&v, a + 8, 4);
  return (int)((v >> b) & 1);
}

/* Calls fn for each record line of the given kind; returns how many. */
static int each_record(const char *kind, void (*fn)(const wd_dll *, const record_line *, int), const wd_dll *real) {
  char *text = read_record();
  if (!text) return 0;
  int n = 0, lineno = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    lineno++;
    record_line r;
    if (!parse_record(line, &r)) {
      CHECK(0, "record line %d is malformed: %.120s", lineno, line);
      continue;
    }
    if (strcmp(r.kind, kind) == 0) {
      fn(real, &r, lineno);
      n++;
    }
    free(r.data);
  }
  free(text);
  return n;
}

/* ------------------------------------------------------------------------
 * delivered */

static int g_by_layer[5], g_loopback;

/* key=VALUE of a script line, into out; 0 when absent. */
static int script_field(const char *line, const char *key, char *out, size_t cap) {
  size_t k = strlen(key);
  for (const char *p = line; (p = strstr(p, key)) != NULL; p++) {
    if ((p == line || p[-1] == ' ') && p[k] == '=') {
      size_t n = strcspn(p + k + 1, " ");
      if (n >= cap) n = cap - 1;
      memcpy(out, p + k + 1, n);
      out[n] = '\0';
      return 1;
    }
  }
  return 0;
}

static int script_word(const char *line, const char *word) {
  size_t k = strlen(word);
  for (const char *p = line; (p = strstr(p, word)) != NULL; p++) {
    if ((p == line || p[-1] == ' ') && (p[k] == ' ' || p[k] == '\0')) return 1;
  }
  return 0;
}

/* " and ADDR_FIELD == A and PORT_FIELD == P" for a script endpoint
 * (a.b.c.d:port or [v6]:port). */
static void endpoint_terms(char *out, size_t cap, const char *endpoint, const char *addr_field, const char *port_field) {
  char host[80] = "";
  const char *port;
  if (endpoint[0] == '[') {
    const char *close = strchr(endpoint, ']');
    size_t n = close ? (size_t)(close - endpoint - 1) : 0;
    if (n >= sizeof host) n = sizeof host - 1;
    memcpy(host, endpoint + 1, n);
    host[n] = '\0';
    port = close && close[1] == ':' ? close + 2 : "0";
  } else {
    const char *colon = strrchr(endpoint, ':');
    size_t n = colon ? (size_t)(colon - endpoint) : strlen(endpoint);
    if (n >= sizeof host) n = sizeof host - 1;
    memcpy(host, endpoint, n);
    host[n] = '\0';
    port = colon ? colon + 1 : "0";
  }
  size_t len = strlen(out);
  snprintf(out + len, cap - len, " and %s == %s and %s == %s", addr_field, host, port_field, port);
}

/* The script line a delivery came from, as a filter over the fields the
 * stand-in was told to write: the real DLL evaluates it against the
 * address the stand-in wrote, so a field at a wrong offset, in a wrong byte
 * or word order, or with a wrong value does not match. "" when the line
 * says nothing to check. */
static void script_filter(const record_line *r, char *out, size_t cap) {
  const char *line = r->script ? r->script : "";
  char v[96], ev[32] = "";
  out[0] = '\0';
  if (strncmp(line, "socket ", 7) == 0 && r->layer == WD_LAYER_SOCKET) {
    sscanf(line + 7, "%31s", ev);
    for (char *c = ev; *c; c++) *c = (char)toupper((unsigned char)*c);
    snprintf(out, cap, "event == %s", ev);
    size_t n = strlen(out);
    if (script_field(line, "pid", v, sizeof v)) snprintf(out + n, cap - n, " and processId == %s", v);
    n = strlen(out);
    if (script_field(line, "proto", v, sizeof v))
      snprintf(out + n, cap - n, " and protocol == %d", strcmp(v, "udp") == 0 ? 17 : 6);
    if (script_field(line, "local", v, sizeof v)) endpoint_terms(out, cap, v, "localAddr", "localPort");
    if (script_field(line, "remote", v, sizeof v)) endpoint_terms(out, cap, v, "remoteAddr", "remotePort");
    n = strlen(out);
    snprintf(out + n, cap - n, " and %sloopback", script_word(line, "loopback") ? "" : "not ");
  } else if (strncmp(line, "packet ", 7) == 0 && r->layer == WD_LAYER_NETWORK) {
    snprintf(out, cap, "event == PACKET and %s and %sloopback and %simpostor and ifIdx == %s",
             strncmp(line, "packet out", 10) == 0 ? "outbound" : "inbound", script_word(line, "loopback") ? "" : "not ",
             script_word(line, "impostor") ? "" : "not ", script_field(line, "if", v, sizeof v) ? v : "1");
    size_t n = strlen(out);
    snprintf(out + n, cap - n, " and subIfIdx == %s", script_field(line, "sub", v, sizeof v) ? v : "0");
  } else if (strncmp(line, "reflect ", 8) == 0 && r->layer == WD_LAYER_REFLECT) {
    snprintf(out, cap, "event == OPEN");
    size_t n = strlen(out);
    if (script_field(line, "pid", v, sizeof v)) snprintf(out + n, cap - n, " and processId == %s", v);
    n = strlen(out);
    if (script_field(line, "layer", v, sizeof v)) snprintf(out + n, cap - n, " and layer == %s", v);
    n = strlen(out);
    if (script_field(line, "priority", v, sizeof v)) snprintf(out + n, cap - n, " and priority == %s", v);
  }
}

static void check_delivered(const wd_dll *real, const record_line *r, int lineno) {
  CHECK(r->filter != NULL, "record line %d: a delivery names its handle's filter", lineno);
  if (!r->filter) return;
  CHECK((r->addr[8] & 0xff) == r->layer, "record line %d: the address's layer %d is the handle's %d", lineno,
        r->addr[8], r->layer);
  /* FLOW and SOCKET events carry no packet. */
  int eventonly = r->layer == WD_LAYER_FLOW || r->layer == WD_LAYER_SOCKET;
  SetLastError(0);
  BOOL match = real->eval(r->filter, eventonly ? NULL : r->data, eventonly ? 0 : r->len, r->addr);
  DWORD err = GetLastError();
  char hex[121];
  tu_hex(r->data, r->len < 60 ? r->len : 60, hex);
  CHECK(match, "record line %d: the stand-in delivered on a %s handle what its filter \"%s\" does not match "
        "(WinDivertHelperEvalFilter: %s%lu; loopback=%d; data %s%s)",
        lineno, layer_name(r->layer), r->filter, err ? "error " : "no match, error ", (unsigned long)err,
        addr_bit(r->addr, BIT_LOOPBACK), hex, r->len > 60 ? "..." : "");
  char fields[600];
  script_filter(r, fields, sizeof fields);
  CHECK(fields[0], "record line %d: the delivery names the script line it came from (got \"%s\")", lineno,
        r->script ? r->script : "");
  if (fields[0]) {
    SetLastError(0);
    match = real->eval(fields, eventonly ? NULL : r->data, eventonly ? 0 : r->len, r->addr);
    err = GetLastError();
    CHECK(match, "record line %d: the real DLL reads the stand-in's %s address otherwise than its script line "
          "\"%s\" says: \"%s\" does not match (error %lu)",
          lineno, layer_name(r->layer), r->script, fields, (unsigned long)err);
  }
  if (r->layer == WD_LAYER_SOCKET && (r->addr[9] == 4 || r->addr[9] == 6)) {
    /* The driver's rule again: a CONNECT or ACCEPT of a connection to a
     * loopback address (127.0.0.0/8, ::1) carries the Loopback flag (WFP's
     * IS_LOOPBACK at the ALE connect and accept layers). */
    SetLastError(0);
    BOOL to_loopback = real->eval("remoteAddr >= 127.0.0.0 and remoteAddr <= 127.255.255.255 or remoteAddr == ::1",
                                  NULL, 0, r->addr);
    CHECK(!to_loopback || addr_bit(r->addr, BIT_LOOPBACK),
          "record line %d: a SOCKET CONNECT/ACCEPT to a loopback address without the Loopback flag, which the real "
          "driver sets (script: %s)",
          lineno, r->script ? r->script : "");
  }
  if (r->layer == WD_LAYER_REFLECT) {
    /* A REFLECT event's packet is the other handle's filter object, which
     * WinDivertHelperFormatFilter turns back into text. */
    uint32_t reflected;
    memcpy(&reflected, r->addr + 28, 4);
    char text[1024] = "", *object = malloc(r->len + 1);
    if (object) {
      memcpy(object, r->data, r->len);
      object[r->len] = '\0';
      SetLastError(0);
      BOOL ok = real->format(object, (int)reflected, text, sizeof text);
      CHECK(ok, "record line %d: a REFLECT event's packet \"%s\" is no filter object the real DLL reads (error %lu)",
            lineno, object, (unsigned long)GetLastError());
      free(object);
    }
  }
  if (r->layer >= 0 && r->layer < 5) g_by_layer[r->layer]++;
  if (r->layer == WD_LAYER_NETWORK && addr_bit(r->addr, BIT_LOOPBACK)) {
    g_loopback++;
    /* Not the DLL's knowledge but the driver's (sys/windivert.c, 2.2.2):
     * its inbound IP-packet callouts pass loopback packets on without
     * diverting them, so loopback traffic arrives only as outbound. */
    CHECK(addr_bit(r->addr, 17), "record line %d: the stand-in delivered an inbound loopback packet, which the real "
          "driver never diverts (it sees loopback traffic only as outbound)", lineno);
  }
}

static int g_nomatch_loopback;

/* A packet the stand-in offered a NETWORK handle and did not divert to it:
 * the handle's filter must not match it (nor fail on it). */
static void check_not_diverted(const wd_dll *real, const record_line *r, int lineno) {
  CHECK(r->filter != NULL && r->layer == WD_LAYER_NETWORK, "record line %d: a NETWORK packet, with the filter", lineno);
  if (!r->filter) return;
  SetLastError(0);
  BOOL match = real->eval(r->filter, r->data, r->len, r->addr);
  DWORD err = GetLastError();
  CHECK(!match && err == 0,
        "record line %d: the stand-in did not divert on a handle with filter \"%s\" what the real DLL says it "
        "matches (%s, error %lu; script: %s)",
        lineno, r->filter, match ? "match" : "no match", (unsigned long)err, r->script ? r->script : "");
  if (addr_bit(r->addr, BIT_LOOPBACK)) g_nomatch_loopback++;
}

TEST_CASE(delivered) {
  wd_dll real;
  if (!load_real(&real)) return;
  int n = each_record("deliver", check_delivered, &real);
  printf("judged %d deliveries: NETWORK %d (loopback %d), SOCKET %d, REFLECT %d\n", n, g_by_layer[0], g_loopback,
         g_by_layer[3], g_by_layer[4]);
  CHECK(g_by_layer[WD_LAYER_NETWORK] > 0 && g_by_layer[WD_LAYER_SOCKET] > 0,
        "the record holds NETWORK packets and SOCKET events (run the whole windivert label)");
  int m = each_record("nomatch", check_not_diverted, &real);
  printf("judged %d packets a NETWORK handle's filter did not divert (loopback %d)\n", m, g_nomatch_loopback);
  CHECK(m > 0 && g_nomatch_loopback > 0,
        "the record holds packets not diverted, a loopback one among them (run the whole windivert label)");
  FreeLibrary(real.dll);
}

/* ------------------------------------------------------------------------
 * checksums */

static int g_checked, g_icmp_checked;

/* Is the packet addressed to a loopback address (127/8, ::1)? */
static int to_loopback_address(const uint8_t *p, uint32_t len) {
  if (len >= 20 && (p[0] >> 4) == 4) return p[16] == 127;
  static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return len >= 40 && (p[0] >> 4) == 6 && memcmp(p + 24, one, 16) == 0;
}

static void check_sent(const wd_dll *real, const record_line *r, int lineno) {
  /* The driver's, not the DLL's (WinDivert issue #82): an inbound injection
   * on the loopback interface returns success and is never delivered, so a
   * loopback packet must go back outbound. */
  CHECK(addr_bit(r->addr, BIT_OUTBOUND) ||
            !(addr_bit(r->addr, BIT_LOOPBACK) || to_loopback_address(r->data, r->len)),
        "record line %d: a loopback packet sent inbound, which the real driver never delivers", lineno);
  /* One whole IP packet with a TCP, UDP or ICMP/ICMPv6 header, as the real
   * parser sees it. */
  void *ip4 = NULL, *ip6 = NULL, *icmph = NULL, *icmp6h = NULL, *tcph = NULL, *udph = NULL, *next = NULL;
  uint8_t proto = 0;
  UINT next_len = 0;
  BOOL parsed =
      real->parse(r->data, r->len, &ip4, &ip6, &proto, &icmph, &icmp6h, &tcph, &udph, NULL, NULL, &next, &next_len);
  int icmp = (proto == 1 && icmph) || (proto == 58 && icmp6h);
  CHECK(parsed && (ip4 || ip6) && ((proto == 6 && tcph) || (proto == 17 && udph) || icmp) && next_len == 0,
        "record line %d: the real DLL parses the sent packet as one IP packet with its TCP/UDP/ICMP header (parsed "
        "%d, protocol %u, %u bytes after it)",
        lineno, (int)parsed, (unsigned)proto, next_len);
  int ip = addr_bit(r->addr, BIT_IPCSUM), tcp = addr_bit(r->addr, BIT_TCPCSUM), udp = addr_bit(r->addr, BIT_UDPCSUM);
  if (!ip && !tcp && !udp && !icmp) return;
  uint8_t *copy = malloc(r->len ? r->len : 1);
  uint8_t addr[WD_ADDRESS_SIZE];
  if (!copy) return;
  memcpy(copy, r->data, r->len);
  memcpy(addr, r->addr, sizeof addr);
  /* Recompute only the checksums the library marked valid, and ICMP's. */
  uint64_t flags = (ip ? 0 : NO_IP_CHECKSUM) | (tcp ? 0 : NO_TCP_CHECKSUM) | (udp ? 0 : NO_UDP_CHECKSUM);
  BOOL ok = real->calc(copy, r->len, addr, flags);
  CHECK(ok, "record line %d: WinDivertHelperCalcChecksums takes the sent packet (error %lu)", lineno,
        (unsigned long)GetLastError());
  size_t at = 0;
  while (at < r->len && copy[at] == r->data[at]) at++;
  char hex[161];
  tu_hex(r->data, r->len < 80 ? r->len : 80, hex);
  CHECK(!ok || at == r->len,
        "record line %d: a packet sent with checksums marked valid (ip=%d tcp=%d udp=%d) differs from the real "
        "DLL's checksums at byte %zu (%02x, real %02x): %s%s",
        lineno, ip, tcp, udp, at, at < r->len ? r->data[at] : 0, at < r->len ? copy[at] : 0, hex,
        r->len > 80 ? "..." : "");
  g_checked++;
  g_icmp_checked += icmp;
  free(copy);
}

TEST_CASE(checksums) {
  wd_dll real;
  if (!load_real(&real)) return;
  int n = each_record("send", check_sent, &real);
  printf("%d packets sent, %d with checksums marked valid or ICMP (%d), recomputed by the real DLL\n", n, g_checked,
         g_icmp_checked);
  CHECK(g_checked > 0, "the record holds sent packets with checksums marked valid (run the whole windivert label)");
  CHECK(g_icmp_checked > 0, "the record holds ICMP errors the library sent (run the whole windivert label)");
  FreeLibrary(real.dll);
}

/* ------------------------------------------------------------------------
 * open_args */

enum { PASSES, REFUSED_BY_DLL, REFUSED_BY_DRIVER };

typedef struct {
  const char *what;
  const char *filter;
  int layer;
  int priority;
  uint64_t flags;
  int expect; /* what the real WinDivert does */
} open_row;

/* The driver's own checks (sys/windivert.c, IOCTL_WINDIVERT_INITIALIZE),
 * which the DLL does not make: FLOW and REFLECT need SNIFF|RECV_ONLY,
 * SOCKET needs RECV_ONLY. Under wine the real DLL stops before them. */
static const open_row OPEN_ROWS[] = {
    {"layer -1", "true", -1, 0, 0, REFUSED_BY_DLL},
    {"layer 5", "true", 5, 0, 0, REFUSED_BY_DLL},
    {"SNIFF|DROP", "true", WD_LAYER_NETWORK, 0, WD_FLAG_SNIFF | WD_FLAG_DROP, REFUSED_BY_DLL},
    {"RECV_ONLY|SEND_ONLY", "true", WD_LAYER_NETWORK, 0, WD_FLAG_RECV_ONLY | WD_FLAG_SEND_ONLY, REFUSED_BY_DLL},
    {"unknown flag 0x40", "true", WD_LAYER_NETWORK, 0, 0x40, REFUSED_BY_DLL},
    {"priority 30001", "true", WD_LAYER_NETWORK, 30001, 0, REFUSED_BY_DLL},
    {"priority -30001", "true", WD_LAYER_NETWORK, -30001, 0, REFUSED_BY_DLL},
    {"priority 30000", "true", WD_LAYER_NETWORK, 30000, 0, PASSES},
    {"priority -30000", "true", WD_LAYER_NETWORK, -30000, 0, PASSES},
    {"FRAGMENTS", "true", WD_LAYER_NETWORK, 0, WD_FLAG_FRAGMENTS, PASSES},
    {"NETWORK_FORWARD", "true", WD_LAYER_NETWORK_FORWARD, 0, 0, PASSES},
    {"SOCKET without RECV_ONLY", "true", WD_LAYER_SOCKET, 0, WD_FLAG_SNIFF, REFUSED_BY_DRIVER},
    {"REFLECT without SNIFF", "true", WD_LAYER_REFLECT, 0, WD_FLAG_RECV_ONLY, REFUSED_BY_DRIVER},
    {"FLOW without SNIFF|RECV_ONLY", "true", WD_LAYER_FLOW, 0, 0, REFUSED_BY_DRIVER},
    {"FLOW, SNIFF|RECV_ONLY", "true", WD_LAYER_FLOW, 0, WD_FLAG_SNIFF | WD_FLAG_RECV_ONLY, PASSES},
    {"empty filter", "", WD_LAYER_NETWORK, 0, 0, REFUSED_BY_DLL},
    {"comparison without a value", "tcp.DstPort ==", WD_LAYER_NETWORK, 0, 0, REFUSED_BY_DLL},
    {"unbalanced parenthesis", "(tcp or udp", WD_LAYER_NETWORK, 0, 0, REFUSED_BY_DLL},
    {"unknown field", "tcp.NoSuchField == 1", WD_LAYER_NETWORK, 0, 0, REFUSED_BY_DLL},
    {"a packet field at the SOCKET layer", "tcp.DstPort == 80", WD_LAYER_SOCKET, 0,
     WD_FLAG_SNIFF | WD_FLAG_RECV_ONLY, REFUSED_BY_DLL},
    {"a port comparison", "tcp.DstPort == 80 or udp.SrcPort != 53", WD_LAYER_NETWORK, 0, 0, PASSES},
    {"not loopback", "not loopback and (tcp or udp)", WD_LAYER_NETWORK, 0, 0, PASSES},
};

/* No NULL filter row: the real DLL 2.2.2 reads through it and crashes
 * (the stand-in refuses it with 87). */

/* What an open did: 0 when it opened (the handle is closed again), else
 * the Windows error. */
static DWORD try_open(const wd_dll *d, const open_row *r, uint64_t extra_flags) {
  SetLastError(0);
  HANDLE h = d->open(r->filter, r->layer, (int16_t)r->priority, r->flags | extra_flags);
  if (h != INVALID_HANDLE_VALUE && h != NULL) {
    d->close(h);
    return 0;
  }
  DWORD e = GetLastError();
  return e ? e : ERROR_GEN_FAILURE;
}

TEST_CASE(open_args) {
  wd_dll real, standin;
  if (!load_real(&real)) return;
  if (!load_standin(&standin)) return;
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_SCRIPT", NULL);
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_LOG", NULL);
  SetEnvironmentVariableA("WR_FAKE_WINDIVERT_RECORD", NULL);
  /* The backend's handles first: past the real DLL's checks. */
#define ROW(name, filter, layer, priority, flags) {"the backend's " name " handle", filter, layer, priority, flags, PASSES},
  static const open_row backend_rows[] = {WR_WD_HANDLES(ROW)};
#undef ROW
  size_t nb = sizeof backend_rows / sizeof backend_rows[0], nt = sizeof OPEN_ROWS / sizeof OPEN_ROWS[0];
  for (size_t i = 0; i < nb + nt; i++) {
    const open_row *r = i < nb ? &backend_rows[i] : &OPEN_ROWS[i - nb];
    /* NO_INSTALL: under wine the real DLL then stops at "no such
     * service" (1060) once its own checks pass, instead of installing. */
    DWORD re = try_open(&real, r, WD_FLAG_NO_INSTALL);
    DWORD se = try_open(&standin, r, 0);
    int real_refused = re == WD_ERROR_INVALID_PARAMETER;
    printf("%-40s real DLL: %-26s stand-in: %s\n", r->what,
           real_refused ? "invalid parameter (87)" : re == WD_ERROR_SERVICE_DOES_NOT_EXIST ? "checks passed (1060)" : "?",
           se == 0 ? "opened" : se == WD_ERROR_INVALID_PARAMETER ? "invalid parameter (87)" : "other error");
    CHECK(re != 0, "%s: the real DLL cannot open a handle under wine", r->what);
    CHECK(real_refused || re == WD_ERROR_SERVICE_DOES_NOT_EXIST,
          "%s: the real DLL fails either its argument checks (87) or at the missing driver (1060), got %lu", r->what,
          (unsigned long)re);
    CHECK(real_refused == (r->expect == REFUSED_BY_DLL), "%s: the real DLL %s its argument checks (error %lu)",
          r->what, r->expect == REFUSED_BY_DLL ? "fails" : "passes", (unsigned long)re);
    if (r->expect == PASSES) {
      CHECK(se == 0, "%s: the stand-in opens it, as the real WinDivert does (got error %lu)", r->what,
            (unsigned long)se);
    } else {
      CHECK(se == WD_ERROR_INVALID_PARAMETER, "%s: the stand-in refuses it with 87, as the real %s does (got %lu)",
            r->what, r->expect == REFUSED_BY_DLL ? "DLL" : "driver", (unsigned long)se);
    }
  }
  FreeLibrary(standin.dll);
  FreeLibrary(real.dll);
}

int main(int argc, char **argv) { return tests_main(argc, argv); }
