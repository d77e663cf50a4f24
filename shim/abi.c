/* The exported functions: argument checks, global state, error text. No
 * policy lives here; the engine decides, the backend moves packets. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/backend.h"
#include "contract.h" /* generated from build/contract.ts: the counters' order */
#include "host.h"
#include "os/platform.h"
#include "utf8.h"
#include "windows_redirector.h"

#ifndef WR_VERSION
#define WR_VERSION "0.0.0"
#endif

#define ERR_CAP 1024
#define WR_DEFAULT_NFQUEUE 7870
#define WINDIVERT_DIR_MAX 32767

/* Global state, guarded by g.lock. The engine has its own lock inside. */
static struct {
  wr_mutex lock;
  int running;
  /* The engine host, built on first need and kept: it keeps the
   * configuration and the app port in force (the only place they are
   * kept); a stop resets its instance. */
  wr_engine *engine;
  wr_backend *backend; /* while running */
  char *windivert_dir;
  uint16_t nfqueue_num;
  uint32_t fault_pending;
  redirector_stats last; /* the last run's counters, kept at stop */
} g = {.lock = WR_MUTEX_INIT, .nfqueue_num = WR_DEFAULT_NFQUEUE};

/* The last error belongs to the thread that failed: each thread reads what
 * its own most recent failed call said, whatever other threads do meanwhile.
 * Set only on failure, never cleared (see the header). */
static _Thread_local struct {
  int32_t code;
  char text[ERR_CAP];
} t_err;

static void set_error(int32_t code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t_err.text, sizeof t_err.text, fmt, ap);
  va_end(ap);
  t_err.code = code;
}

/* Copies text into buf (at most len - 1 bytes and a NUL, cut at a UTF-8
 * character boundary; buf may be NULL when len is 0). Returns its length. */
static int32_t copy_text(char *buf, size_t len, const char *text) {
  size_t n = strlen(text);
  if (buf && len > 0) {
    size_t k = wr_utf8_head(text, n, len - 1);
    memcpy(buf, text, k);
    buf[k] = '\0';
  }
  return (int32_t)n;
}

static void lock_state(void) { wr_mutex_lock(&g.lock); }

static void unlock_state(void) { wr_mutex_unlock(&g.lock); }

/* Traps survived so far. */
static uint64_t engine_restarts_locked(void) { return g.engine ? wr_engine_trap_count(g.engine) : 0; }

/* Leaves a fresh, not started instance for the next start (the host keeps
 * the configuration, the app port and the count of traps). */
static void reset_engine_locked(void) {
  if (g.engine) wr_engine_reset(g.engine);
}

/* The engine host, built on first need. NULL with the error set. */
static wr_engine *engine_locked(const char *who) {
  if (g.engine) return g.engine;
  char err[512];
  wr_engine *e = wr_engine_new(wr_self_pid(), err, sizeof err);
  if (!e) {
    set_error(REDIRECTOR_EINIT, "%s: %s", who, err);
    return NULL;
  }
  const uint32_t *never;
  size_t n_never = wr_backend_never_intercept(&never);
  wr_engine_never_intercept(e, never, n_never);
  g.engine = e;
  return e;
}

_Static_assert(WR_STATS_COUNT <= WR_STATS_MAX, "the engine has more counters than the host reads");

/* The engine's counters, each into its redirector_stats member by name. */
static void fill_stats_locked(redirector_stats *st) {
  uint64_t c[WR_STATS_MAX] = {0};
  size_t n = 0;
  uint32_t cap = 0, per = 0;
  if (g.engine) {
    n = wr_engine_stats(g.engine, c, WR_STATS_MAX);
    wr_engine_table(g.engine, &cap, &per);
  }
  (void)n;
  memset(st, 0, sizeof *st);
  st->size = sizeof *st;
  st->running = (uint32_t)g.running;
  size_t i = 0;
#define WR_STAT_COPY(member) st->member = c[i++];
  WR_STATS_FOREACH(WR_STAT_COPY)
#undef WR_STAT_COPY
  st->engine_restarts = engine_restarts_locked();
  st->flow_capacity = cap;
  st->bytes_per_flow = per;
}

/* The state is initialised statically and everything else on first need, so
 * there is nothing left to do here; kept for the seed's callers. */
WINDOWS_REDIRECTOR_API void initialize_global_config(void) {
  lock_state();
  unlock_state();
}

WINDOWS_REDIRECTOR_API int32_t start_redirector(void) {
  lock_state();
  if (g.running) {
    unlock_state();
    set_error(REDIRECTOR_EALREADY, "start_redirector: the redirector is already running (call stop_redirector first)");
    return -1;
  }
  wr_engine *e = engine_locked("start_redirector");
  if (!e) {
    unlock_state();
    return -2;
  }
  uint16_t app_port = wr_engine_app_port(e);
  if (app_port == 0) {
    unlock_state();
    set_error(REDIRECTOR_EINIT,
              "start_redirector: no application port: call update_app_port(port) with the port your proxy "
              "listens on first");
    return -2;
  }
  char err[768];
  if (wr_engine_start(e, (uint32_t)wr_now_ms(), err, sizeof err) != 0) {
    reset_engine_locked();
    unlock_state();
    set_error(REDIRECTOR_EINIT, "start_redirector: %s", err);
    return -2;
  }
  wr_backend_options opts;
  opts.engine = e;
  opts.windivert_dir = g.windivert_dir;
  opts.app_port = app_port;
  opts.nfqueue_num = g.nfqueue_num;
  wr_backend *b = wr_backend_start(&opts, err, sizeof err);
  if (!b) {
    /* Leave nothing behind: a fresh instance for the next start. */
    reset_engine_locked();
    unlock_state();
    set_error(REDIRECTOR_EINIT, "start_redirector: %s", err);
    return -2;
  }
  g.backend = b;
  g.running = 1;
  if (g.fault_pending & REDIRECTOR_FAULT_PACKETS) {
    g.fault_pending &= ~(uint32_t)REDIRECTOR_FAULT_PACKETS;
    wr_engine_arm_fault(e, REDIRECTOR_FAULT_PACKETS);
  }
  unlock_state();
  return 0;
}

WINDOWS_REDIRECTOR_API int32_t stop_redirector(void) {
  lock_state();
  if (!g.running) {
    unlock_state();
    set_error(REDIRECTOR_ENOTRUNNING, "stop_redirector: the redirector is not running");
    return -1;
  }
  wr_backend_stop(g.backend);
  g.backend = NULL;
  fill_stats_locked(&g.last);
  g.last.running = 0;
  reset_engine_locked();
  g.running = 0;
  unlock_state();
  wr_engine_wake_readers(); /* waiting readers see the stop now */
  return 0;
}

WINDOWS_REDIRECTOR_API int32_t set_redirector_config(const char *json) {
  if (!json) {
    set_error(REDIRECTOR_ENULL, "set_redirector_config: json is NULL");
    return -1;
  }
  size_t len = strlen(json);
  lock_state();
  wr_engine *e = engine_locked("set_redirector_config");
  if (!e) {
    unlock_state();
    return -2;
  }
  if (g.fault_pending & REDIRECTOR_FAULT_CONFIG) {
    g.fault_pending &= ~(uint32_t)REDIRECTOR_FAULT_CONFIG;
    wr_engine_arm_fault(e, REDIRECTOR_FAULT_CONFIG);
  }
  char err[ERR_CAP - 64];
  int rc = wr_engine_config(e, json, len, err, sizeof err);
  /* While running, the capture follows the new configuration before this
   * returns. Should it fail, the configuration is in force all the same,
   * the timer tries the capture again and the diagnostics say why. */
  if (rc == 0 && g.running) wr_backend_config_changed(g.backend, err, sizeof err);
  unlock_state();
  if (rc == 0) return 0;
  if (rc == -3) {
    set_error(REDIRECTOR_EUTF8, "set_redirector_config: %s", err);
    return -3;
  }
  if (rc == WR_ENGINE_TRAPPED) {
    set_error(REDIRECTOR_EENGINE, "set_redirector_config: %s; the configuration was not applied", err);
    return -2;
  }
  if (rc == WR_ENGINE_NOMEM) {
    set_error(REDIRECTOR_ENOMEM, "set_redirector_config: out of memory; the configuration was not applied");
    return -2;
  }
  set_error(REDIRECTOR_ECONFIG, "set_redirector_config: %s", err);
  return -2;
}

WINDOWS_REDIRECTOR_API int32_t get_redirector_status(void) {
  lock_state();
  int32_t r = g.running ? 1 : 0;
  unlock_state();
  return r;
}

static int32_t set_app_port(const char *fn, uint16_t port) {
  lock_state();
  wr_engine *e = engine_locked(fn);
  if (!e) {
    unlock_state();
    return REDIRECTOR_EINIT;
  }
  /* While running, the capture for a new port comes first: new flows go to
   * it only once its replies can be caught. */
  if (g.running && port != 0) {
    char err[512];
    if (wr_backend_set_app_port(g.backend, port, err, sizeof err) != 0) {
      set_error(REDIRECTOR_EINIT, "%s: %s; port %u still in force", fn, err, (unsigned)wr_engine_app_port(e));
      unlock_state();
      return REDIRECTOR_EINIT;
    }
  }
  wr_engine_set_app_port(e, port);
  unlock_state();
  return REDIRECTOR_OK;
}

WINDOWS_REDIRECTOR_API void update_app_port(uint16_t port) { (void)set_app_port("update_app_port", port); }

WINDOWS_REDIRECTOR_API int32_t redirector_set_app_port(uint16_t port) {
  return set_app_port("redirector_set_app_port", port);
}

WINDOWS_REDIRECTOR_API int32_t redirector_would_intercept(uint32_t pid, const char *process_path) {
  const char *path = process_path ? process_path : "";
  size_t len = strlen(path);
  if (!wr_utf8_valid((const unsigned char *)path, len)) {
    set_error(REDIRECTOR_EUTF8, "redirector_would_intercept: process_path is not valid UTF-8");
    return REDIRECTOR_EUTF8;
  }
  lock_state();
  wr_engine *e = engine_locked("redirector_would_intercept");
  int rc = e ? wr_engine_would_intercept(e, pid, path, len) : REDIRECTOR_EINIT;
  unlock_state();
  if (rc == -1) {
    set_error(REDIRECTOR_EINVAL, "redirector_would_intercept: process_path is too long (%zu bytes)", len);
    return REDIRECTOR_EINVAL;
  }
  if (rc == WR_ENGINE_TRAPPED) {
    set_error(REDIRECTOR_EENGINE, "redirector_would_intercept: the engine failed and was rebuilt");
    return REDIRECTOR_EENGINE;
  }
  return rc;
}

WINDOWS_REDIRECTOR_API int32_t redirector_last_error(char *buf, size_t len) {
  return copy_text(buf, len, t_err.text);
}

WINDOWS_REDIRECTOR_API int32_t redirector_last_error_code(void) { return t_err.code; }

WINDOWS_REDIRECTOR_API const char *redirector_strerror(int32_t code) {
  switch (code) {
#define REDIRECTOR_ERRNO_CASE_(name, value, text) \
  case value:                                     \
    return text;
    REDIRECTOR_ERRNO_MAP(REDIRECTOR_ERRNO_CASE_)
#undef REDIRECTOR_ERRNO_CASE_
    default:
      return "unknown error code";
  }
}

WINDOWS_REDIRECTOR_API const char *redirector_version(void) { return WR_VERSION; }

WINDOWS_REDIRECTOR_API int32_t redirector_set_windivert_path(const char *dir) {
  char *copy = NULL;
  if (dir && dir[0]) {
    size_t n = strlen(dir);
    if (n > WINDIVERT_DIR_MAX) {
      set_error(REDIRECTOR_EINVAL, "redirector_set_windivert_path: the path is %zu bytes long; the limit is %d", n,
                WINDIVERT_DIR_MAX);
      return REDIRECTOR_EINVAL;
    }
    if (!wr_utf8_valid((const unsigned char *)dir, n)) {
      set_error(REDIRECTOR_EUTF8, "redirector_set_windivert_path: the path is not valid UTF-8");
      return REDIRECTOR_EUTF8;
    }
    copy = wr_copy_text(dir, n);
    if (!copy) {
      set_error(REDIRECTOR_ENOMEM, "redirector_set_windivert_path: out of memory; the folder in use stays");
      return REDIRECTOR_ENOMEM;
    }
  }
  lock_state();
  free(g.windivert_dir);
  g.windivert_dir = copy;
  unlock_state();
  return REDIRECTOR_OK;
}

WINDOWS_REDIRECTOR_API int32_t redirector_diagnostics(char *buf, size_t len) {
  char text[8192]; /* more than a backend's parts add up to (WinDivert: about 5.5 KB at most) */
  lock_state();
  if (!g.running) {
    unlock_state();
    set_error(REDIRECTOR_ENOTRUNNING, "redirector_diagnostics: the redirector is not running");
    if (buf && len) buf[0] = '\0';
    return REDIRECTOR_ENOTRUNNING;
  }
  text[0] = '\0';
  wr_backend_diagnostics(g.backend, text, sizeof text);
  unlock_state();
  return copy_text(buf, len, text);
}

WINDOWS_REDIRECTOR_API int32_t redirector_exclude_socket(intptr_t socket) {
  char err[256];
  wr_exclusion x;
  int rc = wr_exclude_socket(socket, &x, err, sizeof err);
  if (rc < 0) {
    set_error(REDIRECTOR_EINVAL, "redirector_exclude_socket: %s", err);
    return REDIRECTOR_EINVAL;
  }
  if (rc == 0) return REDIRECTOR_OK;
  /* The engine passes the socket's packets while it runs; stopped, there
   * is no capture to pass them through, and no CLOSE to end the entry. */
  lock_state();
  int r = g.running ? wr_engine_exclude(g.engine, &x, err, sizeof err) : 0;
  unlock_state();
  if (r == 0) return REDIRECTOR_OK;
  if (r == -1) {
    set_error(REDIRECTOR_ENOMEM, "redirector_exclude_socket: %s; the socket is not excluded", err);
    return REDIRECTOR_ENOMEM;
  }
  if (r == WR_ENGINE_TRAPPED) {
    set_error(REDIRECTOR_EENGINE, "redirector_exclude_socket: %s; the socket is not excluded", err);
    return REDIRECTOR_EENGINE;
  }
  set_error(REDIRECTOR_EINVAL, "redirector_exclude_socket: %s", err);
  return REDIRECTOR_EINVAL;
}

WINDOWS_REDIRECTOR_API int32_t redirector_set_nfqueue_num(uint16_t queue) {
  lock_state();
  g.nfqueue_num = queue;
  unlock_state();
  return REDIRECTOR_OK;
}

WINDOWS_REDIRECTOR_API int32_t redirector_debug_inject_fault(int32_t which) {
  if (which == REDIRECTOR_FAULT_MEMORY) {
    wr_copy_text_fail_next();
    return REDIRECTOR_OK;
  }
  if (which != REDIRECTOR_FAULT_CONFIG && which != REDIRECTOR_FAULT_PACKETS) {
    set_error(REDIRECTOR_EINVAL, "redirector_debug_inject_fault: unknown selector %d", (int)which);
    return REDIRECTOR_EINVAL;
  }
  lock_state();
  if (which == REDIRECTOR_FAULT_PACKETS && g.running) {
    wr_engine_arm_fault(g.engine, REDIRECTOR_FAULT_PACKETS);
  } else {
    g.fault_pending |= (uint32_t)which;
  }
  unlock_state();
  return REDIRECTOR_OK;
}

/* ------------------------------------------------------------------------
 * Lookups, events, statistics */

/* A caller's struct must be at least this library's size (its `size` field
 * says how large the caller's is). 0 with the last error set if not. */
static int size_ok(const char *call, const char *field, uint32_t size, size_t need, const char *type) {
  if (size >= need) return 1;
  set_error(REDIRECTOR_EINVAL, "%s: %s is %u; set it to sizeof(%s) (%u)", call, field, (unsigned)size, type,
            (unsigned)need);
  return 0;
}

static int valid_endpoint(const redirector_endpoint *ep) { return ep->family == 4 || ep->family == 6; }

static void to_endpoint(redirector_endpoint *ep, uint32_t family, const uint8_t addr[16], uint16_t port) {
  memset(ep, 0, sizeof *ep);
  ep->family = (uint8_t)family;
  ep->port = port;
  memcpy(ep->addr, addr, family == 4 ? 4 : 16);
}

static void to_origin(redirector_origin *o, const wr_origin *w) {
  /* Every field is set below: no memset of the 1 KB path. */
  o->size = sizeof *o;
  o->protocol = w->proto;
  o->direction = w->inbound ? REDIRECTOR_INBOUND : REDIRECTOR_OUTBOUND;
  o->pid = w->pid;
  to_endpoint(&o->destination, w->family, w->dst, w->dst_port);
  to_endpoint(&o->client, w->family, w->client, w->client_port);
  to_endpoint(&o->peer, w->family, w->peer, w->peer_port);
  o->app_port = w->app_port;
  o->flow_id = w->flow_id;
  o->bytes_up = w->bytes_up;
  o->bytes_down = w->bytes_down;
  o->reserved = 0;
  size_t n = strnlen(w->path, sizeof o->process_path - 1);
  memcpy(o->process_path, w->path, n);
  o->process_path[n] = '\0';
}

WINDOWS_REDIRECTOR_API int32_t redirector_lookup(int32_t protocol, const redirector_endpoint *peer,
                                                 const redirector_endpoint *local, redirector_origin *out) {
  if (!peer || !local || !out) {
    set_error(REDIRECTOR_ENULL, "redirector_lookup: peer, local and out must not be NULL");
    return REDIRECTOR_ENULL;
  }
  if (!size_ok("redirector_lookup", "out->size", out->size, sizeof *out, "redirector_origin")) {
    return REDIRECTOR_EINVAL;
  }
  if ((protocol != REDIRECTOR_TCP && protocol != REDIRECTOR_UDP) || !valid_endpoint(peer) ||
      !valid_endpoint(local)) {
    set_error(REDIRECTOR_EINVAL, "redirector_lookup: protocol must be 6 or 17 and families 4 or 6");
    return REDIRECTOR_EINVAL;
  }
  /* Both ends as the socket gave them (IPv4-mapped, mixed families): the
   * engine's lookup makes one question of them. */
  uint8_t paddr[16] = {0}, laddr[16] = {0};
  memcpy(paddr, peer->addr, peer->family == 4 ? 4 : 16);
  memcpy(laddr, local->addr, local->family == 4 ? 4 : 16);
  wr_origin w;
  lock_state();
  if (!g.running) {
    unlock_state();
    set_error(REDIRECTOR_ENOTRUNNING, "redirector_lookup: the redirector is not running");
    return REDIRECTOR_ENOTRUNNING;
  }
  int rc = wr_engine_lookup(g.engine, (uint32_t)protocol, peer->family, paddr, peer->port, local->family, laddr,
                            local->port, &w);
  unlock_state();
  if (rc == WR_ENGINE_TRAPPED) {
    set_error(REDIRECTOR_EENGINE, "redirector_lookup: the engine failed and was rebuilt");
    return REDIRECTOR_EENGINE;
  }
  if (rc != 1) {
    set_error(REDIRECTOR_ENOTFOUND, "redirector_lookup: no redirected %s connection from that peer to that address",
              protocol == REDIRECTOR_TCP ? "TCP" : "UDP");
    return REDIRECTOR_ENOTFOUND;
  }
  to_origin(out, &w);
  return REDIRECTOR_OK;
}

/* Milliseconds from now until deadline (a wr_now_ms value): 0 once it has
 * passed, at most UINT32_MAX. */
static uint32_t ms_until(uint64_t deadline) {
  uint64_t now = wr_now_ms();
  if (now >= deadline) return 0;
  return deadline - now < UINT32_MAX ? (uint32_t)(deadline - now) : UINT32_MAX;
}

WINDOWS_REDIRECTOR_API int32_t redirector_next_event(redirector_event *ev, uint32_t timeout_ms) {
  if (!ev) {
    set_error(REDIRECTOR_ENULL, "redirector_next_event: ev is NULL");
    return REDIRECTOR_ENULL;
  }
  if (!size_ok("redirector_next_event", "ev->size", ev->size, sizeof *ev, "redirector_event")) {
    return REDIRECTOR_EINVAL;
  }
  uint64_t deadline = wr_now_ms() + timeout_ms;
  for (;;) {
    wr_origin w;
    lock_state();
    if (!g.running) {
      unlock_state();
      set_error(REDIRECTOR_ENOTRUNNING, "redirector_next_event: the redirector is not running");
      return REDIRECTOR_ENOTRUNNING;
    }
    int rc = wr_engine_next_event(g.engine, &w);
    unlock_state();
    if (rc == 1) {
      uint32_t size = ev->size;
      memset(ev, 0, sizeof *ev);
      ev->size = size;
      ev->type = w.type;
      ev->time_ms = w.time_ms;
      to_origin(&ev->origin, &w);
      return REDIRECTOR_OK;
    }
    uint32_t left = ms_until(deadline);
    /* Not a failure: the last error stays what it was. */
    if (left == 0) return REDIRECTOR_ENOEVENT;
    /* 1: one waits (another reader may take it first: look again);
     * REDIRECTOR_ENOTRUNNING: the next look says so. */
    if (redirector_wait_event(left) == 0) return REDIRECTOR_ENOEVENT;
  }
}

WINDOWS_REDIRECTOR_API int32_t redirector_wait_event(uint32_t timeout_ms) {
  uint64_t deadline = wr_now_ms() + timeout_ms;
  for (;;) {
    uint64_t mark = wr_engine_events_mark(); /* before looking: no wake-up is missed */
    lock_state();
    int running = g.running;
    int waiting = running ? wr_engine_events_waiting(g.engine) : 0;
    unlock_state();
    if (!running) return REDIRECTOR_ENOTRUNNING; /* a state, not a failure: no last error */
    if (waiting > 0) return 1;
    uint32_t left = ms_until(deadline);
    if (left == 0) return 0;
    wr_engine_wait_events(mark, left);
  }
}

WINDOWS_REDIRECTOR_API int32_t redirector_get_stats(redirector_stats *out) {
  if (!out) {
    set_error(REDIRECTOR_ENULL, "redirector_get_stats: out is NULL");
    return REDIRECTOR_ENULL;
  }
  if (!size_ok("redirector_get_stats", "out->size", out->size, sizeof *out, "redirector_stats")) {
    return REDIRECTOR_EINVAL;
  }
  uint32_t size = out->size;
  lock_state();
  if (g.running) {
    fill_stats_locked(out);
  } else {
    *out = g.last;
    out->engine_restarts = engine_restarts_locked();
  }
  unlock_state();
  out->size = size;
  return REDIRECTOR_OK;
}
