/* The netfilter rules the Linux backend needs, in chains it owns.
 *
 * Packets reach the queue at two points, so that conntrack always sees the
 * connection the client opened (C:c <-> D:d) and never the rewritten one:
 *   raw OUTPUT (before conntrack): packets from the app port, i.e. the
 *     proxy's side, rewritten back to D:d -> C:c before conntrack sees them;
 *   mangle OUTPUT / PREROUTING (after conntrack): new connections (TCP SYN,
 *     new UDP) and packets of redirected connections (conntrack mark; ICMP
 *     errors about them are RELATED and carry it too), and this host's own
 *     destination-unreachable errors (one about a packet delivered rewritten
 *     quotes ends conntrack never saw).
 * Rewritten packets leave the queue with a mark bit set; the mark is saved
 * in the connection (CONNMARK) so later packets of a redirected connection
 * are queued and everything else stays in the kernel. Sockets a proxy
 * excluded (another mark bit) are never queued at all.
 *
 * Chains are named after the queue number (wredir<N>-raw, -out, -in, -save)
 * in the raw and mangle tables of iptables and ip6tables; nothing else is
 * touched. */
#ifndef WR_LINUX_RULES_H
#define WR_LINUX_RULES_H

#include <stddef.h>
#include <stdint.h>

#define WR_MARK 0x20000000u
/* Packets of sockets marked with this bit (redirector_exclude_socket) are
 * never queued. */
#define WR_EXCLUDE_MARK 0x10000000u

typedef struct {
  uint16_t queue;
  int have_v6; /* ip6tables rules are in place */
  uint16_t app_ports[16];
  size_t n_app_ports;
} wr_rules;

/* Removes chains left by an earlier run with this queue number, then
 * installs the rules. 0, or -1 with the reason in err (nothing left). */
int wr_rules_install(wr_rules *r, uint16_t queue, uint16_t app_port, char *err, size_t errlen);

/* Adds an app port (update_app_port while running); old ones stay until
 * removal, since connections redirected to them continue. */
int wr_rules_add_app_port(wr_rules *r, uint16_t app_port, char *err, size_t errlen);

/* Removes everything installed for this queue number (also stale rules). */
void wr_rules_remove(uint16_t queue);

#endif
