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
import { be16 } from "./checksum";

// @ts-ignore: decorator
@inline export const V6_PAYLOAD_LEN: usize = 4;
// @ts-ignore: decorator
@inline export const V6_NEXT_HEADER: usize = 6;
// @ts-ignore: decorator
@inline export const V6_SRC: usize = 8;
// @ts-ignore: decorator
@inline export const V6_DST: usize = 24;
// @ts-ignore: decorator
@inline export const V6_HEADER_LEN: u32 = 40;

// @ts-ignore: decorator
@inline export const NH_HOP_BY_HOP: u32 = 0;
// @ts-ignore: decorator
@inline export const NH_ROUTING: u32 = 43;
// @ts-ignore: decorator
@inline export const NH_FRAGMENT: u32 = 44;
// @ts-ignore: decorator
@inline export const NH_AUTH: u32 = 51;
// @ts-ignore: decorator
@inline export const NH_DEST_OPTS: u32 = 60;

/** Result of the walk: the upper-layer protocol and where it starts. */
export let v6Proto: u32 = 0;
export let v6L4Offset: u32 = 0;
export let v6Fragment = false;

/**
 * Walks the extension headers of the packet at p (len bytes, payload length
 * already checked against len). False when a header runs past the end.
 */
export function v6Walk(p: usize, len: u32): bool {
  let nh = <u32>load<u8>(p + V6_NEXT_HEADER);
  let off = V6_HEADER_LEN;
  v6Fragment = false;
  // At most 16 extension headers: a longer chain is treated as malformed.
  for (let n = 0; n < 16; n++) {
    if (nh == NH_HOP_BY_HOP || nh == NH_ROUTING || nh == NH_DEST_OPTS) {
      if (off + 8 > len) return false;
      const hlen = (<u32>load<u8>(p + off + 1) + 1) << 3;
      if (off + hlen > len) return false;
      nh = <u32>load<u8>(p + off);
      off += hlen;
    } else if (nh == NH_FRAGMENT) {
      if (off + 8 > len) return false;
      const fo = be16(p + off + 2);
      if ((fo & 0xfff9) != 0) v6Fragment = true; // offset != 0 or M set
      nh = <u32>load<u8>(p + off);
      off += 8;
    } else if (nh == NH_AUTH) {
      if (off + 8 > len) return false;
      const hlen = (<u32>load<u8>(p + off + 1) + 2) << 2;
      if (off + hlen > len) return false;
      nh = <u32>load<u8>(p + off);
      off += hlen;
    } else {
      v6Proto = nh;
      v6L4Offset = off;
      return true;
    }
  }
  return false;
}
