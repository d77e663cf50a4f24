/* A capture backend: owns the capture handle and the packet thread, feeds
 * packets to the engine and applies its verdicts. One per running
 * redirector. capture/nfqueue/ (Linux), capture/windivert/ (Windows). */
#ifndef WR_BACKEND_H
#define WR_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "host.h"

typedef struct wr_backend wr_backend;

typedef struct {
  wr_engine *engine;
  /* Directory of WinDivert.dll/WinDivert64.sys, or NULL for the default
   * search (Windows only). UTF-8. */
  const char *windivert_dir;
  /* The app port at start (more may follow with wr_backend_set_app_port). */
  uint16_t app_port;
  /* NFQUEUE queue number (Linux only). */
  uint16_t nfqueue_num;
} wr_backend_options;

/* Opens the capture backend and starts its thread. Returns NULL with the
 * reason in err when it cannot; nothing is left open then. */
wr_backend *wr_backend_start(const wr_backend_options *opts, char *err, size_t errlen);

/* Stops the thread, closes everything, frees the backend. */
void wr_backend_stop(wr_backend *b);

/* The app port changed while running. 0, or -1 with the reason in err. */
int wr_backend_set_app_port(wr_backend *b, uint16_t port, char *err, size_t errlen);

/* The configuration in force changed while running: the capture follows it
 * before this returns, so a connection made once set_redirector_config has
 * returned is captured as the configuration says (Windows: the NETWORK
 * filter for the new capture scope is open now, not at the timer's next
 * tick; Linux: nothing to do, the rules queue every new connection). 0, or
 * -1 with the reason in err (the capture stays as it was and the timer
 * tries again). */
int wr_backend_config_changed(wr_backend *b, char *err, size_t errlen);

/* The PIDs this OS runs that are never a user's process, so never
 * intercepted whatever the configuration (Windows: 4, the System process;
 * Linux: none). Fixed data, usable without a running backend: the engine
 * host is given them when it is built. Returns how many, *pids points at
 * them. */
size_t wr_backend_never_intercept(const uint32_t **pids);

/* Excludes a socket of the calling process, so its packets need no owner
 * look-up (an optimisation: the process's own connections are never
 * intercepted anyway). Needs no running backend. Returns 0 when done (Linux:
 * the socket is marked and its packets never reach the capture), 1 when
 * the capture sees them and *x holds the socket's local end for the engine
 * to pass them at once (Windows: an unbound socket is bound first, to learn
 * its port), or -1 with the reason in err. */
int wr_exclude_socket(intptr_t socket, wr_exclusion *x, char *err, size_t errlen);

/* What the backend found and how it runs, as one line of text (on Windows:
 * the WinDivert.dll used, "other WinDivert handles: N (pids ..., layers
 * ...)", the handles' priorities and filters, error counters). Copies up to
 * len - 1 bytes and a NUL into buf; returns the full length, like snprintf.
 * Thread-safe while the backend runs. */
size_t wr_backend_diagnostics(wr_backend *b, char *buf, size_t len);

#endif
