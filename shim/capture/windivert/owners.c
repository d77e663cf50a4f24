/* Socket tables and process paths on Windows (see owners.h). */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <iphlpapi.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/windivert/owners.h"
#include "os/platform.h"
#include "utf8.h"

typedef DWORD(WINAPI *tcp_table_fn)(PVOID table, PDWORD size, BOOL order, ULONG af, TCP_TABLE_CLASS cls,
                                    ULONG reserved);
typedef DWORD(WINAPI *udp_table_fn)(PVOID table, PDWORD size, BOOL order, ULONG af, UDP_TABLE_CLASS cls,
                                    ULONG reserved);

/* The process cache: direct-mapped by PID. A slot is valid for one process:
 * the PID and the creation time both match. */
#define PATH_SLOTS 512
#define PATH_BYTES WR_OWNERS_PATH_BYTES /* longer paths keep their tail */
/* How much earlier than its event a process may seem to start: the two
 * clocks are read at different moments. */
#define CLOCK_SLACK_100NS (2 * 10000000ull)

/* What a slot knows of its process's parent. */
#define PARENT_UNKNOWN 0 /* not asked yet (or the process could not say) */
#define PARENT_PID 1     /* its PID known, its identity not yet */
#define PARENT_KNOWN 2   /* its identity: ppid and pcreated */
#define PARENT_NONE 3    /* none, or gone for good: the chain ends here */

typedef struct {
  uint32_t pid;
  uint64_t created; /* FILETIME value; 0 = free slot */
  uint64_t seen;    /* when it was last opened and found to be this process */
  int parent;       /* PARENT_* */
  uint32_t ppid;
  uint64_t pcreated;
  size_t len;
  char path[PATH_BYTES];
} path_slot;

/* Every process a listing showed (wr_owners_watch): a set of SEEN_WAYS
 * slots per PID, so that processes alive together keep theirs (two of some
 * hundreds share a set more often than not). A newer process of the PID
 * takes its slot, else a free one, else the one seen alive longest ago. */
#define SEEN_SLOTS 4096
#define SEEN_WAYS 8
#define SEEN_NAME 128 /* the image file name's last bytes */

typedef struct {
  uint32_t pid;
  uint32_t ppid;
  uint64_t created; /* 0 = free slot */
  uint64_t seen;
  size_t len;
  char name[SEEN_NAME];
} seen_slot;

struct wr_owners {
  HMODULE iphlpapi;
  tcp_table_fn tcp_table;
  udp_table_fn udp_table;
  char tables_error[160];
  int64_t qpc_freq; /* performance-counter ticks per second */
  SRWLOCK lock; /* guards the cache and the source */
  path_slot *slots;
  seen_slot *seen;
  wr_process_source src;
  wchar_t *wbuf; /* QueryFullProcessImageNameW's (lock held) */
  ULONG list_size; /* bytes the last process listing took (the watch thread's) */
};

static uint64_t ft_value(FILETIME ft) { return ((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime; }

static const wr_process_source os_source;

wr_owners *wr_owners_new(void) {
  wr_owners *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  o->slots = calloc(PATH_SLOTS, sizeof *o->slots);
  o->seen = calloc(SEEN_SLOTS, sizeof *o->seen);
  o->wbuf = malloc(32768 * sizeof *o->wbuf);
  if (!o->slots || !o->seen || !o->wbuf) {
    free(o->slots);
    free(o->seen);
    free(o->wbuf);
    free(o);
    return NULL;
  }
  o->src = os_source;
  o->src.ctx = o;
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
  free(o->seen);
  free(o->wbuf);
  free(o);
}

const char *wr_owners_tables_error(const wr_owners *o) { return o->tables_error; }

uint64_t wr_qpc_to_filetime(int64_t qpc, int64_t now_qpc, uint64_t now_ft, int64_t freq) {
  /* ticks -> 100 ns units, toward zero on either side of now */
  if (qpc >= now_qpc) return now_ft + wr_ticks_scale((uint64_t)(qpc - now_qpc), (uint64_t)freq, 10000000u);
  return now_ft - wr_ticks_scale((uint64_t)(now_qpc - qpc), (uint64_t)freq, 10000000u);
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
 * Processes: the OS's facts (the default source) */

typedef LONG(NTAPI *nt_query_process_fn)(HANDLE process, ULONG info_class, PVOID info, ULONG len, PULONG ret_len);
typedef LONG(NTAPI *nt_query_system_fn)(ULONG info_class, PVOID info, ULONG len, PULONG ret_len);

static nt_query_process_fn nt_query_process_p;
static nt_query_system_fn nt_query_system_p;

/* ntdll.dll is in every process: its functions are looked up, not imported. */
static void nt_functions(void) {
  static LONG looked; /* 0 not yet, 1 looking, 2 done */
  if (InterlockedCompareExchange(&looked, 1, 0) == 0) {
    HMODULE nt = GetModuleHandleW(L"ntdll.dll");
    if (nt) {
      nt_query_process_p = (nt_query_process_fn)(void (*)(void))GetProcAddress(nt, "NtQueryInformationProcess");
      nt_query_system_p = (nt_query_system_fn)(void (*)(void))GetProcAddress(nt, "NtQuerySystemInformation");
    }
    InterlockedExchange(&looked, 2);
  }
  while (InterlockedCompareExchange(&looked, 2, 2) != 2) Sleep(0);
}

static int os_open(void *ctx, uint32_t pid, void **h, uint64_t *created) {
  (void)ctx;
  HANDLE p = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
  if (!p) return GetLastError() == ERROR_INVALID_PARAMETER ? 0 : -1; /* no such process : not ours to open */
  FILETIME c, e, k, u;
  if (!GetProcessTimes(p, &c, &e, &k, &u) || ft_value(c) == 0) {
    CloseHandle(p);
    return -1;
  }
  *created = ft_value(c);
  *h = p;
  return 1;
}

/* The PID Windows recorded as the process's creator (ProcessBasicInformation,
 * class 0: InheritedFromUniqueProcessId). */
static int os_parent(void *ctx, void *h, uint32_t *ppid) {
  (void)ctx;
  nt_functions();
  nt_query_process_fn q = nt_query_process_p;
  struct {
    LONG exit_status;
    PVOID peb;
    ULONG_PTR affinity;
    LONG base_priority;
    ULONG_PTR pid;
    ULONG_PTR ppid;
  } pbi;
  ULONG got = 0;
  if (!q || q((HANDLE)h, 0, &pbi, sizeof pbi, &got) < 0) return 0;
  *ppid = (uint32_t)pbi.ppid;
  return 1;
}

/* The image path of an open process as UTF-8 (its tail when too long). */
static size_t os_path(void *ctx, void *h, char *buf, size_t cap) {
  wr_owners *o = ctx;
  DWORD wn = 32768;
  wchar_t *w = o->wbuf;
  size_t keep = 0;
  if (QueryFullProcessImageNameW((HANDLE)h, 0, w, &wn) && wn > 0) {
    int need = WideCharToMultiByte(CP_UTF8, 0, w, (int)wn, NULL, 0, NULL, NULL);
    char *u = need > 0 ? malloc((size_t)need) : NULL;
    if (u && WideCharToMultiByte(CP_UTF8, 0, w, (int)wn, u, need, NULL, NULL) == need) {
      size_t len = (size_t)need;
      keep = wr_utf8_tail(u, len, cap);
      memcpy(buf, u + (len - keep), keep);
    }
    free(u);
  }
  return keep;
}

static void os_close(void *ctx, void *h) {
  (void)ctx;
  CloseHandle((HANDLE)h);
}

static uint64_t os_now(void *ctx) {
  (void)ctx;
  FILETIME now;
  GetSystemTimePreciseAsFileTime(&now);
  return ft_value(now);
}

/* SystemProcessInformation's record (class 5), as far as it is read: the
 * same layout for 32- and 64-bit processes, with natural alignment. */
typedef struct {
  ULONG next; /* bytes to the next record, 0 for the last */
  ULONG threads;
  LARGE_INTEGER working_set_private;
  ULONG hard_faults;
  ULONG threads_high;
  ULONGLONG cycle_time;
  LARGE_INTEGER create_time;
  LARGE_INTEGER user_time;
  LARGE_INTEGER kernel_time;
  USHORT name_len; /* UNICODE_STRING: bytes */
  USHORT name_max;
  PWSTR name;
  LONG base_priority;
  HANDLE pid;
  HANDLE ppid;
} sys_process;

#define STATUS_INFO_LENGTH_MISMATCH ((LONG)0xC0000004)

static int os_list(void *ctx, wr_process_row_fn fn, void *fctx) {
  wr_owners *o = ctx;
  nt_functions();
  if (!nt_query_system_p) return -1;
  /* The size the last listing needed, and room for processes started since. */
  ULONG size = (o->list_size ? o->list_size : 256u << 10) + (64u << 10), got = 0;
  void *buf = NULL;
  LONG st = STATUS_INFO_LENGTH_MISMATCH;
  for (int attempt = 0; attempt < 6 && st == STATUS_INFO_LENGTH_MISMATCH; attempt++) {
    free(buf);
    buf = malloc(size);
    if (!buf) return -1;
    st = nt_query_system_p(5, buf, size, &got);
    if (st == STATUS_INFO_LENGTH_MISMATCH) size = (got > size ? got : size * 2) + (64u << 10);
  }
  if (st < 0) {
    free(buf);
    return -1;
  }
  o->list_size = got ? got : size;
  int n = 0;
  char name[1024]; /* an image file name (at most 260 UTF-16 units) as UTF-8 */
  for (const uint8_t *p = buf;; p += ((const sys_process *)p)->next) {
    const sys_process *r = (const sys_process *)p;
    int len = r->name && r->name_len
                  ? WideCharToMultiByte(CP_UTF8, 0, r->name, r->name_len / 2, name, (int)sizeof name, NULL, NULL)
                  : 0;
    fn(fctx, (uint32_t)(ULONG_PTR)r->pid, (uint64_t)r->create_time.QuadPart, (uint32_t)(ULONG_PTR)r->ppid, name,
       len > 0 ? (size_t)len : 0);
    n++;
    if (r->next == 0) break;
  }
  free(buf);
  return n;
}

static const wr_process_source os_source = {os_open, os_parent, os_path, os_close, os_now, os_list, NULL};

void wr_owners_set_process_source(wr_owners *o, const wr_process_source *src) {
  AcquireSRWLockExclusive(&o->lock);
  if (src) {
    o->src = *src;
  } else {
    o->src = os_source;
    o->src.ctx = o;
  }
  memset(o->slots, 0, PATH_SLOTS * sizeof *o->slots);
  memset(o->seen, 0, SEEN_SLOTS * sizeof *o->seen);
  ReleaseSRWLockExclusive(&o->lock);
}

/* ------------------------------------------------------------------------
 * Processes: the cache (lock held throughout) */

static path_slot *slot_of(wr_owners *o, uint32_t pid) {
  uint32_t h = (pid >> 2) * 2654435761u; /* Windows PIDs are multiples of 4 */
  return &o->slots[(h >> 20) % PATH_SLOTS];
}

/* The slot of the process (pid, created), or NULL when not cached. */
static path_slot *cached(wr_owners *o, uint32_t pid, uint64_t created) {
  path_slot *s = slot_of(o, pid);
  return s->created != 0 && s->pid == pid && s->created == created ? s : NULL;
}

static seen_slot *seen_set(wr_owners *o, uint32_t pid) {
  uint32_t h = (pid >> 2) * 2654435761u;
  return &o->seen[((h >> 20) % (SEEN_SLOTS / SEEN_WAYS)) * SEEN_WAYS];
}

/* What the listings saw last of the PID, or NULL. */
static seen_slot *seen_of(wr_owners *o, uint32_t pid) {
  seen_slot *set = seen_set(o, pid);
  for (int i = 0; i < SEEN_WAYS; i++) {
    if (set[i].created != 0 && set[i].pid == pid) return &set[i];
  }
  return NULL;
}

/* The slot for a listed PID: its own, a free one, or the one seen alive
 * longest ago. */
static seen_slot *seen_room(wr_owners *o, uint32_t pid) {
  seen_slot *e = seen_of(o, pid);
  if (e) return e;
  seen_slot *set = seen_set(o, pid);
  for (int i = 0; i < SEEN_WAYS; i++) {
    if (set[i].created == 0) return &set[i];
    if (!e || set[i].seen < e->seen) e = &set[i];
  }
  return e;
}

/* The slot, emptied, for the process (pid, created): nothing known of it yet. */
static void claim(path_slot *s, uint32_t pid, uint64_t created) {
  memset(s, 0, offsetof(path_slot, path));
  s->pid = pid;
  s->created = created;
}

/* The parent PID the OS recorded for the slot's process (0 or its own PID:
 * none). */
static void set_parent(path_slot *s, uint32_t ppid) {
  s->ppid = ppid;
  s->parent = ppid == 0 || ppid == s->pid ? PARENT_NONE : PARENT_PID;
}

/* What a listing saw of the process `pid` created at `created`, or of the
 * one with that PID created no later than `before` and seen alive at or
 * after `alive_at` (created 0): a slot of the cache made from it (its
 * image file name for a path), or NULL. */
static path_slot *from_seen(wr_owners *o, uint32_t pid, uint64_t created, uint64_t before, uint64_t alive_at) {
  const seen_slot *e = seen_of(o, pid);
  if (!e) return NULL;
  if (created ? e->created != created : e->created > before || e->seen < alive_at) return NULL;
  path_slot *s = slot_of(o, pid);
  if (s->created == e->created && s->pid == pid) {
    if (e->seen > s->seen) s->seen = e->seen;
    return s;
  }
  claim(s, pid, e->created);
  s->seen = e->seen;
  set_parent(s, e->ppid);
  memcpy(s->path, e->name, e->len);
  s->len = e->len;
  return s;
}

/* Copies a cached path out. */
static size_t slot_copy(const path_slot *s, char *buf, size_t buflen) {
  if (buflen == 0) return 0;
  size_t n = wr_utf8_tail(s->path, s->len, buflen - 1); /* keep the tail */
  memcpy(buf, s->path + (s->len - n), n);
  buf[n] = '\0';
  return n;
}

/* The slot of an open process (h; created), seen now: what is not known of
 * it yet (its path, its parent PID) is asked once. */
static path_slot *fill(wr_owners *o, uint32_t pid, void *h, uint64_t created, uint64_t now) {
  path_slot *s = slot_of(o, pid);
  if (s->created != created || s->pid != pid) claim(s, pid, created);
  if (s->len == 0) s->len = o->src.path(o->src.ctx, h, s->path, PATH_BYTES);
  uint32_t ppid = 0;
  if (s->parent == PARENT_UNKNOWN && o->src.parent(o->src.ctx, h, &ppid)) set_parent(s, ppid);
  s->seen = now;
  return s;
}

/* The slot of the process that had `pid` at `when` (0: now), or NULL.
 * *sure: it is that process beyond doubt (open now, or seen alive since);
 * a gone process's cached path is given on less (created before the event). */
static path_slot *owner_slot(wr_owners *o, uint32_t pid, uint64_t when, uint64_t now, int *sure) {
  void *h = NULL;
  uint64_t c = 0;
  *sure = 0;
  if (o->src.open(o->src.ctx, pid, &h, &c) == 1) {
    path_slot *s = NULL;
    if (when == 0 || c <= when + CLOCK_SLACK_100NS) {
      s = fill(o, pid, h, c, now);
    } else {
      /* Created after the event: the PID was reused. The event's process,
       * if a listing saw it alive then. */
      s = from_seen(o, pid, 0, when + CLOCK_SLACK_100NS, when > CLOCK_SLACK_100NS ? when - CLOCK_SLACK_100NS : 0);
    }
    o->src.close(o->src.ctx, h);
    *sure = s != NULL;
    return s;
  }
  /* Gone (or not ours to open): the process a listing saw alive at the
   * time of the event; else the cached one, if it was already running
   * then. */
  uint64_t at = when ? when : now;
  path_slot *s = from_seen(o, pid, 0, at + CLOCK_SLACK_100NS, at > CLOCK_SLACK_100NS ? at - CLOCK_SLACK_100NS : 0);
  if (s) {
    *sure = 1;
    return s;
  }
  s = slot_of(o, pid);
  if (s->created == 0 || s->pid != pid || (when != 0 && s->created > when + CLOCK_SLACK_100NS)) return NULL;
  *sure = s->created <= at + CLOCK_SLACK_100NS && s->seen + CLOCK_SLACK_100NS >= at;
  return s;
}

/* The parent of the cached process (pid, created): its slot, or NULL when
 * the chain ends there. The child's slot keeps the answer when it is final
 * (the parent's identity, or none for good). */
static path_slot *parent_slot(wr_owners *o, uint32_t pid, uint64_t created, uint64_t now) {
  path_slot *c = cached(o, pid, created);
  if (!c || (c->parent != PARENT_PID && c->parent != PARENT_KNOWN)) return NULL;
  uint32_t ppid = c->ppid;
  uint64_t pc = c->parent == PARENT_KNOWN ? c->pcreated : 0;
  if (pc) {
    path_slot *p = cached(o, ppid, pc);
    if (p) return p;
  }
  void *h = NULL;
  uint64_t x = 0;
  int r = o->src.open(o->src.ctx, ppid, &h, &x);
  path_slot *p = NULL;
  int ended = 0;
  if (r == 1) {
    /* Known: the same process again. Not yet: one created after its child
     * has the PID only by reuse. */
    if (pc ? x == pc : x <= created) {
      p = fill(o, ppid, h, x, now);
    } else {
      ended = 1;
    }
    o->src.close(o->src.ctx, h);
  } else {
    /* Gone, or not ours to open: the cached process with that PID, if it
     * was created before the child and seen alive since the child's
     * creation (so it had the PID then: it was the parent). */
    path_slot *s = slot_of(o, ppid);
    if (s->created != 0 && s->pid == ppid && (pc ? s->created == pc : s->created <= created && s->seen >= created)) {
      p = s;
    } else if ((p = from_seen(o, ppid, pc, created, created)) == NULL && r == 0) {
      ended = 1; /* gone, and never to be known */
    }
  }
  c = cached(o, pid, created); /* (the parent may have taken the child's slot) */
  if (c && p) {
    c->parent = PARENT_KNOWN;
    c->pcreated = p->created;
  } else if (c && ended) {
    c->parent = PARENT_NONE;
  }
  return p;
}

static void put(wr_ancestry *a, const path_slot *s, uint64_t now) {
  wr_ancestor *x = &a->chain[a->n];
  memcpy(a->paths[a->n], s->path, s->len);
  x->pid = s->pid;
  x->ctime = s->created;
  x->age_ms = now >= s->created ? (now - s->created) / 10000u : 0;
  x->path = s->len ? a->paths[a->n] : NULL;
  x->path_len = s->len;
  a->n++;
}

/* The ancestry of a process known beyond doubt (its slot s). */
static void walk(wr_owners *o, const path_slot *s, wr_ancestry *a, uint64_t now) {
  uint32_t pid = s->pid;
  uint64_t created = s->created;
  a->n = 0;
  put(a, s, now);
  while (a->n < WR_ANCESTRY_CAP) {
    const path_slot *p = parent_slot(o, pid, created, now);
    if (!p || p->created > created) return;
    for (size_t i = 0; i < a->n; i++) {
      if (a->chain[i].pid == p->pid) return; /* a loop: no real ancestry has one */
    }
    put(a, p, now);
    pid = p->pid;
    created = p->created;
  }
}

size_t wr_owners_process(wr_owners *o, uint32_t pid, uint64_t when, char *buf, size_t buflen, wr_ancestry *anc) {
  if (buflen) buf[0] = '\0';
  if (anc) anc->n = 0;
  if (pid == 0 || pid == 4) return 0; /* Idle and System have no image */
  size_t n = 0;
  AcquireSRWLockExclusive(&o->lock);
  uint64_t now = o->src.now(o->src.ctx);
  int sure = 0;
  path_slot *s = owner_slot(o, pid, when, now, &sure);
  if (s) {
    n = slot_copy(s, buf, buflen);
    if (anc && sure) walk(o, s, anc, now);
  }
  ReleaseSRWLockExclusive(&o->lock);
  return n;
}

/* ------------------------------------------------------------------------
 * Processes: listings */

typedef struct {
  uint32_t pid, ppid;
  uint64_t created;
  size_t len;
  char name[SEEN_NAME];
} listed;

typedef struct {
  listed *rows;
  size_t n, cap;
} listing;

static void list_row(void *fctx, uint32_t pid, uint64_t created, uint32_t ppid, const char *name, size_t len) {
  listing *l = fctx;
  if (pid == 0 || created == 0) return;
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 512;
    listed *rows = realloc(l->rows, cap * sizeof *rows);
    if (!rows) return;
    l->rows = rows;
    l->cap = cap;
  }
  listed *r = &l->rows[l->n++];
  r->pid = pid;
  r->ppid = ppid;
  r->created = created;
  r->len = wr_utf8_tail(name, len, SEEN_NAME);
  memcpy(r->name, name + (len - r->len), r->len);
}

int wr_owners_watch(wr_owners *o) {
  listing l = {NULL, 0, 0};
  /* Listed outside the lock (the owner look-ups go on meanwhile): each
   * process listed was alive at `now` or created since. */
  AcquireSRWLockShared(&o->lock);
  wr_process_source src = o->src;
  ReleaseSRWLockShared(&o->lock);
  uint64_t now = src.now(src.ctx);
  int n = src.list ? src.list(src.ctx, list_row, &l) : -1;
  AcquireSRWLockExclusive(&o->lock);
  for (size_t i = 0; n >= 0 && i < l.n; i++) {
    const listed *r = &l.rows[i];
    seen_slot *e = seen_room(o, r->pid);
    if (e->pid != r->pid || e->created != r->created) {
      e->pid = r->pid;
      e->created = r->created;
      e->seen = now;
      e->ppid = r->ppid;
      e->len = r->len;
      memcpy(e->name, r->name, r->len);
    }
    if (now > e->seen) e->seen = now;
    path_slot *s = cached(o, r->pid, r->created);
    if (s && now > s->seen) s->seen = now;
  }
  ReleaseSRWLockExclusive(&o->lock);
  free(l.rows);
  return n;
}

size_t wr_owners_process_path(wr_owners *o, uint32_t pid, uint64_t when, char *buf, size_t buflen) {
  return wr_owners_process(o, pid, when, buf, buflen, NULL);
}
