/* Windows socket owners: the TCP/UDP tables with owning PIDs
 * (GetExtendedTcpTable/GetExtendedUdpTable, from iphlpapi.dll loaded at run
 * time so the library's DLL imports only KERNEL32 and msvcrt) and process
 * paths by PID, cached with each process's creation time so that a reused
 * PID is never given the path of the process that had it before.
 *
 * Process ancestry (for process-tree targeting, decided by the engine): a
 * process, the process that created it, and so on. The parent is the PID
 * Windows recorded at creation (NtQueryInformationProcess,
 * ProcessBasicInformation's InheritedFromUniqueProcessId: it stays when the
 * parent exits, so it may name a later process that reuses the PID), and
 * each identity is (PID, creation time from GetProcessTimes). A process
 * opened under the parent PID that was created after its child is another
 * one (the PID was reused): the chain ends there. So does a parent that
 * has exited, unless this cache saw it alive, with that PID, at or after
 * the child's creation (then it was the parent): at a look-up, or in a
 * listing of every process (wr_owners_watch). Each process is resolved
 * once (path, parent PID, parent's creation time) and cached by identity. */
#ifndef WR_WIN_OWNERS_H
#define WR_WIN_OWNERS_H

#include <stddef.h>
#include <stdint.h>

#include "host.h" /* wr_ancestor, WR_ANCESTRY_CAP */

typedef struct wr_owners wr_owners;

/* One row of a socket table. Addresses in network order (IPv4 in the first
 * 4 bytes), ports in host order; remote is zero for listeners and UDP. */
typedef struct {
  uint8_t proto;  /* 6 or 17 */
  uint8_t family; /* 4 or 6 */
  uint8_t listening;
  uint8_t local[16];
  uint8_t remote[16];
  uint16_t local_port;
  uint16_t remote_port;
  uint32_t pid;
} wr_socket_row;

/* Return nonzero to stop the walk. */
typedef int (*wr_socket_row_fn)(void *ctx, const wr_socket_row *row);

/* Loads iphlpapi.dll from System32. Never fails: without the DLL the tables
 * read as empty and wr_owners_tables_error says why. NULL only when out of
 * memory. */
wr_owners *wr_owners_new(void);
void wr_owners_free(wr_owners *o);

/* Why the tables cannot be read ("" when they can). */
const char *wr_owners_tables_error(const wr_owners *o);

#define WR_TABLE_TCP_LISTENERS 1
#define WR_TABLE_TCP_ALL 2
#define WR_TABLE_UDP 3

/* Walks a table of one family (4 or 6). Returns the number of rows walked,
 * or -1 with the Win32 error in *error when the table could not be read. */
int wr_owners_walk(wr_owners *o, int table, int family, wr_socket_row_fn fn, void *ctx, uint32_t *error);

/* The executable path of `pid` as UTF-8 in buf (NUL-terminated; a path too
 * long keeps its tail, where the file name is). `when` is the time of the
 * event that named the PID as a FILETIME value (100 ns since 1601), or 0 for
 * now: a process created after it is another one that reuses the PID, and
 * gives no path. Returns the path's length, 0 when unknown. Thread-safe. */
size_t wr_owners_process_path(wr_owners *o, uint32_t pid, uint64_t when, char *buf, size_t buflen);

/* The longest path kept per process (longer ones keep their tail). */
#define WR_OWNERS_PATH_BYTES 2048

/* A process's ancestry: chain[0] the process itself, chain[1] its parent,
 * ... (n of them; 0: unknown), each path in paths[i]. */
typedef struct {
  size_t n;
  wr_ancestor chain[WR_ANCESTRY_CAP];
  char paths[WR_ANCESTRY_CAP][WR_OWNERS_PATH_BYTES];
} wr_ancestry;

/* wr_owners_process_path, and the process's ancestry into *anc (when not
 * NULL): the process as it was at `when` (0: now), then its parents as far
 * as they can be told (owners.h's head). The creation times are FILETIME
 * values and never decrease along the chain. Thread-safe. */
size_t wr_owners_process(wr_owners *o, uint32_t pid, uint64_t when, char *buf, size_t buflen, wr_ancestry *anc);

/* Lists every process now (wr_owners_watch), and notes each one as seen
 * alive: a parent that exits soon after it started a child stays known as
 * that child's parent (by the rule in this file's head), with its image
 * file name for a path. While the policy names process trees, the backend
 * calls it every WR_WD_WATCH_MS. Returns how many processes it listed, -1
 * when the list could not be read. */
#define WR_WD_WATCH_MS 250
int wr_owners_watch(wr_owners *o);

/* One process of a listing: UTF-8 name (not NUL-terminated). */
typedef void (*wr_process_row_fn)(void *fctx, uint32_t pid, uint64_t created, uint32_t ppid, const char *name,
                                  size_t name_len);

/* Where process facts come from: the OS (the default), or a test's table.
 * open: 1 with the creation time (FILETIME) and a handle for the others, 0
 * when no process has the PID, -1 when it cannot be opened for another
 * reason. parent: 1 with the PID that created the process. path: the
 * executable as UTF-8 (tail kept), its length (0 unknown). list: every
 * process now (NtQuerySystemInformation), -1 when it cannot say. */
typedef struct {
  int (*open)(void *ctx, uint32_t pid, void **h, uint64_t *created);
  int (*parent)(void *ctx, void *h, uint32_t *ppid);
  size_t (*path)(void *ctx, void *h, char *buf, size_t cap);
  void (*close)(void *ctx, void *h);
  uint64_t (*now)(void *ctx); /* FILETIME now */
  int (*list)(void *ctx, wr_process_row_fn fn, void *fctx);
  void *ctx;
} wr_process_source;

/* Replaces the source (tests; NULL: the OS again) and empties the cache. */
void wr_owners_set_process_source(wr_owners *o, const wr_process_source *src);

/* A QueryPerformanceCounter value (a WinDivert timestamp) as a FILETIME
 * value: the wall clock now, less the counter ticks since. Both clocks are
 * read at each call (an event is converted when it is read), so a wall-clock
 * correction made after start does not shift later events. */
uint64_t wr_owners_qpc_to_filetime(const wr_owners *o, int64_t qpc);

/* The same with both clocks given: the wall-clock time of counter value
 * qpc when the counter reads now_qpc at wall-clock time now_ft (freq ticks
 * per second). */
uint64_t wr_qpc_to_filetime(int64_t qpc, int64_t now_qpc, uint64_t now_ft, int64_t freq);

#endif
