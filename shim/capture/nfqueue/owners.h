/* Who owns a socket, on Linux: sock_diag (INET_DIAG) finds the socket of a
 * connection and its inode; the inode is looked for among the open files of
 * candidate processes only — those the policy would intercept — so a
 * connection of any other process costs no /proc scan of its own.
 *
 * Process facts (executable path, start time, parent) are cached per PID; a
 * PID reused by another process is noticed by its start time. The parent is
 * the one read first: a process listed before its parent exits keeps it in
 * its ancestry after Linux re-parents it (to init or a subreaper). */
#ifndef WR_LINUX_OWNERS_H
#define WR_LINUX_OWNERS_H

#include <stddef.h>
#include <stdint.h>

#include "host.h"

typedef struct wr_owners wr_owners;

/* Is this process a candidate (would the policy intercept it)? chain: its
 * ancestry, the process itself first (n >= 1). */
typedef int (*wr_candidate_fn)(void *ctx, const wr_ancestor *chain, size_t n);

wr_owners *wr_owners_new(wr_candidate_fn is_candidate, void *ctx);
void wr_owners_free(wr_owners *o);

/* Forgets every candidate decision (the policy changed). */
void wr_owners_policy_changed(wr_owners *o);

/* Finds the owner of a connection: proto 6/17, family 4/6, addresses in
 * network order (IPv4 in the first 4 bytes), ports in host order; inbound:
 * the local end is a listener's (or a bound UDP socket's). Returns 1 with
 * pid and path (NUL-terminated, in path[pathcap]) when a candidate process
 * owns it, 0 when no candidate does (or the socket is gone). chain (room for
 * WR_ANCESTRY_CAP; may be NULL) gets the owner's ancestry, *n_chain its
 * length; its paths are valid until the next call. */
int wr_owners_find(wr_owners *o, uint8_t proto, uint8_t family, int inbound, const uint8_t local[16],
                   uint16_t lport, const uint8_t remote[16], uint16_t rport, uint32_t *pid, char *path,
                   size_t pathcap, wr_ancestor *chain, size_t *n_chain);

/* Lists /proc for processes not seen yet and decides them (with their
 * ancestry), so that a process's parent at its creation is read while that
 * parent lives: called every WR_OWNERS_WATCH_MS while the policy names
 * process trees, from a thread of its own. /proc is read outside the lock
 * the look-ups share; the cache is updated under it. Every function here
 * may be called from any thread (wr_owners_find from one at a time). */
#define WR_OWNERS_WATCH_MS 250
void wr_owners_watch(wr_owners *o);

/* How many finds the descriptor probe answered (for tests). */
uint64_t wr_owners_probe_hits(wr_owners *o);

#endif
