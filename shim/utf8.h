#ifndef WR_UTF8_H
#define WR_UTF8_H
#include <stddef.h>
/* 1 when [s, s+n) is well-formed UTF-8 (RFC 3629), else 0. */
int wr_utf8_valid(const unsigned char *s, size_t n);
#endif
