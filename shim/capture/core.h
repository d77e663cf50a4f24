/* The capture core: what every capture backend needs between its I/O and
 * the engine host, written once. capture/nfqueue/backend.c and capture/windivert/backend.c
 * do only their I/O and OS look-ups and reach the engine through this.
 *
 * The core owns
 *   - cookies: every packet handed to the engine gets one (a counter);
 *   - held-packet bookkeeping: for each packet the engine holds, the
 *     backend's metadata for it (a WinDivert address, an NFQUEUE packet ID)
 *     and, if the backend asks, a copy of its bytes, by cookie;
 *   - fail-open: when the engine traps (and loses what it held) or the
 *     capture stops, every held packet is sent on unchanged; after a trap
 *     they go first, then the packets the trapped call left undecided
 *     (newer), unchanged too;
 *   - ordered sends: one lock (the core's) around each engine call and the
 *     sends of its verdicts, so packets leave in the order the engine
 *     decided them whichever thread called. It is not the engine host's
 *     lock: the flush (a system call) happens outside that one, so the
 *     proxy's lookups never wait behind it;
 *   - the tick and owner-query loop: hold timeouts and expiry every
 *     WR_CAPTURE_TICK_MS, pending flows' owners asked of the backend, and
 *     configuration and capture scope changes passed on to it.
 *
 * Threads: wr_capture_process, wr_capture_fact and wr_capture_fail_open
 * may be called from any thread (the core's lock serialises them with their
 * sends); wr_capture_poll from one thread at a time (the backend's loop, or
 * the core's timer thread). send and flush run with the core's lock held
 * (send mostly inside an engine call): they must not call the core or the
 * engine. find_owner,
 * policy_changed and scope_changed run on the polling thread with no lock
 * held: they may ask the engine (wr_engine_would_intercept,
 * wr_engine_capture_scope), and may take their time. */
#ifndef WR_CAPTURE_H
#define WR_CAPTURE_H

#include <stddef.h>
#include <stdint.h>

#include "host.h"

#define WR_CAPTURE_TICK_MS 100u
/* The largest per-packet metadata a backend may keep with a packet. */
#define WR_CAPTURE_META_MAX 80u

typedef struct wr_capture wr_capture;

/* A backend's side of the core. `io` is the backend's own pointer. */
typedef struct {
  /* Bytes of metadata per packet (<= WR_CAPTURE_META_MAX). */
  size_t meta_size;
  /* Keep a copy of each held packet's bytes, for fail-open (a backend that
   * re-injects packets; one whose OS keeps the packet until its verdict
   * does not need it). */
  int keep_held_bytes;
  /* Queues a decided packet. verdict: WR_V_PASS (data/len: the original),
   * WR_V_MODIFIED (the rewritten bytes, out_flags WR_OUT_*) or WR_V_DROP.
   * meta: what the backend gave with the packet, or NULL when the core has
   * none (cannot happen; the backend should rebuild what it can from pkt).
   * data may be NULL for a fail-open PASS when no bytes were kept. */
  void (*send)(void *io, const void *meta, const wr_packet *pkt, uint32_t verdict, uint32_t out_flags);
  /* Sends what send queued. */
  void (*flush)(void *io);
  /* The owner of a pending flow: 1 with *f filled (path, if any, in
   * path[0..cap)) to give the engine, or 0 for no answer now. */
  int (*find_owner)(void *io, const wr_query *q, wr_owner_fact *f, char *path, size_t cap);
  /* The configuration in force changed (may be NULL). */
  void (*policy_changed)(void *io);
  /* The capture scope may have changed (wr_engine_capture_scope says what
   * to capture now): a configuration, an app port, or the end of a flow
   * that kept it wider (may be NULL). */
  void (*scope_changed)(void *io);
} wr_capture_io;

/* A core for one running capture. NULL when out of memory. */
wr_capture *wr_capture_new(wr_engine *engine, const wr_capture_io *ops, void *io);

/* Fails open whatever is still held (wr_capture_fail_open) and frees. The
 * backend's threads that call the core must have ended. */
void wr_capture_free(wr_capture *c);

/* For the diagnostics text: "; redirected_syn_unanswered N: ... Likely: "
 * unanswered_causes, and the same for redirected_syn_refused with
 * refused_causes, for the engine's counters that are not zero ("" when
 * both are). The backend names the causes in its OS's terms. */
void wr_capture_syn_report(wr_capture *c, const char *unanswered_causes, const char *refused_causes, char *out,
                           size_t cap);

/* Decides a batch: pkts[i] (cookie set here) with metas[i * meta_size]
 * (both stay the caller's, valid during the call); every packet gets its
 * verdict sent, or is held. Then flushes. */
void wr_capture_process(wr_capture *c, wr_packet *pkts, const void *metas, size_t n);

/* Gives the engine an owner fact (a socket event); released packets are
 * sent. */
void wr_capture_fact(wr_capture *c, const wr_owner_fact *f);

/* The loop's work, for a backend that runs its own loop: the tick when one
 * is due, the owner queries, a configuration or capture scope change. Returns the
 * milliseconds until the next tick is due. */
uint32_t wr_capture_poll(wr_capture *c);

/* The same loop on a thread of the core's (for a backend whose receives
 * block): every WR_CAPTURE_TICK_MS until wr_capture_stop_timer. 0, or an OS
 * error number. */
int wr_capture_start_timer(wr_capture *c);
void wr_capture_stop_timer(wr_capture *c);

/* Sends every held packet on unchanged and forgets it. */
void wr_capture_fail_open(wr_capture *c);

/* Packets held now; engine traps seen. */
size_t wr_capture_held(wr_capture *c);
uint64_t wr_capture_traps(wr_capture *c);

#endif
