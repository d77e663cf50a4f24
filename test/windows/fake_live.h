/* The stand-in WinDivert.dll's live mode (fake_live.c): instead of playing
 * a script, its NETWORK layer carries real kernel traffic, which a relay
 * (test/acceptance/live_relay.c) takes off an NFQUEUE in a Linux network
 * namespace and puts back. Environment (read at each NETWORK open):
 *
 *   WR_FAKE_WINDIVERT_LIVE   A.B.C.D:PORT, the relay (unset: no live mode)
 *
 * The SOCKET layer is silent in live mode, but where wine's socket tables
 * cannot name a new flow's owner (fake_live.c says when): the driver's
 * socket events cannot be made from Linux packets with Windows PIDs, and the
 * library finds owners in the socket tables instead (under wine,
 * GetExtendedTcpTable and GetExtendedUdpTable give Windows PIDs). */
#ifndef WR_FAKE_LIVE_H
#define WR_FAKE_LIVE_H

#include <stdint.h>

/* Queues a packet the relay captured for the NETWORK handles; returns 1 when
 * a handle diverted it, 0 when none did (then it goes on unchanged). */
typedef int (*fl_deliver_fn)(int outbound, int loopback, uint32_t if_idx, const uint8_t *packet, uint32_t len);

/* Plays a script line ("socket connect pid=N proto=... local=... remote=..."),
 * as the script player does, and returns once the library has it. */
typedef void (*fl_event_fn)(const char *line);

/* Writes a line to the stand-in's log (printf-like). */
typedef void (*fl_log_fn)(const char *fmt, ...);

/* 1 when WR_FAKE_WINDIVERT_LIVE is set. */
int fl_configured(void);

/* Connects to the relay and starts passing its packets to `deliver` and any
 * socket event to `event` (once: further calls while it runs do nothing);
 * what it does goes to `log`. 0, or a Windows error code. */
unsigned long fl_start(fl_deliver_fn deliver, fl_event_fn event, fl_log_fn log);

/* A packet the library sent through a NETWORK handle (or one the stand-in
 * re-injects at a handle's close) that no handle below diverted, as it goes
 * on the wire (the checksums whose flag was 0 computed, as the driver does),
 * with its direction and interface: the relay puts it on its way. */
void fl_send(int outbound, uint32_t if_idx, const uint8_t *wire, uint32_t len);

/* Disconnects (the relay then accepts what it still waited on) and waits for
 * the reader to end. */
void fl_stop(void);

#endif
