#include "capture/windivert/filter.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "capture/windivert/handles.h"

/* The text being written: it stops growing (and says so) when full. */
typedef struct {
  char *p;
  size_t cap, len;
  int tests;
  int full;
} text;

static void put(text *t, const char *fmt, ...) {
  if (t->full) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= t->cap - t->len) {
    t->full = 1;
    t->p[t->len] = '\0';
    return;
  }
  t->len += (size_t)n;
}

/* One address as WinDivert's filter reads it: dotted IPv4, or all eight
 * IPv6 groups (a token has at most 39 characters: this is 39 at most). */
static void put_addr(text *t, int family, const uint8_t a[16]) {
  if (family == 4) {
    put(t, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
    return;
  }
  for (int i = 0; i < 8; i++) put(t, i ? ":%x" : "%x", (unsigned)(a[2 * i] << 8 | a[2 * i + 1]));
}

/* field == v, or (field >= lo and field <= hi). */
static void put_range_ports(text *t, const char *field, const wr_port_range *r) {
  if (r->lo == r->hi) {
    put(t, "%s == %u", field, (unsigned)r->lo);
    t->tests += 1;
  } else {
    put(t, "(%s >= %u and %s <= %u)", field, (unsigned)r->lo, field, (unsigned)r->hi);
    t->tests += 2;
  }
}

static void put_range_net(text *t, const char *field, const wr_net *n) {
  int bytes = n->family == 4 ? 4 : 16;
  uint8_t lo[16] = {0}, hi[16] = {0};
  for (int i = 0; i < bytes; i++) {
    int bits = (int)n->prefix - 8 * i;
    uint8_t mask = bits >= 8 ? 0xff : bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
    lo[i] = n->addr[i] & mask;
    hi[i] = (uint8_t)(lo[i] | (uint8_t)~mask);
  }
  if (n->prefix == 8 * bytes) {
    put(t, "%s == ", field);
    put_addr(t, n->family, lo);
    t->tests += 1;
    return;
  }
  put(t, "(%s >= ", field);
  put_addr(t, n->family, lo);
  put(t, " and %s <= ", field);
  put_addr(t, n->family, hi);
  put(t, ")");
  t->tests += 2;
}

/* (a or b or ...), or a alone. */
static void put_ports(text *t, const char *field, const wr_port_range *r, size_t n) {
  if (n > 1) put(t, "(");
  for (size_t i = 0; i < n; i++) {
    if (i) put(t, " or ");
    put_range_ports(t, field, &r[i]);
  }
  if (n > 1) put(t, ")");
}

static void put_nets(text *t, const char *field, const wr_net *r, size_t n) {
  if (n > 1) put(t, "(");
  for (size_t i = 0; i < n; i++) {
    if (i) put(t, " or ");
    put_range_net(t, field, &r[i]);
  }
  if (n > 1) put(t, ")");
}

/* What a side of the scope matches. */
enum { SIDE_NOTHING, SIDE_EVERYTHING, SIDE_SOME };

static int side_kind(const wr_capture_scope *s, uint32_t on, uint32_t any_port, uint32_t any_net,
                     const wr_scope_side *side) {
  if (!(s->flags & on)) return SIDE_NOTHING;
  int all_ports = (s->flags & any_port) != 0, all_nets = (s->flags & any_net) != 0;
  if ((!all_ports && side->n_ports == 0) || (!all_nets && side->n_nets == 0)) return SIDE_NOTHING;
  return all_ports && all_nets ? SIDE_EVERYTHING : SIDE_SOME;
}

static void put_side(text *t, const wr_capture_scope *s, uint32_t any_port, uint32_t any_net, const wr_scope_side *side,
                     const char *port_field, const char *addr_field) {
  int ports = !(s->flags & any_port), nets = !(s->flags & any_net);
  if (ports && nets) put(t, "(");
  if (ports) put_ports(t, port_field, side->ports, side->n_ports);
  if (ports && nets) put(t, " and ");
  if (nets) put_nets(t, addr_field, side->nets, side->n_nets);
  if (ports && nets) put(t, ")");
}

/* The TCP/UDP part: protocols, loopback, and (when `narrow`) the sides and
 * app ports. Writes nothing when the scope captures no packet. */
static void put_transport(text *t, const wr_capture_scope *s, int narrow, int *narrowed) {
  *narrowed = 0;
  int tcp = (s->flags & WR_SCOPE_TCP) != 0, udp = (s->flags & WR_SCOPE_UDP) != 0;
  if (!tcp && !udp) return;
  int remote = side_kind(s, WR_SCOPE_REMOTE, WR_SCOPE_REMOTE_ANY_PORT, WR_SCOPE_REMOTE_ANY_NET, &s->remote);
  int local = side_kind(s, WR_SCOPE_LOCAL, WR_SCOPE_LOCAL_ANY_PORT, WR_SCOPE_LOCAL_ANY_NET, &s->local);
  int everything = (s->flags & WR_SCOPE_ALL) || remote == SIDE_EVERYTHING || local == SIDE_EVERYTHING;
  if (!everything && remote == SIDE_NOTHING && local == SIDE_NOTHING && s->n_app_ports == 0) return;
  put(t, "(ip or ipv6) and %s", tcp && udp ? "(tcp or udp)" : tcp ? "tcp" : "udp");
  t->tests += 2 + (tcp && udp ? 2 : 1);
  if (!(s->flags & WR_SCOPE_LOOPBACK)) {
    put(t, " and not loopback");
    t->tests += 1;
  }
  if (everything || !narrow) return;
  *narrowed = 1;
  put(t, " and (");
  int first = 1;
  if (remote == SIDE_SOME) {
    put_side(t, s, WR_SCOPE_REMOTE_ANY_PORT, WR_SCOPE_REMOTE_ANY_NET, &s->remote, "remotePort", "remoteAddr");
    first = 0;
  }
  if (local == SIDE_SOME) {
    if (!first) put(t, " or ");
    put_side(t, s, WR_SCOPE_LOCAL_ANY_PORT, WR_SCOPE_LOCAL_ANY_NET, &s->local, "localPort", "localAddr");
    first = 0;
  }
  for (size_t i = 0; i < s->n_app_ports; i++) {
    put(t, "%slocalPort == %u", first ? "" : " or ", (unsigned)s->app_ports[i]);
    t->tests += 1;
    first = 0;
  }
  put(t, ")");
}

/* Tokens as WinDivert's tokenizer counts them: a parenthesis, an operator,
 * a word (a name, number or address). */
static int count_tokens(const char *p) {
  int n = 0;
  while (*p) {
    if (*p == ' ') {
      p++;
    } else if (*p == '(' || *p == ')') {
      p++;
      n++;
    } else if (strchr("=!<>&|", *p)) {
      while (*p && strchr("=!<>&|", *p)) p++;
      n++;
    } else {
      while (*p && !strchr(" ()=!<>&|", *p)) p++;
      n++;
    }
  }
  return n;
}

/* Comparisons in filter text: its comparison operators (NET_FILTER_ALSO
 * tests no bare field). */
static int count_comparisons(const char *p) {
  int n = 0;
  for (; *p; p++) {
    if (strchr("=!<>", *p)) {
      n++;
      if (p[1] == '=') p++;
    }
  }
  return n;
}

static size_t build(const wr_capture_scope *s, char *out, size_t cap, int narrow, wr_wd_filter_info *info) {
  text t = {out, cap, 0, 0, 0};
  out[0] = '\0';
  static const char also[] = NET_FILTER_ALSO;
  /* NET_FILTER_ALSO brings its own parentheses; it skips loopback traffic
   * as the TCP/UDP part does, unless the scope takes loopback. */
  int also_loopback = also[0] && !(s->flags & WR_SCOPE_LOOPBACK);
  int narrowed = 0;
  if (also[0]) put(&t, "(");
  put_transport(&t, s, narrow, &narrowed);
  int transport = t.len > (size_t)(also[0] ? 1 : 0);
  if (also[0] && transport) {
    put(&t, ") or ");
  } else if (also[0]) {
    t.len = 0;
  } else if (!transport) {
    put(&t, "false");
  }
  if (also[0]) put(&t, also_loopback ? "(%s and not loopback)" : "%s", also);
  info->tests = t.tests + count_comparisons(also) + also_loopback;
  info->narrowed = narrowed;
  info->tokens = t.full ? 0 : count_tokens(out);
  return t.full ? 0 : t.len;
}

size_t wr_wd_net_filter(const wr_capture_scope *s, char *out, size_t cap, wr_wd_filter_info *info) {
  wr_wd_filter_info local;
  if (!info) info = &local;
  memset(info, 0, sizeof *info);
  if (!s || !out || cap < WR_WD_FILTER_CAP) return 0;
  size_t n = build(s, out, cap, 1, info);
  if (n == 0 || info->tests > WR_WD_FILTER_TESTS_MAX || info->tokens > WR_WD_FILTER_TOKENS_MAX) {
    /* Too long for WinDivert: the protocols' whole traffic (more than the
     * scope asks, never less). */
    n = build(s, out, cap, 0, info);
    info->too_long = 1;
  }
  return n;
}
