// AssemblyScript: the engine's wire/ views and packet parser exported one
// accessor at a time, so test/engine/wire.test.ts can check them on literal
// bytes. Built by build/build.ts into build/wire.wasm; not part of the engine.
import { Ipv4Packet } from "../../../as/wire/ipv4";
import { Ipv6Packet } from "../../../as/wire/ipv6";
import { TcpPacket } from "../../../as/wire/tcp";
import { UdpPacket } from "../../../as/wire/udp";
import { IcmpPacket, Icmpv6Packet } from "../../../as/wire/icmp";
import { checksum as internetChecksum, pseudoHeaderSum as pseudo, fold } from "../../../as/wire/checksum";
import { Packet } from "../../../as/packet";
import { rewrite as natRewrite, translateIcmpError } from "../../../as/nat";

const view = changetype<Packet>(memory.data(offsetof<Packet>()));
const quoted = changetype<Packet>(memory.data(offsetof<Packet>()));

/** A buffer of len bytes for the test to fill (never freed: the instance is short-lived). */
export function alloc(len: u32): usize {
  return heap.alloc(len > 0 ? <usize>len : 1);
}

export function checksum(p: usize, len: u32): u32 { return internetChecksum(p, len); }
export function pseudo_header_sum(src: usize, dst: usize, v6: bool, proto: u32, len: u32): u32 {
  return <u32>fold(pseudo(src, dst, v6, proto, len));
}

export function ipv4_check_len(p: usize, len: u32): bool { return Ipv4Packet.at(p).checkLen(len); }
export function ipv4_version(p: usize): u32 { return Ipv4Packet.at(p).version; }
export function ipv4_header_len(p: usize): u32 { return Ipv4Packet.at(p).headerLen; }
export function ipv4_total_len(p: usize): u32 { return Ipv4Packet.at(p).totalLen; }
export function ipv4_is_fragment(p: usize): bool { return Ipv4Packet.at(p).isFragment; }
export function ipv4_protocol(p: usize): u32 { return Ipv4Packet.at(p).protocol; }
export function ipv4_src_addr(p: usize): usize { return Ipv4Packet.at(p).srcAddr; }
export function ipv4_dst_addr(p: usize): usize { return Ipv4Packet.at(p).dstAddr; }
export function ipv4_set_src_addr(p: usize, a: usize): void { Ipv4Packet.at(p).setSrcAddr(a); }
export function ipv4_set_dst_addr(p: usize, a: usize): void { Ipv4Packet.at(p).setDstAddr(a); }
export function ipv4_checksum(p: usize): u32 { return Ipv4Packet.at(p).checksum; }
export function ipv4_fill_checksum(p: usize): void { Ipv4Packet.at(p).fillChecksum(); }
export function ipv4_verify_checksum(p: usize): bool { return Ipv4Packet.at(p).verifyChecksum(); }
export function ipv4_check_header_len(p: usize, len: u32): bool { return Ipv4Packet.at(p).checkHeaderLen(len); }

export function ipv6_check_len(p: usize, len: u32): bool { return Ipv6Packet.at(p).checkLen(len); }
export function ipv6_version(p: usize): u32 { return Ipv6Packet.at(p).version; }
export function ipv6_payload_len(p: usize): u32 { return Ipv6Packet.at(p).payloadLen; }
export function ipv6_next_header(p: usize): u32 { return Ipv6Packet.at(p).nextHeader; }
export function ipv6_src_addr(p: usize): usize { return Ipv6Packet.at(p).srcAddr; }
export function ipv6_dst_addr(p: usize): usize { return Ipv6Packet.at(p).dstAddr; }
export function ipv6_set_src_addr(p: usize, a: usize): void { Ipv6Packet.at(p).setSrcAddr(a); }
export function ipv6_set_dst_addr(p: usize, a: usize): void { Ipv6Packet.at(p).setDstAddr(a); }
export function ipv6_walk(p: usize, len: u32): u64 { return Ipv6Packet.at(p).walk(len); }

export function tcp_check_len(p: usize, len: u32): bool { return TcpPacket.at(p).checkLen(len); }
export function tcp_src_port(p: usize): u32 { return TcpPacket.at(p).srcPort; }
export function tcp_dst_port(p: usize): u32 { return TcpPacket.at(p).dstPort; }
export function tcp_set_src_port(p: usize, v: u32): void { TcpPacket.at(p).srcPort = v; }
export function tcp_set_dst_port(p: usize, v: u32): void { TcpPacket.at(p).dstPort = v; }
export function tcp_header_len(p: usize): u32 { return TcpPacket.at(p).headerLen; }
export function tcp_flags(p: usize): u32 { return TcpPacket.at(p).flags; }
export function tcp_checksum(p: usize): u32 { return TcpPacket.at(p).checksum; }
export function tcp_fill_checksum(p: usize, src: usize, dst: usize, v6: bool, len: u32): void {
  TcpPacket.at(p).fillChecksum(src, dst, v6, len);
}
export function tcp_verify_checksum(p: usize, src: usize, dst: usize, v6: bool, len: u32): bool {
  return TcpPacket.at(p).verifyChecksum(src, dst, v6, len);
}

export function udp_check_len(p: usize, len: u32): bool { return UdpPacket.at(p).checkLen(len); }
export function udp_src_port(p: usize): u32 { return UdpPacket.at(p).srcPort; }
export function udp_dst_port(p: usize): u32 { return UdpPacket.at(p).dstPort; }
export function udp_set_src_port(p: usize, v: u32): void { UdpPacket.at(p).srcPort = v; }
export function udp_set_dst_port(p: usize, v: u32): void { UdpPacket.at(p).dstPort = v; }
export function udp_length(p: usize): u32 { return UdpPacket.at(p).length; }
export function udp_checksum(p: usize): u32 { return UdpPacket.at(p).checksum; }
export function udp_fill_checksum(p: usize, src: usize, dst: usize, v6: bool, len: u32): void {
  UdpPacket.at(p).fillChecksum(src, dst, v6, len);
}
export function udp_verify_checksum(p: usize, src: usize, dst: usize, v6: bool, len: u32): bool {
  return UdpPacket.at(p).verifyChecksum(src, dst, v6, len);
}

export function icmp_check_len(p: usize, len: u32): bool { return IcmpPacket.at(p).checkLen(len); }
export function icmp_type(p: usize): u32 { return IcmpPacket.at(p).type; }
export function icmp_code(p: usize): u32 { return IcmpPacket.at(p).code; }
export function icmp_checksum(p: usize): u32 { return IcmpPacket.at(p).checksum; }
export function icmp_quoted(p: usize): usize { return IcmpPacket.at(p).quoted; }
export function icmp_is_error(p: usize): bool { return IcmpPacket.at(p).isError; }
export function icmp_fill_checksum(p: usize, len: u32): void { IcmpPacket.at(p).fillChecksum(len); }
export function icmp_verify_checksum(p: usize, len: u32): bool { return IcmpPacket.at(p).verifyChecksum(len); }
export function icmpv6_is_error(p: usize): bool { return Icmpv6Packet.at(p).isError; }
export function icmpv6_fill_checksum(p: usize, src: usize, dst: usize, len: u32): void {
  Icmpv6Packet.at(p).fillChecksum(src, dst, len);
}
export function icmpv6_verify_checksum(p: usize, src: usize, dst: usize, len: u32): bool {
  return Icmpv6Packet.at(p).verifyChecksum(src, dst, len);
}

/** Parses [p, p+len) into the view; the pk_* exports read it. */
export function parse(p: usize, len: u32, flags: u32): u32 {
  view.set(p, len, flags, null);
  return <u32>view.parse();
}
export function pk_v6(): bool { return view.v6; }
export function pk_proto(): u32 { return view.proto; }
export function pk_ip_len(): u32 { return view.ipLen; }
export function pk_src(): usize { return view.src; }
export function pk_dst(): usize { return view.dst; }
export function pk_l4(): usize { return view.l4; }
export function pk_l4_len(): u32 { return view.l4Len; }
export function pk_sport(): u32 { return view.sport; }
export function pk_dport(): u32 { return view.dport; }
export function pk_tcp_flags(): u32 { return view.tcpFlags; }
export function pk_payload(): u32 { return view.payload; }

/** Rewrites the parsed packet (nat.ts) to src:sport -> dst:dport. */
export function rewrite(src: usize, sport: u32, dst: usize, dport: u32, full: bool): void {
  natRewrite(view, src, sport, dst, dport, full);
}

/** Parses [p, p+len) as a quoted packet into the second view; the q_* exports read it. */
export function parse_quoted(p: usize, len: u32): u32 {
  quoted.set(p, len, 0, null);
  return <u32>quoted.parseQuoted();
}
export function q_v6(): bool { return quoted.v6; }
export function q_proto(): u32 { return quoted.proto; }
export function q_ip_len(): u32 { return quoted.ipLen; }
export function q_src(): usize { return quoted.src; }
export function q_dst(): usize { return quoted.dst; }
export function q_l4(): usize { return quoted.l4; }
export function q_l4_len(): u32 { return quoted.l4Len; }
export function q_sport(): u32 { return quoted.sport; }
export function q_dport(): u32 { return quoted.dport; }

/** Translates the parsed error (parse, then parse_quoted of its quote) (nat.ts). */
export function translate_icmp_error(src: usize, dst: usize, qsrc: usize, qsport: u32, qdst: usize, qdport: u32): void {
  translateIcmpError(view, quoted, src, dst, qsrc, qsport, qdst, qdport);
}
