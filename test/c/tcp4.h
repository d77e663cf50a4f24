/* An IPv4 TCP packet with valid checksums, for the C tests and the
 * benchmark that feed the engine host directly. */
#ifndef WR_TEST_TCP4_H
#define WR_TEST_TCP4_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static uint16_t csum(const uint8_t *p, size_t n, uint32_t sum) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += (uint32_t)p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* src:sport -> dst:dport (addresses in host order), `payload` bytes;
 * returns its length. */
static size_t tcp4(uint8_t *p, uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport, uint8_t flags,
                   size_t payload) {
  size_t len = 40 + payload;
  memset(p, 0, len);
  p[0] = 0x45;
  p[2] = (uint8_t)(len >> 8);
  p[3] = (uint8_t)len;
  p[8] = 64;
  p[9] = 6;
  put32(p + 12, src);
  put32(p + 16, dst);
  uint16_t c = csum(p, 20, 0);
  p[10] = (uint8_t)(c >> 8);
  p[11] = (uint8_t)c;
  uint8_t *t = p + 20;
  t[0] = (uint8_t)(sport >> 8);
  t[1] = (uint8_t)sport;
  t[2] = (uint8_t)(dport >> 8);
  t[3] = (uint8_t)dport;
  t[12] = 5 << 4;
  t[13] = flags;
  t[14] = 0xff;
  t[15] = 0xff;
  for (size_t i = 0; i < payload; i++) t[20 + i] = (uint8_t)i;
  uint32_t ps = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + 6 + (uint32_t)(20 + payload);
  c = csum(t, 20 + payload, ps);
  t[16] = (uint8_t)(c >> 8);
  t[17] = (uint8_t)c;
  return len;
}

#endif
