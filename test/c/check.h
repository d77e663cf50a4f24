/* The small harness the C test programs share: checks that count and
 * report, the last-error text, threads, and running each case by name in a
 * network namespace of its own (Linux, as root). */
#ifndef WR_TEST_CHECK_H
#define WR_TEST_CHECK_H

#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "windows_redirector.h"

#ifdef _WIN32
#include <windows.h>
typedef HANDLE thread_t;
#define THREAD_FN DWORD WINAPI
#define THREAD_RET 0
static int thread_start(thread_t *t, LPTHREAD_START_ROUTINE fn, void *arg) {
  *t = CreateThread(NULL, 0, fn, arg, 0, NULL);
  return *t ? 0 : -1;
}
static void thread_join(thread_t t) {
  WaitForSingleObject(t, INFINITE);
  CloseHandle(t);
}
static unsigned self_pid(void) { return (unsigned)GetCurrentProcessId(); }
#else
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
typedef pthread_t thread_t;
#define THREAD_FN void *
#define THREAD_RET NULL
static int thread_start(thread_t *t, void *(*fn)(void *), void *arg) { return pthread_create(t, NULL, fn, arg); }
static void thread_join(thread_t t) { pthread_join(t, NULL); }
static unsigned self_pid(void) { return (unsigned)getpid(); }
#endif

static int failures;
static int checks;

static void check(int ok, const char *fmt, ...) {
  checks++;
  if (ok) return;
  failures++;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

static const char *last_error(void) {
  static char buf[1024];
  redirector_last_error(buf, sizeof buf);
  return buf;
}

static int error_mentions(const char *needle) { return strstr(last_error(), needle) != NULL; }


struct test_case {
  const char *name;
  void (*fn)(void);
};

#if !defined(_WIN32)
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#endif

/* Moves into a network namespace of our own when we may (root in CI), with
 * its loopback up, so a running redirector never touches the host. */
static void isolate_network(void) {
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

static int run_case(int argc, char **argv, const struct test_case *cases, size_t n) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s <case>\n", argv[0]);
    return 2;
  }
  isolate_network();
  for (size_t i = 0; i < n; i++) {
    if (strcmp(cases[i].name, argv[1]) == 0) {
      cases[i].fn();
      printf("%s: %d checks, %d failed\n", argv[1], checks, failures);
      return failures ? 1 : 0;
    }
  }
  fprintf(stderr, "unknown case %s\n", argv[1]);
  return 2;
}

#endif
