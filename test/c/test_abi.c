/* ABI tests: every return code of the seed and added functions, hostile
 * input, concurrency, start/stop cycles and engine traps.
 *
 *   test_abi <case>      runs one case; exit 0 when every check passed
 *
 * On Linux, as root, the process first moves into a network namespace of its
 * own, so a running redirector never touches the host's traffic or rules. */
#include "check.h"

#include <stdatomic.h>

#ifndef _WIN32
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#endif

/* Test PIDs lie above 4194304 (Linux's PID_MAX_LIMIT): none can be this
 * process's own PID, which the library never intercepts. */
/* A configuration that intercepts PID 4200777 only. */
static const char *BASE_CONFIG = "{\"intercept_pids\":[4200777],\"description\":\"base\"}";

static void set_base_config(void) {
  CHECK(set_redirector_config(BASE_CONFIG) == 0, "base config accepted: %s", last_error());
  CHECK(redirector_would_intercept(4200777, NULL) == 1, "base config intercepts 4200777");
}

static void expect_config(const char *json, int32_t rc, int32_t code, const char *mention) {
  int32_t got = set_redirector_config(json);
  CHECK(got == rc, "config %.60s: rc %d, want %d (%s)", json, got, rc, last_error());
  if (rc != 0) {
    CHECK(redirector_last_error_code() == code, "config %.60s: code %d, want %d", json, redirector_last_error_code(),
          code);
    if (mention) CHECK(error_mentions(mention), "config %.60s: error '%s' should mention '%s'", json, last_error(), mention);
  }
}

/* ----------------------------------------------------------------------- */

TEST_CASE(version) {
  const char *v = redirector_version();
  CHECK(v != NULL && strlen(v) >= 5 && strchr(v, '.') != NULL, "version looks like x.y.z: %s", v ? v : "(null)");
}

TEST_CASE(strerror) {
  CHECK(strcmp(redirector_strerror(REDIRECTOR_OK), "no error") == 0, "strerror(0)");
  CHECK(strstr(redirector_strerror(REDIRECTOR_EALREADY), "already running") != NULL, "strerror(EALREADY)");
  CHECK(strcmp(redirector_strerror(12345), "unknown error code") == 0, "strerror(unknown)");
  CHECK(strcmp(redirector_strerror(-1), "unknown error code") == 0, "strerror(-1) is not a REDIRECTOR_E code");
}

TEST_CASE(last_error) {
  initialize_global_config();
  CHECK(stop_redirector() == -1, "stop when stopped is -1");
  CHECK(redirector_last_error_code() == REDIRECTOR_ENOTRUNNING, "code ENOTRUNNING");
  int32_t n = redirector_last_error(NULL, 0);
  CHECK(n > 10, "length without a buffer: %d", n);
  char small[8];
  memset(small, 'x', sizeof small);
  int32_t m = redirector_last_error(small, sizeof small);
  CHECK(m == n, "same length with a small buffer");
  CHECK(strlen(small) == 7, "cut to len-1 and NUL-terminated");
  char one[1] = {'x'};
  redirector_last_error(one, 1);
  CHECK(one[0] == '\0', "len 1 gives an empty string");
  CHECK(redirector_last_error(NULL, 100) == n, "NULL buffer with a length is ignored safely");
  /* A multi-byte character is never cut in half. */
  CHECK(set_redirector_config("{\"ports\":[\"\xc3\xa9\xc3\xa9\xc3\xa9\"]}") == -2, "bad port string");
  char buf[64];
  int32_t full = redirector_last_error(NULL, 0);
  for (size_t len = 1; len < sizeof buf && (int32_t)len <= full; len++) {
    redirector_last_error(buf, len);
    size_t k = strlen(buf);
    int ok = 1;
    if (k > 0) {
      /* The last character must be complete: find its lead byte. */
      size_t i = k;
      while (i > 0 && ((unsigned char)buf[i - 1] & 0xc0) == 0x80) i--;
      unsigned char lead = (unsigned char)buf[i - 1];
      size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
      ok = (k - (i - 1)) == need;
    }
    CHECK(ok, "cut at a character boundary with len %zu: '%s'", len, buf);
  }
}

TEST_CASE(null_config) {
  CHECK(set_redirector_config(NULL) == -1, "NULL config is -1");
  CHECK(redirector_last_error_code() == REDIRECTOR_ENULL, "code ENULL");
  CHECK(error_mentions("NULL"), "error names NULL: %s", last_error());
}

TEST_CASE(bad_json) {
  expect_config("", -2, REDIRECTOR_ECONFIG, "empty");
  expect_config("   ", -2, REDIRECTOR_ECONFIG, "empty");
  expect_config("nope", -2, REDIRECTOR_ECONFIG, "expected a JSON object");
  expect_config("[1,2]", -2, REDIRECTOR_ECONFIG, "got an array");
  expect_config("{\"intercept_pids\":[1,]}", -2, REDIRECTOR_ECONFIG, "line 1");
  expect_config("{\"intercept_pids\" [1]}", -2, REDIRECTOR_ECONFIG, "':'");
  expect_config("{'intercept_pids':[1]}", -2, REDIRECTOR_ECONFIG, "JSON syntax error");
  expect_config("{\"a\":1} {}", -2, REDIRECTOR_ECONFIG, "after the configuration");
  expect_config("{\"a\":01}", -2, REDIRECTOR_ECONFIG, "start with 0");
  expect_config("{\"a\":\"\\x\"}", -2, REDIRECTOR_ECONFIG, "escape");
  expect_config("{\"a\":tru}", -2, REDIRECTOR_ECONFIG, "literal");
  expect_config("{\n\"a\":\n[1,\n2}", -2, REDIRECTOR_ECONFIG, "line 4");
  /* Deep nesting is refused, not a stack overflow. */
  size_t depth = 100000;
  char *deep = malloc(depth * 2 + 16);
  strcpy(deep, "{\"x\":");
  size_t o = strlen(deep);
  for (size_t i = 0; i < depth; i++) deep[o++] = '[';
  for (size_t i = 0; i < depth; i++) deep[o++] = ']';
  deep[o++] = '}';
  deep[o] = '\0';
  expect_config(deep, -2, REDIRECTOR_ECONFIG, "nesting");
  free(deep);
}

TEST_CASE(truncated_json) {
  const char *full = "{\"intercept_pids\":[4201234,4205678],\"description\":\"Intercept \\\"both\\\" \\u00e9\",\"x\":{\"y\":[true,false,null,1.5e3]}}";
  CHECK(set_redirector_config(full) == 0, "full config accepted: %s", last_error());
  size_t n = strlen(full);
  char buf[256];
  for (size_t k = 0; k < n; k++) {
    memcpy(buf, full, k);
    buf[k] = '\0';
    int32_t rc = set_redirector_config(buf);
    CHECK(rc == -2, "prefix of %zu bytes: rc %d", k, rc);
  }
}

TEST_CASE(wrong_types) {
  expect_config("{\"intercept_pids\":\"4201234\"}", -2, REDIRECTOR_ECONFIG, "intercept_pids");
  expect_config("{\"intercept_pids\":4201234}", -2, REDIRECTOR_ECONFIG, "expected an array");
  expect_config("{\"intercept_pids\":[\"4201234\"]}", -2, REDIRECTOR_ECONFIG, "intercept_pids[0]");
  expect_config("{\"intercept_pids\":[1,2,3.5]}", -2, REDIRECTOR_ECONFIG, "intercept_pids[2]");
  expect_config("{\"intercept_pids\":[-1]}", -2, REDIRECTOR_ECONFIG, "got -1");
  expect_config("{\"intercept_pids\":[4294967296]}", -2, REDIRECTOR_ECONFIG, "4294967296");
  expect_config("{\"intercept_pids\":[1e3]}", -2, REDIRECTOR_ECONFIG, "1e3");
  expect_config("{\"intercept_pids\":[true]}", -2, REDIRECTOR_ECONFIG, "got a boolean");
  expect_config("{\"intercept_pids\":[null]}", -2, REDIRECTOR_ECONFIG, "got null");
  expect_config("{\"intercept_pids\":[[1]]}", -2, REDIRECTOR_ECONFIG, "got an array");
  expect_config("{\"description\":5}", -2, REDIRECTOR_ECONFIG, "description");
  expect_config("{\"description\":{}}", -2, REDIRECTOR_ECONFIG, "got an object");
  expect_config("{\"intercept_pids\":[1],\"intercept_pids\":[2]}", -2, REDIRECTOR_ECONFIG, "more than once");
  /* Accepted shapes. */
  expect_config("{\"intercept_pids\":null,\"description\":null}", 0, 0, NULL);
  expect_config("{\"intercept_pids\":[],\"description\":\"\"}", 0, 0, NULL);
  expect_config("{}", 0, 0, NULL);
  expect_config("{\"intercept_pids\":[0,4294967295],\"unknown\":{\"a\":[1,{\"b\":null}]}}", 0, 0, NULL);
}

TEST_CASE(not_utf8) {
  expect_config("{\"description\":\"\xff\"}", -3, REDIRECTOR_EUTF8, "UTF-8");
  expect_config("{\"description\":\"\xc0\xaf\"}", -3, REDIRECTOR_EUTF8, "UTF-8");       /* overlong '/' */
  expect_config("{\"description\":\"\xed\xa0\x80\"}", -3, REDIRECTOR_EUTF8, "UTF-8");   /* surrogate */
  expect_config("{\"description\":\"\xf4\x90\x80\x80\"}", -3, REDIRECTOR_EUTF8, "UTF-8"); /* > U+10FFFF */
  expect_config("{\"description\":\"\xe2\x82\"}", -3, REDIRECTOR_EUTF8, "UTF-8");       /* cut sequence */
  expect_config("{\"description\":\"\\udc00\"}", -3, REDIRECTOR_EUTF8, "surrogate");
  expect_config("{\"description\":\"\\ud800x\"}", -3, REDIRECTOR_EUTF8, "surrogate");
  /* Valid multi-byte text and an escaped pair are fine. */
  expect_config("{\"description\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 \\ud83d\\ude00\"}", 0, 0, NULL);
}

TEST_CASE(big_json) {
  size_t n = 1u << 20;
  char *json = malloc(n + 64);
  strcpy(json, "{\"intercept_pids\":[4200042],\"description\":\"");
  size_t o = strlen(json);
  while (o < n) json[o++] = 'a' + (char)(o % 26);
  strcpy(json + o, "\"}");
  CHECK(set_redirector_config(json) == 0, "1 MiB config accepted: %s", last_error());
  CHECK(redirector_would_intercept(4200042, NULL) == 1, "and applied");
  free(json);
}

TEST_CASE(many_pids) {
  size_t count = 20000;
  char *json = malloc(count * 12 + 64);
  strcpy(json, "{\"intercept_pids\":[");
  size_t o = strlen(json);
  for (size_t i = 0; i < count; i++) o += (size_t)sprintf(json + o, "%s%zu", i ? "," : "", 100000 + i * 7);
  strcpy(json + o, "]}");
  CHECK(set_redirector_config(json) == 0, "20,000 PIDs accepted: %s", last_error());
  CHECK(redirector_would_intercept(100000, NULL) == 1, "first PID intercepted");
  CHECK(redirector_would_intercept(100000 + 19999 * 7, NULL) == 1, "last PID intercepted");
  CHECK(redirector_would_intercept(100001, NULL) == 0, "a PID not listed is not");
  free(json);
}

TEST_CASE(rejected_keeps_old) {
  set_base_config();
  CHECK(set_redirector_config("{\"intercept_pids\":[4200888],\"protocols\":[\"icmp\"]}") == -2, "bad protocols rejected");
  CHECK(error_mentions("protocols[0]"), "names protocols[0]: %s", last_error());
  CHECK(redirector_would_intercept(4200777, NULL) == 1, "old config still in force");
  CHECK(redirector_would_intercept(4200888, NULL) == 0, "rejected config not applied");
  CHECK(set_redirector_config("{\"description\":\"\xff\"}") == -3, "not UTF-8 rejected");
  CHECK(redirector_would_intercept(4200777, NULL) == 1, "old config still in force after -3");
}

TEST_CASE(spec_fields) {
  CHECK(set_redirector_config("{\"intercept\":\"curl,!4201234\"}") == 0, "spec string: %s", last_error());
  CHECK(redirector_would_intercept(4200055, "/usr/bin/curl") == 1, "curl intercepted");
  CHECK(redirector_would_intercept(4200055, "/usr/bin/wget") == 0, "wget not");
  CHECK(redirector_would_intercept(4201234, "/usr/bin/curl") == 0, "PID 4201234 excluded");
  CHECK(set_redirector_config("{\"intercept\":[\"!*chrome*\"]}") == 0, "spec array: %s", last_error());
  CHECK(redirector_would_intercept(4200056, "C:\\Program Files\\Google\\Chrome.EXE") == 0, "chrome excluded");
  CHECK(redirector_would_intercept(4200056, "C:\\Windows\\notepad.exe") == 1, "others intercepted (first entry excludes)");
  CHECK(redirector_would_intercept(self_pid(), "C:\\Windows\\notepad.exe") == 0, "the calling process never");
#ifdef _WIN32
  CHECK(redirector_would_intercept(4, NULL) == 0, "PID 4 (System) never");
#else
  CHECK(redirector_would_intercept(4, NULL) == 1, "PID 4 is an ordinary process on Linux");
#endif
  CHECK(redirector_would_intercept(0, NULL) == 0, "PID 0 never");
  CHECK(redirector_would_intercept(4200056, "\xff") == REDIRECTOR_EUTF8, "bad path UTF-8");
  expect_config("{\"intercept\":\"a,,b\"}", -2, REDIRECTOR_ECONFIG, "intercept[1]: empty entry");
  expect_config("{\"intercept\":\"!\"}", -2, REDIRECTOR_ECONFIG, "'!' must be followed");
  expect_config("{\"intercept\":[true]}", -2, REDIRECTOR_ECONFIG, "intercept[0]");
  expect_config("{\"ports\":[0]}", -2, REDIRECTOR_ECONFIG, "ports[0]");
  expect_config("{\"ports\":[\"9-3\"]}", -2, REDIRECTOR_ECONFIG, "low <= high");
  expect_config("{\"destinations\":[\"300.1.1.1/8\"]}", -2, REDIRECTOR_ECONFIG, "not an IPv4 address");
  expect_config("{\"destinations\":[\"fd00::/129\"]}", -2, REDIRECTOR_ECONFIG, "prefix length");
  expect_config("{\"bypass\":[\"everything\"]}", -2, REDIRECTOR_ECONFIG, "bypass[0]");
  expect_config("{\"max_flows\":3}", -2, REDIRECTOR_ECONFIG, "max_flows");
  expect_config("{\"hold_timeout_ms\":0}", -2, REDIRECTOR_ECONFIG, "hold_timeout_ms");
  expect_config("{\"protocols\":[]}", -2, REDIRECTOR_ECONFIG, "at least one");
  expect_config("{\"protocols\":\"tcp\",\"directions\":[\"outbound\"],\"ports\":[443,\"8000-8100\"],"
                "\"exclude_ports\":[22],\"destinations\":[\"198.18.0.0/15\",\"fd00:198:18::/48\",\"::ffff:1.2.3.4\"],"
                "\"exclude_destinations\":[\"10.0.0.0/8\"],\"bypass\":[],\"max_flows\":1024,"
                "\"hold_timeout_ms\":500,\"max_held_packets\":64,\"tcp_idle_timeout_ms\":60000,"
                "\"udp_idle_timeout_ms\":5000}",
                0, 0, NULL);
}

TEST_CASE(start_without_port) {
  set_base_config();
  update_app_port(0);
  CHECK(start_redirector() == -2, "start without a port is -2");
  CHECK(redirector_last_error_code() == REDIRECTOR_EINIT, "code EINIT");
  CHECK(error_mentions("update_app_port"), "says to call update_app_port: %s", last_error());
  CHECK(get_redirector_status() == 0, "still stopped");
}

#ifdef _WIN32
static void expect_start_fails_without_windivert(void) {
  CHECK(start_redirector() == -2, "start without WinDivert is -2");
  CHECK(redirector_last_error_code() == REDIRECTOR_EINIT, "code EINIT");
  CHECK(error_mentions("WinDivert driver not found"), "names the missing driver: %s", last_error());
  CHECK(error_mentions("WinDivert.dll"), "names WinDivert.dll: %s", last_error());
  CHECK(get_redirector_status() == 0, "still stopped");
}
#endif

TEST_CASE(start_stop) {
  set_base_config();
  update_app_port(18080);
#ifdef _WIN32
  expect_start_fails_without_windivert();
  CHECK(stop_redirector() == -1, "stop after a failed start is -1");
#else
  CHECK(get_redirector_status() == 0, "stopped at first");
  CHECK(start_redirector() == 0, "start: %s", last_error());
  CHECK(get_redirector_status() == 1, "running");
  CHECK(start_redirector() == -1, "second start is -1");
  CHECK(redirector_last_error_code() == REDIRECTOR_EALREADY, "code EALREADY");
  CHECK(set_redirector_config("{\"intercept_pids\":[4200999]}") == 0, "config while running");
  CHECK(redirector_would_intercept(4200999, NULL) == 1, "applied while running");
  update_app_port(18081);
  /* A run takes 16 app ports; past that the port in force stays. */
  for (uint16_t p = 18082; p < 18095; p++) update_app_port(p);
  CHECK(redirector_set_app_port(18095) == 0, "16th port: %s", last_error());
  update_app_port(18096);
  CHECK(redirector_last_error_code() == REDIRECTOR_EINIT, "17th port: EINIT");
  CHECK(error_mentions("update_app_port: too many app ports") && error_mentions("port 18095 still in force"),
        "says so: %s", last_error());
  CHECK(redirector_set_app_port(18097) == REDIRECTOR_EINIT, "the same through redirector_set_app_port");
  CHECK(error_mentions("redirector_set_app_port: too many app ports"), "names the call: %s", last_error());
  CHECK(stop_redirector() == 0, "stop");
  CHECK(get_redirector_status() == 0, "stopped");
  CHECK(stop_redirector() == -1, "second stop is -1");
  CHECK(redirector_would_intercept(4200999, NULL) == 1, "config survives stop");
  CHECK(start_redirector() == 0, "start again: %s", last_error());
  CHECK(stop_redirector() == 0, "stop again");
#endif
}

/* CI sizes catch a regression; npm run soak (WR_SOAK) runs the full ones. */
static int soak_size(int ci, int full) { return getenv("WR_SOAK") ? full : ci; }

TEST_CASE(cycles) {
  set_base_config();
  update_app_port(18080);
  int cycles = soak_size(25, 100);
  for (int i = 0; i < cycles; i++) {
#ifdef _WIN32
    int32_t rc = start_redirector();
    CHECK(rc == -2, "cycle %d: start without WinDivert is -2 (%d)", i, rc);
#else
    int32_t rc = start_redirector();
    CHECK(rc == 0, "cycle %d: start (%d: %s)", i, rc, last_error());
    if (rc == 0) CHECK(stop_redirector() == 0, "cycle %d: stop", i);
#endif
  }
  CHECK(get_redirector_status() == 0, "stopped after the cycles");
}

/* Eight threads call everything at once; only documented codes may appear. */
struct worker {
  int id;
  int iterations;
  int bad;
};

static THREAD_FN worker_main(void *p) {
  struct worker *w = p;
  char buf[256];
  for (int i = 0; i < w->iterations; i++) {
    int32_t rc;
    switch ((w->id + i) % 8) {
      case 0:
        rc = start_redirector();
#ifdef _WIN32
        if (rc != -2 && rc != -1) w->bad++;
#else
        if (rc != 0 && rc != -1) w->bad++;
#endif
        break;
      case 1:
        rc = stop_redirector();
        if (rc != 0 && rc != -1) w->bad++;
        break;
      case 2:
        snprintf(buf, sizeof buf, "{\"intercept_pids\":[%d,%d],\"description\":\"thread %d\"}", 4200777, 1000 + i, w->id);
        if (set_redirector_config(buf) != 0) w->bad++;
        break;
      case 3:
        if (set_redirector_config("{\"intercept_pids\":[1,") != -2) w->bad++;
        break;
      case 4:
        rc = get_redirector_status();
        if (rc != 0 && rc != 1) w->bad++;
        break;
      case 5:
        update_app_port((uint16_t)(18080 + (i % 3)));
        break;
      case 6:
        if (redirector_last_error(buf, sizeof buf) < 0) w->bad++;
        break;
      default:
        rc = redirector_would_intercept(4200777, "/bin/x");
        if (rc != 1) w->bad++;
        break;
    }
  }
  return THREAD_RET;
}

TEST_CASE(threads) {
  set_base_config();
  update_app_port(18080);
  enum { N = 8 };
  thread_t t[N];
  struct worker w[N];
  int iterations = soak_size(120, 400);
  for (int i = 0; i < N; i++) {
    w[i].id = i;
    w[i].iterations = iterations;
    w[i].bad = 0;
    CHECK(thread_start(&t[i], worker_main, &w[i]) == 0, "thread %d started", i);
  }
  for (int i = 0; i < N; i++) thread_join(t[i]);
  for (int i = 0; i < N; i++) CHECK(w[i].bad == 0, "thread %d saw %d undocumented results", i, w[i].bad);
  if (get_redirector_status() == 1) CHECK(stop_redirector() == 0, "final stop");
  CHECK(get_redirector_status() == 0, "stopped at the end");
  CHECK(redirector_would_intercept(4200777, NULL) == 1, "a valid config is in force");
}

/* The last error belongs to the thread: threads making different failing
 * calls at once each read their own call's code and text, a thread that
 * has not failed reads none, and a call that succeeds changes nothing. */
struct err_worker {
  int kind;
  int iterations;
  atomic_int *go;
  int fresh_ok; /* the thread's error was empty before it failed */
  int wrong;    /* reads that were not this thread's own failure */
  char seen[160];
};

static THREAD_FN err_worker_main(void *p) {
  struct err_worker *w = p;
  char text[256];
  w->fresh_ok = redirector_last_error_code() == REDIRECTOR_OK && redirector_last_error(text, sizeof text) == 0;
  while (!atomic_load(w->go)) {
  }
  redirector_endpoint ep;
  memset(&ep, 0, sizeof ep);
  for (int i = 0; i < w->iterations; i++) {
    int32_t rc = 0, want = 0;
    const char *prefix = "";
    switch (w->kind) {
      case 0:
        rc = set_redirector_config("{");
        want = REDIRECTOR_ECONFIG;
        prefix = "set_redirector_config: ";
        if (rc != -2) w->wrong++;
        break;
      case 1:
        rc = redirector_lookup(REDIRECTOR_TCP, &ep, NULL, NULL);
        want = REDIRECTOR_ENULL;
        prefix = "redirector_lookup: ";
        if (rc != want) w->wrong++;
        break;
      case 2:
        rc = redirector_set_windivert_path("C:\\\xff");
        want = REDIRECTOR_EUTF8;
        prefix = "redirector_set_windivert_path: ";
        if (rc != want) w->wrong++;
        break;
      default:
        rc = redirector_debug_inject_fault(99);
        want = REDIRECTOR_EINVAL;
        prefix = "redirector_debug_inject_fault: unknown selector 99";
        if (rc != want) w->wrong++;
        break;
    }
    if (i % 16 == 0) (void)get_redirector_status(); /* succeeds: changes nothing */
    int32_t code = redirector_last_error_code();
    redirector_last_error(text, sizeof text);
    if (code != want || strncmp(text, prefix, strlen(prefix)) != 0) {
      if (w->wrong++ == 0) snprintf(w->seen, sizeof w->seen, "code %d, text '%.100s'", (int)code, text);
    }
  }
  return THREAD_RET;
}

TEST_CASE(thread_errors) {
  CHECK(stop_redirector() == -1, "stop when stopped");
  enum { N = 4 };
  atomic_int go = 0;
  thread_t t[N];
  struct err_worker w[N];
  memset(w, 0, sizeof w);
  for (int i = 0; i < N; i++) {
    w[i].kind = i;
    w[i].iterations = 3000;
    w[i].go = &go;
    CHECK(thread_start(&t[i], err_worker_main, &w[i]) == 0, "thread %d started", i);
  }
  atomic_store(&go, 1);
  for (int i = 0; i < N; i++) thread_join(t[i]);
  for (int i = 0; i < N; i++) {
    CHECK(w[i].fresh_ok, "thread %d: no last error before its first failure", i);
    CHECK(w[i].wrong == 0, "thread %d read %d errors not its own (first: %s)", i, w[i].wrong, w[i].seen);
  }
  /* This thread's own failure is still there, and a success keeps it. */
  CHECK(redirector_set_windivert_path(NULL) == 0, "a call that succeeds");
  CHECK(redirector_last_error_code() == REDIRECTOR_ENOTRUNNING && error_mentions("stop_redirector: "),
        "this thread's error is its own: %d %s", redirector_last_error_code(), last_error());
}

TEST_CASE(engine_trap) {
  set_base_config();
  CHECK(redirector_debug_inject_fault(99) == REDIRECTOR_EINVAL, "unknown fault selector");
  CHECK(redirector_debug_inject_fault(REDIRECTOR_FAULT_CONFIG) == 0, "arm a config fault");
  int32_t rc = set_redirector_config("{\"intercept_pids\":[4200888]}");
  CHECK(rc == -2, "trapped config call is -2 (%d)", rc);
  CHECK(redirector_last_error_code() == REDIRECTOR_EENGINE, "code EENGINE (%d)", redirector_last_error_code());
  CHECK(error_mentions("rebuilt"), "says the engine was rebuilt: %s", last_error());
  redirector_stats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  CHECK(redirector_get_stats(&st) == 0 && st.engine_restarts == 1, "the trap is counted while stopped (%llu)",
        (unsigned long long)st.engine_restarts);
  CHECK(redirector_would_intercept(4200777, NULL) == 1, "the config in force survived the trap");
  CHECK(redirector_would_intercept(4200888, NULL) == 0, "the trapped config was not applied");
  CHECK(set_redirector_config("{\"intercept_pids\":[4200888]}") == 0, "the engine works again: %s", last_error());
  CHECK(redirector_would_intercept(4200888, NULL) == 1, "and applies configs");
#ifndef _WIN32
  update_app_port(18080);
  CHECK(redirector_debug_inject_fault(REDIRECTOR_FAULT_CONFIG) == 0, "arm again");
  CHECK(start_redirector() == 0, "start: %s", last_error());
  CHECK(set_redirector_config("{\"intercept_pids\":[4200999]}") == -2, "trap while running");
  CHECK(get_redirector_status() == 1, "still running after a trap");
  CHECK(redirector_would_intercept(4200888, NULL) == 1, "config in force kept while running");
  CHECK(stop_redirector() == 0, "stop");
#endif
}

/* Memory running out where the library copies a caller's text: the call
 * fails with REDIRECTOR_ENOMEM (set_redirector_config keeps its seed return
 * -2) and changes nothing. REDIRECTOR_FAULT_MEMORY makes the next copy fail. */
TEST_CASE(out_of_memory) {
  set_base_config();
  CHECK(strcmp(redirector_strerror(REDIRECTOR_ENOMEM), "out of memory; the call had no effect") == 0,
        "strerror(ENOMEM): %s", redirector_strerror(REDIRECTOR_ENOMEM));
  CHECK(redirector_debug_inject_fault(REDIRECTOR_FAULT_MEMORY) == 0, "arm a memory fault");
  int32_t rc = set_redirector_config("{\"intercept_pids\":[4200888]}");
  CHECK(rc == -2, "set_redirector_config out of memory is the seed's -2 (%d)", rc);
  CHECK(redirector_last_error_code() == REDIRECTOR_ENOMEM, "code ENOMEM (%d)", redirector_last_error_code());
  CHECK(error_mentions("set_redirector_config: out of memory"), "says so: %s", last_error());
  CHECK(redirector_would_intercept(4200777, NULL) == 1 && redirector_would_intercept(4200888, NULL) == 0,
        "the configuration in force stays");
  CHECK(set_redirector_config("{\"intercept_pids\":[4200888]}") == 0, "only one copy fails: %s", last_error());
  CHECK(redirector_would_intercept(4200888, NULL) == 1, "then applied");

  CHECK(redirector_debug_inject_fault(REDIRECTOR_FAULT_MEMORY) == 0, "arm again");
  CHECK(redirector_set_windivert_path("C:\\WinDivert") == REDIRECTOR_ENOMEM, "set_windivert_path out of memory");
  CHECK(redirector_last_error_code() == REDIRECTOR_ENOMEM && error_mentions("redirector_set_windivert_path: out of memory"),
        "code and text: %d %s", redirector_last_error_code(), last_error());
  CHECK(redirector_set_windivert_path("C:\\WinDivert") == 0, "only one copy fails");
  CHECK(redirector_set_windivert_path(NULL) == 0, "reset");
}

TEST_CASE(windivert_path) {
  CHECK(redirector_set_windivert_path(NULL) == 0, "NULL resets");
  CHECK(redirector_set_windivert_path("") == 0, "empty resets");
  CHECK(redirector_set_windivert_path("C:\\nowhere\\\xff") == REDIRECTOR_EUTF8, "bad UTF-8");
  size_t n = 40000;
  char *longp = malloc(n + 1);
  memset(longp, 'a', n);
  longp[n] = '\0';
  CHECK(redirector_set_windivert_path(longp) == REDIRECTOR_EINVAL, "too long");
  free(longp);
  CHECK(redirector_set_windivert_path("C:\\no such dir \xc3\xa9") == 0, "a UTF-8 path is accepted");
#ifdef _WIN32
  set_base_config();
  update_app_port(18080);
  CHECK(start_redirector() == -2, "start with a wrong WinDivert folder is -2");
  CHECK(error_mentions("C:\\no such dir \xc3\xa9"), "names the folder: %s", last_error());
  CHECK(error_mentions("WinDivert driver not found"), "names the driver: %s", last_error());
  CHECK(redirector_set_windivert_path(NULL) == 0, "reset");
  expect_start_fails_without_windivert();
  CHECK(error_mentions("System32"), "names where it looked: %s", last_error());
#endif
  CHECK(redirector_set_windivert_path(NULL) == 0, "reset");
}

TEST_CASE(would_intercept) {
  CHECK(set_redirector_config("{\"intercept\":\"fire*,*.py,bin/curl\"}") == 0, "patterns: %s", last_error());
  CHECK(redirector_would_intercept(4200010, "/usr/lib/firefox/FireFox-bin") == 1, "glob on the file name, any case");
  CHECK(redirector_would_intercept(4200010, "/usr/lib/firefox/bin") == 0, "glob anchored to the name");
  CHECK(redirector_would_intercept(4200010, "/home/a/tool.py") == 1, "*.py");
  CHECK(redirector_would_intercept(4200010, "/usr/bin/curl") == 1, "substring with a slash");
  CHECK(redirector_would_intercept(4200010, "/usr/sbin/curl2") == 1, "substring anywhere in the path");
  CHECK(redirector_would_intercept(4200010, "/usr/bin/cur") == 0, "substring needs the whole pattern");
  CHECK(redirector_would_intercept(4200010, NULL) == 0, "no path, no pattern match");
  CHECK(set_redirector_config("{\"intercept\":[4201234],\"intercept_pids\":[4200055]}") == 0, "pids: %s", last_error());
  CHECK(redirector_would_intercept(4201234, NULL) == 1, "spec PID");
  CHECK(redirector_would_intercept(4200055, NULL) == 1, "intercept_pids adds");
  CHECK(redirector_would_intercept(4200056, NULL) == 0, "others not");
}

static redirector_endpoint ep4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint16_t port) {
  redirector_endpoint e;
  memset(&e, 0, sizeof e);
  e.family = 4;
  e.port = port;
  e.addr[0] = a;
  e.addr[1] = b;
  e.addr[2] = c;
  e.addr[3] = d;
  return e;
}

TEST_CASE(lookup_codes) {
  redirector_endpoint peer = ep4(198, 18, 0, 10, 40000), local = ep4(10, 0, 0, 2, 8080);
  redirector_origin o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  CHECK(redirector_lookup(REDIRECTOR_TCP, NULL, &local, &o) == REDIRECTOR_ENULL, "NULL peer");
  CHECK(redirector_lookup(REDIRECTOR_TCP, &peer, NULL, &o) == REDIRECTOR_ENULL, "NULL local");
  CHECK(redirector_lookup(REDIRECTOR_TCP, &peer, &local, NULL) == REDIRECTOR_ENULL, "NULL out");
  o.size = 8;
  CHECK(redirector_lookup(REDIRECTOR_TCP, &peer, &local, &o) == REDIRECTOR_EINVAL, "small size");
  CHECK(error_mentions("sizeof(redirector_origin)"), "says what size: %s", last_error());
  o.size = sizeof o;
  CHECK(redirector_lookup(1, &peer, &local, &o) == REDIRECTOR_EINVAL, "bad protocol");
  redirector_endpoint bad = peer;
  bad.family = 5;
  CHECK(redirector_lookup(REDIRECTOR_TCP, &bad, &local, &o) == REDIRECTOR_EINVAL, "bad family");
  CHECK(redirector_lookup(REDIRECTOR_TCP, &peer, &local, &o) == REDIRECTOR_ENOTRUNNING, "not running");
#ifndef _WIN32
  set_base_config();
  update_app_port(18080);
  CHECK(start_redirector() == 0, "start: %s", last_error());
  CHECK(redirector_lookup(REDIRECTOR_TCP, &peer, &local, &o) == REDIRECTOR_ENOTFOUND, "nothing redirected yet");
  CHECK(error_mentions("no redirected TCP connection"), "says so: %s", last_error());
  CHECK(stop_redirector() == 0, "stop");
#endif
}

#ifndef _WIN32
struct waited {
  int take; /* redirector_next_event, else redirector_wait_event */
  int32_t rc;
  double ms;     /* how long the call took */
  long switches; /* how often the thread slept meanwhile */
};

/* One wait of up to timeout_ms on this thread, measured. */
static void measured_wait(struct waited *w, uint32_t timeout_ms) {
  redirector_event ev;
  memset(&ev, 0, sizeof ev);
  ev.size = sizeof ev;
  struct timespec a, b;
  struct rusage r0, r1;
  getrusage(RUSAGE_THREAD, &r0);
  clock_gettime(CLOCK_MONOTONIC, &a);
  w->rc = w->take ? redirector_next_event(&ev, timeout_ms) : redirector_wait_event(timeout_ms);
  clock_gettime(CLOCK_MONOTONIC, &b);
  getrusage(RUSAGE_THREAD, &r1);
  w->ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
  w->switches = r1.ru_nvcsw - r0.ru_nvcsw;
}

static THREAD_FN wait_for_event(void *arg) {
  measured_wait(arg, 60000);
  return THREAD_RET;
}
#endif

TEST_CASE(events_and_stats) {
  redirector_event ev;
  memset(&ev, 0, sizeof ev);
  CHECK(redirector_next_event(NULL, 0) == REDIRECTOR_ENULL, "NULL event");
  CHECK(redirector_next_event(&ev, 0) == REDIRECTOR_EINVAL, "size 0");
  ev.size = sizeof ev;
  CHECK(redirector_next_event(&ev, 0) == REDIRECTOR_ENOTRUNNING, "not running");
  CHECK(error_mentions("redirector_next_event"), "says so: %s", last_error());
  CHECK(redirector_wait_event(0) == REDIRECTOR_ENOTRUNNING, "wait: not running");
  CHECK(redirector_wait_event(50) == REDIRECTOR_ENOTRUNNING, "wait: not running, at once");
  CHECK(error_mentions("redirector_next_event"), "waiting leaves the last error alone: %s", last_error());
  redirector_stats st;
  memset(&st, 0xff, sizeof st);
  CHECK(redirector_get_stats(NULL) == REDIRECTOR_ENULL, "NULL stats");
  st.size = 4;
  CHECK(redirector_get_stats(&st) == REDIRECTOR_EINVAL, "small stats size");
  st.size = sizeof st;
  CHECK(redirector_get_stats(&st) == 0, "stats when stopped");
  CHECK(st.running == 0, "not running");
  CHECK(st.size == sizeof st, "size kept");
#ifndef _WIN32
  set_base_config();
  update_app_port(18080);
  CHECK(start_redirector() == 0, "start: %s", last_error());
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  CHECK(redirector_get_stats(&st) == 0 && st.running == 1, "running stats");
  CHECK(st.flow_capacity == 65536, "default table size: %llu", (unsigned long long)st.flow_capacity);
  CHECK(st.bytes_per_flow > 0 && st.bytes_per_flow <= 200, "bytes per flow %llu", (unsigned long long)st.bytes_per_flow);
  /* Waiting sleeps until an event or the end: it does not wake to look
   * again every few milliseconds (which would show as ~60 switches). */
  struct waited idle[2] = {{1, 0, 0, 0}, {0, 0, 0, 0}};
  for (int i = 0; i < 2; i++) {
    measured_wait(&idle[i], 300);
    CHECK(idle[i].switches < 10, "%s: an idle wait of 300 ms slept %ld times", idle[i].take ? "next" : "wait",
          idle[i].switches);
  }
  CHECK(idle[0].rc == REDIRECTOR_ENOEVENT, "no event within 300 ms: %d", idle[0].rc);
  CHECK(idle[1].rc == 0, "wait: none within 300 ms: %d", idle[1].rc);
  CHECK(redirector_last_error_code() != REDIRECTOR_ENOEVENT, "no event is not recorded as an error");
  char diag[256];
  int32_t dn = redirector_diagnostics(diag, sizeof diag);
  CHECK(dn > 0 && strstr(diag, "nfqueue 7870") != NULL, "diagnostics name the queue: %s", diag);
  CHECK(redirector_debug_inject_fault(REDIRECTOR_FAULT_PACKETS) == 0, "arm a packet fault");
  /* stop_redirector ends waits at once (the waits here are 60 s). */
  thread_t waiter[2];
  struct waited w[2] = {{1, 0, 0, 0}, {0, 0, 0, 0}};
  for (int i = 0; i < 2; i++) CHECK(thread_start(&waiter[i], wait_for_event, &w[i]) == 0, "start a waiting reader");
  usleep(200 * 1000);
  CHECK(stop_redirector() == 0, "stop");
  for (int i = 0; i < 2; i++) {
    thread_join(waiter[i]);
    CHECK(w[i].rc == REDIRECTOR_ENOTRUNNING, "reader %d is told: %d", i, w[i].rc);
    CHECK(w[i].ms < 30000, "reader %d: the wait ended with the stop, not its timeout (%.0f ms)", i, w[i].ms);
  }
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  CHECK(redirector_get_stats(&st) == 0 && st.running == 0 && st.flow_capacity == 65536, "the last run's stats");
  CHECK(redirector_diagnostics(diag, sizeof diag) == REDIRECTOR_ENOTRUNNING, "no diagnostics when stopped");
#endif
}


#ifdef _WIN32
/* A socket's local end: family (4 or 6), address text, port; 0 when unbound. */
static int local_end(SOCKET s, char *addr, size_t cap, unsigned *port) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (getsockname(s, (struct sockaddr *)&ss, &len) != 0) return 0;
  const void *a = ss.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                                          : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
  inet_ntop(ss.ss_family, a, addr, cap);
  *port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                        : ((struct sockaddr_in6 *)&ss)->sin6_port);
  return ss.ss_family == AF_INET ? 4 : 6;
}
#endif

TEST_CASE(exclude_socket) {
  CHECK(redirector_exclude_socket(-1) == REDIRECTOR_EINVAL, "-1 is not a socket");
  CHECK(error_mentions("not a"), "says why: %s", last_error());
#ifdef _WIN32
  WSADATA w;
  WSAStartup(MAKEWORD(2, 2), &w);
  CHECK(redirector_exclude_socket(12345) == REDIRECTOR_EINVAL, "12345 is not a socket");
  CHECK(error_mentions("is not a socket"), "says why: %s", last_error());
  char addr[64];
  unsigned port = 0;
  /* Unbound sockets are bound to their family's wildcard, so their port is
   * known before connect(); getsockname() fails on them before. */
  const struct {
    int family, type;
    const char *any;
  } unbound[] = {{AF_INET, SOCK_STREAM, "0.0.0.0"}, {AF_INET6, SOCK_STREAM, "::"}, {AF_INET, SOCK_DGRAM, "0.0.0.0"},
                 {AF_INET6, SOCK_DGRAM, "::"}};
  for (size_t i = 0; i < sizeof unbound / sizeof unbound[0]; i++) {
    SOCKET s = socket(unbound[i].family, unbound[i].type, 0);
    CHECK(s != INVALID_SOCKET, "socket %zu", i);
    CHECK(local_end(s, addr, sizeof addr, &port) == 0, "socket %zu starts unbound", i);
    CHECK(redirector_exclude_socket((intptr_t)s) == 0, "socket %zu excluded: %s", i, last_error());
    int fam = local_end(s, addr, sizeof addr, &port);
    CHECK(fam == (unbound[i].family == AF_INET ? 4 : 6) && strcmp(addr, unbound[i].any) == 0 && port != 0,
          "socket %zu now bound to %s port %u", i, addr, port);
    closesocket(s);
  }
  /* A bound socket stays as it is; a socket can be excluded twice. */
  SOCKET b = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in lo;
  memset(&lo, 0, sizeof lo);
  lo.sin_family = AF_INET;
  lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(b, (struct sockaddr *)&lo, sizeof lo) == 0, "bind 127.0.0.1");
  unsigned before = 0, after = 0;
  local_end(b, addr, sizeof addr, &before);
  CHECK(redirector_exclude_socket((intptr_t)b) == 0, "bound socket excluded: %s", last_error());
  CHECK(redirector_exclude_socket((intptr_t)b) == 0, "and again: %s", last_error());
  CHECK(local_end(b, addr, sizeof addr, &after) == 4 && strcmp(addr, "127.0.0.1") == 0 && after == before,
        "still %s port %u (was %u)", addr, after, before);
  closesocket(b);
  /* A closed socket's handle is not a socket any more. */
  CHECK(redirector_exclude_socket((intptr_t)b) == REDIRECTOR_EINVAL, "a closed socket");
#else
  CHECK(redirector_exclude_socket((intptr_t)1 << 40) == REDIRECTOR_EINVAL, "too large for a descriptor");
  CHECK(error_mentions("not a file descriptor"), "says why: %s", last_error());
  int file = open("/dev/null", O_RDONLY);
  CHECK(redirector_exclude_socket(file) == REDIRECTOR_EINVAL, "a file is not a socket");
  CHECK(error_mentions("could not mark"), "says why: %s", last_error());
  close(file);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (geteuid() == 0) {
    CHECK(redirector_exclude_socket(s) == 0, "a socket is marked: %s", last_error());
    uint32_t mark = 0;
    socklen_t len = sizeof mark;
    getsockopt(s, SOL_SOCKET, SO_MARK, &mark, &len);
    CHECK(mark == 0x10000000u, "SO_MARK is 0x%x", mark);
  }
  close(s);
#endif
}

#ifndef _WIN32
/* Does `iptables-save -t table` (or ip6tables-save) show text? */
static int rules_show(const char *save, const char *table, const char *text) {
  char cmd[128], line[1024];
  snprintf(cmd, sizeof cmd, "%s -t %s 2>/dev/null", save, table);
  FILE *f = popen(cmd, "r");
  int found = 0;
  while (f && fgets(line, sizeof line, f)) found |= strstr(line, text) != NULL;
  if (f) pclose(f);
  return found;
}

/* A new app port whose ip6tables rules fail in their second table (a
 * stand-in ip6tables-restore first on PATH refuses the mangle rules) leaves
 * none of its rules behind, and the port in force stays. */
TEST_CASE_POSIX(app_port_all_or_nothing) {
  char cwd[2048], dir[2200], fake[2300];
  /* Under the working directory (the build tree), not /tmp: it may be noexec. */
  CHECK(getcwd(cwd, sizeof cwd) != NULL, "getcwd");
  snprintf(dir, sizeof dir, "%s/wr-abi-XXXXXX", cwd);
  CHECK(mkdtemp(dir) != NULL, "mkdtemp %s", dir);
  snprintf(fake, sizeof fake, "%s/ip6tables-restore", dir);
  FILE *f = fopen(fake, "w");
  CHECK(f != NULL, "write %s", fake);
  if (!f) return;
  fputs("#!/bin/sh\nin=$(cat)\n"
        "case \"$in\" in *'*mangle'*'-I '*'--sport 18099 '*) echo 'refused by the test' >&2; exit 1;; esac\n"
        "printf '%s\\n' \"$in\" | PATH=\"$WR_REAL_PATH\" exec ip6tables-restore \"$@\"\n",
        f);
  fclose(f);
  chmod(fake, 0755);
  const char *sys = "/usr/sbin:/usr/bin:/sbin:/bin";
  const char *env = getenv("PATH");
  char old[4096], path[8192];
  snprintf(old, sizeof old, "%s", env ? env : sys);
  snprintf(path, sizeof path, "%s:%s", dir, old);
  setenv("WR_REAL_PATH", old, 1);
  setenv("PATH", path, 1);

  set_base_config();
  update_app_port(18080);
  CHECK(start_redirector() == 0, "start: %s", last_error());
  CHECK(rules_show("ip6tables-save", "raw", "--sport 18080 "), "IPv6 rules in place for the first port");
  CHECK(redirector_set_app_port(18099) == REDIRECTOR_EINIT, "the second port fails");
  CHECK(error_mentions("ip6tables rules (mangle table)") && error_mentions("port 18080 still in force"),
        "says why: %s", last_error());
  static const char *const saves[] = {"iptables-save", "ip6tables-save"};
  static const char *const tables[] = {"raw", "mangle"};
  for (int i = 0; i < 4; i++) {
    CHECK(!rules_show(saves[i / 2], tables[i % 2], "--sport 18099 "), "no %s %s rules left for the port that failed",
          saves[i / 2], tables[i % 2]);
  }
  CHECK(rules_show("iptables-save", "raw", "--sport 18080 "), "the first port's rules stay");
  CHECK(stop_redirector() == 0, "stop");

  setenv("PATH", old, 1);
  unsetenv("WR_REAL_PATH");
  unlink(fake);
  rmdir(dir);
}
#endif


int main(int argc, char **argv) { return tests_main(argc, argv); }
