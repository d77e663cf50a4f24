// Rewriting a parsed packet's addresses and ports, with its checksums kept
// right: the IPv4 header checksum is recomputed (20-60 bytes), the TCP/UDP
// checksum updated incrementally (RFC 1624) or, when the capture layer says
// it is not ready (a partial checksum from offload/GSO), computed in full.

import { be16, finish, setBe16, sumBytes } from "./wire/checksum";
import { v4FillChecksum } from "./wire/ipv4";
import { TCP_CHECKSUM } from "./wire/tcp";
import { UDP_CHECKSUM } from "./wire/udp";
import { pkt, pktDst, pktL4, pktL4Len, pktProto, pktSrc, pktV6, PROTO_UDP } from "./packet";

/** One's-complement sum of the 16-bit words of an address. */
function addrSum(a: usize, v6: bool): u64 {
  return sumBytes(a, v6 ? 16 : 4, 0);
}

/** The full TCP/UDP checksum of the parsed packet (its field zeroed first). */
export function l4Checksum(): u32 {
  const v6 = pktV6;
  const field = pktL4 + (pktProto == PROTO_UDP ? UDP_CHECKSUM : TCP_CHECKSUM);
  setBe16(field, 0);
  let sum = addrSum(pktSrc, v6) + addrSum(pktDst, v6) + <u64>pktProto + <u64>pktL4Len;
  sum = sumBytes(pktL4, pktL4Len, sum);
  let cs = finish(sum);
  if (pktProto == PROTO_UDP && cs == 0) cs = 0xffff;
  return cs;
}

/**
 * Rewrites the parsed packet to src:sport -> dst:dport (addresses 4 or 16
 * bytes, not inside the packet). `full` computes the transport checksum
 * anew instead of updating it.
 */
export function rewrite(src: usize, sport: u32, dst: usize, dport: u32, full: bool): void {
  const v6 = pktV6;
  const alen: u32 = v6 ? 16 : 4;
  const udp = pktProto == PROTO_UDP;
  const field = pktL4 + (udp ? UDP_CHECKSUM : TCP_CHECKSUM);
  const old = be16(field);
  // IPv4 UDP checksum 0 means "no checksum": it stays 0.
  const keepZero = udp && !v6 && old == 0;
  const oldSum = addrSum(pktSrc, v6) + addrSum(pktDst, v6) + <u64>be16(pktL4) + <u64>be16(pktL4 + 2);
  memory.copy(pktSrc, src, alen);
  memory.copy(pktDst, dst, alen);
  setBe16(pktL4, sport);
  setBe16(pktL4 + 2, dport);
  if (!v6) v4FillChecksum(pkt);
  if (keepZero) return;
  if (full || (v6 && udp && old == 0)) {
    setBe16(field, l4Checksum());
    return;
  }
  // Old words out, new words in (RFC 1624): HC' = ~(~HC + ~m + m'), where
  // m and m' are the one's-complement sums of the old and new words.
  const newSum = addrSum(pktSrc, v6) + addrSum(pktDst, v6) + <u64>sport + <u64>dport;
  const s = <u64>(~old & 0xffff) + fold(newSum) + (0xffff - fold(oldSum));
  let cs = <u32>(~fold(s)) & 0xffff;
  if (udp && cs == 0) cs = 0xffff;
  setBe16(field, cs);
}

function fold(s: u64): u64 {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return s;
}
