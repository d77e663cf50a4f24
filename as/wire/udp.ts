// UDP header (RFC 768):
//
//    0               1               2               3
//   +-------------------------------+-------------------------------+
//   |          Source Port          |       Destination Port        |   0
//   +-------------------------------+-------------------------------+
//   |            Length             |           Checksum            |   4
//   +-------------------------------+-------------------------------+   8
//
// IPv4: checksum 0 means "none" and stays 0. IPv6: the checksum is
// mandatory (RFC 8200 8.1); a computed 0 is sent as 0xffff.
//
// UdpPacket is a view of a datagram in memory: check the length first
// (checkLen), then read and write its fields.
import { be16, setBe16 } from "./checksum";
import { TransportPacket } from "./transport";

const enum Field {
  Length = 4,
  Checksum = 6,
}

export const UDP_HEADER_LEN: u32 = 8;
export const PROTO_UDP: u32 = 17;

@unmanaged
export class UdpPacket extends TransportPacket {
  @inline static at(p: usize): UdpPacket {
    return changetype<UdpPacket>(p);
  }

  /** Do `len` bytes hold the header and the length it claims (at least 8)? */
  checkLen(len: u32): bool {
    if (len < UDP_HEADER_LEN) return false;
    const l = this.length;
    return l >= UDP_HEADER_LEN && l <= len;
  }

  /** Header and payload, in bytes. */
  @inline get length(): u32 {
    return be16(this.ptr + Field.Length);
  }

  @inline get checksum(): u32 {
    return be16(this.ptr + Field.Checksum);
  }

  @inline set checksum(v: u32) {
    setBe16(this.ptr + Field.Checksum, v);
  }

  /**
   * Computes the checksum of `len` bytes (the upper-layer length: what the
   * IP header says) with the pseudo-header of (src, dst); 0 is sent as 0xffff.
   */
  fillChecksum(src: usize, dst: usize, v6: bool, len: u32): void {
    this.checksum = 0;
    const cs = this.pseudoChecksum(src, dst, v6, PROTO_UDP, len);
    this.checksum = cs == 0 ? 0xffff : cs;
  }

  /** True for a right checksum, and for IPv4's "no checksum" (0). */
  verifyChecksum(src: usize, dst: usize, v6: bool, len: u32): bool {
    if (!v6 && this.checksum == 0) return true;
    return this.pseudoChecksum(src, dst, v6, PROTO_UDP, len) == 0;
  }
}
