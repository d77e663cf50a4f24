/* redirector_exclude_socket on Windows: the socket's local end, for the
 * engine.
 *
 * The NETWORK handle sees every process's packets, this one's too, so an
 * excluded socket is not kept from the capture (as the Linux mark does):
 * the engine passes the packets of its local end at once instead, with no
 * flow and no wait for the owner. That needs the local port before the
 * first packet, so a socket that is not bound yet is bound here to the
 * wildcard address of its family, port 0 (the system picks the port, as
 * connect() or sendto() would). getsockname() fails with WSAEINVAL on an
 * unbound socket (TCP or UDP); on a bound one it gives the address bound
 * (the wildcard, or one address) and the port; on a connected one the
 * address the connection uses.
 *
 * Winsock is resolved at run time, like WinDivert.dll and iphlpapi.dll: the
 * DLL imports only KERNEL32 and msvcrt. A process with a socket has it
 * loaded already. */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <stdio.h>
#include <string.h>

#include "capture/backend.h"

typedef int(WSAAPI *getsockopt_fn)(SOCKET, int, int, char *, int *);
typedef int(WSAAPI *getsockname_fn)(SOCKET, struct sockaddr *, int *);
typedef int(WSAAPI *bind_fn)(SOCKET, const struct sockaddr *, int);
typedef int(WSAAPI *last_error_fn)(void);

typedef struct {
  getsockopt_fn getsockopt;
  getsockname_fn getsockname;
  bind_fn bind;
  last_error_fn last_error;
} winsock_api;

/* A port in network order (no ntohs: that would import ws2_32.dll). */
static uint16_t port_of(const void *p) {
  const uint8_t *b = p;
  return (uint16_t)(b[0] << 8 | b[1]);
}

/* The local end as getsockname() gives it: 1, or 0 with the Windows error in *code. */
static int local_end(const winsock_api *ws, SOCKET s, struct sockaddr_storage *ss, int *code) {
  int len = sizeof *ss;
  memset(ss, 0, sizeof *ss);
  if (ws->getsockname(s, (struct sockaddr *)ss, &len) == 0) return 1;
  *code = ws->last_error();
  return 0;
}

/* Fills x from a bound socket's local end. 0, or -1 with the reason. */
static int exclusion_of(const winsock_api *ws, SOCKET s, int proto, const struct sockaddr_storage *ss,
                        wr_exclusion *x, char *err, size_t errlen) {
  static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  static const uint8_t any6[16];
  memset(x, 0, sizeof *x);
  x->proto = (uint8_t)proto;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    x->family = 4;
    memcpy(x->local, &a->sin_addr, 4);
    x->local_port = port_of(&a->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    const uint8_t *b = (const uint8_t *)&a->sin6_addr;
    x->local_port = port_of(&a->sin6_port);
    if (memcmp(b, v4_mapped, 12) == 0) {
      /* Bound to ::ffff:a.b.c.d: IPv4 packets only. */
      x->family = 4;
      memcpy(x->local, b + 12, 4);
    } else {
      x->family = 6;
      memcpy(x->local, b, 16);
      if (memcmp(b, any6, 16) == 0) {
        /* [::] carries IPv4 too unless IPV6_V6ONLY (Windows' default) is set. */
        DWORD v6only = 1;
        int len = sizeof v6only;
        if (ws->getsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (char *)&v6only, &len) == 0 && v6only == 0) {
          x->dual_stack = 1;
        }
      }
    }
  } else {
    snprintf(err, errlen, "socket %llu is bound to an address of family %d, not IPv4 or IPv6",
             (unsigned long long)s, (int)ss->ss_family);
    return -1;
  }
  if (x->local_port == 0) {
    snprintf(err, errlen, "socket %llu has no local port", (unsigned long long)s);
    return -1;
  }
  return 0;
}

static int exclude_with(const winsock_api *ws, SOCKET s, wr_exclusion *x, char *err, size_t errlen) {
  WSAPROTOCOL_INFOW info;
  int len = sizeof info;
  if (ws->getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &len) != 0) {
    int code = ws->last_error();
    snprintf(err, errlen, "%llu is not a socket (Windows error %d%s)", (unsigned long long)s, code,
             code == WSANOTINITIALISED ? ": Winsock is not started in this process" : "");
    return -1;
  }
  int family = info.iAddressFamily;
  int proto = info.iProtocol;
  if ((family != AF_INET && family != AF_INET6) || (proto != IPPROTO_TCP && proto != IPPROTO_UDP)) {
    snprintf(err, errlen, "socket %llu is not a TCP or UDP socket over IPv4 or IPv6 (family %d, protocol %d)",
             (unsigned long long)s, family, proto);
    return -1;
  }
  struct sockaddr_storage ss;
  int code = 0;
  if (!local_end(ws, s, &ss, &code)) {
    if (code != WSAEINVAL) {
      snprintf(err, errlen, "the local address of socket %llu could not be read (Windows error %d)",
               (unsigned long long)s, code);
      return -1;
    }
    /* Not bound yet: the wildcard address of its family, port 0. */
    struct sockaddr_storage any;
    memset(&any, 0, sizeof any);
    any.ss_family = (ADDRESS_FAMILY)family;
    int any_len = family == AF_INET ? (int)sizeof(struct sockaddr_in) : (int)sizeof(struct sockaddr_in6);
    if (ws->bind(s, (struct sockaddr *)&any, any_len) != 0) {
      snprintf(err, errlen, "could not bind socket %llu to %s port 0 (Windows error %d)", (unsigned long long)s,
               family == AF_INET ? "0.0.0.0" : "[::]", ws->last_error());
      return -1;
    }
    if (!local_end(ws, s, &ss, &code)) {
      snprintf(err, errlen, "the local address of socket %llu could not be read after binding it (Windows error %d)",
               (unsigned long long)s, code);
      return -1;
    }
  }
  return exclusion_of(ws, s, proto, &ss, x, err, errlen) == 0 ? 1 : -1;
}

int wr_exclude_socket(intptr_t socket, wr_exclusion *x, char *err, size_t errlen) {
  if (socket < 0) {
    snprintf(err, errlen, "%lld is not a socket", (long long)socket);
    return -1;
  }
  HMODULE dll = LoadLibraryExW(L"ws2_32.dll", NULL, LOAD_LIBRARY_SEARCH_SYSTEM32);
  if (!dll) {
    snprintf(err, errlen, "ws2_32.dll could not be loaded (Windows error %lu)", (unsigned long)GetLastError());
    return -1;
  }
  winsock_api ws = {
      (getsockopt_fn)(void (*)(void))GetProcAddress(dll, "getsockopt"),
      (getsockname_fn)(void (*)(void))GetProcAddress(dll, "getsockname"),
      (bind_fn)(void (*)(void))GetProcAddress(dll, "bind"),
      (last_error_fn)(void (*)(void))GetProcAddress(dll, "WSAGetLastError"),
  };
  int rc;
  if (!ws.getsockopt || !ws.getsockname || !ws.bind || !ws.last_error) {
    snprintf(err, errlen, "ws2_32.dll lacks a Winsock function");
    rc = -1;
  } else {
    rc = exclude_with(&ws, (SOCKET)socket, x, err, errlen);
  }
  FreeLibrary(dll);
  return rc;
}
