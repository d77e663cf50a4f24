/* The stand-in WinDivert.dll's live mode (test/windows/fake_live.c) and the
 * Linux relay (live_relay.c) talk over one TCP connection on 127.0.0.1.
 * Every message is a fixed header followed by `len` bytes of IP packet
 * (none for a verdict). Fields are little-endian (both ends are x86-64).
 *
 *   relay -> stand-in   LIVE_PACKET   a packet the relay took off the
 *                                      queue: id, direction, loopback,
 *                                      interface; the relay waits for its
 *                                      verdict
 *   stand-in -> relay   LIVE_VERDICT  id, and whether a handle diverted it
 *                                      (then the relay drops the original,
 *                                      as the driver drops a diverted packet
 *                                      unless it is sent again) or not (it
 *                                      goes on unchanged)
 *                       LIVE_INJECT   a packet the library sent: the relay
 *                                      puts it on its way, outbound or
 *                                      inbound (on interface if_idx), as
 *                                      bytes on the wire */
#ifndef WR_LIVE_PROTO_H
#define WR_LIVE_PROTO_H

#include <stdint.h>

#define LIVE_PACKET 'P'
#define LIVE_VERDICT 'V'
#define LIVE_INJECT 'I'

#define LIVE_F_OUTBOUND 1u /* flags */
#define LIVE_F_LOOPBACK 2u
#define LIVE_DIVERTED 4u /* a verdict's flag: a handle took it */

#define LIVE_MAX_PACKET 65575u /* the largest IPv6 packet (40 + 65535) */

typedef struct {
  uint8_t type;
  uint8_t flags;
  uint16_t reserved;
  uint32_t id;     /* the queued packet's (LIVE_PACKET, LIVE_VERDICT) */
  uint32_t if_idx; /* LIVE_PACKET: the interface it came in or goes out on;
                      LIVE_INJECT: the one it is sent in on (inbound) */
  uint32_t len;    /* packet bytes that follow */
} live_header;

_Static_assert(sizeof(live_header) == 16, "live_header is 16 bytes on both ends");

#endif
