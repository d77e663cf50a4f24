/* The stand-in WinDivert.dll's live mode: see fake_live.h, and
 * test/acceptance/live_relay.c for the other end.
 *
 * A packet from the relay is queued for the NETWORK handles as a scripted
 * one is (fake_windivert.c does it, through the deliver function), and its
 * verdict goes back: diverted (the relay drops the original) or not (it
 * goes on unchanged). What the library sends goes to the relay as the
 * driver would put it on the wire.
 *
 * Owners. The driver's SOCKET layer names each socket's process as it
 * connects; a relay of Linux packets cannot (wine's processes have Windows
 * PIDs). So in live mode the SOCKET layer is silent and the library finds
 * owners in the OS's socket tables, as it does on Windows when no SOCKET
 * event came, with two accommodations for wine 8.0:
 *   - wine's tables name a socket's owner only once the process holds the
 *     socket's file descriptor, which a process that calls connect() does
 *     not yet hold when its SYN leaves (wineserver makes the system call;
 *     the process's next socket call, such as a setsockopt, takes it). So a
 *     new outbound flow's first packet (a TCP SYN, or a UDP datagram) is
 *     handed on once the tables name an owner for it (Windows has the owner
 *     at once).
 *   - wine 8.0's TCP table never names the owner of a TCP socket over IPv6
 *     (it reads the wrong column of /proc/net/tcp6), nor does it of a
 *     socket whose process has not touched it since connect(). For such a
 *     flow (at once for TCP over IPv6, after OWNER_WAIT_MS for others) the
 *     SOCKET layer reports a connect event, as the driver would, with the
 *     PID of the process holding the socket's handle (found among every
 *     process's handles, as a handle viewer finds it), before the packet.
 * And since the SOCKET layer reports no releases, a UDP port used again by
 * another process's socket gets the old socket's release first (udp_owner). */
#define WIN32_LEAN_AND_MEAN
#include <winsock2.h>
#include <ws2tcpip.h>
#include <iphlpapi.h>
#include <windows.h>
#include <winternl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_live.h"
#include "live_proto.h"
#include "sock_all.h"
#include "wd_test_util.h"

#define OWNER_WAIT_MS 1000
#define STATUS_INFO_LENGTH_MISMATCH_ ((NTSTATUS)0xC0000004L)

static SRWLOCK g_send_lock = SRWLOCK_INIT;
static SOCKET g_sock = INVALID_SOCKET;
static HANDLE g_reader;
static volatile LONG g_stopping;
static fl_deliver_fn g_deliver;
static fl_event_fn g_event;
static fl_log_fn live_log;
static unsigned long g_owner_waits, g_owner_events, g_owner_misses; /* the reader's own */

int fl_configured(void) { return GetEnvironmentVariableA("WR_FAKE_WINDIVERT_LIVE", NULL, 0) > 0; }

static int send_message(uint8_t type, uint8_t flags, uint32_t id, uint32_t if_idx, const uint8_t *body,
                        uint32_t len) {
  live_header hd;
  memset(&hd, 0, sizeof hd);
  hd.type = type;
  hd.flags = flags;
  hd.id = id;
  hd.if_idx = if_idx;
  hd.len = len;
  AcquireSRWLockExclusive(&g_send_lock);
  int ok = sock_all(g_sock, (char *)&hd, sizeof hd, 1) && (len == 0 || sock_all(g_sock, (char *)body, len, 1));
  ReleaseSRWLockExclusive(&g_send_lock);
  return ok;
}

/* ------------------------------------------------------------------------
 * Owners in the OS's socket tables */

typedef struct {
  int v6, tcp;
  uint8_t src[16], dst[16];
  uint16_t sport, dport;
} flow_key;

/* A new outbound flow's first packet: a TCP SYN, or any UDP datagram. 0 for
 * the rest. */
static int first_packet(const uint8_t *p, uint32_t len, flow_key *k) {
  tu_layout l;
  if (!tu_parse(p, len, &l)) return 0;
  const uint8_t *t = p + l.l3len;
  if (l.proto == 6 && (t[13] & (TU_SYN | TU_ACK)) != TU_SYN) return 0;
  memset(k, 0, sizeof *k);
  k->v6 = l.v6;
  k->tcp = l.proto == 6;
  memcpy(k->src, l.v6 ? p + 8 : p + 12, l.v6 ? 16 : 4);
  memcpy(k->dst, l.v6 ? p + 24 : p + 16, l.v6 ? 16 : 4);
  k->sport = tu_rd16(t);
  k->dport = tu_rd16(t + 2);
  return 1;
}

static uint16_t row_port(DWORD v) { return (uint16_t)(((v & 0xff) << 8) | ((v >> 8) & 0xff)); }

static int any_or(const uint8_t *row, const uint8_t *want, size_t n) {
  static const uint8_t zero[16];
  return memcmp(row, zero, n) == 0 || memcmp(row, want, n) == 0;
}

/* The PID the tables give the flow's local end (0: none yet). */
static DWORD table_owner(const flow_key *k) {
  ULONG af = k->v6 ? AF_INET6 : AF_INET;
  DWORD size = 0, pid = 0;
  void *buf = NULL;
  for (int attempt = 0; attempt < 4; attempt++) {
    DWORD rc = k->tcp ? GetExtendedTcpTable(buf, &size, FALSE, af, TCP_TABLE_OWNER_PID_ALL, 0)
                      : GetExtendedUdpTable(buf, &size, FALSE, af, UDP_TABLE_OWNER_PID, 0);
    if (rc == NO_ERROR && buf) break;
    free(buf);
    buf = NULL;
    if (rc != ERROR_INSUFFICIENT_BUFFER) return 0;
    size += 4096;
    if (!(buf = malloc(size))) return 0;
  }
  if (!buf) return 0;
  size_t n = k->v6 ? 16 : 4;
  if (k->tcp && !k->v6) {
    const MIB_TCPTABLE_OWNER_PID *t = buf;
    for (DWORD i = 0; i < t->dwNumEntries && !pid; i++) {
      const MIB_TCPROW_OWNER_PID *r = &t->table[i];
      if (row_port(r->dwLocalPort) == k->sport && row_port(r->dwRemotePort) == k->dport &&
          memcmp(&r->dwLocalAddr, k->src, n) == 0 && memcmp(&r->dwRemoteAddr, k->dst, n) == 0)
        pid = r->dwOwningPid;
    }
  } else if (k->tcp) {
    const MIB_TCP6TABLE_OWNER_PID *t = buf;
    for (DWORD i = 0; i < t->dwNumEntries && !pid; i++) {
      const MIB_TCP6ROW_OWNER_PID *r = &t->table[i];
      if (row_port(r->dwLocalPort) == k->sport && row_port(r->dwRemotePort) == k->dport &&
          memcmp(r->ucLocalAddr, k->src, n) == 0 && memcmp(r->ucRemoteAddr, k->dst, n) == 0)
        pid = r->dwOwningPid;
    }
  } else if (!k->v6) {
    const MIB_UDPTABLE_OWNER_PID *t = buf;
    for (DWORD i = 0; i < t->dwNumEntries && !pid; i++) {
      const MIB_UDPROW_OWNER_PID *r = &t->table[i];
      if (row_port(r->dwLocalPort) == k->sport && any_or((const uint8_t *)&r->dwLocalAddr, k->src, n))
        pid = r->dwOwningPid;
    }
  } else {
    const MIB_UDP6TABLE_OWNER_PID *t = buf;
    for (DWORD i = 0; i < t->dwNumEntries && !pid; i++) {
      const MIB_UDP6ROW_OWNER_PID *r = &t->table[i];
      if (row_port(r->dwLocalPort) == k->sport && any_or(r->ucLocalAddr, k->src, n)) pid = r->dwOwningPid;
    }
  }
  free(buf);
  return pid;
}

/* "a.b.c.d:port" or "[v6]:port", as script lines write endpoints. */
static void endpoint(int v6, const uint8_t *addr, uint16_t port, char *out, size_t cap) {
  char host[INET6_ADDRSTRLEN] = "?";
  inet_ntop(v6 ? AF_INET6 : AF_INET, addr, host, sizeof host);
  snprintf(out, cap, v6 ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
}

/* Does a socket's address (from getsockname/getpeername) equal addr:port?
 * A wildcard address matches any (an unconnected UDP socket's). */
static int same_end(const struct sockaddr_storage *a, int v6, const uint8_t *addr, uint16_t port) {
  if (v6 && a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
    return ntohs(s6->sin6_port) == port && any_or((const uint8_t *)&s6->sin6_addr, addr, 16);
  }
  if (!v6 && a->ss_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)a;
    return ntohs(s4->sin_port) == port && any_or((const uint8_t *)&s4->sin_addr, addr, 4);
  }
  return 0;
}

/* The PID of the process holding the flow's socket, among every process's
 * handles of the socket's object type (each duplicated here and asked for
 * its ends); 0 when none is found. */
static DWORD handle_owner(const flow_key *k) {
  /* Sockets' object type: that of a socket of our own, in the list too. */
  SOCKET mine = socket(AF_INET, SOCK_DGRAM, 0);
  ULONG size = 1u << 16, got = 0;
  SYSTEM_HANDLE_INFORMATION *hi = NULL;
  NTSTATUS st = STATUS_INFO_LENGTH_MISMATCH_;
  for (int i = 0; i < 8 && st == STATUS_INFO_LENGTH_MISMATCH_; i++, size *= 2) {
    free(hi);
    hi = malloc(size);
    st = hi ? NtQuerySystemInformation(SystemHandleInformation, hi, size, &got) : STATUS_INFO_LENGTH_MISMATCH_;
  }
  if (!hi) {
    closesocket(mine);
    return 0;
  }
  DWORD self = GetCurrentProcessId(), pid = 0;
  unsigned long sockets = 0;
  int type = -1;
  for (ULONG i = 0; st == 0 && i < hi->Count; i++) {
    if (hi->Handle[i].OwnerPid == self && hi->Handle[i].HandleValue == (USHORT)mine) type = hi->Handle[i].ObjectType;
  }
  closesocket(mine);
  for (ULONG i = 0; st == 0 && type >= 0 && i < hi->Count && !pid; i++) {
    const SYSTEM_HANDLE_ENTRY *e = &hi->Handle[i];
    if (e->ObjectType != type) continue;
    HANDLE proc = OpenProcess(PROCESS_DUP_HANDLE, FALSE, e->OwnerPid);
    HANDLE dup = NULL;
    if (proc && DuplicateHandle(proc, (HANDLE)(ULONG_PTR)e->HandleValue, GetCurrentProcess(), &dup, 0, FALSE,
                                DUPLICATE_SAME_ACCESS)) {
      struct sockaddr_storage local, peer;
      int ll = sizeof local, pl = sizeof peer;
      /* A connecting socket may have no peer to tell yet (wine): then its
       * local end, an ephemeral port of its own, names it. */
      if (getsockname((SOCKET)dup, (struct sockaddr *)&local, &ll) == 0 && same_end(&local, k->v6, k->src, k->sport) &&
          (!k->tcp || getpeername((SOCKET)dup, (struct sockaddr *)&peer, &pl) != 0 ||
           same_end(&peer, k->v6, k->dst, k->dport)))
        pid = e->OwnerPid;
      sockets++;
      CloseHandle(dup);
    }
    if (proc) CloseHandle(proc);
  }
  if (!pid) {
    live_log("live_handles status=0x%lx handles=%lu socket_type=%d duplicated=%lu", (unsigned long)st,
             st == 0 ? (unsigned long)hi->Count : 0ul, type, sockets);
  }
  free(hi);
  return pid;
}

/* UDP ports whose datagrams passed here, and their owners, by family. The
 * engine keeps a bound UDP port's owner until the socket's release event;
 * the driver reports each release, live mode only when the port (of the
 * same family) comes back in another process's socket, before that
 * socket's first datagram: without it, the port would keep its old owner.
 * The release names the unbound socket a client has (a wildcard address).
 * Only the reader touches it. */
#define UDP_SEEN 512
static struct {
  uint16_t port;
  uint8_t v6;
  DWORD pid;
} g_udp_seen[UDP_SEEN];
static unsigned g_udp_next;

static void udp_owner(const flow_key *k, DWORD pid) {
  unsigned i = 0;
  while (i < UDP_SEEN && !(g_udp_seen[i].pid && g_udp_seen[i].port == k->sport && g_udp_seen[i].v6 == k->v6)) i++;
  if (i < UDP_SEEN && g_udp_seen[i].pid == pid) return;
  if (i < UDP_SEEN) {
    char line[128];
    snprintf(line, sizeof line, "socket close pid=%lu proto=udp local=%s:%u", (unsigned long)g_udp_seen[i].pid,
             k->v6 ? "[::]" : "0.0.0.0", (unsigned)k->sport);
    live_log("live_socket_event %s", line);
    g_event(line);
  } else {
    i = g_udp_next++ % UDP_SEEN;
  }
  g_udp_seen[i].port = k->sport;
  g_udp_seen[i].v6 = (uint8_t)k->v6;
  g_udp_seen[i].pid = pid;
}

/* Before a new outbound flow's first packet is handed on: its owner in the
 * tables, or else a SOCKET connect event naming it (see the top of this
 * file). */
static void name_owner(const uint8_t *p, uint32_t len, int loopback) {
  flow_key k;
  if (!first_packet(p, len, &k)) return;
  ULONGLONG start = GetTickCount64();
  DWORD pid = 0;
  if (!(k.tcp && k.v6)) {
    pid = table_owner(&k);
    if (!pid) g_owner_waits++;
    while (!pid && GetTickCount64() - start < OWNER_WAIT_MS && !InterlockedCompareExchange(&g_stopping, 0, 0)) {
      Sleep(2);
      pid = table_owner(&k);
    }
    if (GetTickCount64() - start >= 10) {
      live_log("live_owner_table %s port=%u pid=%lu waited_ms=%llu", k.tcp ? "tcp" : "udp", (unsigned)k.sport,
               (unsigned long)pid, (unsigned long long)(GetTickCount64() - start));
    }
  }
  char local[80], remote[80], line[256];
  endpoint(k.v6, k.src, k.sport, local, sizeof local);
  endpoint(k.v6, k.dst, k.dport, remote, sizeof remote);
  if (!pid) {
    pid = handle_owner(&k);
    if (!pid) {
      g_owner_misses++;
      live_log("live_owner_unknown %s local=%s remote=%s", k.tcp ? "tcp" : "udp", local, remote);
      return;
    }
    g_owner_events++;
    snprintf(line, sizeof line, "socket connect pid=%lu proto=%s local=%s remote=%s%s", (unsigned long)pid,
             k.tcp ? "tcp" : "udp", local, remote, loopback ? " loopback" : "");
    live_log("live_socket_event %s", line);
    g_event(line);
  }
  if (!k.tcp) udp_owner(&k, pid);
}

/* ------------------------------------------------------------------------
 * The reader */

static DWORD WINAPI reader(LPVOID arg) {
  (void)arg;
  uint8_t *buf = malloc(LIVE_MAX_PACKET);
  unsigned long packets = 0, diverted = 0;
  live_header hd;
  while (buf && sock_all(g_sock, (char *)&hd, sizeof hd, 0) && hd.len <= LIVE_MAX_PACKET &&
         sock_all(g_sock, (char *)buf, hd.len, 0)) {
    if (hd.type != LIVE_PACKET) continue;
    int outbound = (hd.flags & LIVE_F_OUTBOUND) != 0;
    if (outbound) name_owner(buf, hd.len, (hd.flags & LIVE_F_LOOPBACK) != 0);
    int taken = g_deliver(outbound, (hd.flags & LIVE_F_LOOPBACK) != 0, hd.if_idx, buf, hd.len);
    packets++;
    diverted += taken ? 1 : 0;
    if (!send_message(LIVE_VERDICT, taken ? LIVE_DIVERTED : 0, hd.id, 0, NULL, 0)) break;
  }
  live_log("live_stopped packets=%lu diverted=%lu owner_waits=%lu owner_events=%lu owner_misses=%lu", packets,
           diverted, g_owner_waits, g_owner_events, g_owner_misses);
  free(buf);
  return 0;
}

unsigned long fl_start(fl_deliver_fn deliver, fl_event_fn event, fl_log_fn log) {
  if (g_reader) return 0;
  live_log = log;
  g_event = event;
  char where[64];
  DWORD n = GetEnvironmentVariableA("WR_FAKE_WINDIVERT_LIVE", where, sizeof where);
  char *colon = n > 0 && n < sizeof where ? strrchr(where, ':') : NULL;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  if (!colon) return ERROR_INVALID_PARAMETER;
  *colon = '\0';
  a.sin_port = htons((u_short)atoi(colon + 1));
  if (InetPtonA(AF_INET, where, &a.sin_addr) != 1) return ERROR_INVALID_PARAMETER;
  WSADATA w;
  WSAStartup(MAKEWORD(2, 2), &w);
  /* Not inherited: the acceptance program's children must not hold it. */
  SOCKET s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET) return (unsigned long)WSAGetLastError();
  int big = 4 << 20, one = 1;
  setsockopt(s, SOL_SOCKET, SO_SNDBUF, (const char *)&big, sizeof big);
  setsockopt(s, SOL_SOCKET, SO_RCVBUF, (const char *)&big, sizeof big);
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
  if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
    unsigned long e = (unsigned long)WSAGetLastError();
    closesocket(s);
    live_log("live_connect_failed %s:%u error=%lu", where, (unsigned)ntohs(a.sin_port), e);
    return e;
  }
  g_sock = s;
  g_deliver = deliver;
  g_owner_waits = g_owner_events = g_owner_misses = 0;
  memset(g_udp_seen, 0, sizeof g_udp_seen);
  g_udp_next = 0;
  InterlockedExchange(&g_stopping, 0);
  g_reader = CreateThread(NULL, 0, reader, NULL, 0, NULL);
  if (!g_reader) {
    closesocket(s);
    g_sock = INVALID_SOCKET;
    return GetLastError();
  }
  live_log("live_connected %s:%u", where, (unsigned)ntohs(a.sin_port));
  return 0;
}

void fl_send(int outbound, uint32_t if_idx, const uint8_t *wire, uint32_t len) {
  if (!g_reader || len > LIVE_MAX_PACKET) return;
  /* As on Windows, a packet whose checksums were said to be right goes out
   * as it is; the receiving stack drops it if they are not. */
  if (!tu_checksums_ok(wire, len)) live_log("live_send_bad_checksum len=%lu", (unsigned long)len);
  if (!send_message(LIVE_INJECT, outbound ? LIVE_F_OUTBOUND : 0, 0, if_idx, wire, len)) live_log("live_send_failed");
}

void fl_stop(void) {
  if (!g_reader) return;
  InterlockedExchange(&g_stopping, 1);
  shutdown(g_sock, SD_BOTH); /* the reader's receive ends */
  WaitForSingleObject(g_reader, INFINITE);
  CloseHandle(g_reader);
  g_reader = NULL;
  closesocket(g_sock);
  g_sock = INVALID_SOCKET;
}
