/* Socket tables and process paths on Windows (see owners.h). */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <iphlpapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/windivert/owners.h"
#include "utf8.h"

typedef DWORD(WINAPI *tcp_table_fn)(PVOID table, PDWORD size, BOOL order, ULONG af, TCP_TABLE_CLASS cls,
                                    ULONG reserved);
typedef DWORD(WINAPI *udp_table_fn)(PVOID table, PDWORD size, BOOL order, ULONG af, UDP_TABLE_CLASS cls,
                                    ULONG reserved);

/* The path cache: direct-mapped by PID. A slot is valid for one process: the
 * PID and the creation time both match. */
#define PATH_SLOTS 256
#define PATH_BYTES 2048 /* longer paths keep their tail */
/* How much earlier than its event a process may seem to start: the two
 * clocks are read at different moments. */
#define CLOCK_SLACK_100NS (2 * 10000000ull)

typedef struct {
  uint32_t pid;
  uint64_t created; /* FILETIME value; 0 = free slot */
  size_t len;
  char path[PATH_BYTES];
} path_slot;

struct wr_owners {
  HMODULE iphlpapi;
  tcp_table_fn tcp_table;
  udp_table_fn udp_table;
  char tables_error[160];
  int64_t qpc_freq; /* performance-counter ticks per second */
  SRWLOCK lock; /* guards the cache */
  path_slot *slots;
};

static uint64_t ft_value(FILETIME ft) { return ((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime; }

wr_owners *wr_owners_new(void) {
  wr_owners *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  o->slots = calloc(PATH_SLOTS, sizeof *o->slots);
  if (!o->slots) {
    free(o);
    return NULL;
  }
  InitializeSRWLock(&o->lock);
  LARGE_INTEGER f;
  QueryPerformanceFrequency(&f);
  o->qpc_freq = f.QuadPart > 0 ? f.QuadPart : 1;
  o->iphlpapi = LoadLibraryExW(L"iphlpapi.dll", NULL, LOAD_LIBRARY_SEARCH_SYSTEM32);
  if (!o->iphlpapi) {
    snprintf(o->tables_error, sizeof o->tables_error,
             "iphlpapi.dll could not be loaded from System32 (Windows error %lu)", (unsigned long)GetLastError());
    return o;
  }
  o->tcp_table = (tcp_table_fn)(void (*)(void))GetProcAddress(o->iphlpapi, "GetExtendedTcpTable");
  o->udp_table = (udp_table_fn)(void (*)(void))GetProcAddress(o->iphlpapi, "GetExtendedUdpTable");
  if (!o->tcp_table || !o->udp_table) {
    snprintf(o->tables_error, sizeof o->tables_error, "iphlpapi.dll has no %s",
             !o->tcp_table ? "GetExtendedTcpTable" : "GetExtendedUdpTable");
    o->tcp_table = NULL;
    o->udp_table = NULL;
  }
  return o;
}

void wr_owners_free(wr_owners *o) {
  if (!o) return;
  if (o->iphlpapi) FreeLibrary(o->iphlpapi);
  free(o->slots);
  free(o);
}

const char *wr_owners_tables_error(const wr_owners *o) { return o->tables_error; }

uint64_t wr_qpc_to_filetime(int64_t qpc, int64_t now_qpc, uint64_t now_ft, int64_t freq) {
  int64_t d = qpc - now_qpc;
  /* ticks -> 100 ns units, without overflow for any realistic span */
  int64_t units = (d / freq) * 10000000 + ((d % freq) * 10000000) / freq;
  return (uint64_t)((int64_t)now_ft + units);
}

uint64_t wr_owners_qpc_to_filetime(const wr_owners *o, int64_t qpc) {
  /* Both clocks now, for each event: a pairing made once at start would
   * shift every later event by whatever wall-clock correction came since. */
  LARGE_INTEGER c;
  FILETIME now;
  QueryPerformanceCounter(&c);
  GetSystemTimePreciseAsFileTime(&now);
  return wr_qpc_to_filetime(qpc, c.QuadPart, ft_value(now), o->qpc_freq);
}

/* ------------------------------------------------------------------------
 * Tables */

/* A port from a table row: network order in the low 16 bits of a DWORD. */
static uint16_t row_port(DWORD v) { return (uint16_t)(((v & 0xff) << 8) | ((v >> 8) & 0xff)); }

/* Reads a whole table into a malloc'd buffer (it may grow between calls). */
static void *read_table(wr_owners *o, int table, int family, uint32_t *error) {
  ULONG af = family == 6 ? AF_INET6 : AF_INET;
  DWORD size = 16384;
  for (int attempt = 0; attempt < 8; attempt++) {
    void *buf = malloc(size);
    if (!buf) {
      *error = ERROR_NOT_ENOUGH_MEMORY;
      return NULL;
    }
    DWORD want = size, rc;
    if (table == WR_TABLE_UDP) {
      rc = o->udp_table(buf, &want, FALSE, af, UDP_TABLE_OWNER_PID, 0);
    } else {
      rc = o->tcp_table(buf, &want, FALSE, af,
                        table == WR_TABLE_TCP_LISTENERS ? TCP_TABLE_OWNER_PID_LISTENER : TCP_TABLE_OWNER_PID_ALL, 0);
    }
    if (rc == NO_ERROR) return buf;
    free(buf);
    if (rc != ERROR_INSUFFICIENT_BUFFER) {
      *error = rc;
      return NULL;
    }
    size = want + 4096; /* room for sockets opened meanwhile */
  }
  *error = ERROR_INSUFFICIENT_BUFFER;
  return NULL;
}

/* One row from a table's fields (addresses network order, ports network
 * order in the low 16 bits, remote NULL for UDP). */
static void fill_row(wr_socket_row *r, uint8_t proto, uint8_t family, DWORD state, const void *local,
                     const void *remote, DWORD lport, DWORD rport, DWORD pid) {
  size_t alen = family == 4 ? 4 : 16;
  memset(r, 0, sizeof *r);
  r->proto = proto;
  r->family = family;
  r->listening = proto == 6 && state == MIB_TCP_STATE_LISTEN;
  memcpy(r->local, local, alen);
  if (remote && !r->listening) memcpy(r->remote, remote, alen);
  r->local_port = row_port(lport);
  r->remote_port = remote && !r->listening ? row_port(rport) : 0;
  r->pid = pid;
}

int wr_owners_walk(wr_owners *o, int table, int family, wr_socket_row_fn fn, void *ctx, uint32_t *error) {
  uint32_t dummy;
  if (!error) error = &dummy;
  *error = 0;
  if (!o->tcp_table || !o->udp_table) {
    *error = ERROR_PROC_NOT_FOUND;
    return -1;
  }
  void *buf = read_table(o, table, family, error);
  if (!buf) return -1;
  int walked = 0;
  wr_socket_row r;
  if (table == WR_TABLE_UDP && family == 4) {
    const MIB_UDPTABLE_OWNER_PID *t = buf;
    for (DWORD i = 0; i < t->dwNumEntries; i++) {
      const MIB_UDPROW_OWNER_PID *x = &t->table[i];
      fill_row(&r, 17, 4, 0, &x->dwLocalAddr, NULL, x->dwLocalPort, 0, x->dwOwningPid);
      walked++;
      if (fn(ctx, &r)) break;
    }
  } else if (table == WR_TABLE_UDP) {
    const MIB_UDP6TABLE_OWNER_PID *t = buf;
    for (DWORD i = 0; i < t->dwNumEntries; i++) {
      const MIB_UDP6ROW_OWNER_PID *x = &t->table[i];
      fill_row(&r, 17, 6, 0, x->ucLocalAddr, NULL, x->dwLocalPort, 0, x->dwOwningPid);
      walked++;
      if (fn(ctx, &r)) break;
    }
  } else if (family == 4) {
    const MIB_TCPTABLE_OWNER_PID *t = buf;
    for (DWORD i = 0; i < t->dwNumEntries; i++) {
      const MIB_TCPROW_OWNER_PID *x = &t->table[i];
      fill_row(&r, 6, 4, x->dwState, &x->dwLocalAddr, &x->dwRemoteAddr, x->dwLocalPort, x->dwRemotePort,
               x->dwOwningPid);
      walked++;
      if (fn(ctx, &r)) break;
    }
  } else {
    const MIB_TCP6TABLE_OWNER_PID *t = buf;
    for (DWORD i = 0; i < t->dwNumEntries; i++) {
      const MIB_TCP6ROW_OWNER_PID *x = &t->table[i];
      fill_row(&r, 6, 6, x->dwState, x->ucLocalAddr, x->ucRemoteAddr, x->dwLocalPort, x->dwRemotePort,
               x->dwOwningPid);
      walked++;
      if (fn(ctx, &r)) break;
    }
  }
  free(buf);
  return walked;
}

/* ------------------------------------------------------------------------
 * Process paths */

static path_slot *slot_of(wr_owners *o, uint32_t pid) {
  uint32_t h = (pid >> 2) * 2654435761u; /* Windows PIDs are multiples of 4 */
  return &o->slots[(h >> 24) % PATH_SLOTS];
}

/* Copies a cached path out (lock held). */
static size_t slot_copy(const path_slot *s, char *buf, size_t buflen) {
  if (buflen == 0) return 0;
  size_t n = wr_utf8_tail(s->path, s->len, buflen - 1); /* keep the tail */
  memcpy(buf, s->path + (s->len - n), n);
  buf[n] = '\0';
  return n;
}

/* The image path of an open process, as UTF-8 into the slot. 0 on failure. */
static int query_path(HANDLE h, path_slot *s) {
  DWORD wn = 32768;
  wchar_t *w = malloc(wn * sizeof *w);
  if (!w) return 0;
  int ok = 0;
  if (QueryFullProcessImageNameW(h, 0, w, &wn) && wn > 0) {
    int need = WideCharToMultiByte(CP_UTF8, 0, w, (int)wn, NULL, 0, NULL, NULL);
    char *u = need > 0 ? malloc((size_t)need) : NULL;
    if (u && WideCharToMultiByte(CP_UTF8, 0, w, (int)wn, u, need, NULL, NULL) == need) {
      size_t len = (size_t)need;
      size_t keep = wr_utf8_tail(u, len, PATH_BYTES);
      memcpy(s->path, u + (len - keep), keep);
      s->len = keep;
      ok = keep > 0;
    }
    free(u);
  }
  free(w);
  return ok;
}

size_t wr_owners_process_path(wr_owners *o, uint32_t pid, uint64_t when, char *buf, size_t buflen) {
  if (buflen) buf[0] = '\0';
  if (pid == 0 || pid == 4) return 0; /* Idle and System have no image */
  HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
  size_t n = 0;
  AcquireSRWLockExclusive(&o->lock);
  path_slot *s = slot_of(o, pid);
  if (!h) {
    /* Gone (or not ours to open): the cached path, if that process was
     * already running at the time of the event. */
    if (s->created && s->pid == pid && (when == 0 || s->created <= when + CLOCK_SLACK_100NS)) {
      n = slot_copy(s, buf, buflen);
    }
    ReleaseSRWLockExclusive(&o->lock);
    return n;
  }
  FILETIME created, exited, kernel, user;
  uint64_t c = 0;
  if (GetProcessTimes(h, &created, &exited, &kernel, &user)) c = ft_value(created);
  if (c != 0 && when != 0 && c > when + CLOCK_SLACK_100NS) {
    /* Started after the event: the PID was reused. */
  } else if (c != 0 && s->created == c && s->pid == pid) {
    n = slot_copy(s, buf, buflen);
  } else if (query_path(h, s)) {
    s->pid = pid;
    s->created = c ? c : 1;
    n = slot_copy(s, buf, buflen);
  } else {
    s->created = 0;
  }
  ReleaseSRWLockExclusive(&o->lock);
  CloseHandle(h);
  return n;
}
