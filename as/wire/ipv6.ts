// IPv6 header (RFC 8200) and the walk over extension headers:
//
//    0               1               2               3
//   +-------+-------+-------+-------------------------------------+
//   |Version| Traffic Class |           Flow Label                |   0
//   +-------+---------------+-------+---------------+-------------+
//   |         Payload Length        |  Next Header  |  Hop Limit  |   4
//   +-------------------------------+---------------+-------------+
//   |                     Source Address (16)                     |   8
//   |                  Destination Address (16)                   |  24
//   +-------------------------------------------------------------+  40
//
// Extension headers that may precede TCP/UDP, and their lengths:
//   0 Hop-by-Hop, 43 Routing, 60 Destination Options:
//       (Hdr Ext Len + 1) * 8 bytes, Hdr Ext Len at byte 1
//   44 Fragment: 8 bytes; offset (13 bits) and M flag at bytes 2-3
//   51 Authentication Header: (Payload Len + 2) * 4 bytes (RFC 4302)
// Anything else (ESP 50, No Next Header 59, ...) ends the walk.
//
// Ipv6Packet is a view of packet bytes in memory: check the length first
// (checkLen), then read and write its fields.
import { be16 } from "./checksum";

const enum Field {
  PayloadLen = 4,
  NextHeader = 6,
  Src = 8,
  Dst = 24,
}

export const IPV6_HEADER_LEN: u32 = 40;

/** Next Header values the walk steps over. */
const enum NextHeader {
  HopByHop = 0,
  Routing = 43,
  Fragment = 44,
  Auth = 51,
  DestOpts = 60,
}

/** The walk's outcome: a malformed chain, or where the upper layer starts. */
export const WALK_MALFORMED: u64 = <u64>-1;

/** The upper-layer protocol of a walk's outcome. */
// @ts-ignore: decorator
@inline export function walkProto(w: u64): u32 {
  return <u32>w & 0xff;
}

/** A fragment header with a non-zero offset or the M flag was seen. */
// @ts-ignore: decorator
@inline export function walkFragment(w: u64): bool {
  return (<u32>w & 0x100) != 0;
}

/** Where the upper-layer header starts, from the start of the packet. */
// @ts-ignore: decorator
@inline export function walkOffset(w: u64): u32 {
  return <u32>(w >> 32);
}

@unmanaged
export class Ipv6Packet {
  @inline static at(p: usize): Ipv6Packet {
    return changetype<Ipv6Packet>(p);
  }

  @inline get ptr(): usize {
    return changetype<usize>(this);
  }

  /** Do `len` bytes hold the header and the payload length it claims? */
  checkLen(len: u32): bool {
    return len >= IPV6_HEADER_LEN && this.totalLen <= len;
  }

  @inline get version(): u32 {
    return <u32>load<u8>(this.ptr) >> 4;
  }

  @inline get payloadLen(): u32 {
    return be16(this.ptr + Field.PayloadLen);
  }

  /** Header and payload, in bytes. */
  @inline get totalLen(): u32 {
    return IPV6_HEADER_LEN + this.payloadLen;
  }

  @inline get nextHeader(): u32 {
    return <u32>load<u8>(this.ptr, Field.NextHeader);
  }

  /** Where the source address's 16 bytes are. */
  @inline get srcAddr(): usize {
    return this.ptr + Field.Src;
  }

  @inline get dstAddr(): usize {
    return this.ptr + Field.Dst;
  }

  setSrcAddr(a: usize): void {
    memory.copy(this.srcAddr, a, 16);
  }

  setDstAddr(a: usize): void {
    memory.copy(this.dstAddr, a, 16);
  }

  /**
   * Walks the extension headers of the first `len` bytes (checkLen passed):
   * the upper-layer protocol, where it starts and whether this is a
   * fragment (walkProto, walkOffset, walkFragment), or WALK_MALFORMED when a
   * header runs past the end or the chain is longer than 16 headers.
   */
  walk(len: u32): u64 {
    const p = this.ptr;
    let nh = this.nextHeader;
    let off = IPV6_HEADER_LEN;
    let frag: u32 = 0;
    for (let n = 0; n < 16; n++) {
      if (nh == NextHeader.HopByHop || nh == NextHeader.Routing || nh == NextHeader.DestOpts) {
        if (off + 8 > len) return WALK_MALFORMED;
        const hlen = (<u32>load<u8>(p + off + 1) + 1) << 3;
        if (off + hlen > len) return WALK_MALFORMED;
        nh = <u32>load<u8>(p + off);
        off += hlen;
      } else if (nh == NextHeader.Fragment) {
        if (off + 8 > len) return WALK_MALFORMED;
        const fo = be16(p + off + 2);
        if ((fo & 0xfff9) != 0) frag = 0x100; // offset != 0 or M set
        nh = <u32>load<u8>(p + off);
        off += 8;
      } else if (nh == NextHeader.Auth) {
        if (off + 8 > len) return WALK_MALFORMED;
        const hlen = (<u32>load<u8>(p + off + 1) + 2) << 2;
        if (off + hlen > len) return WALK_MALFORMED;
        nh = <u32>load<u8>(p + off);
        off += hlen;
      } else {
        return (<u64>off << 32) | <u64>(frag | nh);
      }
    }
    return WALK_MALFORMED;
  }
}
