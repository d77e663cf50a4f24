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
//
// Ipv4Packet is a view of packet bytes in memory (no copy): check the
// length first (checkLen), then read and write its fields.
import { be16, checksum, setBe16 } from "./checksum";

const enum Field {
  VerIhl = 0,
  TotalLen = 2,
  FlagsFrag = 6,
  Protocol = 9,
  Checksum = 10,
  Src = 12,
  Dst = 16,
}

export const IPV4_MIN_HEADER: u32 = 20;

@unmanaged
export class Ipv4Packet {
  /** The view of the bytes at p; valid to read only when checkLen passed. */
  @inline static at(p: usize): Ipv4Packet {
    return changetype<Ipv4Packet>(p);
  }

  /**
   * Do `len` bytes hold this header and the packet its total length claims?
   * False for a header shorter than 20 bytes, a total length below the
   * header length, or a total length past `len`.
   */
  checkLen(len: u32): bool {
    if (len < IPV4_MIN_HEADER) return false;
    const hl = this.headerLen;
    const total = this.totalLen;
    return hl >= IPV4_MIN_HEADER && total >= hl && total <= len;
  }

  /**
   * Does a packet cut off after `len` bytes (as an ICMP error quotes it)
   * hold this whole header? False for a header shorter than 20 bytes or past
   * `len`, or a total length below the header length.
   */
  checkHeaderLen(len: u32): bool {
    if (len < IPV4_MIN_HEADER) return false;
    const hl = this.headerLen;
    return hl >= IPV4_MIN_HEADER && hl <= len && this.totalLen >= hl;
  }

  @inline get ptr(): usize {
    return changetype<usize>(this);
  }

  @inline get version(): u32 {
    return <u32>load<u8>(this.ptr, Field.VerIhl) >> 4;
  }

  /** Header length in bytes, from IHL. */
  @inline get headerLen(): u32 {
    return (<u32>load<u8>(this.ptr, Field.VerIhl) & 0x0f) << 2;
  }

  @inline get totalLen(): u32 {
    return be16(this.ptr + Field.TotalLen);
  }

  /** More-fragments set or a non-zero offset: this is a fragment. */
  @inline get isFragment(): bool {
    return (be16(this.ptr + Field.FlagsFrag) & 0x3fff) != 0;
  }

  @inline get protocol(): u32 {
    return <u32>load<u8>(this.ptr, Field.Protocol);
  }

  /** Where the source address's 4 bytes are. */
  @inline get srcAddr(): usize {
    return this.ptr + Field.Src;
  }

  @inline get dstAddr(): usize {
    return this.ptr + Field.Dst;
  }

  setSrcAddr(a: usize): void {
    memory.copy(this.srcAddr, a, 4);
  }

  setDstAddr(a: usize): void {
    memory.copy(this.dstAddr, a, 4);
  }

  @inline get checksum(): u32 {
    return be16(this.ptr + Field.Checksum);
  }

  /**
   * Recomputes the header checksum in full. Inlined: every rewritten IPv4
   * packet's path (the header's sum stays a call).
   */
  @inline fillChecksum(): void {
    setBe16(this.ptr + Field.Checksum, 0);
    setBe16(this.ptr + Field.Checksum, checksum(this.ptr, this.headerLen));
  }

  verifyChecksum(): bool {
    return checksum(this.ptr, this.headerLen) == 0;
  }
}
