// ICMP (RFC 792) and ICMPv6 (RFC 4443) messages, as far as the engine reads
// them: the header, and in an error message the packet that caused it.
//
//    0               1               2               3
//   +---------------+---------------+-------------------------------+
//   |     Type      |     Code      |           Checksum            |   0
//   +---------------+---------------+-------------------------------+
//   |      by type: unused, next-hop MTU, MTU, pointer              |   4
//   +---------------------------------------------------------------+
//   |  errors: the invoking packet, IP header first, as much of it  |   8
//   |  as fits (ICMP: at least its first 8 bytes after the header;  |
//   |  ICMPv6: up to a 1280-byte message)                           |
//
// Error types: ICMP 3 destination unreachable, 11 time exceeded, 12
// parameter problem; ICMPv6 1 destination unreachable, 2 packet too big, 3
// time exceeded, 4 parameter problem. ICMP's checksum covers the message;
// ICMPv6's also the pseudo-header of next header 58 (RFC 4443 2.3).
//
// IcmpPacket and Icmpv6Packet are views of a message in memory: check the
// length first (checkLen), then read and write its fields.
import { be16, checksum, finish, pseudoHeaderSum, setBe16, sumBytes } from "./checksum";

const enum Field {
  Type = 0,
  Code = 1,
  Checksum = 2,
}

export const ICMP_HEADER_LEN: u32 = 8;
export const PROTO_ICMP: u32 = 1;
export const PROTO_ICMPV6: u32 = 58;

/** What ICMP and ICMPv6 messages share: the header's layout. */
@unmanaged
export class IcmpMessage {
  @inline get ptr(): usize {
    return changetype<usize>(this);
  }

  /** Do `len` bytes hold the 8-byte header? */
  checkLen(len: u32): bool {
    return len >= ICMP_HEADER_LEN;
  }

  @inline get type(): u32 {
    return <u32>load<u8>(this.ptr, Field.Type);
  }

  @inline get code(): u32 {
    return <u32>load<u8>(this.ptr, Field.Code);
  }

  @inline get checksum(): u32 {
    return be16(this.ptr + Field.Checksum);
  }

  @inline set checksum(v: u32) {
    setBe16(this.ptr + Field.Checksum, v);
  }

  /** Where an error message's invoking packet starts. */
  @inline get quoted(): usize {
    return this.ptr + ICMP_HEADER_LEN;
  }
}

@unmanaged
export class IcmpPacket extends IcmpMessage {
  @inline static at(p: usize): IcmpPacket {
    return changetype<IcmpPacket>(p);
  }

  /** Destination unreachable, time exceeded or parameter problem. */
  get isError(): bool {
    const t = this.type;
    return t == 3 || t == 11 || t == 12;
  }

  /** Computes the checksum of the `len` bytes of the message. */
  fillChecksum(len: u32): void {
    this.checksum = 0;
    this.checksum = checksum(this.ptr, len);
  }

  verifyChecksum(len: u32): bool {
    return checksum(this.ptr, len) == 0;
  }
}

@unmanaged
export class Icmpv6Packet extends IcmpMessage {
  @inline static at(p: usize): Icmpv6Packet {
    return changetype<Icmpv6Packet>(p);
  }

  /** Destination unreachable, packet too big, time exceeded or parameter problem. */
  get isError(): bool {
    const t = this.type;
    return t >= 1 && t <= 4;
  }

  /** Computes the checksum of the `len` bytes of the message with the pseudo-header of (src, dst). */
  fillChecksum(src: usize, dst: usize, len: u32): void {
    this.checksum = 0;
    this.checksum = this.pseudoChecksum(src, dst, len);
  }

  verifyChecksum(src: usize, dst: usize, len: u32): bool {
    return this.pseudoChecksum(src, dst, len) == 0;
  }

  @inline private pseudoChecksum(src: usize, dst: usize, len: u32): u32 {
    return finish(sumBytes(this.ptr, len, pseudoHeaderSum(src, dst, true, PROTO_ICMPV6, len)));
  }
}
