// Rewriting a parsed packet's addresses and ports, with its checksums kept
// right: the IPv4 header checksum is recomputed (20-60 bytes), the TCP/UDP
// checksum updated incrementally (RFC 1624) or, when the capture layer says
// it is not ready (a partial checksum from offload/GSO), computed in full.
// And translating an ICMP/ICMPv6 error: the packet it quotes and its own
// addresses, with the quoted checksums and the message's checksum right.

import { addrSum, updateChecksum } from "./wire/checksum";
import { IcmpPacket, Icmpv6Packet } from "./wire/icmp";
import { Ipv4Packet } from "./wire/ipv4";
import { Ipv6Packet } from "./wire/ipv6";
import { TcpPacket } from "./wire/tcp";
import { TransportPacket } from "./wire/transport";
import { UdpPacket } from "./wire/udp";
import { Packet, PROTO_UDP } from "./packet";

// The helpers below are @inline: the TCP/UDP rewrite is every redirected
// packet's path, and as calls they cost it 83 of ~1,800 instructions a
// packet (the calls, and the view's fields loaded again in each). They take
// the view's fields as values, read once: the view is in linear memory,
// where every load is bounds-checked, and is loaded again after each write
// to the packet (29 instructions a packet when the helpers read it).

/** Sets the IP header's addresses (IPv4: and recomputes its checksum). */
// @ts-ignore: decorator
@inline function setAddrs(data: usize, v6: bool, src: usize, dst: usize): void {
  if (v6) {
    const ip = Ipv6Packet.at(data);
    ip.setSrcAddr(src);
    ip.setDstAddr(dst);
  } else {
    const ip = Ipv4Packet.at(data);
    ip.setSrcAddr(src);
    ip.setDstAddr(dst);
    ip.fillChecksum();
  }
}

/**
 * The sum of the words a transport checksum covers that name the ends: the
 * addresses at (a, b) and the ports.
 */
// @ts-ignore: decorator
@inline function endsSum(a: usize, b: usize, v6: bool, sport: u32, dport: u32): u64 {
  return addrSum(a, v6) + addrSum(b, v6) + <u64>sport + <u64>dport;
}

/**
 * Moves the parsed packet's ends to src:sport -> dst:dport: addresses (and
 * the IPv4 header checksum) and ports, not the transport checksum. Returns
 * the sum of the old ends' words (endsSum before). The packet's addresses
 * are at (pa, pb), its TCP/UDP header at l4.
 */
// @ts-ignore: decorator
@inline function moveEnds(pk: Packet, pa: usize, pb: usize, l4: usize, v6: bool,
  src: usize, sport: u32, dst: usize, dport: u32): u64 {
  const old = endsSum(pa, pb, v6, pk.sport, pk.dport);
  setAddrs(pk.data, v6, src, dst);
  const t = changetype<TransportPacket>(l4);
  t.srcPort = sport;
  t.dstPort = dport;
  return old;
}

/**
 * Rewrites the parsed packet pk to src:sport -> dst:dport (addresses 4 or 16
 * bytes, not inside the packet). `full` computes the transport checksum
 * anew instead of updating it. The view's ports keep the values parsed.
 */
export function rewrite(pk: Packet, src: usize, sport: u32, dst: usize, dport: u32, full: bool): void {
  const v6 = pk.v6;
  const udp = pk.proto == PROTO_UDP;
  const l4 = pk.l4;
  const pa = pk.src;
  const pb = pk.dst;
  const old = udp ? UdpPacket.at(l4).checksum : TcpPacket.at(l4).checksum;
  // IPv4 UDP checksum 0 means "no checksum": it stays 0.
  const keepZero = udp && !v6 && old == 0;
  const oldSum = moveEnds(pk, pa, pb, l4, v6, src, sport, dst, dport);
  if (keepZero) return;
  if (udp) {
    if (full || (v6 && old == 0)) {
      UdpPacket.at(l4).fillChecksum(pa, pb, v6, pk.l4Len);
      return;
    }
  } else if (full) {
    TcpPacket.at(l4).fillChecksum(pa, pb, v6, pk.l4Len);
    return;
  }
  // Old words out, new words in (RFC 1624).
  const cs = updateChecksum(old, oldSum, endsSum(pa, pb, v6, sport, dport));
  if (udp) UdpPacket.at(l4).checksum = cs == 0 ? 0xffff : cs;
  else TcpPacket.at(l4).checksum = cs;
}

// Where the quoted segment's checksum ends: TCP's is at 16-17 and may be cut
// off; UDP's, at 6-7, is always there (QUOTED_L4_MIN).
const TCP_CSUM_END: u32 = 18;

/**
 * Rewrites a quoted packet q (parseQuoted) to src:sport -> dst:dport. Its
 * transport checksum, when quoted, is updated incrementally (the segment is
 * cut off, so it cannot be computed): the quoted header then reads exactly
 * as its sender sent it. A UDP checksum of 0 stays 0.
 */
function rewriteQuoted(q: Packet, src: usize, sport: u32, dst: usize, dport: u32): void {
  const v6 = q.v6;
  const udp = q.proto == PROTO_UDP;
  const l4 = q.l4;
  const qa = q.src;
  const qb = q.dst;
  const quoted = udp || q.l4Len >= TCP_CSUM_END;
  const old = !quoted ? 0 : udp ? UdpPacket.at(l4).checksum : TcpPacket.at(l4).checksum;
  const oldSum = moveEnds(q, qa, qb, l4, v6, src, sport, dst, dport);
  if (!quoted || (udp && old == 0)) return;
  const cs = updateChecksum(old, oldSum, endsSum(qa, qb, v6, sport, dport));
  if (udp) UdpPacket.at(l4).checksum = cs == 0 ? 0xffff : cs;
  else TcpPacket.at(l4).checksum = cs;
}

/**
 * Translates the ICMP/ICMPv6 error pk (parse() said Icmp) whose quoted packet
 * q was parsed: the quoted packet becomes qsrc:qsport -> qdst:qdport, the
 * error's own addresses src -> dst (addresses 4 or 16 bytes, not inside the
 * packet, or the error's own), and the message's checksum is computed anew.
 */
export function translateIcmpError(pk: Packet, q: Packet, src: usize, dst: usize,
  qsrc: usize, qsport: u32, qdst: usize, qdport: u32): void {
  rewriteQuoted(q, qsrc, qsport, qdst, qdport);
  const v6 = pk.v6;
  setAddrs(pk.data, v6, src, dst);
  if (v6) Icmpv6Packet.at(pk.l4).fillChecksum(pk.src, pk.dst, pk.l4Len);
  else IcmpPacket.at(pk.l4).fillChecksum(pk.l4Len);
}
