/* Shared by the Windows test programs: checks, the case table (each
 * program runs the case named on its command line, CTest starting one
 * process per case, or all of them, and exits non-zero after any failed
 * CHECK), and a used UDP socket. */
#ifndef WD_CHECK_H
#define WD_CHECK_H

#include <winsock2.h>
#include <stdio.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...)                          \
  do {                                            \
    if (!(cond)) {                                \
      failures++;                                 \
      printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      printf(__VA_ARGS__);                        \
      printf("\n");                               \
      fflush(stdout);                             \
    }                                             \
  } while (0)

typedef struct {
  const char *name;
  void (*fn)(void);
} wd_case;

/* Runs the named case (or all when name is NULL); after_case runs after
 * each one that failed. Returns the process exit code. */
static int run_cases(const wd_case *cases, size_t n, const char *name, void (*after_failure)(void)) {
  int ran = 0;
  setvbuf(stdout, NULL, _IONBF, 0);
  for (size_t i = 0; i < n; i++) {
    if (name && strcmp(name, cases[i].name) != 0) continue;
    printf("case %s\n", cases[i].name);
    int before = failures;
    cases[i].fn();
    if (failures != before && after_failure) after_failure();
    ran++;
  }
  if (ran == 0) {
    printf("no such case: %s\n", name ? name : "");
    return 2;
  }
  printf("%s: %d failure(s)\n", name ? name : "all", failures);
  return failures ? 1 : 0;
}

/* A UDP socket on 127.0.0.1 that has sent itself a datagram: wine learns
 * a socket's owning process once the process has used it. Its address goes
 * to *a. */
static SOCKET used_udp_socket(struct sockaddr_in *a) {
  WSADATA w;
  WSAStartup(MAKEWORD(2, 2), &w);
  SOCKET u = socket(AF_INET, SOCK_DGRAM, 0);
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(u, (struct sockaddr *)a, sizeof *a);
  int len = sizeof *a;
  getsockname(u, (struct sockaddr *)a, &len);
  char buf[8];
  sendto(u, "x", 1, 0, (struct sockaddr *)a, sizeof *a);
  recv(u, buf, sizeof buf, 0);
  return u;
}

#endif
