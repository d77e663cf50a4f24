/*
 * What a user's program built against an installed windows_redirector checks
 * (test/install.test.ts): the library answers as its header says, however it
 * was linked. Prints a line per check, then "consumer: N checks, N failed",
 * and returns how many failed.
 *
 * WR_EXPECT_VERSION: the version the program was built against (from the
 * CMake package or the .pc file). WR_CONSUMER_PLUGIN: built into a shared
 * library that exports wr_consumer_checks. WR_CONSUMER_NO_CRT: no C library
 * at all, for a program linked by lld-link against the MSVC-format import
 * library (clang --target=x86_64-pc-windows-msvc); it starts at
 * wr_consumer_start and writes with KERNEL32 only.
 */
#include "windows_redirector.h"

#ifndef WR_EXPECT_VERSION
#error "define WR_EXPECT_VERSION, the version the program is built against"
#endif

#ifdef WR_CONSUMER_NO_CRT
__declspec(dllimport) void *__stdcall GetStdHandle(unsigned long which);
__declspec(dllimport) int __stdcall WriteFile(void *file, const void *buf, unsigned long len, unsigned long *written,
                                              void *overlapped);
__declspec(dllimport) __declspec(noreturn) void __stdcall ExitProcess(unsigned int code);
#else
#include <stdio.h>
#endif

#if defined(WR_CONSUMER_PLUGIN) && defined(_WIN32)
#define WR_CONSUMER_EXPORT __declspec(dllexport)
#else
#define WR_CONSUMER_EXPORT
#endif

/* No C library: what is needed of <string.h> and printf. */
static int same(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

static int contains(const char *s, const char *part) {
  for (; *s; s++) {
    unsigned long i = 0;
    while (part[i] && s[i] == part[i]) i++;
    if (!part[i]) return 1;
  }
  return !*part;
}

#ifdef WR_CONSUMER_NO_CRT
static unsigned long text_len(const char *s) {
  unsigned long n = 0;
  while (s[n]) n++;
  return n;
}
#endif

static void say(const char *s) {
#ifdef WR_CONSUMER_NO_CRT
  unsigned long written;
  WriteFile(GetStdHandle((unsigned long)-11 /* STD_OUTPUT_HANDLE */), s, text_len(s), &written, 0);
#else
  fputs(s, stdout);
#endif
}

static void say_count(int n) {
  char digits[12];
  int i = (int)sizeof digits - 1;
  digits[i] = 0;
  do {
    digits[--i] = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0 && i > 0);
  say(digits + i);
}

static int checks, failures;

static void check(int ok, const char *what) {
  checks++;
  if (!ok) failures++;
  say(ok ? "ok   " : "FAIL ");
  say(what);
  say("\n");
}

/* PIDs no process has: above Linux's pid_max, and odd (Windows PIDs are
 * multiples of 4). */
#define PID_LISTED 4000000001u
#define PID_OTHER 4000000003u

WR_CONSUMER_EXPORT int wr_consumer_checks(void) {
  const char *version = redirector_version();
  say("version ");
  say(version);
  say("\n");
  check(same(version, WR_EXPECT_VERSION), "redirector_version() is the version built against (" WR_EXPECT_VERSION ")");
  check(get_redirector_status() == 0, "get_redirector_status() is 0 before any start");
  check(stop_redirector() == -1, "stop_redirector() is -1 when not running");
  check(set_redirector_config("{\"intercept_pids\": [4000000001], \"intercept\": \"curl\"}") == 0,
        "set_redirector_config takes a configuration");
  check(redirector_would_intercept(PID_LISTED, NULL) == 1, "the listed PID is intercepted");
  check(redirector_would_intercept(PID_OTHER, NULL) == 0, "another PID is not");
  check(redirector_would_intercept(PID_OTHER, "/usr/bin/curl") == 1, "a process whose path names curl is");
  check(set_redirector_config("{\"intercept_pids\": [3.5]}") == -2, "a PID of 3.5 is refused with -2");
  check(redirector_last_error_code() == REDIRECTOR_ECONFIG, "the refusal's code is REDIRECTOR_ECONFIG");
  char text[256];
  int32_t n = redirector_last_error(text, sizeof text);
  check(n > 0 && n < (int32_t)sizeof text && contains(text, "intercept_pids[0]"), "the refusal names the field");
  check(redirector_would_intercept(PID_LISTED, NULL) == 1, "the refused configuration left the previous one in force");
  check(set_redirector_config(NULL) == -1, "set_redirector_config(NULL) is -1");
  check(same(redirector_strerror(REDIRECTOR_ENOTRUNNING), "the redirector is not running"),
        "redirector_strerror(REDIRECTOR_ENOTRUNNING) is its text");
  say("consumer: ");
  say_count(checks);
  say(" checks, ");
  say_count(failures);
  say(" failed\n");
  return failures;
}

#ifdef WR_CONSUMER_NO_CRT
void wr_consumer_start(void) { ExitProcess((unsigned int)wr_consumer_checks()); }
#endif
