/* Windows capture backend (WinDivert 2.x).
 *
 * WinDivert.dll is loaded at start, never at library load, so the library
 * loads without it and reports its absence as an error. Every function is
 * resolved with GetProcAddress (declarations: windivert.h).
 *
 * Handles
 *   SOCKET   "tcp or udp", SNIFF|RECV_ONLY: connect/accept/bind/listen/close
 *            events with the PID; they become the engine's owner facts.
 *   NETWORK  flags 0, its filter built from the engine's capture scope
 *            (filter.c): the TCP/UDP packets the configuration may redirect
 *            (its protocols; with `ports` or `destinations`, only flows
 *            whose destination, or listener, is one of them), the proxy's
 *            (app port's), and those of flows redirected or pending under
 *            an earlier configuration; loopback traffic only when loopback
 *            is not bypassed; and ICMP/ICMPv6 errors, which the engine
 *            translates when they quote a rewritten packet. At broadest
 *            "((ip or ipv6) and (tcp or udp)) or " the ICMP errors.
 *            Every packet it diverts crosses the packet thread: while the
 *            host is paused (a proxy at a breakpoint), what it diverts
 *            stalls and is dropped after the queue time, so it diverts no
 *            more than the engine needs.
 *   REFLECT  opened once at start (SNIFF|RECV_ONLY|NO_INSTALL), shut down
 *            and drained: the other WinDivert handles open right now, for
 *            the diagnostics text.
 *   Priorities: NETWORK and SOCKET at -1000, below WinDivert's default 0.
 *   Handles of higher priority see a packet first, and packets a handle
 *   injects are seen only by handles of lower priority. Most WinDivert
 *   programs use 0 (firewalls, shapers): below them, they see every packet
 *   as the applications sent it, decide on it first, and never see our
 *   rewritten packets (addressed to the proxy port), which they would not
 *   understand. -1000 also keeps clear of mitmproxy's 1039-1041.
 *
 * Threads (on the capture core, capture/core.c, which serialises the engine
 * calls with their sends, so packets leave in the order the engine decided
 * them)
 *   packet   RecvEx batches from NETWORK -> wr_capture_process -> SendEx.
 *            The only reader of NETWORK, so a flow's packets keep their
 *            order.
 *   socket   first the existing sockets (TCP listeners, UDP endpoints) from
 *            GetExtendedTcpTable/UdpTable, then SOCKET events -> facts,
 *            each with its process's path and ancestry (owners.h).
 *   timer    the core's: ticks (hold timeouts, expiry), and the engine's
 *            owner queries answered from the socket tables (find_owner).
 *   watch    while the policy names process trees, lists every process
 *            every 250 ms (owners.h, wr_owners_watch).
 *
 * A new filter (the scope changed: a configuration, an app port, flows
 * ending): a second NETWORK handle is opened with it, at the same priority,
 * before the first one stops diverting. The driver (sys/windivert.c, 2.2)
 * gives a handle opened later a higher place among handles of one priority
 * (its weight: the priority, then a counter of opens), so the new one sees
 * each packet first, and the old one only what the new filter leaves;
 * then, in the same step that makes the new one pending, the old one's
 * receive side is shut down (it diverts nothing more, and what it queued
 * can still be received). The packet thread drains it, takes the new one
 * and closes the old (a handle closed with packets queued would have the
 * driver re-inject them unprocessed). From that step on every packet is
 * sent through the new handle: a packet injected through a handle is
 * skipped by handles of its place and above and diverted again by a
 * matching one below; the old handle diverts nothing any more, so neither
 * place it may have (below the new one, or above it once the driver's
 * 16-bit counter of opens wraps) sees a sent packet twice. No packet is
 * missed (the new handle diverts before the old stops), none is seen twice,
 * and a flow's packets keep their order (the old queue first: a flow's
 * packets all match a filter or none does).
 *
 * Held packets: the core keeps each one's original address (and a copy of
 * its bytes) by cookie, so the packet goes out with its own interface and
 * flags, and so that when the engine traps (and loses what it held) or at
 * stop, every held packet is re-injected unchanged: the backend fails open.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture/backend.h"
#include "capture/core.h"
#include "os/platform.h"
#include "capture/windivert/owners.h"
#include "capture/windivert/windivert.h"
#include "capture/windivert/handles.h" /* each handle's filter, layer, priority, flags */
#include "capture/windivert/filter.h"  /* the NETWORK filter from the capture scope */

/* Driver queue: packets waiting for the packet thread. The defaults are
 * 4096 packets / 2000 ms / 4 MB; a burst while the engine is busy should
 * not be dropped, so twice as many packets and bytes. */
#define QUEUE_LENGTH 8192
#define QUEUE_TIME_MS 2000
#define QUEUE_SIZE (8u << 20)
/* The SOCKET handle keeps its events for the longest the driver allows:
 * the existing sockets are read (a path look-up per row) before its first
 * receive, and an event older than the queue time is dropped by the
 * driver, whose owner would then be unknown. */
#define SOCKET_QUEUE_TIME_MS 16000

#define RECV_BATCH 128           /* addresses per RecvEx (<= WD_BATCH_MAX) */
#define RECV_BUF (1u << 20)      /* room for 128 full-size frames, or 15 GSO ones */
#define SEND_BATCH 128           /* addresses per SendEx */
#define SEND_BUF (1u << 20)
#define SOCKET_BATCH 64
#define REFLECT_BUF (64u << 10)  /* a REFLECT record carries a filter object (< 16 KB) */
#define REFLECT_MAX_RECORDS 4096 /* never loop forever on a misbehaving driver */
#define MAX_CONSECUTIVE_ERRORS 100
#define DIAG_CAP 2048
#define PATH_CAP 4096
/* The longest a filter change waits for the packet thread to drain the old
 * handle (milliseconds of its queue, normally). */
#define SWITCH_WAIT_MS 10000

/* The length of the IP packet at p (from its header), or 0 if unreadable. */
static uint32_t ip_length(const uint8_t *p, uint32_t avail) {
  if (avail < 1) return 0;
  unsigned v = p[0] >> 4;
  if (v == 4 && avail >= 4) return ((uint32_t)p[2] << 8) | p[3];
  if (v == 6 && avail >= 6) return 40u + (((uint32_t)p[4] << 8) | p[5]);
  return 0;
}

/* ------------------------------------------------------------------------
 * The backend */

typedef struct {
  wd_open_fn open;
  wd_recv_ex_fn recv_ex;
  wd_send_ex_fn send_ex;
  wd_shutdown_fn shutdown;
  wd_close_fn close;
  wd_set_param_fn set_param;
  wd_get_param_fn get_param;
  wd_compile_filter_fn compile_filter;
} wd_api;

struct wr_backend {
  wr_engine *engine;
  wr_capture *capture;
  volatile LONG app_port; /* for the diagnostics' listening check */
  HMODULE dll;
  char dll_path[1024];
  wd_api wd;
  HANDLE sock;
  /* The NETWORK handle the packet thread reads, and the one a filter change
   * opened, read once `net` is drained (and sent through from the start).
   * The packet thread swaps them; sends, stop and filter changes read them,
   * all under net_lock. */
  SRWLOCK net_lock;
  HANDLE net, net_next;
  int packet_done; /* the packet thread reads no more */
  char next_filter[WR_WD_FILTER_CAP];
  wr_wd_filter_info next_info;
  HANDLE swapped; /* set when the packet thread took net_next */
  /* One filter change at a time (the timer thread's scope changes, a
   * caller's app port), with its scratch space. */
  SRWLOCK filter_lock;
  wr_capture_scope scope;
  char built[WR_WD_FILTER_CAP];
  wr_wd_filter_info built_info;
  wr_owners *owners;
  wr_ancestry *query_anc; /* find_owner's (the core's timer thread) */
  wr_thread packet_thread, socket_thread, watch_thread;
  int packet_started, socket_started, watch_started;
  HANDLE watch_stop; /* set at stop: the watch thread ends */
  volatile LONG stopping;

  /* The send batch: only the core's send and flush touch it (under the
   * core's lock). */
  uint8_t *out_buf;
  size_t out_len;
  wd_address out_addr[SEND_BATCH];
  UINT out_n;

  /* The packet thread's own buffers. */
  uint8_t *recv_buf;
  wd_address recv_addr[RECV_BATCH];
  wr_packet pkts[RECV_BATCH];

  /* Diagnostics: fixed at start, plus counters and the NETWORK filter in
   * force (the packet thread changes it when it takes a new handle). */
  SRWLOCK diag_lock;
  char diag[DIAG_CAP];
  char start_warning[768]; /* "warning at start: ...; " or "" (fixed at start) */
  uint64_t recv_errors, send_errors;
  uint32_t last_recv_error, last_send_error;
  char thread_failure[256];
  char filter[WR_WD_FILTER_CAP];
  wr_wd_filter_info filter_info;
  uint64_t filter_changes;
  char filter_failure[512];
};

static void diag_appendf(wr_backend *b, const char *fmt, ...) {
  size_t n = strlen(b->diag);
  if (n >= sizeof b->diag - 1) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b->diag + n, sizeof b->diag - n, fmt, ap);
  va_end(ap);
}

static const char *layer_name(uint32_t layer) {
  switch (layer) {
    case WD_LAYER_NETWORK:
      return "NETWORK";
    case WD_LAYER_NETWORK_FORWARD:
      return "NETWORK_FORWARD";
    case WD_LAYER_FLOW:
      return "FLOW";
    case WD_LAYER_SOCKET:
      return "SOCKET";
    case WD_LAYER_REFLECT:
      return "REFLECT";
    default:
      return "unknown";
  }
}

/* ------------------------------------------------------------------------
 * Loading WinDivert.dll */

/* UTF-8 -> UTF-16; the result must be freed. NULL on failure. */
static wchar_t *widen(const char *s) {
  int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
  if (n <= 0) return NULL;
  wchar_t *w = malloc((size_t)n * sizeof *w);
  if (!w) return NULL;
  MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n);
  return w;
}

/* UTF-16 -> UTF-8 into out (cut to fit). */
static void narrow(const wchar_t *w, char *out, size_t outlen) {
  if (outlen == 0) return;
  int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, out, (int)outlen, NULL, NULL);
  if (n <= 0) out[0] = '\0';
  out[outlen - 1] = '\0';
}

/* The folder of a module's file (UTF-16, no trailing '\'), or 0. */
static int module_dir(HMODULE m, wchar_t *out, size_t cap) {
  DWORD n = GetModuleFileNameW(m, out, (DWORD)cap);
  if (n == 0 || n >= cap) return 0;
  wchar_t *slash = wcsrchr(out, L'\\');
  if (!slash) return 0;
  *slash = L'\0';
  return 1;
}

/* Loads dir\WinDivert.dll by its absolute path; WinDivert.dll's own
 * dependencies come from its folder and System32, never from the current
 * directory or PATH. NULL with *code set when it cannot. */
static HMODULE load_from(const wchar_t *dir, DWORD *code) {
  wchar_t full[MAX_PATH * 4];
  wchar_t abs_path[MAX_PATH * 4];
  int n = _snwprintf(full, sizeof full / sizeof full[0], L"%ls%lsWinDivert.dll", dir,
                     (dir[0] && (dir[wcslen(dir) - 1] == L'\\' || dir[wcslen(dir) - 1] == L'/')) ? L"" : L"\\");
  DWORD an = n > 0 ? GetFullPathNameW(full, (DWORD)(sizeof abs_path / sizeof abs_path[0]), abs_path, NULL) : 0;
  if (n <= 0 || an == 0 || an >= sizeof abs_path / sizeof abs_path[0]) {
    *code = ERROR_FILENAME_EXCED_RANGE;
    return NULL;
  }
  if (GetFileAttributesW(abs_path) == INVALID_FILE_ATTRIBUTES) {
    *code = GetLastError();
    return NULL;
  }
  HMODULE h = LoadLibraryExW(abs_path, NULL, LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR | LOAD_LIBRARY_SEARCH_SYSTEM32);
  if (!h) *code = GetLastError();
  return h;
}

/* Appends "; <dir> (<what>): Windows error <code>" to the list of places tried. */
static void tried(char *where, size_t cap, const wchar_t *dir, const char *what, DWORD code) {
  char d[1024];
  narrow(dir, d, sizeof d);
  size_t used = strlen(where);
  if (used < cap) {
    snprintf(where + used, cap - used, "%s%s (%s, Windows error %lu)", used ? "; " : "", d, what,
             (unsigned long)code);
  }
}

/* WinDivert.dll from the folder the caller set, or else the first of: the
 * folder of windows_redirector.dll itself (hosts such as Python or .NET run
 * from elsewhere), the application's folder, System32. */
static HMODULE load_windivert(const char *dir, char *err, size_t errlen) {
  char where[2400] = "";
  DWORD code = 0;
  if (dir) {
    wchar_t *w = widen(dir);
    if (!w) {
      snprintf(err, errlen, "the WinDivert directory is not valid UTF-8");
      return NULL;
    }
    HMODULE h = load_from(w, &code);
    if (!h) tried(where, sizeof where, w, "set with redirector_set_windivert_path", code);
    free(w);
    if (h) return h;
  } else {
    wchar_t dirs[3][MAX_PATH * 4];
    const char *what[3] = {"beside windows_redirector.dll", "the application's folder", "System32"};
    HMODULE self = NULL;
    int have[3];
    have[0] = GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                                 (LPCWSTR)(void *)&load_windivert, &self) &&
              module_dir(self, dirs[0], sizeof dirs[0] / sizeof dirs[0][0]);
    have[1] = module_dir(NULL, dirs[1], sizeof dirs[1] / sizeof dirs[1][0]);
    UINT sn = GetSystemDirectoryW(dirs[2], (UINT)(sizeof dirs[2] / sizeof dirs[2][0]));
    have[2] = sn > 0 && sn < sizeof dirs[2] / sizeof dirs[2][0];
    /* The library beside (or linked statically into) the program: one folder, tried once. */
    if (have[0] && have[1] && _wcsicmp(dirs[0], dirs[1]) == 0) {
      what[0] = "beside windows_redirector.dll and the application";
      have[1] = 0;
    }
    for (int i = 0; i < 3; i++) {
      if (!have[i]) continue;
      HMODULE h = load_from(dirs[i], &code);
      if (h) return h;
      tried(where, sizeof where, dirs[i], what[i], code);
    }
  }
  snprintf(err, errlen,
           "WinDivert driver not found: WinDivert.dll could not be loaded from %s. Put WinDivert.dll and "
           "WinDivert64.sys beside windows_redirector.dll or your program, or call redirector_set_windivert_path "
           "with their folder",
           where[0] ? where : "anywhere");
  return NULL;
}

/* One export of WinDivert.dll, or NULL with the error naming it. */
static FARPROC export_of(wr_backend *b, const char *name, char *err, size_t errlen) {
  FARPROC p = GetProcAddress(b->dll, name);
  if (!p && err[0] == '\0') {
    snprintf(err, errlen,
             "WinDivert.dll at %s has no function %s: it is not WinDivert 2.x (use WinDivert 2.2 with its "
             "matching WinDivert64.sys)",
             b->dll_path, name);
  }
  return p;
}

#define RESOLVE(field, type, name) (b->wd.field = (type)(void (*)(void))export_of(b, name, err, errlen))

/* Resolves every function the backend uses; 0, or -1 naming the missing one. */
static int resolve_api(wr_backend *b, char *err, size_t errlen) {
  err[0] = '\0';
  RESOLVE(open, wd_open_fn, "WinDivertOpen");
  RESOLVE(recv_ex, wd_recv_ex_fn, "WinDivertRecvEx");
  RESOLVE(send_ex, wd_send_ex_fn, "WinDivertSendEx");
  RESOLVE(shutdown, wd_shutdown_fn, "WinDivertShutdown");
  RESOLVE(close, wd_close_fn, "WinDivertClose");
  RESOLVE(set_param, wd_set_param_fn, "WinDivertSetParam");
  RESOLVE(get_param, wd_get_param_fn, "WinDivertGetParam");
  RESOLVE(compile_filter, wd_compile_filter_fn, "WinDivertHelperCompileFilter");
  return err[0] ? -1 : 0;
}

/* ------------------------------------------------------------------------
 * Open errors */

static void system_message(DWORD code, char *buf, size_t len) {
  buf[0] = '\0';
  DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code, 0, buf,
                           (DWORD)len, NULL);
  if (n == 0) {
    snprintf(buf, len, "no description");
    return;
  }
  while (n > 0 && (buf[n - 1] == '\r' || buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '.')) buf[--n] = 0;
}

/* Explains a WinDivertOpen failure: what happened and what to do. */
static void open_error(wr_backend *b, DWORD code, int layer, const char *filter, char *err, size_t errlen) {
  char what[700];
  switch (code) {
    case WD_ERROR_FILE_NOT_FOUND:
      snprintf(what, sizeof what,
               "WinDivert driver not found: WinDivert64.sys must be beside WinDivert.dll (%s); 64-bit Windows "
               "always uses WinDivert64.sys, also for a 32-bit program",
               b->dll_path);
      break;
    case WD_ERROR_ACCESS_DENIED:
      snprintf(what, sizeof what,
               "Access denied: run as Administrator (loading the WinDivert driver needs an elevated process)");
      break;
    case WD_ERROR_INVALID_IMAGE_HASH:
      snprintf(what, sizeof what,
               "the WinDivert driver's signature was rejected: use the signed WinDivert64.sys that came with this "
               "WinDivert.dll, and check that Secure Boot or driver signature enforcement policy allows it");
      break;
    case WD_ERROR_DRIVER_FAILED_PRIOR_UNLOAD:
      snprintf(what, sizeof what,
               "a different WinDivert driver version is already loaded: reboot, or stop the other program that "
               "uses WinDivert (then `sc stop WinDivert`), so that this version's driver can load");
      break;
    case WD_ERROR_SERVICE_DISABLED:
      snprintf(what, sizeof what,
               "the WinDivert service is disabled: enable it (`sc config WinDivert start= demand`) or delete it "
               "(`sc delete WinDivert`) and start again");
      break;
    case WD_ERROR_SERVICE_DOES_NOT_EXIST:
      snprintf(what, sizeof what,
               "the WinDivert service is missing: the driver is not installed (start as Administrator with "
               "WinDivert64.sys beside WinDivert.dll so it can be installed)");
      break;
    case WD_ERROR_DRIVER_BLOCKED:
      snprintf(what, sizeof what,
               "the WinDivert driver is blocked: security software, a driver blocklist or a virtual machine without "
               "driver support prevents it from loading; allow WinDivert64.sys or run elsewhere");
      break;
    case WD_EPT_S_NOT_REGISTERED:
      snprintf(what, sizeof what,
               "the Base Filtering Engine service is not running: start the BFE service, which WinDivert needs");
      break;
    case WD_ERROR_INVALID_PARAMETER: {
      const char *estr = NULL;
      UINT epos = 0;
      if (b->wd.compile_filter && !b->wd.compile_filter(filter, layer, NULL, 0, &estr, &epos) && estr) {
        snprintf(what, sizeof what, "invalid parameter: the filter \"%s\" was rejected at position %u: %s", filter,
                 epos, estr);
      } else {
        snprintf(what, sizeof what,
                 "invalid parameter: WinDivert rejected the layer, priority or flags (filter \"%s\"); this "
                 "WinDivert.dll may be older than 2.2",
                 filter);
      }
      break;
    }
    default: {
      char sys[300];
      system_message(code, sys, sizeof sys);
      snprintf(what, sizeof what, "%s", sys);
      break;
    }
  }
  snprintf(err, errlen, "WinDivertOpen (%s layer) failed with Windows error %lu: %s", layer_name((uint32_t)layer),
           (unsigned long)code, what);
}

/* ------------------------------------------------------------------------
 * Sending */

static void flush_locked(wr_backend *b) {
  if (!b->out_n) return;
  UINT sent = 0;
  /* Through the newest handle: during a filter change the new one (the old
   * one's receive side was shut in the step that made it pending, so the
   * old one never diverts what is sent, wherever the driver placed it). */
  AcquireSRWLockShared(&b->net_lock);
  BOOL ok = b->wd.send_ex(b->net_next ? b->net_next : b->net, b->out_buf, (UINT)b->out_len, &sent, 0, b->out_addr, b->out_n * WD_ADDRESS_SIZE,
                          NULL);
  DWORD code = ok ? 0 : GetLastError();
  ReleaseSRWLockShared(&b->net_lock);
  if (!ok) {
    AcquireSRWLockExclusive(&b->diag_lock);
    b->send_errors++;
    b->last_send_error = code;
    ReleaseSRWLockExclusive(&b->diag_lock);
  }
  b->out_n = 0;
  b->out_len = 0;
}

static void push_locked(wr_backend *b, const uint8_t *data, uint32_t len, const wd_address *addr) {
  if (len > SEND_BUF) return; /* cannot be a packet */
  if (b->out_n == SEND_BATCH || b->out_len + len > SEND_BUF) flush_locked(b);
  memcpy(b->out_buf + b->out_len, data, len);
  b->out_len += len;
  b->out_addr[b->out_n++] = *addr;
}

/* The core's send: the packet into the send batch, with its own address. */
static void on_send(void *io, const void *meta, const wr_packet *pkt, uint32_t verdict, uint32_t out_flags) {
  wr_backend *b = io;
  wd_address addr;
  if (meta) {
    memcpy(&addr, meta, sizeof addr);
  } else {
    /* No address kept (cannot happen): rebuilt from the metadata; checksum
     * flags 0 make the driver recompute them. */
    memset(&addr, 0, sizeof addr);
    addr.layer = WD_LAYER_NETWORK;
    addr.outbound = (pkt->flags & WR_PKT_OUTBOUND) ? 1 : 0;
    addr.loopback = (pkt->flags & WR_PKT_LOOPBACK) ? 1 : 0;
    addr.u.network.if_idx = pkt->if_idx;
    addr.u.network.sub_if_idx = pkt->sub_if_idx;
  }
  if (verdict == WR_V_DROP || !pkt->data) return;
  if (verdict == WR_V_MODIFIED) {
    unsigned csum = (out_flags & WR_OUT_CSUM_VALID) ? 1u : 0u;
    addr.outbound = (out_flags & WR_OUT_OUTBOUND) ? 1u : 0u;
    addr.ip_checksum = csum;
    addr.tcp_checksum = csum;
    addr.udp_checksum = csum;
  }
  /* WR_V_PASS: the original, as it came. */
  push_locked(b, pkt->data, pkt->len, &addr);
}

static void on_flush(void *io) { flush_locked(io); }

static void note_thread_failure(wr_backend *b, const char *fmt, ...) {
  AcquireSRWLockExclusive(&b->diag_lock);
  if (!b->thread_failure[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->thread_failure, sizeof b->thread_failure, fmt, ap);
    va_end(ap);
  }
  ReleaseSRWLockExclusive(&b->diag_lock);
}

/* Whether a failed receive ends the thread: the handle was shut down, or it
 * keeps failing. Sleeps a little between other failures. */
static int recv_failed(wr_backend *b, const char *thread, DWORD code, int *consecutive) {
  if (code == WD_ERROR_NO_DATA || InterlockedCompareExchange(&b->stopping, 0, 0)) return 1;
  AcquireSRWLockExclusive(&b->diag_lock);
  b->recv_errors++;
  b->last_recv_error = code;
  ReleaseSRWLockExclusive(&b->diag_lock);
  if (++*consecutive >= MAX_CONSECUTIVE_ERRORS) {
    note_thread_failure(b, "the %s thread stopped after %d receive errors in a row (last: Windows error %lu)",
                        thread, *consecutive, (unsigned long)code);
    return 1;
  }
  Sleep(10);
  return 0;
}

/* ------------------------------------------------------------------------
 * The packet thread */

/* Whether the transport checksum of a captured packet is not ready. */
static int csum_partial(const uint8_t *p, uint32_t len, const wd_address *a) {
  unsigned proto = 0;
  if (len >= 20 && (p[0] >> 4) == 4) proto = p[9];
  if (len >= 40 && (p[0] >> 4) == 6) proto = p[6];
  if (proto == 6) return !a->tcp_checksum;
  if (proto == 17) return !a->udp_checksum;
  return !a->tcp_checksum || !a->udp_checksum;
}

/* The old NETWORK handle is drained (its receive side was shut down and
 * its queue is empty): the packet thread takes the new one a filter change
 * opened, if any, and closes the old. 1 when it did. */
static int take_next(wr_backend *b) {
  AcquireSRWLockExclusive(&b->net_lock);
  HANDLE old = b->net, next = b->net_next;
  if (next) {
    b->net = next;
    b->net_next = NULL;
    AcquireSRWLockExclusive(&b->diag_lock);
    memcpy(b->filter, b->next_filter, sizeof b->filter);
    b->filter_info = b->next_info;
    b->filter_changes++;
    b->filter_failure[0] = '\0'; /* a change went through since */
    ReleaseSRWLockExclusive(&b->diag_lock);
  }
  ReleaseSRWLockExclusive(&b->net_lock);
  if (!next) return 0;
  /* Nothing is queued in it, and no send uses it any more. */
  b->wd.close(old);
  SetEvent(b->swapped);
  return 1;
}

/* The packet thread reads no more. Unless stopping, the receive sides are
 * shut so that the driver passes packets on instead of queueing them for no
 * one (fail open). */
static void packet_thread_done(wr_backend *b) {
  AcquireSRWLockExclusive(&b->net_lock);
  b->packet_done = 1;
  if (!InterlockedCompareExchange(&b->stopping, 0, 0)) {
    b->wd.shutdown(b->net, WD_SHUTDOWN_RECV);
    if (b->net_next) b->wd.shutdown(b->net_next, WD_SHUTDOWN_RECV);
  }
  ReleaseSRWLockExclusive(&b->net_lock);
  SetEvent(b->swapped); /* a filter change waiting for it waits no more */
}

static void packet_thread(void *arg) {
  wr_backend *b = arg;
  int consecutive = 0;
  for (;;) {
    UINT recv_len = 0, addr_len = RECV_BATCH * WD_ADDRESS_SIZE;
    /* Only this thread changes b->net. */
    if (!b->wd.recv_ex(b->net, b->recv_buf, RECV_BUF, &recv_len, 0, b->recv_addr, &addr_len, NULL)) {
      DWORD code = GetLastError();
      /* Drained after a filter change (or at stop): on to the new handle. */
      if (code == WD_ERROR_NO_DATA && take_next(b)) {
        consecutive = 0;
        continue;
      }
      if (!recv_failed(b, "packet", code, &consecutive)) continue;
      break;
    }
    consecutive = 0;
    size_t n = addr_len / WD_ADDRESS_SIZE, k = 0;
    uint32_t off = 0;
    for (; k < n && off < recv_len; k++) {
      uint32_t avail = recv_len - off;
      uint32_t len = ip_length(b->recv_buf + off, avail);
      if (len == 0 || len > avail) len = avail; /* not what the driver gives: keep it whole */
      const wd_address *a = &b->recv_addr[k];
      wr_packet *p = &b->pkts[k];
      p->data = b->recv_buf + off;
      p->len = len;
      p->flags = (a->outbound ? WR_PKT_OUTBOUND : 0) | (a->loopback ? WR_PKT_LOOPBACK : 0) |
                 (csum_partial(p->data, len, a) ? WR_PKT_CSUM_PARTIAL : 0);
      p->if_idx = a->u.network.if_idx;
      p->sub_if_idx = a->u.network.sub_if_idx;
      off += len;
    }
    if (k > 0) wr_capture_process(b->capture, b->pkts, b->recv_addr, k);
  }
  packet_thread_done(b);
}

/* ------------------------------------------------------------------------
 * Socket owners */

/* A WinDivert socket address (four host-order words, most significant
 * last) in network byte order. */
static void wd_addr_to_net(const uint32_t w[4], uint8_t out[16]) {
  for (int i = 0; i < 4; i++) {
    uint32_t v = w[3 - i];
    out[4 * i] = (uint8_t)(v >> 24);
    out[4 * i + 1] = (uint8_t)(v >> 16);
    out[4 * i + 2] = (uint8_t)(v >> 8);
    out[4 * i + 3] = (uint8_t)v;
  }
}

static int v4_mapped(const uint8_t a[16]) {
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return memcmp(a, prefix, 12) == 0;
}

static int all_zero(const uint8_t a[16]) {
  static const uint8_t zero[16];
  return memcmp(a, zero, 16) == 0;
}

/* A SOCKET event as an owner fact (without the path). 0 if not one. The
 * driver sends CLOSE from two places (sys/windivert.c): a binding's
 * release, with the address as bound and the remote end zero, and every
 * connection's end (one a listener accepted too: the listener's port and
 * PID), with its remote end. Both go to the engine as they are: it tells
 * a socket's release from a connection's end. */
static int socket_fact(const wd_address *a, wr_owner_fact *f) {
  memset(f, 0, sizeof *f);
  switch (a->event) {
    case WD_EVENT_SOCKET_BIND:
      f->kind = WR_OWNER_BIND;
      break;
    case WD_EVENT_SOCKET_CONNECT:
      f->kind = WR_OWNER_CONNECT;
      break;
    case WD_EVENT_SOCKET_LISTEN:
      f->kind = WR_OWNER_LISTEN;
      break;
    case WD_EVENT_SOCKET_ACCEPT:
      f->kind = WR_OWNER_ACCEPT;
      break;
    case WD_EVENT_SOCKET_CLOSE:
      f->kind = WR_OWNER_CLOSE;
      break;
    default:
      return 0;
  }
  const wd_socket_data *s = &a->u.socket;
  f->proto = f->kind == WR_OWNER_LISTEN ? 6 : s->protocol;
  if (f->proto != 6 && f->proto != 17) return 0;
  uint8_t local[16], remote[16];
  wd_addr_to_net(s->local_addr, local);
  wd_addr_to_net(s->remote_addr, remote);
  /* IPv4 comes as ::ffff:a.b.c.d; a dual-stack IPv6 socket talking IPv4
   * too, and its packets are IPv4. */
  int v4 = !a->ipv6 || (v4_mapped(remote) && (v4_mapped(local) || all_zero(local)));
  if (v4) {
    f->family = 4;
    memcpy(f->local, local + 12, 4);
    memcpy(f->remote, remote + 12, 4);
  } else {
    f->family = 6;
    memcpy(f->local, local, 16);
    memcpy(f->remote, remote, 16);
  }
  f->local_port = s->local_port;
  f->remote_port = s->remote_port;
  f->pid = s->process_id;
  return 1;
}

/* The path of a fact's process (into buf) and its ancestry (into *anc, for
 * process trees), unless the fact needs none. */
static void fact_path(wr_backend *b, wr_owner_fact *f, uint64_t when, char *buf, size_t buflen, wr_ancestry *anc) {
  f->path = NULL;
  f->path_len = 0;
  f->ancestry = NULL;
  f->n_ancestry = 0;
  if (f->kind == WR_OWNER_CLOSE || f->kind == WR_OWNER_UNKNOWN || !b->owners) return;
  size_t n = wr_owners_process(b->owners, f->pid, when, buf, buflen, anc);
  if (n) {
    f->path = buf;
    f->path_len = n;
  }
  if (anc && anc->n) {
    f->ancestry = anc->chain;
    f->n_ancestry = anc->n;
  }
}

typedef struct {
  wr_backend *b;
  char *path;
  wr_ancestry *anc;
} startup_ctx;

/* A socket that existed at start: listeners and UDP endpoints own ports. */
static int startup_row(void *ctx, const wr_socket_row *r) {
  startup_ctx *c = ctx;
  if (InterlockedCompareExchange(&c->b->stopping, 0, 0)) return 1;
  if (r->pid == 0) return 0; /* owner unknown: let events or timeouts decide */
  if (r->proto == 6 && !r->listening) return 0;
  wr_owner_fact f;
  memset(&f, 0, sizeof f);
  f.kind = r->proto == 6 ? WR_OWNER_LISTEN : WR_OWNER_BIND;
  f.proto = r->proto;
  f.family = r->family;
  memcpy(f.local, r->local, 16);
  f.local_port = r->local_port;
  f.pid = r->pid;
  fact_path(c->b, &f, 0, c->path, PATH_CAP, c->anc);
  wr_capture_fact(c->b->capture, &f);
  return 0;
}

static void feed_existing_sockets(wr_backend *b, char *path, wr_ancestry *anc) {
  startup_ctx c = {b, path, anc};
  if (!b->owners) return;
  for (int fam = 4; fam <= 6; fam += 2) {
    wr_owners_walk(b->owners, WR_TABLE_TCP_LISTENERS, fam, startup_row, &c, NULL);
    wr_owners_walk(b->owners, WR_TABLE_UDP, fam, startup_row, &c, NULL);
  }
}

static void socket_thread(void *arg) {
  wr_backend *b = arg;
  char *path = malloc(PATH_CAP);
  wd_address *addrs = malloc(SOCKET_BATCH * sizeof *addrs);
  wr_ancestry *anc = malloc(sizeof *anc);
  if (!path || !addrs || !anc) {
    note_thread_failure(b, "the socket thread could not allocate its buffers");
    free(path);
    free(addrs);
    free(anc);
    return;
  }
  feed_existing_sockets(b, path, anc);
  int consecutive = 0;
  for (;;) {
    UINT addr_len = SOCKET_BATCH * WD_ADDRESS_SIZE, recv_len = 0;
    if (!b->wd.recv_ex(b->sock, NULL, 0, &recv_len, 0, addrs, &addr_len, NULL)) {
      if (recv_failed(b, "socket", GetLastError(), &consecutive)) break;
      continue;
    }
    consecutive = 0;
    size_t n = addr_len / WD_ADDRESS_SIZE;
    for (size_t i = 0; i < n; i++) {
      wr_owner_fact f;
      if (!socket_fact(&addrs[i], &f)) continue;
      fact_path(b, &f, b->owners ? wr_owners_qpc_to_filetime(b->owners, addrs[i].timestamp) : 0, path, PATH_CAP,
                anc);
      wr_capture_fact(b->capture, &f);
    }
  }
  free(path);
  free(addrs);
  free(anc);
}

/* While the policy names process trees, every process is listed every
 * WR_WD_WATCH_MS (owners.h): a parent that exits soon after it started a
 * child is still known as the child's parent when the child first opens a
 * socket. */
static void watch_thread(void *arg) {
  wr_backend *b = arg;
  while (!InterlockedCompareExchange(&b->stopping, 0, 0)) {
    if (wr_engine_tree_count(b->engine) > 0) wr_owners_watch(b->owners);
    if (WaitForSingleObject(b->watch_stop, WR_WD_WATCH_MS) == WAIT_OBJECT_0) break;
  }
}

/* ------------------------------------------------------------------------
 * Owners of pending flows, from the socket tables */

typedef struct {
  const wr_query *q;
  wr_socket_row best; /* the row found so far */
  int rank;           /* how closely it covers the query: 0 none */
} query_ctx;

static int addr_eq(const uint8_t *a, const uint8_t *b2, int family) { return memcmp(a, b2, family == 4 ? 4 : 16) == 0; }

/* How a row's local address covers the query's, as the engine ranks its
 * port owners: 3 the address itself, 2 a wildcard of its family, 1 (IPv4)
 * a dual-stack IPv6 socket bound to ::, 0 not at all. */
static int local_rank(const wr_socket_row *r, const wr_query *q) {
  if (r->family == q->family) return addr_eq(r->local, q->local, q->family) ? 3 : all_zero(r->local) ? 2 : 0;
  return r->family == 6 && q->family == 4 && all_zero(r->local) ? 1 : 0;
}

static int query_row(void *ctx, const wr_socket_row *r) {
  query_ctx *c = ctx;
  const wr_query *q = c->q;
  if (r->pid == 0 || r->proto != q->proto || r->local_port != q->local_port) return 0;
  int rank = local_rank(r, q);
  if (q->proto == 6 && !q->inbound) {
    /* An outbound connection: its own row. */
    if (r->listening || r->family != q->family || r->remote_port != q->remote_port ||
        !addr_eq(r->remote, q->remote, q->family) || rank == 0) {
      return 0;
    }
    rank = 3;
  } else if (q->proto == 6 && !r->listening) {
    return 0; /* an inbound connection: a listener on its port */
  }
  if (rank > c->rank) {
    c->best = *r;
    c->rank = rank;
  }
  return rank == 3; /* nothing covers it more closely */
}

/* The core's owner query: a pending flow's owner from the socket tables.
 * An outbound TCP connection's own row is a CONNECT fact; otherwise the
 * listener or bound socket that covers the flow's local address most
 * closely is a LISTEN or BIND fact with that socket's own address (the
 * engine keeps it as the port's owner until that socket is released). Not
 * found is no answer: the SOCKET event may still come, or the hold timeout
 * decides. */
static int find_owner(void *io, const wr_query *q, wr_owner_fact *f, char *path, size_t cap) {
  wr_backend *b = io;
  query_ctx c;
  memset(&c, 0, sizeof c);
  c.q = q;
  if (!b->owners || InterlockedCompareExchange(&b->stopping, 0, 0)) return 0;
  int table = q->proto == 17 ? WR_TABLE_UDP : q->inbound ? WR_TABLE_TCP_LISTENERS : WR_TABLE_TCP_ALL;
  wr_owners_walk(b->owners, table, q->family, query_row, &c, NULL);
  if (c.rank == 0 && q->family == 4 && (q->proto == 17 || q->inbound)) {
    wr_owners_walk(b->owners, table, 6, query_row, &c, NULL);
  }
  if (c.rank == 0) return 0;
  memset(f, 0, sizeof *f);
  f->proto = q->proto;
  f->pid = c.best.pid;
  if (q->proto == 6 && !q->inbound) {
    f->kind = WR_OWNER_CONNECT;
    f->family = q->family;
    memcpy(f->local, q->local, 16);
    memcpy(f->remote, q->remote, 16);
    f->remote_port = q->remote_port;
  } else {
    f->kind = q->proto == 6 ? WR_OWNER_LISTEN : WR_OWNER_BIND;
    f->family = c.best.family;
    memcpy(f->local, c.best.local, 16);
  }
  f->local_port = q->local_port;
  fact_path(b, f, 0, path, cap, b->query_anc);
  return 1;
}

/* ------------------------------------------------------------------------
 * Other WinDivert users (REFLECT layer) */

/* Lists the other WinDivert handles open now in the diagnostics. Returns -1
 * (err set) when one is a NETWORK handle at this library's own priority:
 * the driver diverts a packet once per priority level, so two handles there
 * (another program using this library, or a copy of it) would split the
 * packets between them at random. */
static int list_other_handles(wr_backend *b, char *err, size_t errlen) {
  HANDLE h = b->wd.open(REFLECT_FILTER, WD_LAYER_REFLECT, REFLECT_PRIORITY, REFLECT_FLAGS);
  if (h == INVALID_HANDLE_VALUE || h == NULL) {
    DWORD code = GetLastError();
    if (code == WD_ERROR_SERVICE_DOES_NOT_EXIST) {
      diag_appendf(b, "; other WinDivert handles: 0 (the driver was not loaded)");
    } else {
      diag_appendf(b, "; other WinDivert handles: unknown (REFLECT layer: Windows error %lu)", (unsigned long)code);
    }
    return 0;
  }
  /* The driver queues one OPEN record per handle open now; after a
   * shutdown, receiving drains them and then fails with ERROR_NO_DATA. */
  b->wd.shutdown(h, WD_SHUTDOWN_BOTH);
  uint8_t *buf = malloc(REFLECT_BUF);
  wd_address *addrs = malloc(16 * sizeof *addrs);
  char pids[400] = "", layers[400] = "", prios[400] = "";
  int count = 0;
  int rival = 0; /* a NETWORK handle at our priority was found */
  unsigned long rival_pid = 0;
  for (int guard = 0; buf && addrs && guard < REFLECT_MAX_RECORDS; guard++) {
    UINT recv_len = 0, addr_len = 16 * WD_ADDRESS_SIZE;
    if (!b->wd.recv_ex(h, buf, REFLECT_BUF, &recv_len, 0, addrs, &addr_len, NULL)) {
      if (GetLastError() == WD_ERROR_INSUFFICIENT_BUFFER) continue; /* one record cut: still counted below */
      break;
    }
    for (size_t i = 0; i < addr_len / WD_ADDRESS_SIZE; i++) {
      const wd_address *a = &addrs[i];
      if (a->event != WD_EVENT_REFLECT_OPEN) continue;
      if (a->u.reflect.layer == WD_LAYER_NETWORK && a->u.reflect.priority == NET_PRIORITY && !rival) {
        rival = 1;
        rival_pid = (unsigned long)a->u.reflect.process_id;
      }
      count++;
      if (count > 16) continue;
      const char *sep = count > 1 ? ", " : "";
      size_t n;
      n = strlen(pids);
      snprintf(pids + n, sizeof pids - n, "%s%lu", sep, (unsigned long)a->u.reflect.process_id);
      n = strlen(layers);
      snprintf(layers + n, sizeof layers - n, "%s%s", sep, layer_name(a->u.reflect.layer));
      n = strlen(prios);
      snprintf(prios + n, sizeof prios - n, "%s%d", sep, (int)a->u.reflect.priority);
    }
  }
  free(buf);
  free(addrs);
  b->wd.close(h);
  if (count == 0) {
    diag_appendf(b, "; other WinDivert handles: 0");
  } else {
    diag_appendf(b, "; other WinDivert handles: %d (pids %s%s; layers %s; priorities %s)", count, pids,
                 count > 16 ? ", ..." : "", layers, prios);
  }
  if (rival) {
    snprintf(err, errlen,
             "another program (PID %lu) holds a WinDivert NETWORK handle at priority %d, this library's own: two "
             "handles at one priority split the packets between them at random. Stop that program (another "
             "redirector?) first",
             rival_pid, NET_PRIORITY);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * The NETWORK filter and its changes */

static HANDLE open_handle(wr_backend *b, const char *filter, int layer, int16_t priority, uint64_t flags, char *err,
                          size_t errlen);

/* The filter for the capture scope now (and app port `extra`, unless 0)
 * into b->built (filter_lock held, or before the threads start). */
static void build_filter(wr_backend *b, uint16_t extra) {
  wr_engine_capture_scope(b->engine, &b->scope); /* when it cannot say: everything */
  wr_capture_scope *s = &b->scope;
  int have = 0;
  for (size_t i = 0; i < s->n_app_ports; i++) have |= s->app_ports[i] == extra;
  if (extra && !have) {
    if (s->n_app_ports < WR_SCOPE_APP_PORTS_CAP) s->app_ports[s->n_app_ports++] = extra;
    else s->flags |= WR_SCOPE_ALL;
  }
  wr_wd_net_filter(s, b->built, sizeof b->built, &b->built_info);
}

/* Waits until no filter change is pending (the packet thread took the new
 * handle). 1 when none is; 0 when one still is after SWITCH_WAIT_MS, or
 * cannot complete (the packet thread stopped, or stop began). */
static int wait_switched(wr_backend *b) {
  ULONGLONG until = GetTickCount64() + SWITCH_WAIT_MS;
  for (;;) {
    AcquireSRWLockShared(&b->net_lock);
    int pending = b->net_next != NULL, done = b->packet_done;
    ReleaseSRWLockShared(&b->net_lock);
    if (!pending) return 1;
    if (done || InterlockedCompareExchange(&b->stopping, 0, 0) || GetTickCount64() >= until) return 0;
    WaitForSingleObject(b->swapped, 50);
  }
}

static void note_filter_failure(wr_backend *b, const char *why) {
  AcquireSRWLockExclusive(&b->diag_lock);
  snprintf(b->filter_failure, sizeof b->filter_failure, "%s", why);
  ReleaseSRWLockExclusive(&b->diag_lock);
}

/* Diverts with the filter in b->built from now on: a new NETWORK handle
 * first, then the old one's receive side shut, and the packet thread
 * drains it and takes the new one (the comment at the top). 0, or -1 with
 * the reason in err when the new handle could not be opened; the old
 * filter stays then. */
static int switch_net(wr_backend *b, int wait, char *err, size_t errlen) {
  HANDLE n = open_handle(b, b->built, WD_LAYER_NETWORK, NET_PRIORITY, NET_FLAGS, err, errlen);
  if (!n) return -1;
  AcquireSRWLockExclusive(&b->net_lock);
  if (b->packet_done || InterlockedCompareExchange(&b->stopping, 0, 0)) {
    ReleaseSRWLockExclusive(&b->net_lock);
    b->wd.close(n);
    snprintf(err, errlen, "the packet thread has stopped: the NETWORK filter stays \"%s\"", b->filter);
    return -1;
  }
  memcpy(b->next_filter, b->built, sizeof b->next_filter);
  b->next_info = b->built_info;
  ResetEvent(b->swapped);
  b->net_next = n;
  /* It diverts nothing more; what it queued can still be received. */
  b->wd.shutdown(b->net, WD_SHUTDOWN_RECV);
  ReleaseSRWLockExclusive(&b->net_lock);
  if (wait && !wait_switched(b)) {
    /* Not fatal: the packet thread takes it when it gets there. */
    note_filter_failure(b, "a filter change waited longer than 10 s for the packet thread");
  }
  return 0;
}

/* The NETWORK filter for the scope now (and app port `extra`), switched to
 * when it differs from the one in force; with `wait`, this also waits for
 * the packet thread to take the new handle (it diverts from the moment it is
 * open). 0, or -1 with the reason. */
static int change_filter(wr_backend *b, uint16_t extra, int wait, char *err, size_t errlen) {
  char why[700] = "";
  int rc = 0;
  AcquireSRWLockExclusive(&b->filter_lock);
  if (!wait_switched(b)) {
    snprintf(why, sizeof why, "an earlier NETWORK filter change is still waiting for the packet thread");
    rc = -1;
  } else {
    build_filter(b, extra);
    AcquireSRWLockShared(&b->diag_lock);
    int same = strcmp(b->built, b->filter) == 0;
    ReleaseSRWLockShared(&b->diag_lock);
    if (!same) rc = switch_net(b, wait, why, sizeof why);
  }
  ReleaseSRWLockExclusive(&b->filter_lock);
  if (rc != 0) {
    note_filter_failure(b, why);
    if (err && errlen) snprintf(err, errlen, "%s", why);
  }
  return rc;
}

/* The core's: the capture scope may have changed (timer thread). */
static void scope_changed(void *io) {
  wr_backend *b = io;
  if (!InterlockedCompareExchange(&b->stopping, 0, 0)) change_filter(b, 0, 1, NULL, 0);
}

/* The caller's, after a new configuration: the filter follows it before
 * set_redirector_config returns (the timer thread would get to it only at
 * its next tick, and a connection made meanwhile would not be diverted). */
int wr_backend_config_changed(wr_backend *b, char *err, size_t errlen) {
  return change_filter(b, 0, 0, err, errlen);
}

/* ------------------------------------------------------------------------
 * Start and stop */

static int listen_report(wr_backend *b, int only_wrong, char *out, size_t cap);

/* Is the app port listened on as redirects need? Starting goes on either way
 * (the proxy may listen later); what is wrong leads the diagnostics text. */
static void start_check(wr_backend *b) {
  char wrong[sizeof b->start_warning - 32];
  if (listen_report(b, 1, wrong, sizeof wrong) > 0) {
    /* wrong is "; app port P: ..." */
    snprintf(b->start_warning, sizeof b->start_warning, "warning at start: %s; ", wrong + 2);
  }
}

static HANDLE open_handle(wr_backend *b, const char *filter, int layer, int16_t priority, uint64_t flags, char *err,
                          size_t errlen) {
  HANDLE h = b->wd.open(filter, layer, priority, flags);
  if (h == INVALID_HANDLE_VALUE || h == NULL) {
    open_error(b, GetLastError(), layer, filter, err, errlen);
    return NULL;
  }
  const struct {
    int param;
    uint64_t value;
    const char *name;
  } params[] = {{WD_PARAM_QUEUE_LENGTH, QUEUE_LENGTH, "queue length"},
                {WD_PARAM_QUEUE_TIME, layer == WD_LAYER_SOCKET ? SOCKET_QUEUE_TIME_MS : QUEUE_TIME_MS, "queue time"},
                {WD_PARAM_QUEUE_SIZE, QUEUE_SIZE, "queue size"}};
  for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
    if (!b->wd.set_param(h, params[i].param, params[i].value)) {
      /* Not fatal: the driver's defaults still work. */
      diag_appendf(b, "; %s layer: setting the %s to %llu failed (Windows error %lu)", layer_name((uint32_t)layer),
                   params[i].name, (unsigned long long)params[i].value, (unsigned long)GetLastError());
    }
  }
  return h;
}

static void release(wr_backend *b) {
  wr_capture_free(b->capture); /* re-injects what the engine still holds */
  if (b->sock) b->wd.close(b->sock);
  if (b->net_next) b->wd.close(b->net_next);
  if (b->net) b->wd.close(b->net);
  if (b->swapped) CloseHandle(b->swapped);
  if (b->watch_stop) CloseHandle(b->watch_stop);
  if (b->dll) FreeLibrary(b->dll);
  wr_owners_free(b->owners);
  free(b->out_buf);
  free(b->query_anc);
  free(b->recv_buf);
  free(b);
}

static void stop_threads(wr_backend *b) {
  InterlockedExchange(&b->stopping, 1);
  if (b->capture) wr_capture_stop_timer(b->capture);
  /* Shutdown completes blocked receives with ERROR_NO_DATA once the queue
   * is empty. NETWORK keeps its send side until the held packets are out;
   * the packet thread drains a new handle of a filter change too. */
  if (b->sock) b->wd.shutdown(b->sock, WD_SHUTDOWN_BOTH);
  AcquireSRWLockShared(&b->net_lock);
  if (b->net) b->wd.shutdown(b->net, WD_SHUTDOWN_RECV);
  if (b->net_next) b->wd.shutdown(b->net_next, WD_SHUTDOWN_RECV);
  ReleaseSRWLockShared(&b->net_lock);
  if (b->watch_stop) SetEvent(b->watch_stop);
  if (b->socket_started) wr_thread_join(&b->socket_thread);
  if (b->packet_started) wr_thread_join(&b->packet_thread);
  if (b->watch_started) wr_thread_join(&b->watch_thread);
  b->socket_started = b->packet_started = b->watch_started = 0;
}

wr_backend *wr_backend_start(const wr_backend_options *opts, char *err, size_t errlen) {
  wr_backend *b = calloc(1, sizeof *b);
  if (!b) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  b->engine = opts->engine;
  b->app_port = opts->app_port;
  InitializeSRWLock(&b->diag_lock);
  InitializeSRWLock(&b->net_lock);
  InitializeSRWLock(&b->filter_lock);
  b->dll = load_windivert(opts->windivert_dir, err, errlen);
  if (!b->dll) {
    release(b);
    return NULL;
  }
  wchar_t wpath[1024];
  DWORD pn = GetModuleFileNameW(b->dll, wpath, (DWORD)(sizeof wpath / sizeof wpath[0]));
  if (pn == 0 || pn >= sizeof wpath / sizeof wpath[0]) wcscpy(wpath, L"WinDivert.dll");
  narrow(wpath, b->dll_path, sizeof b->dll_path);
  if (resolve_api(b, err, errlen) != 0) {
    release(b);
    return NULL;
  }
  b->out_buf = malloc(SEND_BUF);
  b->recv_buf = malloc(RECV_BUF);
  b->owners = wr_owners_new();
  b->query_anc = malloc(sizeof *b->query_anc);
  static const wr_capture_io ops = {sizeof(wd_address), 1, on_send, on_flush, find_owner, NULL, scope_changed};
  b->capture = wr_capture_new(b->engine, &ops, b);
  b->swapped = CreateEventW(NULL, FALSE, FALSE, NULL);
  b->watch_stop = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (!b->out_buf || !b->recv_buf || !b->owners || !b->query_anc || !b->capture || !b->swapped || !b->watch_stop) {
    snprintf(err, errlen, "out of memory");
    release(b);
    return NULL;
  }
  snprintf(b->diag, sizeof b->diag, "WinDivert.dll: %s", b->dll_path);
  if (wr_owners_tables_error(b->owners)[0]) diag_appendf(b, "; socket tables: %s", wr_owners_tables_error(b->owners));
  if (list_other_handles(b, err, errlen) != 0) {
    release(b);
    return NULL;
  }
  /* SOCKET first: owner events are collected before any packet waits. */
  b->sock = open_handle(b, SOCKET_FILTER, WD_LAYER_SOCKET, SOCKET_PRIORITY, SOCKET_FLAGS, err,
                        errlen);
  if (!b->sock) {
    release(b);
    return NULL;
  }
  /* WinDivert 2.2 or newer: 2.0 has a crash bug fixed in 2.1, and the
   * behaviour this library relies on is 2.2's. */
  uint64_t major = 0, minor = 0;
  if (!b->wd.get_param(b->sock, WD_PARAM_VERSION_MAJOR, &major) ||
      !b->wd.get_param(b->sock, WD_PARAM_VERSION_MINOR, &minor)) {
    snprintf(err, errlen, "the WinDivert driver's version could not be read (Windows error %lu); use WinDivert 2.2",
             (unsigned long)GetLastError());
    release(b);
    return NULL;
  }
  if (major < 2 || (major == 2 && minor < 2)) {
    snprintf(err, errlen,
             "the WinDivert driver is version %llu.%llu; this library needs 2.2 or newer (2.0 has a crash bug "
             "fixed in 2.1): put WinDivert 2.2's WinDivert.dll and WinDivert64.sys in place, and reboot (or stop "
             "every WinDivert program, then `sc stop WinDivert`) so the old driver unloads",
             (unsigned long long)major, (unsigned long long)minor);
    release(b);
    return NULL;
  }
  diag_appendf(b, "; driver version %llu.%llu", (unsigned long long)major, (unsigned long long)minor);
  /* The NETWORK filter from the capture scope (after the core exists, so
   * a scope change from now on reaches scope_changed). */
  build_filter(b, 0);
  memcpy(b->filter, b->built, sizeof b->filter);
  b->filter_info = b->built_info;
  b->net = open_handle(b, b->filter, WD_LAYER_NETWORK, NET_PRIORITY, NET_FLAGS, err, errlen);
  if (!b->net) {
    release(b);
    return NULL;
  }
  diag_appendf(b, "; SOCKET handle: priority %d, filter \"%s\"", SOCKET_PRIORITY, SOCKET_FILTER);
  int rc = wr_thread_start(&b->socket_thread, socket_thread, b);
  b->socket_started = rc == 0;
  if (rc == 0) {
    rc = wr_thread_start(&b->packet_thread, packet_thread, b);
    b->packet_started = rc == 0;
  }
  if (rc == 0) {
    rc = wr_thread_start(&b->watch_thread, watch_thread, b);
    b->watch_started = rc == 0;
  }
  if (rc == 0) rc = wr_capture_start_timer(b->capture);
  if (rc != 0) {
    stop_threads(b);
    snprintf(err, errlen, "could not start the WinDivert threads (Windows error %d)", rc);
    release(b);
    return NULL;
  }
  start_check(b);
  return b;
}

/* PID 4 is the System process: its sockets (SMB, for one) belong to the
 * kernel, never to a user's program. */
size_t wr_backend_never_intercept(const uint32_t **pids) {
  static const uint32_t system_pids[] = {4};
  *pids = system_pids;
  return sizeof system_pids / sizeof system_pids[0];
}

/* The NETWORK filter must divert the new app port's packets (the proxy's
 * replies) before the engine redirects a flow to it: the filter is changed
 * first, with the new port beside those of the scope. */
int wr_backend_set_app_port(wr_backend *b, uint16_t port, char *err, size_t errlen) {
  if (change_filter(b, port, 1, err, errlen) != 0) return -1;
  InterlockedExchange(&b->app_port, port);
  return 0;
}

void wr_backend_stop(wr_backend *b) {
  if (!b) return;
  stop_threads(b);
  /* Held packets go out as they came: without us they would have. */
  wr_capture_free(b->capture);
  b->capture = NULL;
  b->wd.shutdown(b->net, WD_SHUTDOWN_BOTH);
  release(b);
}

/* Where the app port is bound now, for one protocol, from the socket tables. */
typedef struct {
  uint16_t port;
  uint8_t proto;
  int any[2], specific[2]; /* [0] IPv4, [1] IPv6 */
  char where[48];          /* the first specific address seen */
} listen_check;

/* An address as text: dotted IPv4, or IPv6 in brackets with its longest run
 * of zero groups (two or more) as "::". */
static void addr_text(int family, const uint8_t a[16], char *out, size_t cap) {
  if (family == 4) {
    snprintf(out, cap, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
    return;
  }
  int run = 0, best = -1, best_len = 1;
  for (int i = 0; i < 8; i++) {
    run = a[2 * i] | a[2 * i + 1] ? 0 : run + 1;
    if (run > best_len) best_len = run, best = i - run + 1;
  }
  size_t n = (size_t)snprintf(out, cap, "[");
  for (int i = 0; i < 8 && n < cap; i++) {
    if (i == best) {
      n += (size_t)snprintf(out + n, cap - n, "::");
      i += best_len - 1;
      continue;
    }
    int sep = i > 0 && i != best + best_len;
    n += (size_t)snprintf(out + n, cap - n, "%s%x", sep ? ":" : "", (unsigned)(a[2 * i] << 8 | a[2 * i + 1]));
  }
  if (n < cap) snprintf(out + n, cap - n, "]");
}

static int listen_row(void *ctx, const wr_socket_row *r) {
  listen_check *c = ctx;
  if (r->local_port != c->port || r->proto != c->proto || (r->proto == 6 && !r->listening)) return 0;
  int v6 = r->family == 6;
  if (all_zero(r->local)) {
    c->any[v6] = 1;
  } else {
    c->specific[v6] = 1;
    if (!c->where[0]) addr_text(r->family, r->local, c->where, sizeof c->where);
  }
  return 0;
}

/* "; app port P: TCP on 0.0.0.0 and [::]; UDP ..." with what is wrong, for
 * the protocols the configuration intercepts (only what is wrong with
 * only_wrong). A redirected connection arrives addressed to the client's own
 * address (as inbound traffic from a remote one), so the proxy must listen
 * on the wildcard address of each family it serves. Returns how many
 * protocols are wrong; out is "" when the tables cannot be read. */
static int listen_report(wr_backend *b, int only_wrong, char *out, size_t cap) {
  uint16_t port = (uint16_t)b->app_port;
  out[0] = '\0';
  if (!b->owners || wr_owners_tables_error(b->owners)[0] || port == 0) return 0;
  uint32_t protos = wr_engine_protocols(b->engine);
  size_t used = (size_t)snprintf(out, cap, "; app port %u:", (unsigned)port);
  int wrong = 0;
  for (int p = 0; p < 2 && used < cap; p++) {
    if (!(protos & (p == 0 ? WR_PROTOS_TCP : WR_PROTOS_UDP))) continue;
    listen_check c = {port, p == 0 ? 6 : 17, {0, 0}, {0, 0}, ""};
    for (int fam = 4; fam <= 6; fam += 2) {
      uint32_t error = 0;
      wr_owners_walk(b->owners, p == 0 ? WR_TABLE_TCP_LISTENERS : WR_TABLE_UDP, fam, listen_row, &c, &error);
    }
    const char *name = p == 0 ? "TCP" : "UDP";
    char finding[160];
    int bad = 1;
    if (c.any[0] && c.any[1]) {
      snprintf(finding, sizeof finding, "on 0.0.0.0 and [::]");
      bad = 0;
    } else if (c.any[1]) {
      snprintf(finding, sizeof finding, "on [::] (IPv4 only if that socket is dual-stack)");
      bad = 0;
    } else if (c.any[0]) {
      snprintf(finding, sizeof finding, "on 0.0.0.0 only: IPv6 redirects will be refused");
    } else if (c.specific[0] || c.specific[1]) {
      snprintf(finding, sizeof finding,
               "bound to a specific address only (%s), not 0.0.0.0 or [::]: redirects will be refused", c.where);
    } else {
      snprintf(finding, sizeof finding, "not listening: its redirects will be refused");
    }
    wrong += bad;
    if (bad || !only_wrong) used += (size_t)snprintf(out + used, cap - used, " %s %s;", name, finding);
  }
  if (wrong && used < cap) {
    snprintf(out + used, cap - used,
             " a redirected connection arrives addressed to the client's own address, so listen on 0.0.0.0 and [::] "
             "(or a dual-stack [::]) for each protocol you intercept, and allow inbound connections to the port in "
             "Windows Firewall");
  }
  if (only_wrong && !wrong) out[0] = '\0';
  return wrong;
}

size_t wr_backend_diagnostics(wr_backend *b, char *buf, size_t len) {
  char tail[1024] = "", filter[1400] = "";
  if (!b) {
    if (buf && len) buf[0] = '\0';
    return 0;
  }
  char listening[768], syns[768];
  listen_report(b, 0, listening, sizeof listening);
  wr_capture_syn_report(b->capture,
                        "no inbound rule of Windows Defender Firewall allows the app port (it drops the SYN, and "
                        "hides a port nothing listens on), the proxy not listening on the wildcard address of that "
                        "family (0.0.0.0, [::]), or another filter driver dropping packets to the port",
                        "the proxy not listening on the wildcard address of that family (0.0.0.0, [::]), or not "
                        "listening at all",
                        syns, sizeof syns);
  uint64_t traps = wr_capture_traps(b->capture);
  AcquireSRWLockExclusive(&b->diag_lock);
  const wr_wd_filter_info *fi = &b->filter_info;
  snprintf(filter, sizeof filter, "; NETWORK handle: priority %d, filter \"%s\" (%d tests%s%s; %llu changes%s%s)",
           NET_PRIORITY, b->filter, fi->tests, fi->narrowed ? ", narrowed by ports, networks or app ports" : "",
           fi->too_long ? ", the configuration's lists left out: too long for WinDivert" : "",
           (unsigned long long)b->filter_changes, b->filter_failure[0] ? "; last change failed: " : "",
           b->filter_failure);
  snprintf(tail, sizeof tail, "; receive errors: %llu (last %lu); send errors: %llu (last %lu); engine traps: %llu%s%s",
           (unsigned long long)b->recv_errors, (unsigned long)b->last_recv_error,
           (unsigned long long)b->send_errors, (unsigned long)b->last_send_error,
           (unsigned long long)traps, b->thread_failure[0] ? "; " : "", b->thread_failure);
  /* A long filter is cut here (to 1 KB or so): the diagnostics are a line for a log. */
  int n = snprintf(buf, len, "%s%s%s%s%s%s", b->start_warning, b->diag, filter, listening, syns, tail);
  ReleaseSRWLockExclusive(&b->diag_lock);
  return n < 0 ? 0 : (size_t)n;
}
