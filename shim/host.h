/* The engine host: one wasm2c instance of the AssemblyScript engine, entered
 * only through these functions. Each holds the process-wide engine lock (the
 * wasm2c runtime keeps its trap jump buffer and stack-depth counter in
 * globals, so only one call may run at a time) and runs the call inside a
 * trap guard. A trap never escapes: the call reports WR_ENGINE_TRAPPED, the
 * reason goes to the error text, and the instance is rebuilt with the last
 * accepted configuration and app port before the next call. */
#ifndef WR_ENGINE_H
#define WR_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define WR_ENGINE_TRAPPED (-1000)
#define WR_ENGINE_NOMEM (-1001) /* out of memory; the call had no effect */

/* A NUL-terminated copy of text[0..len) for the library to keep (free()),
 * or NULL when memory runs out, or once after wr_copy_text_fail_next (the
 * REDIRECTOR_FAULT_MEMORY test hook). */
char *wr_copy_text(const char *text, size_t len);
void wr_copy_text_fail_next(void);

typedef struct wr_engine wr_engine;

/* The flags, verdicts, out-flags and owner kinds below carry the values of
 * build/contract.ts (host.c checks them at compile time). */

/* Packet metadata flags (in) */
#define WR_PKT_OUTBOUND 1u
#define WR_PKT_LOOPBACK 2u
#define WR_PKT_CSUM_PARTIAL 4u /* the transport checksum is not ready (offload) */

/* Verdicts */
#define WR_V_PASS 0u     /* send the original packet on */
#define WR_V_MODIFIED 1u /* send the rewritten bytes */
#define WR_V_DROP 2u
#define WR_V_HELD 3u /* kept by the engine; its final verdict comes later */
/* Protocols (wr_engine_protocols bits) */
#define WR_PROTOS_TCP 1u
#define WR_PROTOS_UDP 2u
/* Out-flags */
#define WR_OUT_OUTBOUND 1u   /* inject as outbound (else inbound) */
#define WR_OUT_CSUM_VALID 2u /* IP and transport checksums are correct */

typedef struct {
  uint64_t cookie; /* the backend's handle for the packet */
  const uint8_t *data;
  uint32_t len;
  uint32_t flags; /* WR_PKT_* */
  uint32_t if_idx;
  uint32_t sub_if_idx;
} wr_packet;

/* A decided packet. `data`/`len` are the bytes to send for WR_V_MODIFIED (in
 * engine memory, valid only during the call); for WR_V_PASS the original
 * bytes. Called with the engine lock held: it must not call the engine. */
typedef void (*wr_verdict_fn)(void *ctx, const wr_packet *pkt, uint32_t verdict, uint32_t out_flags);

/* Owner facts (kinds as owner_kind in build/contract.ts). Addresses in network order,
 * IPv4 in the first 4 bytes; ports in host order. */
#define WR_OWNER_CONNECT 1
#define WR_OWNER_ACCEPT 2
#define WR_OWNER_BIND 3
#define WR_OWNER_LISTEN 4
#define WR_OWNER_CLOSE 5
#define WR_OWNER_UNKNOWN 6

/* One process of an ancestry: the process itself first, then its parent as
 * it was when the process was created, and so on, as far as the backend sees
 * (build/contract.ts, the ancestor record). The engine decides process-tree
 * membership from it (as/lineage.ts). */
typedef struct {
  uint32_t pid;
  uint64_t ctime;  /* creation time in the OS's units: with pid, the identity */
  uint64_t age_ms; /* how long ago it was created; UINT64_MAX: not known */
  const char *path; /* UTF-8, may be NULL */
  size_t path_len;
} wr_ancestor;

/* The most ancestors the engine reads (WR_ANCESTRY_MAX of the contract). */
#define WR_ANCESTRY_CAP 32

typedef struct {
  uint8_t kind;
  uint8_t proto;  /* 6 or 17 */
  uint8_t family; /* 4 or 6 */
  uint8_t local[16];
  uint8_t remote[16];
  uint16_t local_port;
  uint16_t remote_port;
  uint32_t pid;
  const char *path; /* UTF-8, may be NULL */
  size_t path_len;
  const wr_ancestor *ancestry; /* the owner itself first; NULL: none known */
  size_t n_ancestry;
} wr_owner_fact;

/* A pending flow whose owner the backend should find. */
typedef struct {
  uint8_t proto;
  uint8_t family;
  uint8_t inbound; /* 1: local is a listener's end */
  uint8_t local[16];
  uint8_t remote[16];
  uint16_t local_port;
  uint16_t remote_port;
} wr_query;

/* An excluded socket's local end (redirector_exclude_socket on Windows):
 * the engine passes its packets, both ways, at once. */
typedef struct {
  uint8_t proto;      /* 6 or 17 */
  uint8_t family;     /* 4 or 6 */
  uint8_t dual_stack; /* 1: an IPv6 socket on [::] that carries IPv4 too */
  uint8_t local[16];  /* network order, IPv4 in the first 4 bytes; all zero: any */
  uint16_t local_port;
} wr_exclusion;

/* The answer to a lookup, or an event, as the engine writes it. */
typedef struct {
  uint32_t type; /* 0 lookup, 1 opened, 2 closed */
  uint32_t proto;
  uint32_t family;
  uint32_t inbound;
  uint32_t pid;
  uint32_t flow_id;
  uint8_t dst[16];
  uint16_t dst_port;
  uint8_t client[16];
  uint16_t client_port;
  uint8_t peer[16];
  uint16_t peer_port;
  uint16_t app_port;
  uint64_t bytes_up;
  uint64_t bytes_down;
  uint32_t time_ms;
  char path[1024]; /* NUL-terminated, cut at a UTF-8 boundary */
} wr_origin;

#define WR_STATS_MAX 32

/* Builds an instance. Returns NULL on failure with the reason in err. */
wr_engine *wr_engine_new(uint32_t self_pid, char *err, size_t errlen);
void wr_engine_free(wr_engine *e);

/* The OS's never-intercept PIDs (wr_backend_never_intercept), kept for
 * rebuilds. 0, or -1 when there are more than the engine takes (8). */
int wr_engine_never_intercept(wr_engine *e, const uint32_t *pids, size_t n);

/* The most owner queries one wr_engine_queries call returns (the engine's
 * own limit): the size of the caller's buffer. */
size_t wr_engine_query_max(wr_engine *e);

/* Throws the instance away (flows, events, counters) and builds a fresh
 * one, not started, with the configuration and app port in force: what a
 * stop leaves for the next start. The trap count stays. */
void wr_engine_reset(wr_engine *e);

/* Applies configuration text. 0, -2, -3 (engine codes, reason in err),
 * WR_ENGINE_NOMEM or WR_ENGINE_TRAPPED. On success the text is kept for rebuilds: the host is
 * the one place the configuration in force is kept. */
int wr_engine_config(wr_engine *e, const char *json, size_t len, char *err, size_t errlen);

/* The app port (0: none), kept by the host for rebuilds like the
 * configuration: the one place the shim keeps it. */
void wr_engine_set_app_port(wr_engine *e, uint16_t port);
uint16_t wr_engine_app_port(wr_engine *e);

/* Arms a deliberate trap in the engine (eng_arm_fault bits). */
void wr_engine_arm_fault(wr_engine *e, uint32_t bits);

/* 1 if a process would be intercepted under the configuration in force, 0 if
 * not, -1 if the path is too long, or WR_ENGINE_TRAPPED. */
int wr_engine_would_intercept(wr_engine *e, uint32_t pid, const char *path, size_t len);

/* The same for a process with its ancestry (chain[0] the process itself): 1,
 * 0, -1 (no room), or WR_ENGINE_TRAPPED. The engine remembers the process-tree
 * membership it decides, by identity. */
int wr_engine_would_intercept_tree(wr_engine *e, const wr_ancestor *chain, size_t n, uint32_t now);

/* How many process trees the configuration in force names (0 when the engine traps). */
uint32_t wr_engine_tree_count(wr_engine *e);

/* The protocols the configuration in force intercepts (WR_PROTOS_* bits;
 * both when the engine traps). */
uint32_t wr_engine_protocols(wr_engine *e);

/* Sizes the tables from the configuration in force and starts the packet
 * path. 0, or WR_ENGINE_TRAPPED. */
int wr_engine_start(wr_engine *e, uint32_t now, char *err, size_t errlen);

/* Decides packets (any number; batched inside). Every packet gets exactly
 * one callback: its verdict, or WR_V_HELD and later its final verdict from a
 * call that releases (process, owner, tick). Packets released meanwhile are
 * reported too. On a trap the engine is rebuilt and WR_ENGINE_TRAPPED is
 * returned; the packets not yet reported get no callback, and held packets
 * are lost: the caller fails them all open (capture/core.c). */
int wr_engine_process(wr_engine *e, const wr_packet *pkts, size_t n, uint32_t now, wr_verdict_fn cb, void *ctx);

/* A fact of `kind` about a query's flow: its protocol, family, ends and
 * ports, no owner yet (pid 0, no path). */
void wr_fact_for_query(wr_owner_fact *f, const wr_query *q, uint8_t kind);

/* Applies an owner fact; released packets go to cb. */
int wr_engine_owner(wr_engine *e, const wr_owner_fact *fact, uint32_t now, wr_verdict_fn cb, void *ctx);

/* Adds an excluded socket's end while the engine runs; it lasts until an
 * owner fact may mean the socket is gone (a CLOSE on its port, any fact of
 * another process on the port), a stop or a trap. 0, -1 the table
 * is full, -2 refused (not started, malformed), or WR_ENGINE_TRAPPED; the
 * reason goes to err. */
int wr_engine_exclude(wr_engine *e, const wr_exclusion *x, char *err, size_t errlen);

/* Hold timeouts and expiry; released packets go to cb. */
int wr_engine_tick(wr_engine *e, uint32_t now, wr_verdict_fn cb, void *ctx);

/* Up to max pending flows to find owners for. Returns how many. */
size_t wr_engine_queries(wr_engine *e, wr_query *out, size_t max);

/* Lookup by what the proxy sees: protocol, its peer, its local end, each
 * with its own family (4: the address in the first 4 bytes; 6: IPv4-mapped
 * allowed, as a dual-stack socket gives them; an all-zero local address
 * matches any). The engine makes one question of them. 1 found, 0 not, or
 * WR_ENGINE_TRAPPED. */
int wr_engine_lookup(wr_engine *e, uint32_t proto, uint32_t peer_family, const uint8_t peer[16], uint16_t peer_port,
                     uint32_t local_family, const uint8_t local[16], uint16_t local_port, wr_origin *out);

/* The oldest event: 1 when one was taken, 0 none, or WR_ENGINE_TRAPPED. */
int wr_engine_next_event(wr_engine *e, wr_origin *out);
/* How many events wait to be taken, or WR_ENGINE_TRAPPED. */
int wr_engine_events_waiting(wr_engine *e);
/* Waiting for events: take a mark, look with wr_engine_next_event, and if
 * there was none, wr_engine_wait_events(mark, ms) returns as soon as any
 * engine has a new event (or wr_engine_wake_readers was called), or after
 * ms. No wake-up between the mark and the wait is missed. */
uint64_t wr_engine_events_mark(void);
void wr_engine_wait_events(uint64_t mark, uint32_t timeout_ms);
void wr_engine_wake_readers(void);

/* Copies up to max counters; returns how many the engine has. */
size_t wr_engine_stats(wr_engine *e, uint64_t *out, size_t max);
/* One counter by its index (WR_STAT_* in contract.h); 0 when there is none. */
uint64_t wr_engine_stat(wr_engine *e, uint32_t index);

/* Flow table capacity and bytes of memory per flow (after start). */
void wr_engine_table(wr_engine *e, uint32_t *capacity, uint32_t *bytes_per_flow);

/* Bumped by every accepted configuration. Takes no lock: a capture loop
 * may look as often as it likes. */
uint32_t wr_engine_config_generation(wr_engine *e);

/* The capture scope (scope in build/contract.ts; as/scope.ts says what each
 * part means): which packets a backend must capture for the configuration
 * in force, the app port and the flows alive. Flags: */
#define WR_SCOPE_TCP 1u
#define WR_SCOPE_UDP 2u
#define WR_SCOPE_LOOPBACK 4u /* loopback traffic too */
#define WR_SCOPE_ALL 8u      /* every packet of those protocols: nothing narrower holds */
#define WR_SCOPE_REMOTE 16u  /* the remote side's lists apply (outbound interception) */
#define WR_SCOPE_REMOTE_ANY_PORT 32u
#define WR_SCOPE_REMOTE_ANY_NET 64u
#define WR_SCOPE_LOCAL 128u  /* the local side's lists apply (inbound interception) */
#define WR_SCOPE_LOCAL_ANY_PORT 256u
#define WR_SCOPE_LOCAL_ANY_NET 512u
/* The lists' sizes (the contract's scope_*_max; host.c checks them). */
#define WR_SCOPE_PORTS_CAP 128
#define WR_SCOPE_NETS_CAP 64
#define WR_SCOPE_APP_PORTS_CAP 8

typedef struct {
  uint16_t lo, hi; /* both included */
} wr_port_range;

typedef struct {
  uint8_t family; /* 4 or 6 */
  uint8_t prefix;
  uint8_t addr[16]; /* network order, IPv4 in the first 4 bytes; host bits zero */
} wr_net;

/* One end of a flow: a packet whose end (the remote one, or the local one)
 * has a port of the list and an address in a network of the other list
 * (unless a flag says any) is captured, whichever way it goes. */
typedef struct {
  size_t n_ports;
  wr_port_range ports[WR_SCOPE_PORTS_CAP];
  size_t n_nets;
  wr_net nets[WR_SCOPE_NETS_CAP];
} wr_scope_side;

/* What to capture: packets of the protocols (and loopback ones only with
 * WR_SCOPE_LOOPBACK) that WR_SCOPE_ALL, a side or an app port (a packet
 * whose local port is one) matches. Nothing matches: capture nothing. */
typedef struct {
  uint32_t flags; /* WR_SCOPE_* */
  size_t n_app_ports;
  uint16_t app_ports[WR_SCOPE_APP_PORTS_CAP];
  wr_scope_side remote, local;
} wr_capture_scope;

/* The capture scope now. 0; or -1 (the engine's answer did not hold
 * together) or WR_ENGINE_TRAPPED: then *out says capture everything
 * (WR_SCOPE_ALL, both protocols, loopback). */
int wr_engine_capture_scope(wr_engine *e, wr_capture_scope *out);

/* Moves on whenever the capture scope may have changed: a configuration, an
 * app port, a start, a rebuild, or the end of a flow that kept the scope
 * wider (noticed at the next tick). Takes no lock. */
uint32_t wr_engine_scope_generation(wr_engine *e);

/* How many times this engine trapped and was rebuilt. */
uint32_t wr_engine_trap_count(wr_engine *e);

#endif
