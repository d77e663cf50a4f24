// A packet and what parsing it found: one Packet view (a small struct in
// engine memory, no allocation) per packet being handled, passed explicitly.
// parse() fills the view from the bytes: family, protocol, where the
// addresses, ports and payload are. A packet that is not IPv4/IPv6 TCP/UDP,
// a fragment, or malformed (lengths that do not add up, truncated headers)
// is reported as such and must be passed unchanged; an ICMP/ICMPv6 message
// is reported as such, with where it starts. parseQuoted() reads the packet
// an ICMP error quotes, which is cut off.

import { Meta } from "../build/gen/contract";
import { PROTO_ICMP, PROTO_ICMPV6 } from "./wire/icmp";
import { Ipv4Packet } from "./wire/ipv4";
import { IPV6_HEADER_LEN, Ipv6Packet, WALK_MALFORMED, walkFragment, walkOffset, walkProto } from "./wire/ipv6";
import { PROTO_TCP, TcpPacket } from "./wire/tcp";
import { TransportPacket } from "./wire/transport";
import { PROTO_UDP, UDP_HEADER_LEN, UdpPacket } from "./wire/udp";

export { PROTO_TCP, PROTO_UDP };

/** Why parse() gave up, or Ok. */
export const enum Parse {
  Ok = 0,
  Malformed = 1,
  Fragment = 2,
  Other = 3, // not TCP, UDP or ICMP over IP
  Icmp = 4,  // ICMP over IPv4, ICMPv6 over IPv6: l4 and l4Len say where the message is
}

/**
 * Of a quoted TCP/UDP header, the bytes an ICMP error must carry (RFC 792:
 * the first 64 bits of the datagram): the ports, and UDP's checksum.
 */
export const QUOTED_L4_MIN: u32 = 8;

@unmanaged
export class Packet {
  // Set by the caller: the bytes, the in-flags (InFlag in engine.ts) and the
  // capture layer's record of the packet (cookie, interfaces), or 0 for a
  // packet the engine held and now releases.
  data: usize;
  len: u32;
  flags: u32;
  meta: Meta | null;
  // Set by parse() (or parseQuoted()).
  v6: bool;
  proto: u32;
  ipLen: u32;     // bytes of the IP packet (total length; of a quote, as much as is there)
  src: usize;     // source address (4 or 16 bytes, inside the packet)
  dst: usize;
  l4: usize;      // TCP/UDP header, or the ICMP message
  l4Len: u32;     // header + payload (of a quote, as much as is there)
  sport: u32;
  dport: u32;
  tcpFlags: u32;
  payload: u32;   // payload bytes after the TCP/UDP header

  /** Sets the bytes and metadata; parse() next. */
  @inline set(data: usize, len: u32, flags: u32, meta: Meta | null): void {
    this.data = data;
    this.len = len;
    this.flags = flags;
    this.meta = meta;
  }

  /**
   * Parses [data, data+len). Returns Parse.Ok or why the packet must pass
   * unchanged. Inlined into its callers (the batch's packets, the released
   * ones): a call less on every packet, and the view's address a constant.
   */
  @inline parse(): Parse {
    return this.parseAs(false);
  }

  /**
   * Parses [data, data+len) as the packet an ICMP error quotes: its IP header
   * whole, the rest possibly cut off. Ok when the TCP/UDP header's first
   * QUOTED_L4_MIN bytes are there; l4Len is how many bytes of the segment
   * are (never more than the IP header claims); tcpFlags and payload are 0.
   * An ICMP message inside is Other.
   */
  parseQuoted(): Parse {
    return this.parseAs(true);
  }

  // Inlined into parse() and parseQuoted(): each is compiled with `quoted`
  // constant, so a batch packet's parse tests none of the quote's cases.
  @inline private parseAs(quoted: bool): Parse {
    const p = this.data;
    const len = this.len;
    if (len < 1) return Parse.Malformed;
    const ver = <u32>load<u8>(p) >> 4;
    let l4off: u32;
    let ipLen: u32;
    let proto: u32;
    if (ver == 4) {
      const ip = Ipv4Packet.at(p);
      if (quoted ? !ip.checkHeaderLen(len) : !ip.checkLen(len)) return Parse.Malformed;
      ipLen = min(ip.totalLen, len);
      proto = ip.protocol;
      this.v6 = false;
      this.ipLen = ipLen;
      this.src = ip.srcAddr;
      this.dst = ip.dstAddr;
      this.proto = proto;
      if (ip.isFragment) return Parse.Fragment;
      l4off = ip.headerLen;
    } else if (ver == 6) {
      const ip = Ipv6Packet.at(p);
      if (quoted ? len < IPV6_HEADER_LEN : !ip.checkLen(len)) return Parse.Malformed;
      ipLen = min(ip.totalLen, len);
      this.v6 = true;
      this.ipLen = ipLen;
      this.src = ip.srcAddr;
      this.dst = ip.dstAddr;
      const w = ip.walk(ipLen);
      if (w == WALK_MALFORMED) return Parse.Malformed;
      proto = walkProto(w);
      this.proto = proto;
      if (walkFragment(w)) return Parse.Fragment;
      l4off = walkOffset(w);
    } else {
      return Parse.Other;
    }
    const l4 = p + l4off;
    const l4Len = ipLen - l4off;
    this.l4 = l4;
    this.l4Len = l4Len;
    if (proto != PROTO_TCP && proto != PROTO_UDP) {
      return !quoted && proto == (ver == 4 ? PROTO_ICMP : PROTO_ICMPV6) ? Parse.Icmp : Parse.Other;
    }
    if (quoted) {
      if (l4Len < QUOTED_L4_MIN) return Parse.Malformed;
      const t = changetype<TransportPacket>(l4);
      this.tcpFlags = 0;
      this.payload = 0;
      this.sport = t.srcPort;
      this.dport = t.dstPort;
      return Parse.Ok;
    }
    if (proto == PROTO_TCP) {
      const tcp = TcpPacket.at(l4);
      if (!tcp.checkLen(l4Len)) return Parse.Malformed;
      this.tcpFlags = tcp.flags;
      this.payload = l4Len - tcp.headerLen;
      this.sport = tcp.srcPort;
      this.dport = tcp.dstPort;
    } else {
      const udp = UdpPacket.at(l4);
      if (!udp.checkLen(l4Len)) return Parse.Malformed;
      this.tcpFlags = 0;
      this.payload = udp.length - UDP_HEADER_LEN;
      this.sport = udp.srcPort;
      this.dport = udp.dstPort;
    }
    return Parse.Ok;
  }
}
