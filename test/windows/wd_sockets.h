/* Real (wine) sockets for the Windows tests: listeners on chosen addresses,
 * as a proxy would open them. */
#ifndef WD_SOCKETS_H
#define WD_SOCKETS_H

#include <winsock2.h>
#include <ws2tcpip.h>
#include <string.h>

/* A TCP socket listening on addr (family 4 or 6, any when NULL) at port;
 * IPv6 sockets only for IPv6. INVALID_SOCKET when it cannot. */
static inline SOCKET listen_on(int family, const char *addr, uint16_t port) {
  WSADATA w;
  WSAStartup(MAKEWORD(2, 2), &w);
  SOCKET s = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (s == INVALID_SOCKET) return s;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  int len;
  if (family == 6) {
    DWORD on = 1;
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (const char *)&on, sizeof on);
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (addr) inet_pton(AF_INET6, addr, &a->sin6_addr);
    len = sizeof *a;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (addr) inet_pton(AF_INET, addr, &a->sin_addr);
    len = sizeof *a;
  }
  if (bind(s, (struct sockaddr *)&ss, len) != 0 || listen(s, 4) != 0) {
    closesocket(s);
    return INVALID_SOCKET;
  }
  return s;
}

/* A TCP port free on this machine now: bound once, then let go. */
static inline uint16_t free_port(void) {
  SOCKET probe = listen_on(4, NULL, 0);
  struct sockaddr_in pa;
  int plen = sizeof pa;
  getsockname(probe, (struct sockaddr *)&pa, &plen);
  closesocket(probe);
  return ntohs(pa.sin_port);
}

#endif
