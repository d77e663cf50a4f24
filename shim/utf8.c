#include "utf8.h"

int wr_utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned b = s[i];
    if (b < 0x80) {
      i++;
      continue;
    }
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
    if (n - i <= extra) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k <= extra; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return 0;
    }
    i += extra + 1;
  }
  return 1;
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
