#include "utf8.h"

/* The length of the well-formed UTF-8 sequence at s[0, n) (n > 0), or 0
 * when the bytes there are not one (RFC 3629). */
static size_t sequence(const unsigned char *s, size_t n) {
  unsigned b = s[0];
  if (b < 0x80) return 1;
  size_t extra;
  unsigned lo = 0x80, hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) {
    extra = 1;
  } else if (b >= 0xe0 && b <= 0xef) {
    extra = 2;
    if (b == 0xe0) lo = 0xa0;
    if (b == 0xed) hi = 0x9f; /* no UTF-16 surrogates */
  } else if (b >= 0xf0 && b <= 0xf4) {
    extra = 3;
    if (b == 0xf0) lo = 0x90;
    if (b == 0xf4) hi = 0x8f; /* nothing above U+10FFFF */
  } else {
    return 0;
  }
  if (n <= extra) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t k = 2; k <= extra; k++) {
    if ((s[k] & 0xc0) != 0x80) return 0;
  }
  return extra + 1;
}

int wr_utf8_valid(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t k = sequence(s + i, n - i);
    if (k == 0) return 0;
    i += k;
  }
  return 1;
}

size_t wr_utf8_repair(char *s, size_t n) {
  size_t fixed = 0;
  for (size_t i = 0; i < n;) {
    size_t k = sequence((const unsigned char *)s + i, n - i);
    if (k == 0) {
      s[i] = '?';
      fixed++;
      k = 1;
    }
    i += k;
  }
  return fixed;
}

static int continuation(unsigned char b) { return (b & 0xc0) == 0x80; }

size_t wr_utf8_head(const void *s, size_t n, size_t cap) {
  const unsigned char *p = s;
  if (n <= cap) return n;
  size_t k = cap;
  while (k > 0 && continuation(p[k])) k--;
  return k;
}

size_t wr_utf8_tail(const void *s, size_t n, size_t cap) {
  const unsigned char *p = s;
  size_t k = n < cap ? n : cap;
  while (k > 0 && continuation(p[n - k])) k--;
  return k;
}
