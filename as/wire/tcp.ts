// TCP header (RFC 9293):
//
//    0               1               2               3
//   +-------------------------------+-------------------------------+
//   |          Source Port          |       Destination Port        |   0
//   +-------------------------------+-------------------------------+
//   |                        Sequence Number                        |   4
//   |                    Acknowledgment Number                      |   8
//   +-------+-------+---------------+-------------------------------+
//   | Offset|  Rsvd |     Flags     |            Window             |  12
//   +-------+-------+---------------+-------------------------------+
//   |           Checksum            |         Urgent Pointer        |  16
//   +-------------------------------+-------------------------------+  20
//
// TcpPacket is a view of a segment (header and payload) in memory: check
// the length first (checkLen), then read and write its fields.
import { be16, setBe16 } from "./checksum";
import { TransportPacket } from "./transport";

const enum Field {
  Offset = 12,
  Flags = 13,
  Checksum = 16,
}

export const TCP_MIN_HEADER: u32 = 20;
export const PROTO_TCP: u32 = 6;

/** Control bits (the Flags byte). */
export const enum TcpFlag {
  FIN = 0x01,
  SYN = 0x02,
  RST = 0x04,
  ACK = 0x10,
}

@unmanaged
export class TcpPacket extends TransportPacket {
  @inline static at(p: usize): TcpPacket {
    return changetype<TcpPacket>(p);
  }

  /** Does a segment of `len` bytes hold a header of the length it claims (20-60)? */
  checkLen(len: u32): bool {
    if (len < TCP_MIN_HEADER) return false;
    const hl = this.headerLen;
    return hl >= TCP_MIN_HEADER && hl <= len;
  }

  /** Header length in bytes, from the data offset. */
  @inline get headerLen(): u32 {
    return (<u32>load<u8>(this.ptr, Field.Offset) >> 4) << 2;
  }

  @inline get flags(): u32 {
    return <u32>load<u8>(this.ptr, Field.Flags);
  }

  @inline get checksum(): u32 {
    return be16(this.ptr + Field.Checksum);
  }

  @inline set checksum(v: u32) {
    setBe16(this.ptr + Field.Checksum, v);
  }

  /** Computes the checksum of `len` bytes with the pseudo-header of (src, dst). */
  fillChecksum(src: usize, dst: usize, v6: bool, len: u32): void {
    this.checksum = 0;
    this.checksum = this.pseudoChecksum(src, dst, v6, PROTO_TCP, len);
  }

  verifyChecksum(src: usize, dst: usize, v6: bool, len: u32): bool {
    return this.pseudoChecksum(src, dst, v6, PROTO_TCP, len) == 0;
  }
}
