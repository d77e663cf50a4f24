/*
 * windows_redirector.h — redirect chosen processes' TCP and UDP traffic to a
 * local proxy port, and tell the proxy where each connection was going.
 *
 * This header is the library's documentation: what is not declared here is
 * not part of the API.
 *
 * Backends: WinDivert on Windows (windows_redirector.dll), NFQUEUE on Linux
 * (libwindows_redirector.so). Both run the same engine and expose the same
 * functions.
 *
 * Conventions
 *   - Every function may be called from any thread, at any time, in any
 *     order; calling one before initialize_global_config() initialises the
 *     library first. Calls that change state are serialised inside.
 *   - Strings are NUL-terminated UTF-8. The library never keeps a pointer
 *     the caller passed in; it copies what it needs before returning.
 *   - The six seed functions keep the exact prototypes and return codes of
 *     the original (Rust) library, so existing callers link unchanged. The
 *     added functions are prefixed redirector_ and return 0 or one of the
 *     REDIRECTOR_E* codes below, which are unique and never reused.
 *   - The last error belongs to the calling thread: after a call fails,
 *     redirector_last_error() gives a readable reason and
 *     redirector_last_error_code() its REDIRECTOR_E* code, on the same
 *     thread, whatever other threads do meanwhile. They describe that
 *     thread's most recent failed call; a call that succeeds leaves them as
 *     they were (nothing clears them; REDIRECTOR_OK and "" until the thread's
 *     first failure). A runtime that may move its code between threads (Go)
 *     must read them on the thread of the call that failed: in the same
 *     native call, or with its code held on that thread meanwhile
 *     (runtime.LockOSThread).
 *     Set on failure by: start_redirector, stop_redirector,
 *     set_redirector_config, update_app_port (when its port cannot be set
 *     up), redirector_set_app_port, redirector_lookup, redirector_next_event
 *     (not for REDIRECTOR_ENOEVENT), redirector_get_stats,
 *     redirector_would_intercept, redirector_set_windivert_path,
 *     redirector_diagnostics, redirector_exclude_socket and
 *     redirector_debug_inject_fault. Never set by initialize_global_config,
 *     get_redirector_status, redirector_wait_event, redirector_set_nfqueue_num,
 *     redirector_last_error, redirector_last_error_code, redirector_strerror
 *     and redirector_version.
 */
#ifndef WINDOWS_REDIRECTOR_H
#define WINDOWS_REDIRECTOR_H

#include <stddef.h>
#include <stdint.h>

#if defined(WINDOWS_REDIRECTOR_BUILD)
#if defined(_WIN32)
#define WINDOWS_REDIRECTOR_API __declspec(dllexport)
#else
#define WINDOWS_REDIRECTOR_API __attribute__((visibility("default")))
#endif
#else
/* No dllimport: the same declarations link against the DLL's import library
 * (libwindows_redirector.dll.a, or windows_redirector.lib for MSVC) and
 * against the static library, with no define either way. */
#define WINDOWS_REDIRECTOR_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Error codes of the added functions (and of redirector_last_error_code).
 * X(name, value, description). Values are stable and never reused.
 */
#define REDIRECTOR_ERRNO_MAP(X)                                                        \
  X(OK, 0, "no error")                                                                 \
  X(EALREADY, -101, "the redirector is already running")                              \
  X(ENOTRUNNING, -102, "the redirector is not running")                               \
  X(ENULL, -103, "a required pointer argument is NULL")                               \
  X(ECONFIG, -104, "the configuration is not valid JSON or a field is invalid")       \
  X(EUTF8, -105, "the text is not valid UTF-8")                                       \
  X(EINIT, -106, "the redirector could not start (see redirector_last_error)")        \
  X(ENOTFOUND, -107, "no redirected connection matches")                              \
  X(EINVAL, -108, "an argument is out of range (a struct size, length or selector)") \
  X(EENGINE, -109, "the engine failed inside and was rebuilt; the call had no effect") \
  X(ENOEVENT, -110, "no event is waiting")                                            \
  X(ENOMEM, -111, "out of memory; the call had no effect")

typedef enum {
#define REDIRECTOR_ERRNO_ENUM_(name, value, text) REDIRECTOR_##name = value,
  REDIRECTOR_ERRNO_MAP(REDIRECTOR_ERRNO_ENUM_)
#undef REDIRECTOR_ERRNO_ENUM_
  REDIRECTOR_ERRNO_END_ = 1
} redirector_errno;

/* ------------------------------------------------------------------------
 * The seed functions
 */

/*
 * Sets up the library's global state. Optional: every other function does it
 * on first use. Calling it again does nothing (it does not reset a
 * configuration or stop a running redirector).
 */
WINDOWS_REDIRECTOR_API void initialize_global_config(void);

/*
 * Starts the redirector: builds a fresh engine from the current
 * configuration, opens the capture backend and starts its thread, then
 * returns without waiting for traffic.
 *
 * Returns 0 on success, -1 if it is already running, -2 if it could not
 * start (no application port set, WinDivert.dll or its driver missing or
 * older than WinDivert 2.2, another program's WinDivert NETWORK handle at
 * this library's priority, not running as Administrator/root, ...):
 * redirector_last_error() says which,
 * and what to do about it. After -2 nothing is left running or open.
 *
 * On Windows it also looks whether the app port is listened on as redirects
 * need (see redirector_diagnostics), for the protocols the configuration
 * intercepts. It starts either way (the proxy may begin listening later),
 * and what is wrong leads redirector_diagnostics for the whole run:
 * "warning at start: app port P: TCP bound to a specific address only
 * (127.0.0.1), not 0.0.0.0 or [::]: redirects will be refused; ... listen
 * on 0.0.0.0 and [::] ...". Read it after start and log it.
 */
WINDOWS_REDIRECTOR_API int32_t start_redirector(void);

/*
 * Stops the redirector: the backend thread is joined, capture handles and
 * rules are removed, the engine and its tables are freed, and traffic flows
 * directly again. A later start_redirector() starts afresh.
 *
 * Returns 0 on success, -1 if it was not running.
 */
WINDOWS_REDIRECTOR_API int32_t stop_redirector(void);

/*
 * Replaces the configuration with the JSON object in `json`, e.g.
 *   {"intercept_pids": [1234, 5678], "description": "my test agent"}
 * Applied at once when running (new connections follow it; connections
 * already redirected or passed keep their decision), else at the next start.
 * A rejected configuration leaves the previous one in force.
 *
 * Fields (all optional; unknown fields are ignored; a field given twice is an
 * error):
 *   intercept_pids        array of PIDs (or null) to intercept
 *   description           string (or null), free text
 *   intercept             process spec, mitmproxy style: "curl,!1234" or
 *                         ["curl", 1234]; a number is a PID, other text a
 *                         process pattern matched case-insensitively against
 *                         the executable's path (with * or ?: the whole file
 *                         name or path; without: any part of the path); a
 *                         leading ! excludes; entries apply in order, and
 *                         everything is intercepted first only when the first
 *                         entry is an exclusion. intercept_pids are added to it.
 *                         Process trees: an entry prefixed "tree:" (any case)
 *                         names a process and all its descendants:
 *                         "tree:1234", "tree:bash" (every process started, at
 *                         any depth, by a process matching bash), "!tree:1234"
 *                         (exclude a subtree): "tree:20,!tree:40" is process
 *                         20's tree but for the tree of 40 inside it. Refused,
 *                         naming the entry: "tree:" with nothing after it,
 *                         "tree:!x" (the ! goes first), "tree:tree:x", "tree :x",
 *                         more than 32 trees (with intercept_trees).
 *   intercept_trees       array of PIDs whose trees to intercept: the same as
 *                         "tree:<pid>" entries after the intercept entries
 *
 * Process trees, the rules:
 *   - A process is in a tree when it is the tree's root (the PID, or a process
 *     matching the pattern) or when its parent, as it was when the process
 *     was created, is in the tree.
 *   - A process whose parent exits keeps its membership, and so do the
 *     processes it starts later: the library remembers each process's
 *     membership and its parent at creation by its identity, the PID and the
 *     process's creation time. (Linux re-parents an orphan to init or a
 *     subreaper: the library reads each new process's parent while the
 *     parent lives, at each owner look-up and every 250 ms while a tree is
 *     configured; a process that is started and orphaned between two
 *     listings and never connects before is beyond what it saw.)
 *   - A PID reused by an unrelated process is never taken for a member: a
 *     parent created after its child is not its parent, and a "tree:<pid>"
 *     root is the process that had the PID when the configuration was set
 *     (a process created later with that PID is not it; as exactly as the
 *     OS's creation times: on Linux 10 ms clock ticks). A plain PID entry
 *     and intercept_pids keep their meaning: whatever process has the PID.
 *   - Membership is decided once per process (its identity) and
 *     configuration, not per connection. A new configuration keeps each
 *     process's membership of the pattern trees ("tree:bash") it names too
 *     (the same pattern, any case, include or exclude), even where the root
 *     has exited, and drops that of the trees it no longer names; it decides
 *     "tree:<pid>" trees and the pattern trees it adds again from the
 *     parents remembered. No paths are kept: a process that had exited by
 *     then is not matched by a new tree's pattern.
 *   - A process seen without an ancestry (the host could not read one) is
 *     not taken for the one seen before with its PID and path: it is in the
 *     trees it is the root of only.
 *   - A process that exec()s another program (Linux) keeps its identity and
 *     is decided again by the new path: its own connections, and the
 *     processes it starts after the exec(), follow the new program's
 *     decision; processes it started and that were decided before keep
 *     theirs. The library reads
 *     the executable again at a look-up of a process whose path it read in
 *     the process's first 2 s, and of a parent whose path it read before
 *     the child started: a process listed between its fork and its exec()
 *     is decided by the program it exec()ed. One whose path was read when
 *     it was older than 2 s and that exec()s afterwards keeps, for its own
 *     connections, the decision for the program before.
 *   - Windows: a process's parent is the PID Windows recorded at its
 *     creation, taken as its parent only when the process with that PID was
 *     created no later than the child (a later one reused the PID). A parent
 *     that has exited ends the chain unless the library saw it alive after
 *     the child's creation (at an owner look-up, or in its listing of every
 *     process every 250 ms while a tree is configured; a parent seen only
 *     that way has its image file name for a path).
 *   protocols             ["tcp", "udp"] (default both)
 *   directions            ["outbound", "inbound"] (default both); inbound means
 *                         connections to listening sockets of intercepted
 *                         processes (on Windows, a local client's loopback
 *                         connection to such a listener is only the client's
 *                         outbound flow: it is redirected only when the
 *                         client is intercepted)
 *   ports, exclude_ports  destination ports: 443 or "8000-8100"
 *   destinations, exclude_destinations
 *                         destination ranges: "198.18.0.0/15", "fd00::/8"
 *   bypass                traffic never redirected, default all of
 *                         ["loopback", "multicast", "broadcast", "link-local",
 *                         "dhcp"]; [] bypasses none of them
 *   max_flows             flow table size, 16..1048576 (default 65536; takes
 *                         effect at the next start)
 *   hold_timeout_ms       how long a new connection waits for its owning
 *                         process to be known, 1..60000 (default 2000)
 *   max_held_packets      packets held meanwhile, 0..65536 (default 1024)
 *   tcp_idle_timeout_ms, udp_idle_timeout_ms
 *                         idle time before a flow is forgotten
 * The calling process, PID 0 and, on Windows, PID 4 (the System process)
 * are never intercepted.
 *
 * On Windows the capture follows the configuration too: WinDivert diverts
 * to the library only the traffic it may redirect: the protocols; loopback
 * traffic only when "loopback" is not bypassed; with ports or destinations,
 * only the flows they name (outbound: the destination; inbound: the
 * listener) and the app port's; and the flows already redirected, until
 * they end. Everything else never waits on the library.
 *
 * Loopback (127.0.0.0/8, ::1) is bypassed by default. With a "bypass" list
 * without "loopback", an intercepted process's TCP and UDP connections to
 * local services are redirected too, with the same origin as any other.
 * WinDivert sees loopback packets only as outbound, and a packet injected
 * inbound on the loopback interface is never delivered, so the library
 * re-injects rewritten loopback packets outbound, both ways. A local client
 * of an intercepted process's listener is therefore not an inbound
 * connection on Windows: it is only the client's outbound flow.
 *
 * Returns 0 on success, -1 if json is NULL, -2 if it is not JSON or a field
 * has a wrong type or value (redirector_last_error() names the field), -3 if
 * it is not valid UTF-8. -2 also covers a configuration that could not be
 * applied: the engine failed during the call and was rebuilt, or memory ran
 * out; redirector_last_error_code() tells the three apart (REDIRECTOR_ECONFIG,
 * REDIRECTOR_EENGINE, REDIRECTOR_ENOMEM). After any failure the previous
 * configuration stays in force.
 */
WINDOWS_REDIRECTOR_API int32_t set_redirector_config(const char *json);

/* Returns 1 while the redirector is running, else 0. */
WINDOWS_REDIRECTOR_API int32_t get_redirector_status(void);

/*
 * Sets the application port: the local port where the calling program's
 * proxy listens. Redirected connections (outbound ones of intercepted
 * processes, and inbound ones to their listening sockets) arrive there.
 * Connections already redirected keep their port. 0 unsets it;
 * start_redirector() fails while it is unset. While running, the capture is
 * set up for the new port before it is used (Windows: the NETWORK filter
 * diverts it when this returns); if that cannot be done (Linux: iptables
 * failed, or more than 16 ports in one run; Windows: a new WinDivert handle
 * could not be opened), the port in force stays and redirector_last_error()
 * says why (code REDIRECTOR_EINIT).
 */
WINDOWS_REDIRECTOR_API void update_app_port(uint16_t port);

/*
 * update_app_port with a result: 0, or REDIRECTOR_EINIT when the redirector
 * runs and the capture could not be set up for the new port (the port in
 * force stays; redirector_last_error says why), or when the library could
 * not set up its engine to keep the port in (out of memory).
 */
WINDOWS_REDIRECTOR_API int32_t redirector_set_app_port(uint16_t port);

/* ------------------------------------------------------------------------
 * Original destinations, events, statistics
 *
 * Structs passed to the library start with a `size` field: set it to
 * sizeof(the struct) before the call. Later versions only add fields at the
 * end, so a caller built against this header keeps working.
 */

#define REDIRECTOR_TCP 6
#define REDIRECTOR_UDP 17
#define REDIRECTOR_OUTBOUND 0 /* a connection an intercepted process opened */
#define REDIRECTOR_INBOUND 1  /* a connection to an intercepted process's listener */

typedef struct redirector_endpoint {
  uint8_t family;   /* 4 or 6 */
  uint8_t reserved;
  uint16_t port;    /* host byte order */
  uint8_t addr[16]; /* network byte order; IPv4 in addr[0..3] */
} redirector_endpoint;

typedef struct redirector_origin {
  uint32_t size;      /* in: sizeof(redirector_origin) */
  uint32_t protocol;  /* REDIRECTOR_TCP or REDIRECTOR_UDP */
  uint32_t direction; /* REDIRECTOR_OUTBOUND or REDIRECTOR_INBOUND */
  uint32_t pid;       /* the intercepted process */
  redirector_endpoint destination; /* where the connection was going (inbound:
                                      the listener's own address and port) */
  redirector_endpoint client;      /* who opened it (outbound: the
                                      intercepted process's end) */
  redirector_endpoint peer;        /* what the proxy sees as its peer */
  uint16_t app_port;  /* the app port the connection was sent to */
  uint16_t reserved;
  uint32_t flow_id;   /* unique per connection while the library runs */
  uint64_t bytes_up;  /* payload bytes client -> destination so far */
  uint64_t bytes_down;
  char process_path[1024]; /* the executable, UTF-8, NUL-terminated ("" when
                              unknown; cut at 1023 bytes) */
} redirector_origin;

/*
 * Where was a connection going? For a TCP connection the proxy accepted on
 * the app port (or a UDP datagram it received there): `peer` is the remote
 * address the proxy sees (getpeername / recvfrom), `local` the proxy's own
 * address (getsockname; an all-zero address means any). IPv4-mapped IPv6
 * addresses from dual-stack sockets are understood.
 *
 * Returns 0 and fills *out; REDIRECTOR_ENOTFOUND when no redirected
 * connection matches (not redirected, or already closed);
 * REDIRECTOR_ENOTRUNNING; REDIRECTOR_ENULL; REDIRECTOR_EINVAL (bad protocol,
 * family or out->size); REDIRECTOR_EENGINE (the engine failed during the
 * call and was rebuilt: what it knew of connections is gone). Thread-safe;
 * fast enough to call per connection.
 */
WINDOWS_REDIRECTOR_API int32_t redirector_lookup(int32_t protocol, const redirector_endpoint *peer,
                                                 const redirector_endpoint *local, redirector_origin *out);

#define REDIRECTOR_EVENT_OPENED 1 /* a connection was redirected */
#define REDIRECTOR_EVENT_CLOSED 2 /* a redirected connection ended (closed or idle) */

typedef struct redirector_event {
  uint32_t size;     /* in: sizeof(redirector_event) */
  uint32_t type;     /* REDIRECTOR_EVENT_* */
  uint64_t time_ms;  /* when, on the library's monotonic clock */
  redirector_origin origin; /* origin.size is ignored; bytes are final for CLOSED */
} redirector_event;

/*
 * Takes the oldest event, waiting up to timeout_ms for one (0: do not wait).
 * A waiting call sleeps and is woken as soon as an event comes or
 * stop_redirector is called. Any number of threads may wait; each event goes
 * to one of them.
 * Events are kept in a bounded queue (4096); when it is full new ones are
 * dropped and counted in redirector_stats.events_lost.
 *
 * Returns 0; REDIRECTOR_ENOEVENT when none came in time (not a failure: the
 * last error is left as it was);
 * REDIRECTOR_ENOTRUNNING (also when stop_redirector ends the wait; if the
 * redirector is started again before the woken call looks, it waits on);
 * REDIRECTOR_ENULL; REDIRECTOR_EINVAL (ev->size).
 */
WINDOWS_REDIRECTOR_API int32_t redirector_next_event(redirector_event *ev, uint32_t timeout_ms);

/*
 * Waits up to timeout_ms until an event is waiting to be taken, without
 * taking it (a reader that wants to know an event came before it takes one),
 * and never changes the last error. Sleeps until woken, like
 * redirector_next_event.
 *
 * Returns 1 when an event is waiting (another thread may take it first), 0
 * when none came in time, REDIRECTOR_ENOTRUNNING when the redirector is not
 * running (also when stop_redirector ends the wait, unless it was started
 * again before the woken call looked).
 */
WINDOWS_REDIRECTOR_API int32_t redirector_wait_event(uint32_t timeout_ms);

typedef struct redirector_stats {
  uint32_t size;    /* in: sizeof(redirector_stats) */
  uint32_t running; /* 1 while running */
  uint64_t packets;          /* packets seen */
  uint64_t rewritten;        /* packets rewritten (redirected; ICMP errors about them translated) */
  uint64_t passed;           /* packets passed unchanged */
  uint64_t held;             /* packets held while their owner was unknown */
  uint64_t dropped;          /* packets dropped over the hold limits */
  uint64_t malformed;        /* truncated or malformed (passed unchanged) */
  uint64_t fragments;        /* IP fragments (passed unchanged) */
  uint64_t flows_active;     /* flow table entries in use */
  uint64_t flows_redirected; /* connections redirected */
  uint64_t flows_passed;     /* connections decided not to intercept */
  uint64_t flows_expired;    /* entries removed (closed or idle) */
  uint64_t table_full;       /* new connections passed: the table was full */
  uint64_t evictions;        /* unestablished entries evicted for new ones */
  uint64_t hold_timeouts;    /* owners never found in time (passed) */
  uint64_t owner_facts;      /* socket owner facts received */
  uint64_t owner_queries;    /* socket owner look-ups made */
  uint64_t events_lost;      /* events dropped: the queue was full */
  uint64_t nat_conflicts;    /* connections passed: no proxy-side port free */
  uint64_t bypassed;         /* packets of bypassed classes (loopback, ...) */
  uint64_t lookups;          /* redirector_lookup answers */
  uint64_t lookup_misses;    /* redirector_lookup misses */
  uint64_t engine_restarts;  /* engine failures survived (since load) */
  uint64_t flow_capacity;    /* flow table size */
  uint64_t bytes_per_flow;   /* memory per flow table entry */
  /* Redirected TCP connections the proxy did not take, counted once each at
   * most, in one of the two (redirector_diagnostics names the likely causes
   * when either is not zero): */
  uint64_t redirected_syn_unanswered; /* its SYN got no answer from the app
                                         port within 1 s (dropped on the way:
                                         a firewall, another filter) */
  uint64_t redirected_syn_refused;    /* answered with a RST within 1 s:
                                         nothing listens there for it */
} redirector_stats;

/*
 * Counters of the running redirector (after stop: of the last run). Returns
 * 0, REDIRECTOR_ENULL or REDIRECTOR_EINVAL (out->size). Thread-safe.
 */
WINDOWS_REDIRECTOR_API int32_t redirector_get_stats(redirector_stats *out);

/* ------------------------------------------------------------------------
 * Policy
 */

/*
 * Would a process be intercepted under the configuration in force? Answers
 * for any process, running or not, whether or not the redirector runs.
 * process_path is the executable's full path (UTF-8), or NULL when unknown
 * (then only PID entries can match). No ancestry is known here: a process is
 * in the process trees ("tree:") it is the root of only.
 *
 * Returns 1 (yes), 0 (no; always for the calling process, PID 0 and, on
 * Windows, PID 4),
 * REDIRECTOR_EUTF8, REDIRECTOR_EINVAL (path longer than 64 MiB),
 * REDIRECTOR_EINIT or REDIRECTOR_EENGINE.
 */
WINDOWS_REDIRECTOR_API int32_t redirector_would_intercept(uint32_t pid, const char *process_path);

/* ------------------------------------------------------------------------
 * Errors and version
 */

/*
 * Copies the text of the calling thread's most recent failure (see
 * Conventions at the top) into buf (at most len - 1 bytes and a NUL; cut at
 * a UTF-8 character boundary). buf may be NULL when len is 0. Returns the
 * length of the whole text in bytes, without the NUL (0 when this thread has
 * not failed yet), like snprintf: a return >= len means it was cut.
 */
WINDOWS_REDIRECTOR_API int32_t redirector_last_error(char *buf, size_t len);

/* The REDIRECTOR_E* code of the calling thread's most recent failure, or
 * REDIRECTOR_OK when it has not failed yet. */
WINDOWS_REDIRECTOR_API int32_t redirector_last_error_code(void);

/* A static description of a REDIRECTOR_E* code ("unknown error code" for
 * others). The pointer stays valid forever; do not free it. */
WINDOWS_REDIRECTOR_API const char *redirector_strerror(int32_t code);

/* The library version, e.g. "0.1.0". Static; do not free. */
WINDOWS_REDIRECTOR_API const char *redirector_version(void);

/* ------------------------------------------------------------------------
 * Windows
 */

/*
 * Sets the directory holding WinDivert.dll and WinDivert64.sys, used from the
 * next start_redirector(). NULL or "" restores the default search: the folder
 * of windows_redirector.dll itself, then the application's folder, then
 * System32 (the first that has WinDivert.dll). WinDivert.dll is loaded by its
 * absolute path, its own dependencies from its folder and System32 only. On
 * Linux the value is kept but not used.
 *
 * Returns 0, REDIRECTOR_EUTF8 if dir is not UTF-8, REDIRECTOR_EINVAL if it is
 * longer than 32767 bytes, REDIRECTOR_ENOMEM if it could not be copied (the
 * folder in use stays).
 */
WINDOWS_REDIRECTOR_API int32_t redirector_set_windivert_path(const char *dir);

/*
 * One line about the running capture set-up, for people reading logs: on
 * Windows first "warning at start: ..." when start_redirector found the app
 * port not listened on as redirects need, then the WinDivert.dll used, the
 * other WinDivert handles found at start ("other WinDivert handles: N (pids
 * ...)", a common cause of odd traffic), priorities, filters (the NETWORK
 * one built from the configuration, and how often it changed), where the
 * app port is listened on now, for the protocols the configuration
 * intercepts, and what is wrong with it ("app port P: TCP on 0.0.0.0 and
 * [::]; UDP not listening ..."), and error counts; on Linux the queue and
 * rules. On both, when redirector_stats.redirected_syn_unanswered or
 * redirected_syn_refused is not zero, that counter by name, its value and
 * the likely causes ("redirected_syn_unanswered N: ... Likely: ...").
 *
 * On Windows a redirected connection reaches the proxy as inbound traffic
 * from a remote address, addressed to the client's own address: the proxy
 * must listen on the wildcard address of each family it serves (0.0.0.0 and
 * [::], or a dual-stack [::]), and Windows Defender Firewall must allow
 * inbound connections to the app port, e.g. (PowerShell, as administrator;
 * once more with -Protocol UDP when UDP is intercepted):
 *   New-NetFirewallRule -DisplayName "windows-redirector app port"
 *     -Direction Inbound -Action Allow -Protocol TCP -LocalPort 8080
 * Without that rule the firewall drops redirected SYNs silently
 * (redirected_syn_unanswered). On Linux the proxy must listen on the
 * client's address too (the wildcard address of each family does).
 * Copies like redirector_last_error (buf may be NULL when len is 0) and
 * returns the text's whole length, or REDIRECTOR_ENOTRUNNING.
 */
WINDOWS_REDIRECTOR_API int32_t redirector_diagnostics(char *buf, size_t len);

/*
 * Excludes a socket of yours (a file descriptor on Linux, a SOCKET on
 * Windows) from the capture's work: call it on your proxy's upstream sockets
 * before connect(). Optional — the calling process's connections are never
 * intercepted anyway — but it spares each of them the owner look-up.
 *
 * Linux: sets SO_MARK bit 0x10000000 (needs CAP_NET_ADMIN), so the socket's
 * packets never reach the queue. Works whether or not the redirector runs.
 *
 * Windows: the capture sees every process's packets, this one's too; the
 * socket's packets (from its local address and port, and to them) pass at
 * once instead of being held until their owner is known. A socket that is
 * not bound yet is bound first, to the wildcard address of its family
 * (0.0.0.0 or [::]) with port 0, so its port is known before it connects:
 * do not bind it yourself afterwards (Go, which binds its TCP sockets after
 * its Control hook, cannot use this; its Dialer() does not). An IPv6 socket
 * on [::] with IPV6_V6ONLY off covers its IPv4 packets too. The exclusion
 * holds while the redirector runs, until the library sees the socket may be
 * gone (a WinDivert CLOSE event for its port, or another process using the
 * port); a socket excluded while the redirector is stopped is bound but not
 * remembered, and a stop, or an engine failure, forgets every exclusion. At
 * most max_flows sockets at once.
 *
 * Returns 0, or REDIRECTOR_EINVAL (not a socket, not TCP or UDP, not allowed
 * to mark it, could not be bound; the last error says which), or on Windows
 * REDIRECTOR_ENOMEM (max_flows sockets are excluded already: this one is not,
 * though it stays bound) or REDIRECTOR_EENGINE (the engine failed: not
 * excluded).
 */
WINDOWS_REDIRECTOR_API int32_t redirector_exclude_socket(intptr_t socket);

/* ------------------------------------------------------------------------
 * Linux
 */

/*
 * The NFQUEUE queue number used from the next start_redirector() (default
 * 7870). Two programs using the library at once need different numbers. The
 * library's iptables chains are named after it (wredir<N>-*) and removed on
 * stop, or at the next start after a crash. On Windows the value is kept but
 * not used. Returns 0.
 */
WINDOWS_REDIRECTOR_API int32_t redirector_set_nfqueue_num(uint16_t queue);

/* ------------------------------------------------------------------------
 * Testing
 */

#define REDIRECTOR_FAULT_CONFIG 1  /* the next configuration call */
#define REDIRECTOR_FAULT_PACKETS 2 /* the next packet batch (while running) */
#define REDIRECTOR_FAULT_MEMORY 4  /* the next copy of a caller's text */

/*
 * A test hook: makes the engine fail deliberately (a Wasm trap) inside the
 * next call of the selected kind, so a program can check that it recovers:
 * the call fails with its documented error code, the engine is rebuilt with
 * the configuration in force, and the library keeps working.
 *
 * For packets: the batch passes unchanged (fail open), packets held for an
 * unknown owner are released unchanged, and stats.engine_restarts counts it.
 *
 * REDIRECTOR_FAULT_MEMORY is not a trap: the next copy the library makes of
 * a text it keeps (set_redirector_config, redirector_set_windivert_path) fails
 * as if memory had run out, and that call reports it (REDIRECTOR_ENOMEM).
 *
 * Returns 0, or REDIRECTOR_EINVAL for an unknown selector.
 */
WINDOWS_REDIRECTOR_API int32_t redirector_debug_inject_fault(int32_t which);

#ifdef __cplusplus
}
#endif

#endif /* WINDOWS_REDIRECTOR_H */
