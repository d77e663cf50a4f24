/* The stand-in's filters: fake_filter.h. Written from WinDivert 2.2's
 * documentation and the behaviour of its filter compiler and evaluator
 * (dll/windivert_helper.c, dll/windivert_shared.c): `and` binds tighter than
 * `or`; `not` applies to one test only (never to a parenthesis); a test of a
 * field the event does not have (tcp.DstPort of a UDP packet) is false
 * whatever its operator and however many `not`s; a bare field means
 * field != 0; addresses compare as 128-bit numbers, IPv4 as ::ffff:a.b.c.d;
 * localAddr, remoteAddr, localPort and remotePort of a packet name its ends
 * by its direction. Anything else (packet[i], payloads, ?:) is refused. */
#define WIN32_LEAN_AND_MEAN
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "fake_filter.h"

#define LN (1 << 0) /* NETWORK */
#define LM (1 << 1) /* NETWORK_FORWARD */
#define LF (1 << 2) /* FLOW */
#define LS (1 << 3) /* SOCKET */
#define LR (1 << 4) /* REFLECT */
#define L_PACKET (LN | LM)
#define L_ALL (LN | LM | LF | LS | LR)

static const struct {
  const char *name;
  int layers;
} FIELDS[] = {
    {"true", L_ALL}, {"false", L_ALL}, {"zero", L_ALL}, {"event", L_ALL}, {"timestamp", L_ALL},
    {"inbound", LN | LF | LS}, {"outbound", LN | LF | LS}, {"loopback", LN | LF | LS},
    {"ip", L_PACKET | LF | LS}, {"ipv6", L_PACKET | LF | LS}, {"icmp", L_PACKET | LF | LS},
    {"icmpv6", L_PACKET | LF | LS}, {"tcp", L_PACKET | LF | LS}, {"udp", L_PACKET | LF | LS},
    {"localAddr", LN | LF | LS}, {"remoteAddr", LN | LF | LS}, {"localPort", LN | LF | LS},
    {"remotePort", LN | LF | LS}, {"protocol", LN | LF | LS}, {"processId", LF | LS | LR},
    {"endpointId", LF | LS}, {"parentEndpointId", LF | LS}, {"layer", LR}, {"priority", LR},
    {"ifIdx", L_PACKET}, {"subIfIdx", L_PACKET}, {"impostor", L_PACKET}, {"fragment", L_PACKET},
    {"length", L_PACKET}, {"ip.SrcAddr", L_PACKET}, {"ip.DstAddr", L_PACKET}, {"ip.Protocol", L_PACKET},
    {"ip.TTL", L_PACKET}, {"ipv6.SrcAddr", L_PACKET}, {"ipv6.DstAddr", L_PACKET}, {"ipv6.NextHdr", L_PACKET},
    {"ipv6.HopLimit", L_PACKET}, {"tcp.SrcPort", L_PACKET}, {"tcp.DstPort", L_PACKET}, {"tcp.Syn", L_PACKET},
    {"tcp.Ack", L_PACKET}, {"tcp.Fin", L_PACKET}, {"tcp.Rst", L_PACKET}, {"tcp.PayloadLength", L_PACKET},
    {"udp.SrcPort", L_PACKET}, {"udp.DstPort", L_PACKET}, {"udp.PayloadLength", L_PACKET},
    {"icmp.Type", L_PACKET}, {"icmp.Code", L_PACKET}, {"icmpv6.Type", L_PACKET}, {"icmpv6.Code", L_PACKET},
};

/* The symbolic values (WinDivert's upper-case macros) and what they stand
 * for (the event names at the layers they name events of). */
static const struct {
  const char *name;
  uint32_t value;
} CONSTANTS[] = {
    {"TRUE", 1},   {"FALSE", 0},       {"TCP", 6},   {"UDP", 17},       {"ICMP", 1},          {"ICMPV6", 58},
    {"PACKET", 0}, {"ESTABLISHED", 1}, {"DELETED", 2}, {"BIND", 3},     {"CONNECT", 4},       {"LISTEN", 5},
    {"ACCEPT", 6}, {"CLOSE", 7},       {"OPEN", 8},  {"NETWORK", 0},    {"NETWORK_FORWARD", 1}, {"FLOW", 2},
    {"SOCKET", 3}, {"REFLECT", 4},
};

/* ------------------------------------------------------------------------
 * The event a filter is evaluated on */

typedef struct {
  int layer;
  const uint8_t *a; /* the 80-byte address */
  const uint8_t *pkt;
  uint32_t len;
  /* The packet's parts (NETWORK layers), NULL when absent. */
  const uint8_t *ip4, *ip6, *tcp, *udp, *icmp, *icmp6;
  uint8_t proto;
  uint32_t payload;
} event;

static uint32_t rd32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static uint16_t rd16(const uint8_t *p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}
static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static int abit(const event *e, int b) { return (int)((rd32(e->a + 8) >> b) & 1); }

/* The packet's headers, as WinDivertHelperParsePacket finds them. 0 when it
 * is no IP packet. */
static int parse_packet(event *e) {
  const uint8_t *p = e->pkt;
  uint32_t n = e->len, l3 = 0, total = 0;
  if (!p || n < 20) return 0;
  int frag = 0;
  if ((p[0] >> 4) == 4) {
    l3 = (uint32_t)(p[0] & 15) * 4;
    total = be16(p + 2);
    if (l3 < 20 || total < l3 || total > n) return 0;
    e->ip4 = p;
    e->proto = p[9];
    frag = (be16(p + 6) & 0x3fff) != 0;
  } else if ((p[0] >> 4) == 6 && n >= 40) {
    total = 40 + be16(p + 4);
    if (total > n) return 0;
    e->ip6 = p;
    e->proto = p[6];
    l3 = 40;
    /* Hop-by-hop, routing and destination options headers; a fragment header
     * (44) ends the parse. */
    while ((e->proto == 0 || e->proto == 43 || e->proto == 60) && l3 + 8 <= total) {
      e->proto = p[l3];
      l3 += 8 + 8u * p[l3 + 1];
    }
    if (e->proto == 44) frag = 1;
    if (l3 > total) return 0;
  } else {
    return 0;
  }
  uint32_t rest = total - l3;
  const uint8_t *t = p + l3;
  if (frag) return 1;
  if (e->proto == 6 && rest >= 20 && (uint32_t)(t[12] >> 4) * 4 >= 20 && (uint32_t)(t[12] >> 4) * 4 <= rest) {
    e->tcp = t;
    e->payload = rest - (uint32_t)(t[12] >> 4) * 4;
  } else if (e->proto == 17 && rest >= 8) {
    e->udp = t;
    e->payload = rest - 8;
  } else if (e->proto == 1 && e->ip4 && rest >= 8) {
    e->icmp = t;
    e->payload = rest - 8;
  } else if (e->proto == 58 && e->ip6 && rest >= 8) {
    e->icmp6 = t;
    e->payload = rest - 8;
  }
  return 1;
}

/* A value as WinDivert compares it: four 32-bit words, least significant
 * first, and a sign. */
typedef struct {
  uint32_t w[4];
  int neg;
} value;

static value num(uint32_t v) {
  value x = {{v, 0, 0, 0}, 0};
  return x;
}

/* An IP address of the packet (network order) as a value. */
static value packet_addr(const uint8_t *a, int v6) {
  value x = {{0, 0, 0, 0}, 0};
  if (!v6) {
    x.w[0] = be32(a);
    x.w[1] = 0xffff;
  } else {
    for (int i = 0; i < 4; i++) x.w[3 - i] = be32(a + 4 * i);
  }
  return x;
}

/* A SOCKET event's address: its four words as they are. */
static value socket_addr(const uint8_t *a) {
  value x = {{rd32(a), rd32(a + 4), rd32(a + 8), rd32(a + 12)}, 0};
  return x;
}

static uint16_t port_of(const event *e, int local) {
  const uint8_t *t = e->tcp ? e->tcp : e->udp;
  int out = abit(e, 17);
  if (t) return be16(t + ((local == out) ? 0 : 2));
  const uint8_t *ic = e->icmp ? e->icmp : e->icmp6;
  return ic && (local == out) ? ic[0] : 0;
}

/* Reads a field: 1 with *v (and *big for 128-bit ones) when the event has
 * it, 0 when it does not, -1 when the stand-in cannot read it. */
static int field_value(const event *e, const char *f, value *v, int *big) {
  *big = 0;
  *v = num(0);
  int net = e->layer == 0 || e->layer == 1, sock = e->layer == 3, refl = e->layer == 4;
  const uint8_t *a = e->a;
  if (!strcmp(f, "true")) *v = num(1);
  else if (!strcmp(f, "false") || !strcmp(f, "zero")) *v = num(0);
  else if (!strcmp(f, "event")) *v = num(a[9]);
  else if (!strcmp(f, "outbound")) *v = num((uint32_t)abit(e, 17));
  else if (!strcmp(f, "inbound")) *v = num((uint32_t)!abit(e, 17));
  else if (!strcmp(f, "loopback")) *v = num((uint32_t)abit(e, 18));
  else if (!strcmp(f, "impostor")) *v = num((uint32_t)abit(e, 19));
  else if (net && !strcmp(f, "fragment")) *v = num(0);
  else if (net && !strcmp(f, "ifIdx")) *v = num(rd32(a + 16));
  else if (net && !strcmp(f, "subIfIdx")) *v = num(rd32(a + 20));
  else if (net && !strcmp(f, "length")) *v = num(e->len);
  else if (net && !strcmp(f, "ip")) *v = num(e->ip4 != NULL);
  else if (net && !strcmp(f, "ipv6")) *v = num(e->ip6 != NULL);
  else if (net && !strcmp(f, "tcp")) *v = num(e->tcp != NULL);
  else if (net && !strcmp(f, "udp")) *v = num(e->udp != NULL);
  else if (net && !strcmp(f, "icmp")) *v = num(e->icmp != NULL);
  else if (net && !strcmp(f, "icmpv6")) *v = num(e->icmp6 != NULL);
  else if (net && !strcmp(f, "protocol")) *v = num(e->proto);
  else if (net && (!strcmp(f, "localPort") || !strcmp(f, "remotePort"))) *v = num(port_of(e, f[0] == 'l'));
  else if (net && (!strcmp(f, "localAddr") || !strcmp(f, "remoteAddr"))) {
    const uint8_t *ip = e->ip4 ? e->ip4 : e->ip6;
    int src = (f[0] == 'l') == abit(e, 17); /* local is the source of an outbound packet */
    *big = 1;
    if (ip) *v = packet_addr(e->ip4 ? ip + (src ? 12 : 16) : ip + (src ? 8 : 24), e->ip6 != NULL);
  } else if (net && !strncmp(f, "ip.", 3)) {
    if (!e->ip4) return 0;
    if (!strcmp(f, "ip.SrcAddr") || !strcmp(f, "ip.DstAddr")) {
      *big = 1;
      *v = packet_addr(e->ip4 + (f[3] == 'S' ? 12 : 16), 0);
    } else if (!strcmp(f, "ip.Protocol")) *v = num(e->ip4[9]);
    else if (!strcmp(f, "ip.TTL")) *v = num(e->ip4[8]);
    else return -1;
  } else if (net && !strncmp(f, "ipv6.", 5)) {
    if (!e->ip6) return 0;
    if (!strcmp(f, "ipv6.SrcAddr") || !strcmp(f, "ipv6.DstAddr")) {
      *big = 1;
      *v = packet_addr(e->ip6 + (f[5] == 'S' ? 8 : 24), 1);
    } else if (!strcmp(f, "ipv6.NextHdr")) *v = num(e->ip6[6]);
    else if (!strcmp(f, "ipv6.HopLimit")) *v = num(e->ip6[7]);
    else return -1;
  } else if (net && !strncmp(f, "tcp.", 4)) {
    const uint8_t *t = e->tcp;
    if (!t) return 0;
    if (!strcmp(f, "tcp.SrcPort")) *v = num(be16(t));
    else if (!strcmp(f, "tcp.DstPort")) *v = num(be16(t + 2));
    else if (!strcmp(f, "tcp.Syn")) *v = num((t[13] >> 1) & 1);
    else if (!strcmp(f, "tcp.Ack")) *v = num((t[13] >> 4) & 1);
    else if (!strcmp(f, "tcp.Fin")) *v = num(t[13] & 1);
    else if (!strcmp(f, "tcp.Rst")) *v = num((t[13] >> 2) & 1);
    else if (!strcmp(f, "tcp.PayloadLength")) *v = num(e->payload);
    else return -1;
  } else if (net && !strncmp(f, "udp.", 4)) {
    const uint8_t *u = e->udp;
    if (!u) return 0;
    if (!strcmp(f, "udp.SrcPort")) *v = num(be16(u));
    else if (!strcmp(f, "udp.DstPort")) *v = num(be16(u + 2));
    else if (!strcmp(f, "udp.PayloadLength")) *v = num(e->payload);
    else return -1;
  } else if (net && !strncmp(f, "icmp.", 5)) {
    if (!e->icmp) return 0;
    *v = num(e->icmp[!strcmp(f, "icmp.Type") ? 0 : 1]);
  } else if (net && !strncmp(f, "icmpv6.", 7)) {
    if (!e->icmp6) return 0;
    *v = num(e->icmp6[!strcmp(f, "icmpv6.Type") ? 0 : 1]);
  } else if (sock) {
    uint8_t proto = a[72];
    int v6 = abit(e, 20);
    if (!strcmp(f, "ip")) *v = num((uint32_t)!v6);
    else if (!strcmp(f, "ipv6")) *v = num((uint32_t)v6);
    else if (!strcmp(f, "tcp")) *v = num(proto == 6);
    else if (!strcmp(f, "udp")) *v = num(proto == 17);
    else if (!strcmp(f, "icmp")) *v = num(!v6 && proto == 1);
    else if (!strcmp(f, "icmpv6")) *v = num(v6 && proto == 58);
    else if (!strcmp(f, "protocol")) *v = num(proto);
    else if (!strcmp(f, "processId")) *v = num(rd32(a + 32));
    else if (!strcmp(f, "localPort")) *v = num(rd16(a + 68));
    else if (!strcmp(f, "remotePort")) *v = num(rd16(a + 70));
    else if (!strcmp(f, "localAddr") || !strcmp(f, "remoteAddr")) {
      *big = 1;
      *v = socket_addr(a + (f[0] == 'l' ? 36 : 52));
    } else return -1;
  } else if (refl) {
    if (!strcmp(f, "processId")) *v = num(rd32(a + 24));
    else if (!strcmp(f, "layer")) *v = num(rd32(a + 28));
    else if (!strcmp(f, "priority")) {
      int16_t pr = (int16_t)rd16(a + 40);
      *v = num((uint32_t)(pr < 0 ? -pr : pr));
      v->neg = pr < 0;
    } else return -1;
  } else {
    return -1;
  }
  return 1;
}

/* WinDivertCompare128. */
static int compare(const value *x, const value *y, int big) {
  if (x->neg && !y->neg) return -1;
  if (!x->neg && y->neg) return 1;
  int sign = x->neg ? -1 : 1;
  for (int i = big ? 3 : 0; i >= 0; i--) {
    if (x->w[i] != y->w[i]) return x->w[i] < y->w[i] ? -sign : sign;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * The parser, evaluating as it goes when it has an event */

typedef struct {
  const char *p;
  int layer_bit;
  char tok[64];
  const event *e; /* NULL: syntax only */
  int unknown;    /* a field the stand-in cannot read was tested */
} parser;

static int word_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == '.' || c == ':'; }

/* The next token into f->tok ("" at the end); 0 on a character no token
 * starts with. */
static int next_token(parser *f) {
  while (*f->p == ' ' || *f->p == '\t' || *f->p == '\r' || *f->p == '\n') f->p++;
  const char *s = f->p;
  size_t n = 0;
  static const char *const ops[] = {"&&", "||", "==", "!=", "<=", ">=", "=", "<", ">", "!", "(", ")", "-"};
  if (!*s) {
    f->tok[0] = '\0';
    return 1;
  }
  for (size_t i = 0; i < sizeof ops / sizeof ops[0] && !n; i++) {
    if (strncmp(s, ops[i], strlen(ops[i])) == 0) n = strlen(ops[i]);
  }
  if (!n) {
    while (word_char(s[n])) n++;
  }
  if (!n || n >= sizeof f->tok) return 0;
  memcpy(f->tok, s, n);
  f->tok[n] = '\0';
  f->p = s + n;
  return 1;
}

/* A number (decimal or 0x hex), an IPv4 or IPv6 address, or a constant,
 * into *v; 0 when it is none of them. */
static int parse_value(const char *t, value *v) {
  uint8_t a[16];
  memset(v, 0, sizeof *v);
  if (strchr(t, ':')) {
    if (InetPtonA(AF_INET6, t, a) != 1) return 0;
    *v = packet_addr(a, 1);
    return 1;
  }
  if (strchr(t, '.')) {
    if (InetPtonA(AF_INET, t, a) != 1) return 0;
    *v = packet_addr(a, 0);
    return 1;
  }
  if (t[0] == '0' && t[1] == 'x') {
    if (!t[2] || strspn(t + 2, "0123456789abcdefABCDEF") != strlen(t + 2) || strlen(t + 2) > 8) return 0;
    *v = num((uint32_t)strtoul(t + 2, NULL, 16));
    return 1;
  }
  if (isdigit((unsigned char)t[0])) {
    if (strspn(t, "0123456789") != strlen(t) || strlen(t) > 10 || strtoull(t, NULL, 10) > 0xffffffffull) return 0;
    *v = num((uint32_t)strtoul(t, NULL, 10));
    return 1;
  }
  for (size_t i = 0; i < sizeof CONSTANTS / sizeof CONSTANTS[0]; i++) {
    if (strcmp(t, CONSTANTS[i].name) == 0) {
      *v = num(CONSTANTS[i].value);
      return 1;
    }
  }
  return 0;
}

static int parse_or(parser *f, int *result);

/* test := not* ( '(' or ')' | field [OP ['-'] value] ). WinDivert's `not`
 * negates a test's comparison (never a parenthesis). */
static int parse_test(parser *f, int *result) {
  int nots = 0;
  while (strcmp(f->tok, "not") == 0 || strcmp(f->tok, "!") == 0) {
    nots++;
    if (!next_token(f)) return 0;
  }
  if (strcmp(f->tok, "(") == 0) {
    if (nots || !next_token(f) || !parse_or(f, result) || strcmp(f->tok, ")") != 0) return 0;
    return next_token(f);
  }
  int known = 0;
  for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++) {
    if (strcmp(f->tok, FIELDS[i].name) == 0) known = (FIELDS[i].layers & f->layer_bit) != 0;
  }
  if (!known) return 0;
  char field[64];
  strcpy(field, f->tok);
  if (!next_token(f)) return 0;
  static const char *const cmps[] = {"==", "=", "!=", "<", "<=", ">", ">="};
  int op = -1;
  for (int i = 0; i < (int)(sizeof cmps / sizeof cmps[0]) && op < 0; i++) {
    if (strcmp(f->tok, cmps[i]) == 0) op = i;
  }
  value arg = num(0);
  if (op >= 0) {
    int neg = 0;
    if (!next_token(f)) return 0;
    if (strcmp(f->tok, "-") == 0) {
      neg = 1;
      if (!next_token(f)) return 0;
    }
    if (!parse_value(f->tok, &arg) || !next_token(f)) return 0;
    arg.neg = neg;
  }
  *result = 0;
  if (!f->e) return 1;
  value v;
  int big, have = field_value(f->e, field, &v, &big);
  if (have < 0) f->unknown = 1;
  if (have <= 0) return 1; /* the event has no such field: false, whatever the test */
  int c = compare(&v, &arg, big);
  int r;
  switch (op) {
    case -1: r = c != 0; break; /* field alone: field != 0 */
    case 0:
    case 1: r = c == 0; break;
    case 2: r = c != 0; break;
    case 3: r = c < 0; break;
    case 4: r = c <= 0; break;
    case 5: r = c > 0; break;
    default: r = c >= 0; break;
  }
  *result = (nots & 1) ? !r : r;
  return 1;
}

/* and := test (('and'|'&&') test)* */
static int parse_and(parser *f, int *result) {
  if (!parse_test(f, result)) return 0;
  while (strcmp(f->tok, "and") == 0 || strcmp(f->tok, "&&") == 0) {
    int r = 0;
    if (!next_token(f) || !parse_test(f, &r)) return 0;
    *result = *result && r;
  }
  return 1;
}

/* or := and (('or'|'||') and)* */
static int parse_or(parser *f, int *result) {
  if (!parse_and(f, result)) return 0;
  while (strcmp(f->tok, "or") == 0 || strcmp(f->tok, "||") == 0) {
    int r = 0;
    if (!next_token(f) || !parse_and(f, &r)) return 0;
    *result = *result || r;
  }
  return 1;
}

static int parse(parser *f, int *result) {
  return next_token(f) && f->tok[0] && parse_or(f, result) && f->tok[0] == '\0';
}

int ff_compiles(const char *filter, int layer) {
  if (!filter || layer < 0 || layer > 4) return 0;
  parser f = {filter, 1 << layer, "", NULL, 0};
  int r = 0;
  return parse(&f, &r);
}

int ff_matches(const char *filter, const uint8_t *addr, const uint8_t *packet, uint32_t len) {
  if (!filter || !addr) return -1;
  event e;
  memset(&e, 0, sizeof e);
  e.layer = addr[8];
  e.a = addr;
  e.pkt = packet;
  e.len = len;
  if (e.layer > 4 || ((e.layer == 0 || e.layer == 1) && !parse_packet(&e))) return -1;
  parser f = {filter, 1 << e.layer, "", &e, 0};
  int r = 0;
  if (!parse(&f, &r) || f.unknown) return -1;
  return r;
}
