// Rewriting a parsed packet's addresses and ports, with its checksums kept
// right: the IPv4 header checksum is recomputed (20-60 bytes), the TCP/UDP
// checksum updated incrementally (RFC 1624) or, when the capture layer says
// it is not ready (a partial checksum from offload/GSO), computed in full.

import { addrSum, updateChecksum } from "./wire/checksum";
import { Ipv4Packet } from "./wire/ipv4";
import { Ipv6Packet } from "./wire/ipv6";
import { TcpPacket } from "./wire/tcp";
import { UdpPacket } from "./wire/udp";
import { Packet, PROTO_UDP } from "./packet";

/**
 * Rewrites the parsed packet pk to src:sport -> dst:dport (addresses 4 or 16
 * bytes, not inside the packet). `full` computes the transport checksum
 * anew instead of updating it. The view's ports keep the values parsed.
 */
export function rewrite(pk: Packet, src: usize, sport: u32, dst: usize, dport: u32, full: bool): void {
  const v6 = pk.v6;
  const udp = pk.proto == PROTO_UDP;
  const l4 = pk.l4;
  const ipSrc = pk.src;
  const ipDst = pk.dst;
  const old = udp ? UdpPacket.at(l4).checksum : TcpPacket.at(l4).checksum;
  // IPv4 UDP checksum 0 means "no checksum": it stays 0.
  const keepZero = udp && !v6 && old == 0;
  const oldSum = addrSum(ipSrc, v6) + addrSum(ipDst, v6) + <u64>pk.sport + <u64>pk.dport;
  if (v6) {
    const ip = Ipv6Packet.at(pk.data);
    ip.setSrcAddr(src);
    ip.setDstAddr(dst);
  } else {
    const ip = Ipv4Packet.at(pk.data);
    ip.setSrcAddr(src);
    ip.setDstAddr(dst);
    ip.fillChecksum();
  }
  if (udp) {
    const u = UdpPacket.at(l4);
    u.srcPort = sport;
    u.dstPort = dport;
    if (keepZero) return;
    if (full || (v6 && old == 0)) {
      u.fillChecksum(ipSrc, ipDst, v6, pk.l4Len);
      return;
    }
  } else {
    const t = TcpPacket.at(l4);
    t.srcPort = sport;
    t.dstPort = dport;
    if (full) {
      t.fillChecksum(ipSrc, ipDst, v6, pk.l4Len);
      return;
    }
  }
  // Old words out, new words in (RFC 1624).
  const newSum = addrSum(ipSrc, v6) + addrSum(ipDst, v6) + <u64>sport + <u64>dport;
  const cs = updateChecksum(old, oldSum, newSum);
  if (udp) UdpPacket.at(l4).checksum = cs == 0 ? 0xffff : cs;
  else TcpPacket.at(l4).checksum = cs;
}
