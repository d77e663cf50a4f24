/* Capture scopes (host.h) made by hand, for the NETWORK filter builder's
 * tests: its texts (test_wd_backend.c) and the real WinDivert.dll's verdict
 * on them (test_wd_oracle.c). */
#ifndef WR_WD_SCOPES_H
#define WR_WD_SCOPES_H

#include <winsock2.h>
#include <ws2tcpip.h>
#include <string.h>

#include "capture/windivert/filter.h"
#include "host.h"

static inline void ws_clear(wr_capture_scope *s, uint32_t flags) {
  memset(s, 0, sizeof *s);
  s->flags = flags;
}

static inline void ws_app(wr_capture_scope *s, uint16_t port) { s->app_ports[s->n_app_ports++] = port; }

static inline void ws_range(wr_scope_side *side, uint16_t lo, uint16_t hi) {
  side->ports[side->n_ports].lo = lo;
  side->ports[side->n_ports].hi = hi;
  side->n_ports++;
}

/* n single ports: first, first + 2, ... (never adjacent). */
static inline void ws_ports(wr_scope_side *side, size_t n, uint16_t first) {
  for (size_t i = 0; i < n; i++) ws_range(side, (uint16_t)(first + 2 * i), (uint16_t)(first + 2 * i));
}

/* A network from text: "198.18.0.0" or "fd00::" (inet_pton), prefix bits. */
static inline void ws_net(wr_scope_side *side, const char *addr, uint8_t prefix) {
  wr_net *n = &side->nets[side->n_nets++];
  memset(n, 0, sizeof *n);
  n->family = strchr(addr, ':') ? 6 : 4;
  n->prefix = prefix;
  inet_pton(n->family == 6 ? AF_INET6 : AF_INET, addr, n->addr);
}

/* The largest scope whose filter fits WinDivert (WR_WD_FILTER_TESTS_MAX
 * comparisons), or with `over` one port more: NET_FILTER_ALSO's
 * comparisons (the filter of a scope capturing nothing), both protocols (2
 * tests, and 2 for ip or ipv6), loopback left out (1), an app port (1),
 * 128 remote ports and the local ports that fill the rest. */
static inline void ws_at_limit(wr_capture_scope *s, int over) {
  char text[WR_WD_FILTER_CAP];
  wr_wd_filter_info also;
  ws_clear(s, 0);
  wr_wd_net_filter(s, text, sizeof text, &also);
  ws_clear(s, WR_SCOPE_TCP | WR_SCOPE_UDP | WR_SCOPE_REMOTE | WR_SCOPE_REMOTE_ANY_NET | WR_SCOPE_LOCAL |
                  WR_SCOPE_LOCAL_ANY_NET);
  ws_app(s, 8080);
  ws_ports(&s->remote, WR_SCOPE_PORTS_CAP, 1000);
  ws_ports(&s->local, (size_t)(WR_WD_FILTER_TESTS_MAX - also.tests - 6 - WR_SCOPE_PORTS_CAP + (over ? 1 : 0)), 20000);
}

/* The largest lists there are, every port a range and every network an
 * IPv6 range: far too long for WinDivert. */
static inline void ws_largest(wr_capture_scope *s) {
  ws_clear(s, WR_SCOPE_TCP | WR_SCOPE_UDP | WR_SCOPE_REMOTE | WR_SCOPE_LOCAL);
  for (int i = 0; i < WR_SCOPE_APP_PORTS_CAP; i++) ws_app(s, (uint16_t)(9000 + i));
  for (int i = 0; i < WR_SCOPE_PORTS_CAP; i++) {
    ws_range(&s->remote, (uint16_t)(1000 + 10 * i), (uint16_t)(1005 + 10 * i));
    ws_range(&s->local, (uint16_t)(30000 + 10 * i), (uint16_t)(30005 + 10 * i));
  }
  for (int i = 0; i < WR_SCOPE_NETS_CAP; i++) {
    char a[64];
    snprintf(a, sizeof a, "2001:db8:%x::", i);
    ws_net(&s->remote, a, 48);
    ws_net(&s->local, a, 48);
  }
}

#endif
