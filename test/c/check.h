/* The one harness of the C test programs (Linux and, under wine, Windows).
 *
 *   TEST_CASE(name) { ... CHECK(cond, "format", ...); ... }
 *   TEST_CASE_POSIX(name) { ... }   (inside #ifndef _WIN32: a Linux-only case)
 *   int main(int argc, char **argv) { return tests_main(argc, argv); }
 *
 * A case is written once: TEST_CASE registers it with the program, and
 * CMake (wr_test_cases in test/cases.cmake) reads the same source for the
 * names and adds one CTest test per case, plus one that fails when the
 * program's cases and CMake's list differ. So a case can neither be left
 * out of CTest nor listed without existing.
 *
 *   prog NAME              runs one case (in a network namespace of its own
 *                          on Linux as root); exit 1 after a failed CHECK
 *   prog                   runs every case
 *   prog --list            prints the cases, one a line
 *   prog --check-list N..  exit 0 only when the cases are exactly N.. */
#ifndef WR_TEST_CHECK_H
#define WR_TEST_CHECK_H

#ifndef _WIN32
#define _GNU_SOURCE
#endif
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "windows_redirector.h"

#ifdef _WIN32
typedef HANDLE thread_t;
#define THREAD_FN DWORD WINAPI
#define THREAD_RET 0
static inline int thread_start(thread_t *t, LPTHREAD_START_ROUTINE fn, void *arg) {
  *t = CreateThread(NULL, 0, fn, arg, 0, NULL);
  return *t ? 0 : -1;
}
static inline void thread_join(thread_t t) {
  WaitForSingleObject(t, INFINITE);
  CloseHandle(t);
}
static inline unsigned self_pid(void) { return (unsigned)GetCurrentProcessId(); }

/* A UDP socket bound to `addr` (host order: INADDR_LOOPBACK, INADDR_ANY)
 * and `port` (0: any) that has sent itself a datagram on 127.0.0.1: wine
 * learns a socket's owning process once the process has used it. Its
 * address as bound goes to *a. */
static inline SOCKET used_udp_socket(struct sockaddr_in *a, uint32_t addr, uint16_t port) {
  WSADATA w;
  WSAStartup(MAKEWORD(2, 2), &w);
  SOCKET u = socket(AF_INET, SOCK_DGRAM, 0);
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(addr);
  a->sin_port = htons(port);
  bind(u, (struct sockaddr *)a, sizeof *a);
  int len = sizeof *a;
  getsockname(u, (struct sockaddr *)a, &len);
  struct sockaddr_in to = *a;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  char buf[8];
  sendto(u, "x", 1, 0, (struct sockaddr *)&to, sizeof to);
  recv(u, buf, sizeof buf, 0);
  return u;
}
#else
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
typedef pthread_t thread_t;
#define THREAD_FN void *
#define THREAD_RET NULL
static inline int thread_start(thread_t *t, void *(*fn)(void *), void *arg) { return pthread_create(t, NULL, fn, arg); }
static inline void thread_join(thread_t t) { pthread_join(t, NULL); }
static inline unsigned self_pid(void) { return (unsigned)getpid(); }
#endif

static int failures;
static int checks;

static void check_at(const char *file, int line, int ok, const char *fmt, ...) {
  checks++;
  if (ok) return;
  failures++;
  va_list ap;
  va_start(ap, fmt);
  printf("FAIL %s:%d: ", file, line);
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
}

/* Counts a check; on failure prints where and why, and the case fails. */
#define CHECK(cond, ...) check_at(__FILE__, __LINE__, (cond) ? 1 : 0, __VA_ARGS__)

static inline const char *last_error(void) {
  static char buf[1024];
  redirector_last_error(buf, sizeof buf);
  return buf;
}

static inline int error_mentions(const char *needle) { return strstr(last_error(), needle) != NULL; }

/* ---- the cases ---- */

enum { TESTS_MAX = 128 };
static struct {
  const char *name;
  void (*fn)(void);
} tests_table[TESTS_MAX];
static size_t tests_count;
static void (*tests_failed_hook)(void);

static inline void tests_register(const char *name, void (*fn)(void)) {
  if (tests_count == TESTS_MAX) {
    fprintf(stderr, "check.h: more than %d cases\n", TESTS_MAX);
    abort();
  }
  tests_table[tests_count].name = name;
  tests_table[tests_count].fn = fn;
  tests_count++;
}

#define TEST_CASE(name)                                                                   \
  static void case_##name(void);                                                          \
  __attribute__((constructor)) static void register_##name(void) { tests_register(#name, case_##name); } \
  static void case_##name(void)

/* A case only for POSIX systems; its definition stands inside #ifndef _WIN32. */
#define TEST_CASE_POSIX(name) TEST_CASE(name)

/* Runs after each case that failed (e.g. to stop a redirector it left running). */
static inline void tests_after_failure(void (*fn)(void)) { tests_failed_hook = fn; }

/* Moves into a network namespace of our own when we may (root in CI), with
 * its loopback up, so a running redirector never touches the host. */
static inline void isolate_network(void) {
#if !defined(_WIN32)
  if (geteuid() != 0) return;
  if (unshare(CLONE_NEWNET) != 0) {
    perror("unshare(CLONE_NEWNET)");
    exit(2);
  }
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP;
    ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  if (s >= 0) close(s);
#endif
}

static inline int tests_has(const char *name) {
  for (size_t i = 0; i < tests_count; i++) {
    if (strcmp(tests_table[i].name, name) == 0) return 1;
  }
  return 0;
}

/* --check-list: the registered cases are exactly names[0..n). */
static inline int tests_check_list(char **names, int n) {
  int bad = 0;
  for (int i = 0; i < n; i++) {
    if (!tests_has(names[i])) {
      printf("FAIL: CMake lists the case %s, which the program does not have\n", names[i]);
      bad++;
    }
  }
  for (size_t i = 0; i < tests_count; i++) {
    int listed = 0;
    for (int j = 0; j < n && !listed; j++) listed = strcmp(names[j], tests_table[i].name) == 0;
    if (!listed) {
      printf("FAIL: the case %s is not in CMake's list (written other than as TEST_CASE(name)?)\n",
             tests_table[i].name);
      bad++;
    }
  }
  printf("%zu cases, %d listed, %d mismatch(es)\n", tests_count, n, bad);
  return bad ? 1 : 0;
}

/* Runs the case called name, or all of them when name is NULL. */
static inline int tests_run(const char *name) {
  int ran = 0;
  setvbuf(stdout, NULL, _IONBF, 0);
  for (size_t i = 0; i < tests_count; i++) {
    if (name && strcmp(name, tests_table[i].name) != 0) continue;
    printf("case %s\n", tests_table[i].name);
    int before = failures;
    tests_table[i].fn();
    if (failures != before && tests_failed_hook) tests_failed_hook();
    ran++;
  }
  if (ran == 0) {
    printf("no such case: %s\n", name ? name : "(none registered)");
    return 2;
  }
  printf("%s: %d checks, %d failed\n", name ? name : "all", checks, failures);
  return failures ? 1 : 0;
}

static inline int tests_main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "--list") == 0) {
    for (size_t i = 0; i < tests_count; i++) printf("%s\n", tests_table[i].name);
    return 0;
  }
  if (argc >= 2 && strcmp(argv[1], "--check-list") == 0) return tests_check_list(argv + 2, argc - 2);
  if (argc > 2) {
    fprintf(stderr, "usage: %s [CASE | --list | --check-list CASE...]\n", argv[0]);
    return 2;
  }
  if (argc == 2) {
    if (!tests_has(argv[1])) {
      printf("no such case: %s\n", argv[1]);
      return 2;
    }
    isolate_network();
  }
  return tests_run(argc == 2 ? argv[1] : NULL);
}

#endif
