/* Test helpers shared by the stand-in WinDivert.dll and the test program:
 * hex text, Internet checksums, and IPv4/IPv6 TCP/UDP packets and ICMP/ICMPv6
 * messages built from scratch. Written for the tests; the library has its own (the engine's). */
#ifndef WD_TEST_UTIL_H
#define WD_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Hex */

static inline int tu_hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes hex text (stops at the first non-hex character). Returns bytes. */
static inline size_t tu_unhex(const char *s, uint8_t *out, size_t cap) {
  size_t n = 0;
  while (n < cap && tu_hexval(s[0]) >= 0 && tu_hexval(s[1]) >= 0) {
    out[n++] = (uint8_t)(tu_hexval(s[0]) << 4 | tu_hexval(s[1]));
    s += 2;
  }
  return n;
}

static inline void tu_hex(const uint8_t *p, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = '\0';
}

/* ------------------------------------------------------------------------
 * Checksums (RFC 1071) */

static inline uint32_t tu_sum(const uint8_t *p, size_t n, uint32_t acc) {
  for (size_t i = 0; i + 1 < n; i += 2) acc += (uint32_t)p[i] << 8 | p[i + 1];
  if (n & 1) acc += (uint32_t)p[n - 1] << 8;
  return acc;
}

static inline uint16_t tu_fold(uint32_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return (uint16_t)~acc;
}

static inline uint16_t tu_rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline void tu_wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

/* Where a packet's parts are: 0 if it is not plain IPv4/IPv6 TCP/UDP, ICMP
 * over IPv4 or ICMPv6 over IPv6. */
typedef struct {
  int v6;
  uint8_t proto;
  size_t l3len; /* IP header */
  size_t l4len; /* transport header + payload, or the ICMP message */
} tu_layout;

static inline int tu_parse(const uint8_t *p, size_t n, tu_layout *l) {
  memset(l, 0, sizeof *l);
  if (n < 20) return 0;
  if ((p[0] >> 4) == 4) {
    l->v6 = 0;
    l->l3len = (size_t)(p[0] & 15) * 4;
    l->proto = p[9];
    size_t total = tu_rd16(p + 2);
    if (l->l3len < 20 || total > n || total < l->l3len) return 0;
    l->l4len = total - l->l3len;
  } else if ((p[0] >> 4) == 6 && n >= 40) {
    l->v6 = 1;
    l->l3len = 40;
    l->proto = p[6];
    l->l4len = tu_rd16(p + 4);
    if (40 + l->l4len > n) return 0;
  } else {
    return 0;
  }
  if (l->proto == 6) return l->l4len >= 20;
  if (l->proto == 17 || l->proto == (l->v6 ? 58 : 1)) return l->l4len >= 8;
  return 0;
}

/* The transport (or ICMP) checksum field's offset in the packet. */
static inline size_t tu_l4csum_at(const tu_layout *l) {
  return l->l3len + (l->proto == 6 ? 16 : l->proto == 17 ? 6 : 2);
}

/* What the transport checksum sums besides the segment: the pseudo-header
 * (none for ICMP over IPv4). */
static inline uint32_t tu_pseudo_sum(const uint8_t *p, const tu_layout *l) {
  if (l->proto == 1) return 0;
  uint32_t acc = l->v6 ? tu_sum(p + 8, 32, 0) : tu_sum(p + 12, 8, 0);
  return acc + l->proto + (uint32_t)l->l4len;
}

/* Computes the IPv4 header checksum and the TCP/UDP (or ICMP) checksum in
 * place. which: bit 1 IP, bit 2 transport. */
static inline void tu_fill_checksums(uint8_t *p, size_t n, int which) {
  tu_layout l;
  if (!tu_parse(p, n, &l)) return;
  if (!l.v6 && (which & 1)) {
    tu_wr16(p + 10, 0);
    tu_wr16(p + 10, tu_fold(tu_sum(p, l.l3len, 0)));
  }
  if (which & 2) {
    tu_wr16(p + tu_l4csum_at(&l), 0);
    uint16_t cs = tu_fold(tu_sum(p + l.l3len, l.l4len, tu_pseudo_sum(p, &l)));
    if (l.proto == 17 && cs == 0) cs = 0xffff;
    tu_wr16(p + tu_l4csum_at(&l), cs);
  }
}

/* 1 when the packet's checksums are right (IPv4 header and transport). */
static inline int tu_checksums_ok(const uint8_t *p, size_t n) {
  tu_layout l;
  if (!tu_parse(p, n, &l)) return 0;
  if (!l.v6 && tu_fold(tu_sum(p, l.l3len, 0)) != 0) return 0;
  return tu_fold(tu_sum(p + l.l3len, l.l4len, tu_pseudo_sum(p, &l))) == 0;
}

/* ------------------------------------------------------------------------
 * Packets */

#define TU_FIN 0x01
#define TU_SYN 0x02
#define TU_RST 0x04
#define TU_PSH 0x08
#define TU_ACK 0x10

typedef struct {
  int v6;
  uint8_t src[16], dst[16]; /* network order; IPv4 in the first 4 bytes */
  uint16_t sport, dport;
} tu_tuple;

/* An IP header for `l4len` transport bytes of `proto`, at p. Returns its size. */
static inline size_t tu_ip_header(uint8_t *p, const tu_tuple *t, uint8_t proto, size_t l4len) {
  if (t->v6) {
    memset(p, 0, 40);
    p[0] = 0x60;
    tu_wr16(p + 4, (uint16_t)l4len);
    p[6] = proto;
    p[7] = 64;
    memcpy(p + 8, t->src, 16);
    memcpy(p + 24, t->dst, 16);
    return 40;
  }
  memset(p, 0, 20);
  p[0] = 0x45;
  tu_wr16(p + 2, (uint16_t)(20 + l4len));
  tu_wr16(p + 4, 0x1c46); /* identification */
  tu_wr16(p + 6, 0x4000); /* don't fragment */
  p[8] = 64;
  p[9] = proto;
  memcpy(p + 12, t->src, 4);
  memcpy(p + 16, t->dst, 4);
  return 20;
}

/* A TCP segment with correct checksums. Returns its length. */
static inline size_t tu_tcp(uint8_t *p, const tu_tuple *t, uint32_t seq, uint32_t ack, uint8_t flags,
                            const char *payload) {
  size_t plen = payload ? strlen(payload) : 0;
  size_t h = tu_ip_header(p, t, 6, 20 + plen);
  uint8_t *tcp = p + h;
  memset(tcp, 0, 20);
  tu_wr16(tcp, t->sport);
  tu_wr16(tcp + 2, t->dport);
  for (int i = 0; i < 4; i++) {
    tcp[4 + i] = (uint8_t)(seq >> (24 - 8 * i));
    tcp[8 + i] = (uint8_t)(ack >> (24 - 8 * i));
  }
  tcp[12] = 5 << 4;
  tcp[13] = flags;
  tu_wr16(tcp + 14, 64240);
  if (plen) memcpy(tcp + 20, payload, plen);
  tu_fill_checksums(p, h + 20 + plen, 3);
  return h + 20 + plen;
}

/* A UDP datagram with correct checksums. Returns its length. */
static inline size_t tu_udp(uint8_t *p, const tu_tuple *t, const char *payload) {
  size_t plen = payload ? strlen(payload) : 0;
  size_t h = tu_ip_header(p, t, 17, 8 + plen);
  uint8_t *udp = p + h;
  tu_wr16(udp, t->sport);
  tu_wr16(udp + 2, t->dport);
  tu_wr16(udp + 4, (uint16_t)(8 + plen));
  tu_wr16(udp + 6, 0);
  if (plen) memcpy(udp + 8, payload, plen);
  tu_fill_checksums(p, h + 8 + plen, 3);
  return h + 8 + plen;
}

/* An ICMP (IPv4) or ICMPv6 (IPv6) message from t->src to t->dst (ports
 * unused): type, code, the word after the checksum, and `n` bytes of body
 * (an error's quoted packet), checksums correct. Returns its length. */
static inline size_t tu_icmp(uint8_t *p, const tu_tuple *t, uint8_t type, uint8_t code, uint32_t rest,
                             const uint8_t *body, size_t n) {
  size_t h = tu_ip_header(p, t, t->v6 ? 58 : 1, 8 + n);
  uint8_t *m = p + h;
  m[0] = type;
  m[1] = code;
  tu_wr16(m + 2, 0);
  tu_wr16(m + 4, (uint16_t)(rest >> 16));
  tu_wr16(m + 6, (uint16_t)rest);
  memcpy(m + 8, body, n);
  tu_fill_checksums(p, h + 8 + n, 3);
  return h + 8 + n;
}

#endif
