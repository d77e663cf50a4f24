// What TCP and UDP headers share: the ports in the first four bytes, and a
// checksum over the pseudo-header and the whole segment (RFC 9293 3.1, RFC
// 768, RFC 8200 8.1). TcpPacket and UdpPacket extend this view.
import { be16, finish, pseudoHeaderSum, setBe16, sumBytes } from "./checksum";

const enum Field {
  SrcPort = 0,
  DstPort = 2,
}

@unmanaged
export class TransportPacket {
  @inline get ptr(): usize {
    return changetype<usize>(this);
  }

  @inline get srcPort(): u32 {
    return be16(this.ptr + Field.SrcPort);
  }

  @inline set srcPort(v: u32) {
    setBe16(this.ptr + Field.SrcPort, v);
  }

  @inline get dstPort(): u32 {
    return be16(this.ptr + Field.DstPort);
  }

  @inline set dstPort(v: u32) {
    setBe16(this.ptr + Field.DstPort, v);
  }

  /**
   * The checksum the `len` bytes of this segment (its checksum field as it
   * is) and the pseudo-header of (src, dst, proto) sum to: 0 when right,
   * the value to store when the field was zeroed first.
   */
  @inline pseudoChecksum(src: usize, dst: usize, v6: bool, proto: u32, len: u32): u32 {
    return finish(sumBytes(this.ptr, len, pseudoHeaderSum(src, dst, v6, proto, len)));
  }
}
