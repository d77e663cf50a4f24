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
// packet (the calls, and the view's fields loaded again in each).

/** Sets the IP header's addresses (IPv4: and recomputes its checksum). */
// @ts-ignore: decorator
@inline function setAddrs(pk: Packet, src: usize, dst: usize): void {
  if (pk.v6) {
    const ip = Ipv6Packet.at(pk.data);
    ip.setSrcAddr(src);
    ip.setDstAddr(dst);
  } else {
    const ip = Ipv4Packet.at(pk.data);
    ip.setSrcAddr(src);
    ip.setDstAddr(dst);
    ip.fillChecksum();
  }
}

/** The sum of the words a transport checksum covers that name the ends. */
// @ts-ignore: decorator
@inline function endsSum(pk: Packet, sport: u32, dport: u32): u64 {
  return addrSum(pk.src, pk.v6) + addrSum(pk.dst, pk.v6) + <u64>sport + <u64>dport;
}

/**
 * Moves the parsed packet's ends to src:sport -> dst:dport: addresses (and
 * the IPv4 header checksum) and ports, not the transport checksum. Returns
 * the sum of the old ends' words (endsSum before).
 */
// @ts-ignore: decorator
@inline function moveEnds(pk: Packet, src: usize, sport: u32, dst: usize, dport: u32): u64 {
  const old = endsSum(pk, pk.sport, pk.dport);
  setAddrs(pk, src, dst);
  const t = changetype<TransportPacket>(pk.l4);
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
  const old = udp ? UdpPacket.at(l4).checksum : TcpPacket.at(l4).checksum;
  // IPv4 UDP checksum 0 means "no checksum": it stays 0.
  const keepZero = udp && !v6 && old == 0;
  const oldSum = moveEnds(pk, src, sport, dst, dport);
  if (keepZero) return;
  if (udp) {
    if (full || (v6 && old == 0)) {
      UdpPacket.at(l4).fillChecksum(pk.src, pk.dst, v6, pk.l4Len);
      return;
    }
  } else if (full) {
    TcpPacket.at(l4).fillChecksum(pk.src, pk.dst, v6, pk.l4Len);
    return;
  }
  // Old words out, new words in (RFC 1624).
  const cs = updateChecksum(old, oldSum, endsSum(pk, sport, dport));
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
  const udp = q.proto == PROTO_UDP;
  const l4 = q.l4;
  const quoted = udp || q.l4Len >= TCP_CSUM_END;
  const old = !quoted ? 0 : udp ? UdpPacket.at(l4).checksum : TcpPacket.at(l4).checksum;
  const oldSum = moveEnds(q, src, sport, dst, dport);
  if (!quoted || (udp && old == 0)) return;
  const cs = updateChecksum(old, oldSum, endsSum(q, sport, dport));
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
  setAddrs(pk, src, dst);
  if (pk.v6) Icmpv6Packet.at(pk.l4).fillChecksum(pk.src, pk.dst, pk.l4Len);
  else IcmpPacket.at(pk.l4).fillChecksum(pk.l4Len);
}
