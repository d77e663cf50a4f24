// IPv4 header (RFC 791):
//
//    0               1               2               3
//   +-------+-------+---------------+-------------------------------+
//   |Version|  IHL  |    DSCP/ECN   |          Total Length         |   0
//   +-------+-------+---------------+-----+-------------------------+
//   |         Identification        |Flags|     Fragment Offset     |   4
//   +---------------+---------------+-----+-------------------------+
//   |      TTL      |    Protocol   |        Header Checksum        |   8
//   +---------------+---------------+-------------------------------+
//   |                        Source Address                         |  12
//   +---------------------------------------------------------------+
//   |                     Destination Address                       |  16
//   +---------------------------------------------------------------+
//   |                    Options (IHL > 5)                          |  20
import { be16, checksum, setBe16 } from "./checksum";

// @ts-ignore: decorator
@inline export const V4_VER_IHL: usize = 0;
// @ts-ignore: decorator
@inline export const V4_TOTAL_LEN: usize = 2;
// @ts-ignore: decorator
@inline export const V4_FLAGS_FRAG: usize = 6;
// @ts-ignore: decorator
@inline export const V4_PROTOCOL: usize = 9;
// @ts-ignore: decorator
@inline export const V4_CHECKSUM: usize = 10;
// @ts-ignore: decorator
@inline export const V4_SRC: usize = 12;
// @ts-ignore: decorator
@inline export const V4_DST: usize = 16;
// @ts-ignore: decorator
@inline export const V4_MIN_LEN: u32 = 20;

/** Header length in bytes, from IHL. */
// @ts-ignore: decorator
@inline export function v4HeaderLen(p: usize): u32 {
  return (<u32>load<u8>(p + V4_VER_IHL) & 0x0f) << 2;
}

// @ts-ignore: decorator
@inline export function v4TotalLen(p: usize): u32 {
  return be16(p + V4_TOTAL_LEN);
}

/** More-fragments set or a non-zero offset: this is a fragment. */
// @ts-ignore: decorator
@inline export function v4IsFragment(p: usize): bool {
  return (be16(p + V4_FLAGS_FRAG) & 0x3fff) != 0;
}

/** Recomputes the header checksum in full. */
export function v4FillChecksum(p: usize): void {
  setBe16(p + V4_CHECKSUM, 0);
  setBe16(p + V4_CHECKSUM, checksum(p, v4HeaderLen(p)));
}
