#ifndef WR_UTF8_H
#define WR_UTF8_H
#include <stddef.h>
/* 1 when [s, s+n) is well-formed UTF-8 (RFC 3629), else 0. */
int wr_utf8_valid(const unsigned char *s, size_t n);
/* Makes s[0, n) well-formed UTF-8 in place: each byte that does not belong
 * to a well-formed sequence becomes '?'. Returns how many were replaced. */
size_t wr_utf8_repair(char *s, size_t n);
/* How many bytes of the start of s[0, n) to keep so that at most cap bytes
 * remain and no UTF-8 sequence is cut. */
size_t wr_utf8_head(const void *s, size_t n, size_t cap);
/* How many bytes of the end of s[0, n) to keep, likewise. */
size_t wr_utf8_tail(const void *s, size_t n, size_t cap);
#endif
