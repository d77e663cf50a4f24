/* Windows socket owners: the TCP/UDP tables with owning PIDs
 * (GetExtendedTcpTable/GetExtendedUdpTable, from iphlpapi.dll loaded at run
 * time so the library's DLL imports only KERNEL32 and msvcrt) and process
 * paths by PID, cached with each process's creation time so that a reused
 * PID is never given the path of the process that had it before. */
#ifndef WR_WIN_OWNERS_H
#define WR_WIN_OWNERS_H

#include <stddef.h>
#include <stdint.h>

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
