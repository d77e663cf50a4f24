/* wr_acceptance.exe: the acceptance test of windows_redirector.dll on a real
 * Windows 10/11 machine (as Administrator, with WinDivert.dll and
 * WinDivert64.sys present), through the public API only.
 *
 *   wr_acceptance.exe [--windivert DIR] [--local4 ADDR|none] [--local6 ADDR|none]
 *                     [--port PORT] [--timeout SECONDS]
 *
 * It starts the library with its own proxy (TCP and UDP on 0.0.0.0 and [::]
 * at one app port, as a proxy must listen) and its own servers, TCP and UDP,
 * on a non-loopback local address of each family (the first one
 * GetAdaptersAddresses lists, or --local4/--local6) and on 127.0.0.1 and
 * ::1. The configuration's bypass is [], so loopback is intercepted too.
 * Then it starts children (this exe with the argument "child": its path is
 * known) that connect over TCP and send UDP datagrams to every server:
 *
 *   intercepted (PID)   a child named in intercept_pids, started suspended
 *                       and resumed once the configuration names it
 *   not in the list     a child running at the same time, not named: its
 *                       traffic goes directly to the real servers
 *   intercepted (name)  a child intercepted by its executable's file name
 *   after stop          a child named in intercept_pids, run after
 *                       stop_redirector: direct again
 *
 * The proxy relays nothing: it calls redirector_lookup for every connection
 * and datagram, checks the bytes the child sent, and answers with what it
 * learned (the process ID, original destination, client and process path)
 * and the bytes transformed. The servers answer the same way with the
 * result of their own lookup, which must find nothing. Every row of the
 * table is checked on both sides: by the child (who answered, the bytes,
 * what the proxy learned against its own PID, target, local end and path)
 * and by this process (the origin the proxy recorded against the child's
 * PID, the target and this executable; nothing recorded where nothing
 * should be). Prints a table; exits 0 when every row passed, 1 when one
 * failed, 2 when the test could not run (start_redirector failed, no
 * sockets).
 *
 * Every wait is bounded: a child that does not finish within --timeout
 * seconds (default 60) is ended and its rows fail. */
#define WIN32_LEAN_AND_MEAN
#include <winsock2.h>
#include <ws2tcpip.h>
#include <iphlpapi.h>
#include <windows.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sock_all.h"
#include "windows_redirector.h"

#define TCP_BYTES 20000 /* several segments each way */
#define UDP_BYTES 1000
#define IO_TIMEOUT_MS 10000
#define UDP_TRIES 3
#define UDP_WAIT_MS 3000
#define HOLD_TIMEOUT_MS 10000
#define MAX_RECORDS 512
#define LINE_CAP 1400 /* a reply's first line: room for a 1024-byte path */

/* ------------------------------------------------------------------------
 * Addresses */

typedef struct {
  struct sockaddr_storage sa;
  int len;
} addr_t;

static int family_of(const addr_t *a) { return a->sa.ss_family == AF_INET6 ? 6 : 4; }

static uint16_t port_of(const addr_t *a) {
  return ntohs(a->sa.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&a->sa)->sin6_port
                                            : ((const struct sockaddr_in *)&a->sa)->sin_port);
}

static void set_port(addr_t *a, uint16_t port) {
  if (a->sa.ss_family == AF_INET6) ((struct sockaddr_in6 *)&a->sa)->sin6_port = htons(port);
  else ((struct sockaddr_in *)&a->sa)->sin_port = htons(port);
}

/* A numeric address (with %scope for IPv6) and port. 0 if it is not one. */
static int parse_addr(const char *text, uint16_t port, addr_t *out) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_flags = AI_NUMERICHOST;
  hints.ai_family = AF_UNSPEC;
  if (getaddrinfo(text, NULL, &hints, &res) != 0 || !res) return 0;
  memset(out, 0, sizeof *out);
  memcpy(&out->sa, res->ai_addr, res->ai_addrlen);
  out->len = (int)res->ai_addrlen;
  freeaddrinfo(res);
  set_port(out, port);
  return 1;
}

static void to_endpoint(const struct sockaddr *sa, redirector_endpoint *e) {
  memset(e, 0, sizeof *e);
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    e->family = 6;
    e->port = ntohs(s6->sin6_port);
    memcpy(e->addr, &s6->sin6_addr, 16);
  } else {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    e->family = 4;
    e->port = ntohs(s4->sin_port);
    memcpy(e->addr, &s4->sin_addr, 4);
  }
}

/* "a.b.c.d:port" or "[v6]:port" (no scope: an endpoint has none). */
static void endpoint_text(const redirector_endpoint *e, char *out, size_t cap) {
  char host[INET6_ADDRSTRLEN] = "?";
  inet_ntop(e->family == 6 ? AF_INET6 : AF_INET, e->addr, host, sizeof host);
  snprintf(out, cap, e->family == 6 ? "[%s]:%u" : "%s:%u", host, (unsigned)e->port);
}

static void addr_text(const addr_t *a, char *out, size_t cap) {
  redirector_endpoint e;
  to_endpoint((const struct sockaddr *)&a->sa, &e);
  endpoint_text(&e, out, cap);
}

/* The address for a target's spec: numeric, with the scope if any. */
static void host_text(const addr_t *a, char *out, size_t cap) {
  DWORD n = (DWORD)cap;
  addr_t copy = *a;
  set_port(&copy, 0);
  if (WSAAddressToStringA((struct sockaddr *)&copy.sa, (DWORD)copy.len, NULL, out, &n) != 0) snprintf(out, cap, "?");
}

/* The first usable unicast address of a family on an adapter that is up and
 * not the loopback one; a link-local IPv6 address (with its scope) only when
 * there is no other. 0 when there is none. */
static int find_local(int family, addr_t *out) {
  ULONG size = 32768;
  IP_ADAPTER_ADDRESSES *list = NULL;
  ULONG rc = ERROR_BUFFER_OVERFLOW;
  for (int i = 0; i < 4 && rc == ERROR_BUFFER_OVERFLOW; i++) {
    free(list);
    list = malloc(size);
    if (!list) return 0;
    rc = GetAdaptersAddresses(family == 6 ? AF_INET6 : AF_INET,
                              GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER, NULL, list,
                              &size);
  }
  int found = 0, fallback = 0;
  addr_t link_local;
  for (IP_ADAPTER_ADDRESSES *a = rc == NO_ERROR ? list : NULL; a && !found; a = a->Next) {
    if (a->IfType == IF_TYPE_SOFTWARE_LOOPBACK || a->OperStatus != IfOperStatusUp) continue;
    for (IP_ADAPTER_UNICAST_ADDRESS *u = a->FirstUnicastAddress; u && !found; u = u->Next) {
      if (u->DadState == IpDadStateTentative || u->DadState == IpDadStateDuplicate) continue;
      const struct sockaddr *sa = u->Address.lpSockaddr;
      addr_t cand;
      memset(&cand, 0, sizeof cand);
      memcpy(&cand.sa, sa, (size_t)u->Address.iSockaddrLength);
      cand.len = u->Address.iSockaddrLength;
      if (sa->sa_family == AF_INET) {
        const uint8_t *b = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        if (b[0] == 169 && b[1] == 254) continue; /* no DHCP answer: not a real address */
        *out = cand;
        found = 1;
      } else if (sa->sa_family == AF_INET6) {
        const uint8_t *b = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) {
          if (!fallback) link_local = cand;
          fallback = 1;
          continue;
        }
        *out = cand;
        found = 1;
      }
    }
  }
  free(list);
  if (!found && fallback) {
    *out = link_local;
    found = 1;
  }
  if (found) set_port(out, 0);
  return found;
}

/* ------------------------------------------------------------------------
 * Small helpers */

static SOCKET new_socket(int family, int type) {
  /* Never inherited: a child holding the proxy's sockets would confuse the
   * socket tables (and keep ports open). */
  SOCKET s = WSASocketW(family == 6 ? AF_INET6 : AF_INET, type, type == SOCK_STREAM ? IPPROTO_TCP : IPPROTO_UDP,
                        NULL, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s != INVALID_SOCKET && family == 6) {
    DWORD on = 1;
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (const char *)&on, sizeof on);
  }
  return s;
}

static void set_timeouts(SOCKET s, DWORD ms) {
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, (const char *)&ms, sizeof ms);
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, (const char *)&ms, sizeof ms);
}

static uint8_t pattern(unsigned seed, size_t i) { return (uint8_t)(seed * 31u + i * 7u + (i >> 8)); }

/* A line up to '\n' (not kept), at most cap - 1 bytes. */
static int recv_line(SOCKET s, char *line, size_t cap) {
  size_t n = 0;
  for (;;) {
    char c;
    if (recv(s, &c, 1, 0) != 1) return 0;
    if (c == '\n') break;
    if (n + 1 >= cap) return 0;
    line[n++] = c;
  }
  line[n] = '\0';
  return 1;
}

/* This executable's path, UTF-16 and UTF-8. */
static wchar_t g_exe_w[32768];
static char g_exe[32768 * 3];

static void find_self(void) {
  DWORD n = GetModuleFileNameW(NULL, g_exe_w, sizeof g_exe_w / sizeof g_exe_w[0]);
  if (n == 0 || n >= sizeof g_exe_w / sizeof g_exe_w[0]) g_exe_w[0] = L'\0';
  wchar_t longer[32768];
  DWORD m = GetLongPathNameW(g_exe_w, longer, sizeof longer / sizeof longer[0]);
  if (m > 0 && m < sizeof longer / sizeof longer[0]) wcscpy(g_exe_w, longer);
  WideCharToMultiByte(CP_UTF8, 0, g_exe_w, -1, g_exe, sizeof g_exe, NULL, NULL);
}

/* Is this UTF-8 path this executable (compared as Windows compares paths,
 * ignoring case)? */
static int is_self(const char *path) {
  wchar_t w[1100];
  if (!path[0] || MultiByteToWideChar(CP_UTF8, 0, path, -1, w, sizeof w / sizeof w[0]) == 0) return 0;
  return CompareStringOrdinal(w, -1, g_exe_w, -1, TRUE) == CSTR_EQUAL;
}

/* Is `origin` ("addr:port") the end a child reported? An unconnected UDP
 * socket knows only its port (its address is 0.0.0.0 or [::]). */
static int same_client(const char *reported, const char *origin) {
  const char *rp = strrchr(reported, ':'), *op = strrchr(origin, ':');
  if (!rp || !op || strcmp(rp, op) != 0) return 0;
  size_t n = (size_t)(rp - reported);
  if ((n == 7 && strncmp(reported, "0.0.0.0", 7) == 0) || (n == 4 && strncmp(reported, "[::]", 4) == 0)) {
    return (reported[0] == '[') == (origin[0] == '[');
  }
  return n == (size_t)(op - origin) && strncmp(reported, origin, n) == 0;
}

/* ------------------------------------------------------------------------
 * The answering side (proxy and servers): one record per case seen */

typedef struct {
  char case_id[64];
  int at_proxy;
  int lookup_rc;
  int bytes_ok;
  int count;
  redirector_origin origin;
} record_t;

static CRITICAL_SECTION g_lock;
static record_t g_records[MAX_RECORDS];
static int g_nrecords;
static volatile LONG g_stop;

static void add_record(const char *case_id, int at_proxy, int rc, int bytes_ok, const redirector_origin *o) {
  EnterCriticalSection(&g_lock);
  record_t *r = NULL;
  for (int i = 0; i < g_nrecords && !r; i++) {
    if (g_records[i].at_proxy == at_proxy && strcmp(g_records[i].case_id, case_id) == 0) r = &g_records[i];
  }
  if (!r && g_nrecords < MAX_RECORDS) {
    r = &g_records[g_nrecords++];
    memset(r, 0, sizeof *r);
    snprintf(r->case_id, sizeof r->case_id, "%s", case_id);
    r->at_proxy = at_proxy;
  }
  if (r) {
    r->count++;
    r->lookup_rc = rc;
    r->bytes_ok = bytes_ok;
    r->origin = *o;
  }
  LeaveCriticalSection(&g_lock);
}

static int find_record(const char *case_id, int at_proxy, record_t *out) {
  int found = 0;
  EnterCriticalSection(&g_lock);
  for (int i = 0; i < g_nrecords && !found; i++) {
    if (g_records[i].at_proxy == at_proxy && strcmp(g_records[i].case_id, case_id) == 0) {
      *out = g_records[i];
      found = 1;
    }
  }
  LeaveCriticalSection(&g_lock);
  return found;
}

/* Parses "WRACC <case> <n> <seed>". */
static int parse_request(const char *line, char *case_id, size_t cap, unsigned *n, unsigned *seed) {
  char id[64];
  if (sscanf(line, "WRACC %63s %u %u", id, n, seed) != 3 || *n > TCP_BYTES) return 0;
  snprintf(case_id, cap, "%s", id);
  return 1;
}

/* Looks the peer up, records what was learned, and writes the reply's first
 * line: "PROXY|SERVER <case> bytes=ok|bad lookup=<rc> pid=<pid> dst=<dst>
 * client=<client> path=<path>". */
static void answer(int at_proxy, int proto, const struct sockaddr *peer, const struct sockaddr *local,
                   const char *case_id, int bytes_ok, char *line, size_t cap) {
  redirector_endpoint p, l;
  to_endpoint(peer, &p);
  to_endpoint(local, &l);
  redirector_origin o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  int rc = redirector_lookup(proto, &p, &l, &o);
  add_record(case_id, at_proxy, rc, bytes_ok, &o);
  char dst[80] = "-", client[80] = "-";
  if (rc == 0) {
    endpoint_text(&o.destination, dst, sizeof dst);
    endpoint_text(&o.client, client, sizeof client);
  }
  snprintf(line, cap, "%s %s bytes=%s lookup=%d pid=%u dst=%s client=%s path=%s\n", at_proxy ? "PROXY" : "SERVER",
           case_id, bytes_ok ? "ok" : "bad", rc, rc == 0 ? o.pid : 0, dst, client, rc == 0 ? o.process_path : "");
}

typedef struct {
  SOCKET s;
  int at_proxy;
} conn_arg;

/* One TCP connection: the request, the lookup, the reply, then the child's
 * close. */
static DWORD WINAPI serve_tcp(LPVOID arg) {
  conn_arg *c = arg;
  SOCKET s = c->s;
  int at_proxy = c->at_proxy;
  free(c);
  set_timeouts(s, IO_TIMEOUT_MS);
  char line[LINE_CAP], case_id[64];
  unsigned n = 0, seed = 0;
  char *data = malloc(TCP_BYTES);
  if (data && recv_line(s, line, sizeof line) && parse_request(line, case_id, sizeof case_id, &n, &seed) &&
      sock_all(s, data, n, 0)) {
    int ok = 1;
    for (unsigned i = 0; i < n; i++) {
      ok &= (uint8_t)data[i] == pattern(seed, i);
      data[i] = (char)~data[i];
    }
    struct sockaddr_storage peer, local;
    int pl = sizeof peer, ll = sizeof local;
    getpeername(s, (struct sockaddr *)&peer, &pl);
    getsockname(s, (struct sockaddr *)&local, &ll);
    answer(at_proxy, REDIRECTOR_TCP, (struct sockaddr *)&peer, (struct sockaddr *)&local, case_id, ok, line,
           sizeof line);
    if (sock_all(s, line, strlen(line), 1) && sock_all(s, data, n, 1)) {
      shutdown(s, SD_SEND);
      char rest[64];
      while (recv(s, rest, sizeof rest, 0) > 0) {
      }
    }
  }
  free(data);
  closesocket(s);
  return 0;
}

typedef struct {
  SOCKET s;
  int at_proxy;
  int udp;
} listener_arg;

static DWORD WINAPI listener(LPVOID arg) {
  listener_arg *l = arg;
  char *buf = malloc(LINE_CAP + TCP_BYTES);
  while (buf && !InterlockedCompareExchange(&g_stop, 0, 0)) {
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(l->s, &rd);
    struct timeval tv = {0, 200000};
    if (select(0, &rd, NULL, NULL, &tv) <= 0) continue;
    if (!l->udp) {
      SOCKET c = accept(l->s, NULL, NULL);
      if (c == INVALID_SOCKET) continue;
      SetHandleInformation((HANDLE)c, HANDLE_FLAG_INHERIT, 0);
      conn_arg *ca = malloc(sizeof *ca);
      if (ca) *ca = (conn_arg){c, l->at_proxy};
      HANDLE t = ca ? CreateThread(NULL, 0, serve_tcp, ca, 0, NULL) : NULL;
      if (t) CloseHandle(t);
      else {
        closesocket(c);
        free(ca);
      }
      continue;
    }
    /* A datagram: "WRACC ..." line and its bytes; answered in one. */
    struct sockaddr_storage peer, local;
    int pl = sizeof peer, ll = sizeof local;
    int k = recvfrom(l->s, buf, LINE_CAP + TCP_BYTES, 0, (struct sockaddr *)&peer, &pl);
    getsockname(l->s, (struct sockaddr *)&local, &ll);
    char *nl = k > 0 ? memchr(buf, '\n', (size_t)k) : NULL;
    if (!nl) continue;
    *nl = '\0';
    char case_id[64], line[LINE_CAP];
    unsigned n = 0, seed = 0;
    char *data = nl + 1;
    if (!parse_request(buf, case_id, sizeof case_id, &n, &seed) || (size_t)(k - (data - buf)) != n) continue;
    int ok = 1;
    for (unsigned i = 0; i < n; i++) {
      ok &= (uint8_t)data[i] == pattern(seed, i);
      data[i] = (char)~data[i];
    }
    answer(l->at_proxy, REDIRECTOR_UDP, (struct sockaddr *)&peer, (struct sockaddr *)&local, case_id, ok, line,
           sizeof line);
    size_t hl = strlen(line);
    memmove(buf + hl, data, n);
    memcpy(buf, line, hl);
    sendto(l->s, buf, (int)(hl + n), 0, (struct sockaddr *)&peer, pl);
  }
  free(buf);
  return 0;
}

static int start_listener(SOCKET s, int at_proxy, int udp) {
  listener_arg *l = malloc(sizeof *l);
  if (!l) return 0;
  *l = (listener_arg){s, at_proxy, udp};
  HANDLE t = CreateThread(NULL, 0, listener, l, 0, NULL);
  if (!t) return 0;
  CloseHandle(t);
  return 1;
}

/* Binds a socket to a (the port in it: 0 any) and, for TCP, listens. */
static SOCKET bound(const addr_t *a, int type) {
  SOCKET s = new_socket(family_of(a), type);
  if (s == INVALID_SOCKET) return s;
  if (bind(s, (const struct sockaddr *)&a->sa, a->len) != 0 || (type == SOCK_STREAM && listen(s, 64) != 0)) {
    closesocket(s);
    return INVALID_SOCKET;
  }
  return s;
}

static uint16_t local_port(SOCKET s) {
  struct sockaddr_storage a;
  int len = sizeof a;
  if (getsockname(s, (struct sockaddr *)&a, &len) != 0) return 0;
  return ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
                                       : ((struct sockaddr_in *)&a)->sin_port);
}

/* ------------------------------------------------------------------------
 * The child */

/* One TCP exchange with target `to`. Returns 1 with the reply's first line
 * in `line` and its bytes checked (`bytes_ok`), and our end in `client`. */
static int child_tcp(const addr_t *to, const char *case_id, unsigned seed, char *line, size_t cap, int *bytes_ok,
                     char *client, size_t ccap, char *why, size_t wcap) {
  SOCKET s = socket(to->sa.ss_family, SOCK_STREAM, IPPROTO_TCP);
  if (s == INVALID_SOCKET) {
    snprintf(why, wcap, "socket: error %d", WSAGetLastError());
    return 0;
  }
  /* Connect with a time limit: non-blocking, then select. Setting
   * TCP_NODELAY right after connect() also lets wine's socket table name
   * this process as the owner while the SYN waits (wine connects in its
   * server process, and learns the owner once this process takes the
   * socket's descriptor: see test/windows/fake_live.c); Windows knows it at
   * once. */
  u_long nb = 1;
  ioctlsocket(s, FIONBIO, &nb);
  int rc = connect(s, (const struct sockaddr *)&to->sa, to->len);
  int err = rc == 0 ? 0 : WSAGetLastError();
  DWORD on = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&on, sizeof on);
  if (err == WSAEWOULDBLOCK) {
    fd_set wr, ex;
    FD_ZERO(&wr);
    FD_ZERO(&ex);
    FD_SET(s, &wr);
    FD_SET(s, &ex);
    struct timeval tv = {IO_TIMEOUT_MS / 1000, 0};
    int n = select(0, NULL, &wr, &ex, &tv);
    int len = sizeof err;
    err = n == 0 ? WSAETIMEDOUT : 0;
    if (n > 0) getsockopt(s, SOL_SOCKET, SO_ERROR, (char *)&err, &len);
  }
  nb = 0;
  ioctlsocket(s, FIONBIO, &nb);
  if (err != 0) {
    snprintf(why, wcap, "connect: error %d", err);
    closesocket(s);
    return 0;
  }
  set_timeouts(s, IO_TIMEOUT_MS);
  struct sockaddr_storage me;
  int ml = sizeof me;
  getsockname(s, (struct sockaddr *)&me, &ml);
  redirector_endpoint e;
  to_endpoint((struct sockaddr *)&me, &e);
  endpoint_text(&e, client, ccap);
  char *data = malloc(TCP_BYTES);
  int ok = 0;
  if (data) {
    char head[128];
    snprintf(head, sizeof head, "WRACC %s %u %u\n", case_id, (unsigned)TCP_BYTES, seed);
    for (size_t i = 0; i < TCP_BYTES; i++) data[i] = (char)pattern(seed, i);
    if (!sock_all(s, head, strlen(head), 1) || !sock_all(s, data, TCP_BYTES, 1)) {
      snprintf(why, wcap, "send: error %d", WSAGetLastError());
    } else if (!recv_line(s, line, cap)) {
      snprintf(why, wcap, "no reply (error %d)", WSAGetLastError());
    } else if (!sock_all(s, data, TCP_BYTES, 0)) {
      snprintf(why, wcap, "reply cut short (error %d)", WSAGetLastError());
    } else {
      *bytes_ok = 1;
      for (size_t i = 0; i < TCP_BYTES; i++) *bytes_ok &= ((uint8_t)data[i] ^ pattern(seed, i)) == 0xff;
      char extra;
      ok = recv(s, &extra, 1, 0) == 0; /* then the other side closes */
      if (!ok) snprintf(why, wcap, "the reply did not end after its bytes");
    }
  }
  free(data);
  closesocket(s);
  return ok;
}

/* One UDP exchange: up to UDP_TRIES datagrams until a reply from `to`. */
static int child_udp(const addr_t *to, const char *case_id, unsigned seed, char *line, size_t cap, int *bytes_ok,
                     char *client, size_t ccap, int *tries, char *why, size_t wcap) {
  SOCKET s = socket(to->sa.ss_family, SOCK_DGRAM, IPPROTO_UDP);
  if (s == INVALID_SOCKET) {
    snprintf(why, wcap, "socket: error %d", WSAGetLastError());
    return 0;
  }
  set_timeouts(s, UDP_WAIT_MS);
  char *buf = malloc(LINE_CAP + UDP_BYTES + 128);
  int ok = 0;
  snprintf(why, wcap, "no reply to %d datagrams", UDP_TRIES);
  for (*tries = 1; buf && *tries <= UDP_TRIES && !ok; ++*tries) {
    int hl = snprintf(buf, 128, "WRACC %s %u %u\n", case_id, (unsigned)UDP_BYTES, seed);
    for (size_t i = 0; i < UDP_BYTES; i++) buf[hl + i] = (char)pattern(seed, i);
    if (sendto(s, buf, hl + UDP_BYTES, 0, (const struct sockaddr *)&to->sa, to->len) != hl + UDP_BYTES) {
      snprintf(why, wcap, "sendto: error %d", WSAGetLastError());
      break;
    }
    struct sockaddr_storage me, from;
    int ml = sizeof me;
    getsockname(s, (struct sockaddr *)&me, &ml);
    redirector_endpoint e;
    to_endpoint((struct sockaddr *)&me, &e);
    endpoint_text(&e, client, ccap);
    for (;;) {
      int fl = sizeof from;
      int k = recvfrom(s, buf, LINE_CAP + UDP_BYTES, 0, (struct sockaddr *)&from, &fl);
      if (k <= 0) break; /* timed out: send again */
      char want[80], got[80];
      addr_text(to, want, sizeof want);
      redirector_endpoint fe;
      to_endpoint((struct sockaddr *)&from, &fe);
      endpoint_text(&fe, got, sizeof got);
      char *nl = memchr(buf, '\n', (size_t)k);
      if (strcmp(want, got) != 0 || !nl || (size_t)(nl + 1 - buf) >= cap) {
        snprintf(why, wcap, "a datagram from %s, not the reply from %s", got, want);
        continue;
      }
      size_t ll = (size_t)(nl - buf);
      memcpy(line, buf, ll);
      line[ll] = '\0';
      const char *data = nl + 1;
      *bytes_ok = (size_t)(k - (int)(ll + 1)) == UDP_BYTES;
      for (size_t i = 0; *bytes_ok && i < UDP_BYTES; i++) *bytes_ok &= ((uint8_t)data[i] ^ pattern(seed, i)) == 0xff;
      ok = 1;
      break;
    }
  }
  if (ok) --*tries;
  free(buf);
  closesocket(s);
  return ok;
}

/* wr_acceptance.exe child proxy|direct PHASE SPEC...; SPEC is
 * tcp|udp,4|6,SERVER,ADDRESS,PORT. Prints "RESULT <case> ok|FAIL <detail>"
 * per spec; exits 0 when every one was ok. */
static int child_main(int argc, char **argv) {
  WSADATA w;
  WSAStartup(MAKEWORD(2, 2), &w);
  find_self();
  int expect_proxy = strcmp(argv[2], "proxy") == 0;
  const char *phase = argv[3];
  int failed = 0;
  unsigned my_pid = (unsigned)GetCurrentProcessId();
  for (int i = 4; i < argc; i++) {
    char proto[8] = "", server[16] = "", host[80] = "";
    int fam = 0;
    unsigned port = 0;
    char spec[200];
    snprintf(spec, sizeof spec, "%s", argv[i]);
    for (char *c = spec; *c; c++) {
      if (*c == ',') *c = ' ';
    }
    addr_t to;
    char case_id[64];
    if (sscanf(spec, "%7s %d %15s %79s %u", proto, &fam, server, host, &port) != 5 ||
        !parse_addr(host, (uint16_t)port, &to)) {
      printf("RESULT ? FAIL bad spec %s\n", argv[i]);
      failed++;
      continue;
    }
    snprintf(case_id, sizeof case_id, "%s/%s%d/%s", phase, proto, fam, server);
    int udp = strcmp(proto, "udp") == 0;
    unsigned seed = (unsigned)(GetTickCount() ^ (my_pid << 8) ^ (unsigned)i);
    char line[LINE_CAP] = "", client[80] = "-", why[200] = "";
    int bytes_ok = 0, tries = 1;
    int done = udp ? child_udp(&to, case_id, seed, line, sizeof line, &bytes_ok, client, sizeof client, &tries, why,
                               sizeof why)
                   : child_tcp(&to, case_id, seed, line, sizeof line, &bytes_ok, client, sizeof client, why,
                               sizeof why);
    if (done) {
      /* The reply's first line, then what it says. */
      char who[16] = "", rid[64] = "", bytes[8] = "", dst[80] = "", rclient[80] = "";
      int lookup = 0;
      unsigned pid = 0;
      const char *path = strstr(line, " path=");
      path = path ? path + 6 : "";
      char want_dst[80];
      addr_text(&to, want_dst, sizeof want_dst);
      if (sscanf(line, "%15s %63s bytes=%7s lookup=%d pid=%u dst=%79s client=%79s", who, rid, bytes, &lookup, &pid,
                 dst, rclient) != 7) {
        snprintf(why, sizeof why, "an answer that is not one: \"%.80s\"", line);
        done = 0;
      } else if (strcmp(rid, case_id) != 0) {
        snprintf(why, sizeof why, "the answer is for %s", rid);
        done = 0;
      } else if (strcmp(who, expect_proxy ? "PROXY" : "SERVER") != 0) {
        snprintf(why, sizeof why, "answered by the %s, not the %s", who, expect_proxy ? "proxy" : "server");
        done = 0;
      } else if (strcmp(bytes, "ok") != 0 || !bytes_ok) {
        snprintf(why, sizeof why, "bytes wrong (%s what it got, %s the reply)", strcmp(bytes, "ok") ? "in" : "not in",
                 bytes_ok ? "not in" : "in");
        done = 0;
      } else if (expect_proxy && lookup != 0) {
        snprintf(why, sizeof why, "the proxy's lookup failed: %d (%s)", lookup, redirector_strerror(lookup));
        done = 0;
      } else if (expect_proxy && (pid != my_pid || strcmp(dst, want_dst) != 0 || !same_client(client, rclient) ||
                                  !is_self(path))) {
        snprintf(why, sizeof why, "the proxy learned pid %u dst %s client %s path \"%.300s\"; this is pid %u, %s, %s",
                 pid, dst, rclient, path, my_pid, want_dst, client);
        done = 0;
      } else if (!expect_proxy && lookup == 0) {
        snprintf(why, sizeof why, "the server's own lookup found an origin (pid %u, dst %s)", pid, dst);
        done = 0;
      }
    }
    if (done) {
      printf("RESULT %s ok client=%s tries=%d\n", case_id, client, tries);
    } else {
      printf("RESULT %s FAIL client=%s %s\n", case_id, client, why);
      failed++;
    }
    fflush(stdout);
  }
  return failed ? 1 : 0;
}

/* ------------------------------------------------------------------------
 * The parent: targets, children, rows */

enum { T_LOCAL4, T_LOOP4, T_LOCAL6, T_LOOP6, NTARGETS };

typedef struct {
  const char *server; /* "local" or "loopback" */
  int family;
  int present;        /* this machine has the address */
  addr_t tcp, udp;    /* the servers' addresses, ports included */
} target_t;

static target_t g_targets[NTARGETS];

typedef struct {
  const char *label; /* the table's "case" */
  const char *phase; /* in case ids */
  int expect_proxy;
  PROCESS_INFORMATION pi;
  HANDLE out_read, reader;
  char *out; /* its stdout */
  size_t out_len, out_cap;
  DWORD exit_code;
  int started, timed_out;
} child_t;

static DWORD WINAPI read_child(LPVOID arg) {
  child_t *c = arg;
  char buf[4096];
  DWORD n;
  while (ReadFile(c->out_read, buf, sizeof buf, &n, NULL) && n > 0) {
    if (c->out_len + n + 1 > c->out_cap) {
      size_t cap = (c->out_len + n + 1) * 2;
      char *p = realloc(c->out, cap);
      if (!p) break;
      c->out = p;
      c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, buf, n);
    c->out_len += n;
    c->out[c->out_len] = '\0';
  }
  return 0;
}

/* Starts a child suspended, its stdout to a pipe we read. */
static int spawn(child_t *c, const char *label, const char *phase, int expect_proxy) {
  memset(c, 0, sizeof *c);
  c->label = label;
  c->phase = phase;
  c->expect_proxy = expect_proxy;
  wchar_t cmd[8192];
  int k = _snwprintf(cmd, 8192, L"\"%ls\" child %hs %hs", g_exe_w, expect_proxy ? "proxy" : "direct", phase);
  for (int t = 0; t < NTARGETS; t++) {
    target_t *g = &g_targets[t];
    if (!g->present) continue;
    for (int udp = 0; udp < 2; udp++) {
      char host[80];
      const addr_t *a = udp ? &g->udp : &g->tcp;
      host_text(a, host, sizeof host);
      k += _snwprintf(cmd + k, 8192 - (size_t)k, L" %hs,%d,%hs,%hs,%u", udp ? "udp" : "tcp", g->family, g->server,
                      host, (unsigned)port_of(a));
    }
  }
  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE wr = NULL;
  if (!CreatePipe(&c->out_read, &wr, &sa, 1 << 16)) return 0;
  SetHandleInformation(c->out_read, HANDLE_FLAG_INHERIT, 0);
  STARTUPINFOW si;
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  si.hStdOutput = wr;
  si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
  BOOL ok = CreateProcessW(g_exe_w, cmd, NULL, NULL, TRUE, CREATE_SUSPENDED, NULL, NULL, &si, &c->pi);
  CloseHandle(wr);
  if (!ok) {
    fprintf(stderr, "wr_acceptance: could not start a child: Windows error %lu\n", (unsigned long)GetLastError());
    CloseHandle(c->out_read);
    return 0;
  }
  c->reader = CreateThread(NULL, 0, read_child, c, 0, NULL);
  c->started = 1;
  return 1;
}

static void run_children(child_t **cs, int n, DWORD timeout_ms) {
  ULONGLONG start = GetTickCount64();
  for (int i = 0; i < n; i++) {
    if (cs[i]->started) ResumeThread(cs[i]->pi.hThread);
  }
  ULONGLONG deadline = GetTickCount64() + timeout_ms;
  for (int i = 0; i < n; i++) {
    child_t *c = cs[i];
    if (!c->started) continue;
    ULONGLONG now = GetTickCount64();
    if (WaitForSingleObject(c->pi.hProcess, now < deadline ? (DWORD)(deadline - now) : 0) != WAIT_OBJECT_0) {
      c->timed_out = 1;
      TerminateProcess(c->pi.hProcess, 99);
      WaitForSingleObject(c->pi.hProcess, 5000);
    }
    GetExitCodeProcess(c->pi.hProcess, &c->exit_code);
    if (c->reader) {
      WaitForSingleObject(c->reader, 5000);
      CloseHandle(c->reader);
    }
    CloseHandle(c->out_read);
    CloseHandle(c->pi.hThread);
    CloseHandle(c->pi.hProcess);
  }
  for (int i = 0; i < n; i++) {
    printf("wr_acceptance: child \"%s\" (pid %lu): exit code %lu%s\n", cs[i]->label,
           (unsigned long)cs[i]->pi.dwProcessId, (unsigned long)cs[i]->exit_code,
           !cs[i]->started ? ", not started" : cs[i]->timed_out ? ", ended after the time limit" : "");
  }
  printf("wr_acceptance: %.1f s\n", (double)(GetTickCount64() - start) / 1000);
}

/* Ends children started suspended that will not run (the test cannot go
 * on), stops the redirector, and returns 2 (the exit code). */
static int abandon(child_t **cs, int n) {
  for (int i = 0; i < n; i++) {
    if (!cs[i]->started) continue;
    TerminateProcess(cs[i]->pi.hProcess, 98);
    WaitForSingleObject(cs[i]->pi.hProcess, 5000);
  }
  stop_redirector();
  return 2;
}

/* The configuration, with the bypass list empty (loopback intercepted). */
static int configure(const char *intercept_json) {
  char json[1024];
  snprintf(json, sizeof json,
           "{%s, \"bypass\": [], \"hold_timeout_ms\": %d, \"description\": \"wr_acceptance\"}", intercept_json,
           HOLD_TIMEOUT_MS);
  int rc = set_redirector_config(json);
  if (rc != 0) {
    char err[512] = "";
    redirector_last_error(err, sizeof err);
    fprintf(stderr, "wr_acceptance: set_redirector_config(%s) = %d: %s\n", json, rc, err);
  }
  return rc == 0;
}

static int g_passed, g_failed, g_skipped;

static void row(const char *label, const char *proto, int family, const char *server, const char *result,
                const char *detail) {
  printf("%-20s %-5s %-6s %-38s %-6s %s\n", label, proto, family == 6 ? "IPv6" : "IPv4", server, result, detail);
}

/* Judges a child's rows: its own verdict and what the proxy and the servers
 * recorded. */
static void judge(const child_t *c) {
  for (int t = 0; t < NTARGETS; t++) {
    const target_t *g = &g_targets[t];
    for (int udp = 0; udp < 2; udp++) {
      const char *proto = udp ? "UDP" : "TCP";
      char server[120], dst[80];
      addr_text(udp ? &g->udp : &g->tcp, dst, sizeof dst);
      snprintf(server, sizeof server, "%-8s %s", g->server, g->present ? dst : "(none)");
      if (!g->present) {
        row(c->label, proto, g->family, server, "skip", "no such address on this machine");
        g_skipped++;
        continue;
      }
      char case_id[64], want[80], detail[600] = "";
      snprintf(case_id, sizeof case_id, "%s/%s%d/%s", c->phase, udp ? "udp" : "tcp", g->family, g->server);
      snprintf(want, sizeof want, "RESULT %s ", case_id);
      const char *res = c->out ? strstr(c->out, want) : NULL;
      char verdict[600] = "", client[80] = "";
      if (res) {
        const char *end = strchr(res, '\n');
        size_t n = end ? (size_t)(end - res) : strlen(res);
        snprintf(verdict, sizeof verdict, "%.*s", (int)(n - strlen(want)), res + strlen(want));
        sscanf(verdict, "%*s client=%79s", client);
      }
      record_t at_proxy, at_server;
      memset(&at_proxy, 0, sizeof at_proxy);
      memset(&at_server, 0, sizeof at_server);
      int proxied = find_record(case_id, 1, &at_proxy), served = find_record(case_id, 0, &at_server);
      int ok = 0;
      if (!c->started) {
        snprintf(detail, sizeof detail, "the child could not be started");
      } else if (!res) {
        snprintf(detail, sizeof detail, "the child reported nothing (%s, exit code %lu)",
                 c->timed_out ? "timed out" : "exited", (unsigned long)c->exit_code);
      } else if (strncmp(verdict, "ok ", 3) != 0) {
        snprintf(detail, sizeof detail, "child: %s", verdict + 5);
      } else if (c->expect_proxy) {
        const redirector_origin *o = &at_proxy.origin;
        char got_dst[80] = "", got_client[80] = "";
        endpoint_text(&o->destination, got_dst, sizeof got_dst);
        endpoint_text(&o->client, got_client, sizeof got_client);
        if (!proxied) snprintf(detail, sizeof detail, "the proxy recorded nothing");
        else if (served) snprintf(detail, sizeof detail, "the real server was reached too");
        else if (at_proxy.lookup_rc != 0)
          snprintf(detail, sizeof detail, "redirector_lookup: %d (%s)", at_proxy.lookup_rc,
                   redirector_strerror(at_proxy.lookup_rc));
        else if (o->pid != c->pi.dwProcessId)
          snprintf(detail, sizeof detail, "origin pid %u, the child is %lu", o->pid, (unsigned long)c->pi.dwProcessId);
        else if (strcmp(got_dst, dst) != 0) snprintf(detail, sizeof detail, "origin destination %s", got_dst);
        else if (!same_client(client, got_client))
          snprintf(detail, sizeof detail, "origin client %s, the child's end is %s", got_client, client);
        else if (!is_self(o->process_path)) snprintf(detail, sizeof detail, "origin path \"%s\"", o->process_path);
        else if (o->protocol != (udp ? REDIRECTOR_UDP : REDIRECTOR_TCP) || o->direction != REDIRECTOR_OUTBOUND)
          snprintf(detail, sizeof detail, "origin protocol %u direction %u", o->protocol, o->direction);
        else if (!at_proxy.bytes_ok) snprintf(detail, sizeof detail, "the proxy got wrong bytes");
        else {
          ok = 1;
          snprintf(detail, sizeof detail, "redirected: pid %u, %s%s", o->pid, got_dst,
                   at_proxy.count > 1 ? " (a datagram sent again)" : "");
        }
      } else {
        if (proxied) snprintf(detail, sizeof detail, "the proxy got it (lookup %d)", at_proxy.lookup_rc);
        else if (!served) snprintf(detail, sizeof detail, "the real server recorded nothing");
        else if (at_server.lookup_rc == 0)
          snprintf(detail, sizeof detail, "the server's lookup found an origin (pid %u)", at_server.origin.pid);
        else if (!at_server.bytes_ok) snprintf(detail, sizeof detail, "the server got wrong bytes");
        else {
          ok = 1;
          snprintf(detail, sizeof detail, "direct: the server answered; its lookup: %s",
                   redirector_strerror(at_server.lookup_rc));
        }
      }
      row(c->label, proto, g->family, server, ok ? "ok" : "FAIL", detail);
      if (ok) g_passed++;
      else g_failed++;
    }
  }
}

static void print_state(const char *when) {
  char diag[4096] = "";
  if (redirector_diagnostics(diag, sizeof diag) >= 0) printf("diagnostics (%s): %s\n", when, diag);
  redirector_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  if (redirector_get_stats(&st) == 0) {
    printf("stats (%s): packets %llu, rewritten %llu, passed %llu, held %llu, redirected %llu, passed flows %llu, "
           "owner queries %llu, hold timeouts %llu, lookups %llu, misses %llu\n",
           when, (unsigned long long)st.packets, (unsigned long long)st.rewritten, (unsigned long long)st.passed,
           (unsigned long long)st.held, (unsigned long long)st.flows_redirected, (unsigned long long)st.flows_passed,
           (unsigned long long)st.owner_queries, (unsigned long long)st.hold_timeouts,
           (unsigned long long)st.lookups, (unsigned long long)st.lookup_misses);
  }
}

static int usage(void) {
  fprintf(stderr,
          "usage: wr_acceptance.exe [--windivert DIR] [--local4 ADDR|none] [--local6 ADDR|none] [--port PORT]\n"
          "                         [--timeout SECONDS]\n"
          "Run as Administrator, with WinDivert.dll and WinDivert64.sys in DIR (default: beside\n"
          "windows_redirector.dll, then this program's folder, then System32). --port: the proxy's port\n"
          "(default: a free one), e.g. one an inbound firewall rule allows.\n");
  return 2;
}

/* Sets up the servers of one target (a free port each for TCP and UDP). */
static void set_up_target(int t, const char *server, int family, const addr_t *addr, int have_v6) {
  target_t *g = &g_targets[t];
  g->server = server;
  g->family = family;
  if (!addr || (family == 6 && !have_v6)) return;
  g->tcp = g->udp = *addr;
  SOCKET ts = bound(&g->tcp, SOCK_STREAM), us = bound(&g->udp, SOCK_DGRAM);
  if (ts == INVALID_SOCKET || us == INVALID_SOCKET) {
    char text[80];
    host_text(addr, text, sizeof text);
    fprintf(stderr, "wr_acceptance: no server on %s: error %d\n", text, WSAGetLastError());
    return;
  }
  set_port(&g->tcp, local_port(ts));
  set_port(&g->udp, local_port(us));
  g->present = start_listener(ts, 0, 0) && start_listener(us, 0, 1);
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "child") == 0) return child_main(argc, argv);
  const char *wd_dir = NULL, *local4 = NULL, *local6 = NULL;
  DWORD timeout_ms = 60000;
  uint16_t want_port = 0;
  for (int i = 1; i < argc; i++) {
    if (i + 1 < argc && strcmp(argv[i], "--windivert") == 0) wd_dir = argv[++i];
    else if (i + 1 < argc && strcmp(argv[i], "--local4") == 0) local4 = argv[++i];
    else if (i + 1 < argc && strcmp(argv[i], "--local6") == 0) local6 = argv[++i];
    else if (i + 1 < argc && strcmp(argv[i], "--timeout") == 0) timeout_ms = (DWORD)atoi(argv[++i]) * 1000;
    else if (i + 1 < argc && strcmp(argv[i], "--port") == 0) want_port = (uint16_t)atoi(argv[++i]);
    else return usage();
  }
  if (timeout_ms == 0) return usage();
  setvbuf(stdout, NULL, _IONBF, 0);
  InitializeCriticalSection(&g_lock);
  WSADATA w;
  WSAStartup(MAKEWORD(2, 2), &w);
  find_self();
  printf("wr_acceptance: windows_redirector %s; %s\n", redirector_version(), g_exe);

  /* Where the servers are. */
  addr_t a4, a6, l4, l6;
  int have4 = 0, have6 = 0;
  if (local4) have4 = strcmp(local4, "none") != 0 && parse_addr(local4, 0, &a4) && family_of(&a4) == 4;
  else have4 = find_local(4, &a4);
  if (local6) have6 = strcmp(local6, "none") != 0 && parse_addr(local6, 0, &a6) && family_of(&a6) == 6;
  else have6 = find_local(6, &a6);
  if ((local4 && strcmp(local4, "none") != 0 && !have4) || (local6 && strcmp(local6, "none") != 0 && !have6)) {
    return usage();
  }
  parse_addr("127.0.0.1", 0, &l4);
  parse_addr("::1", 0, &l6);

  /* The proxy: TCP and UDP on 0.0.0.0 and [::], one port. */
  SOCKET probe6 = new_socket(6, SOCK_DGRAM);
  int v6 = probe6 != INVALID_SOCKET;
  if (v6) closesocket(probe6);
  uint16_t app_port = 0;
  SOCKET px[4] = {INVALID_SOCKET, INVALID_SOCKET, INVALID_SOCKET, INVALID_SOCKET};
  for (int attempt = 0; attempt < (want_port ? 1 : 20) && !app_port; attempt++) {
    addr_t any4, any6;
    parse_addr("0.0.0.0", want_port, &any4);
    parse_addr("::", 0, &any6);
    px[0] = bound(&any4, SOCK_STREAM);
    uint16_t p = px[0] != INVALID_SOCKET ? local_port(px[0]) : 0;
    set_port(&any4, p);
    set_port(&any6, p);
    px[1] = p ? bound(&any4, SOCK_DGRAM) : INVALID_SOCKET;
    px[2] = p && v6 ? bound(&any6, SOCK_STREAM) : INVALID_SOCKET;
    px[3] = p && v6 ? bound(&any6, SOCK_DGRAM) : INVALID_SOCKET;
    if (p && px[1] != INVALID_SOCKET && (!v6 || (px[2] != INVALID_SOCKET && px[3] != INVALID_SOCKET))) {
      app_port = p;
    } else {
      for (int i = 0; i < 4; i++) {
        if (px[i] != INVALID_SOCKET) closesocket(px[i]);
        px[i] = INVALID_SOCKET;
      }
    }
  }
  if (!app_port) {
    fprintf(stderr, "wr_acceptance: no port%s free for the proxy, TCP and UDP, on 0.0.0.0 and [::]\n",
            want_port ? " (--port)" : "");
    return 2;
  }
  for (int i = 0; i < 4; i++) {
    if (px[i] != INVALID_SOCKET) start_listener(px[i], 1, i % 2);
  }
  set_up_target(T_LOCAL4, "local", 4, have4 ? &a4 : NULL, v6);
  set_up_target(T_LOOP4, "loopback", 4, &l4, v6);
  set_up_target(T_LOCAL6, "local", 6, have6 ? &a6 : NULL, v6);
  set_up_target(T_LOOP6, "loopback", 6, &l6, v6);
  char t4[80] = "none", t6[80] = "none";
  if (g_targets[T_LOCAL4].present) host_text(&g_targets[T_LOCAL4].tcp, t4, sizeof t4);
  if (g_targets[T_LOCAL6].present) host_text(&g_targets[T_LOCAL6].tcp, t6, sizeof t6);
  printf("wr_acceptance: proxy on 0.0.0.0 and [::] port %u; servers on %s, 127.0.0.1, %s, ::1\n", (unsigned)app_port,
         t4, t6);

  /* Start: nothing intercepted yet. */
  if (wd_dir && redirector_set_windivert_path(wd_dir) != 0) {
    fprintf(stderr, "wr_acceptance: redirector_set_windivert_path(%s) failed\n", wd_dir);
    return 2;
  }
  if (!configure("\"intercept_pids\": []") || redirector_set_app_port(app_port) != 0) return 2;
  if (start_redirector() != 0) {
    char err[2048] = "";
    redirector_last_error(err, sizeof err);
    printf("wr_acceptance: start_redirector failed: %s\n", err);
    printf("0 passed, 1 failed\n");
    return 2;
  }
  print_state("started");

  child_t kids[4];
  child_t *a = &kids[0], *b = &kids[1], *c = &kids[2], *d = &kids[3];
  char pids[64], name_json[600];
  /* By PID, beside a child that is not in the list. */
  spawn(a, "intercepted (PID)", "pid", 1);
  spawn(b, "not in the list", "other", 0);
  snprintf(pids, sizeof pids, "\"intercept_pids\": [%lu]", (unsigned long)a->pi.dwProcessId);
  child_t *ab[2] = {a, b};
  if (!configure(pids)) return abandon(ab, 2);
  run_children(ab, 2, timeout_ms);

  /* By the executable's file name (never this process: the caller is never
   * intercepted). */
  const char *base = strrchr(g_exe, '\\');
  base = base ? base + 1 : g_exe;
  snprintf(name_json, sizeof name_json, "\"intercept_pids\": [], \"intercept\": \"%s\"", base);
  spawn(c, "intercepted (name)", "name", 1);
  if (!configure(name_json)) return abandon(&c, 1);
  run_children(&c, 1, timeout_ms);
  print_state("before stop");

  /* After stop: in the list, and direct all the same. */
  int stopped = stop_redirector();
  spawn(d, "after stop", "stopped", 0);
  snprintf(pids, sizeof pids, "\"intercept_pids\": [%lu]", (unsigned long)d->pi.dwProcessId);
  if (!configure(pids)) return abandon(&d, 1);
  run_children(&d, 1, timeout_ms);
  InterlockedExchange(&g_stop, 1);

  printf("\n%-20s %-5s %-6s %-38s %-6s %s\n", "case", "proto", "family", "server", "result", "detail");
  for (int i = 0; i < 4; i++) judge(&kids[i]);
  if (stopped != 0 || get_redirector_status() != 0) {
    printf("stop_redirector returned %d, status %d afterwards\n", stopped, get_redirector_status());
    g_failed++;
  }
  for (int i = 0; i < 4; i++) {
    if (kids[i].out && strstr(kids[i].out, " FAIL ")) printf("\n%s child's report:\n%s", kids[i].label, kids[i].out);
  }
  printf("\nwr_acceptance: %d passed, %d failed, %d skipped\n", g_passed, g_failed, g_skipped);
  return g_failed ? 1 : 0;
}
