/* The WinDivert handles the backend opens: filter, layer, priority and flags
 * of each, in one place (the NETWORK filter in its broadest form).
 * shim/capture/windivert/backend.c opens them; test/windows/test_wd_oracle.c
 * compiles every filter at its layer with the real WinDivert.dll (and the
 * NETWORK filters built from configurations) and passes every set through
 * its WinDivertOpen argument checks, so a change here is checked against the
 * real DLL.
 * Why these values: see the comment at the top of backend.c beside this file. */
#ifndef WR_WD_HANDLES_H
#define WR_WD_HANDLES_H

#include "capture/windivert/windivert.h"

/* ICMP and ICMPv6 errors (destination unreachable, time exceeded, parameter
 * problem; ICMPv6 also packet too big): those quoting a rewritten packet are
 * translated by the engine, the rest passed. A field of a protocol the
 * packet lacks tests false. The built filter leaves loopback ones out
 * unless it takes loopback traffic (filter.c). */
#define NET_ICMP_ERRORS \
  "(icmp.Type == 3 or icmp.Type == 11 or icmp.Type == 12 or (icmpv6.Type >= 1 and icmpv6.Type <= 4))"
/* The NETWORK handle's filter is built from the capture scope (filter.h);
 * this is the broadest it gets (the scope says capture everything), and
 * what the table below lists for the NETWORK handle. */
#define NET_FILTER "((ip or ipv6) and (tcp or udp)) or " NET_ICMP_ERRORS
/* Traffic the NETWORK handle diverts whatever the scope, OR-ed into the
 * built filter beside the TCP/UDP part (filter.c): WinDivert filter text in
 * parentheses, of comparisons only (the builder counts them), or "" for
 * none. */
#define NET_FILTER_ALSO NET_ICMP_ERRORS
#define SOCKET_FILTER "tcp or udp"
#define REFLECT_FILTER "true"
#define NET_PRIORITY (-1000)
#define SOCKET_PRIORITY (-1000)
#define REFLECT_PRIORITY 0
#define NET_FLAGS 0ull
#define SOCKET_FLAGS (WD_FLAG_SNIFF | WD_FLAG_RECV_ONLY)
#define REFLECT_FLAGS (WD_FLAG_SNIFF | WD_FLAG_RECV_ONLY | WD_FLAG_NO_INSTALL)

/* X(name, filter, layer, priority, flags) for each handle. */
#define WR_WD_HANDLES(X)                                                       \
  X("NETWORK", NET_FILTER, WD_LAYER_NETWORK, NET_PRIORITY, NET_FLAGS)          \
  X("SOCKET", SOCKET_FILTER, WD_LAYER_SOCKET, SOCKET_PRIORITY, SOCKET_FLAGS)   \
  X("REFLECT", REFLECT_FILTER, WD_LAYER_REFLECT, REFLECT_PRIORITY, REFLECT_FLAGS)

#endif
