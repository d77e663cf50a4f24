// Parsing one packet into a flat view (globals, valid until the next parse):
// family, protocol, where the addresses, ports and payload are. Nothing is
// allocated. A packet that is not IPv4/IPv6 TCP/UDP, a fragment, or
// malformed (lengths that do not add up, truncated headers) is reported as
// such and must be passed unchanged.

import { be16 } from "./wire/checksum";
import { V4_DST, V4_MIN_LEN, V4_PROTOCOL, V4_SRC, v4HeaderLen, v4IsFragment, v4TotalLen } from "./wire/ipv4";
import { V6_DST, V6_HEADER_LEN, V6_PAYLOAD_LEN, V6_SRC, v6Fragment, v6L4Offset, v6Proto, v6Walk } from "./wire/ipv6";
import { TCP_FLAGS, TCP_MIN_LEN, tcpHeaderLen } from "./wire/tcp";
import { UDP_HEADER_LEN, UDP_LENGTH } from "./wire/udp";

// @ts-ignore: decorator
@inline export const P_OK: u32 = 0;
// @ts-ignore: decorator
@inline export const P_MALFORMED: u32 = 1;
// @ts-ignore: decorator
@inline export const P_FRAGMENT: u32 = 2;
// @ts-ignore: decorator
@inline export const P_OTHER: u32 = 3; // not TCP or UDP over IP

// @ts-ignore: decorator
@inline export const PROTO_TCP: u32 = 6;
// @ts-ignore: decorator
@inline export const PROTO_UDP: u32 = 17;

export let pkt: usize = 0;        // the packet
export let pktV6 = false;
export let pktProto: u32 = 0;
export let pktIpLen: u32 = 0;     // bytes of the IP packet (total length)
export let pktSrc: usize = 0;     // source address (4 or 16 bytes)
export let pktDst: usize = 0;
export let pktL4: usize = 0;      // TCP/UDP header
export let pktL4Len: u32 = 0;     // header + payload
export let pktSport: u32 = 0;
export let pktDport: u32 = 0;
export let pktTcpFlags: u32 = 0;
export let pktPayload: u32 = 0;   // payload bytes after the TCP/UDP header

/** Parses [p, p+len). Returns P_OK or why the packet must pass unchanged. */
export function parsePacket(p: usize, len: u32): u32 {
  pkt = p;
  if (len < 1) return P_MALFORMED;
  const ver = <u32>load<u8>(p) >> 4;
  let l4off: u32;
  if (ver == 4) {
    if (len < V4_MIN_LEN) return P_MALFORMED;
    const hl = v4HeaderLen(p);
    const total = v4TotalLen(p);
    if (hl < V4_MIN_LEN || total < hl || total > len) return P_MALFORMED;
    pktV6 = false;
    pktIpLen = total;
    pktSrc = p + V4_SRC;
    pktDst = p + V4_DST;
    pktProto = <u32>load<u8>(p + V4_PROTOCOL);
    if (v4IsFragment(p)) return P_FRAGMENT;
    l4off = hl;
  } else if (ver == 6) {
    if (len < V6_HEADER_LEN) return P_MALFORMED;
    const total = V6_HEADER_LEN + be16(p + V6_PAYLOAD_LEN);
    if (total > len) return P_MALFORMED;
    pktV6 = true;
    pktIpLen = total;
    pktSrc = p + V6_SRC;
    pktDst = p + V6_DST;
    if (!v6Walk(p, total)) return P_MALFORMED;
    pktProto = v6Proto;
    if (v6Fragment) return P_FRAGMENT;
    l4off = v6L4Offset;
  } else {
    return P_OTHER;
  }
  if (pktProto != PROTO_TCP && pktProto != PROTO_UDP) return P_OTHER;
  pktL4 = p + l4off;
  pktL4Len = pktIpLen - l4off;
  if (pktProto == PROTO_TCP) {
    if (pktL4Len < TCP_MIN_LEN) return P_MALFORMED;
    const thl = tcpHeaderLen(pktL4);
    if (thl < TCP_MIN_LEN || thl > pktL4Len) return P_MALFORMED;
    pktTcpFlags = <u32>load<u8>(pktL4 + TCP_FLAGS);
    pktPayload = pktL4Len - thl;
  } else {
    if (pktL4Len < UDP_HEADER_LEN) return P_MALFORMED;
    const ulen = be16(pktL4 + UDP_LENGTH);
    if (ulen < UDP_HEADER_LEN || ulen > pktL4Len) return P_MALFORMED;
    pktTcpFlags = 0;
    pktPayload = ulen - UDP_HEADER_LEN;
  }
  pktSport = be16(pktL4);
  pktDport = be16(pktL4 + 2);
  return P_OK;
}
