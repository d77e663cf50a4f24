/* Exactly n bytes through a Winsock stream socket, for the acceptance
 * program (acceptance.c) and the stand-in's live mode
 * (test/windows/fake_live.c). */
#ifndef WR_SOCK_ALL_H
#define WR_SOCK_ALL_H

#include <winsock2.h>
#include <stddef.h>

/* Sends (sending = 1) or receives (0) all n bytes at p: 1 when they went, 0
 * on an error or when the other side closed first. */
static inline int sock_all(SOCKET s, char *p, size_t n, int sending) {
  while (n > 0) {
    int chunk = n > 65536 ? 65536 : (int)n;
    int k = sending ? send(s, p, chunk, 0) : recv(s, p, chunk, 0);
    if (k <= 0) return 0;
    p += k;
    n -= (size_t)k;
  }
  return 1;
}

#endif
