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

// @ts-ignore: decorator
@inline export const TCP_SRC_PORT: usize = 0;
// @ts-ignore: decorator
@inline export const TCP_DST_PORT: usize = 2;
// @ts-ignore: decorator
@inline export const TCP_OFFSET: usize = 12;
// @ts-ignore: decorator
@inline export const TCP_FLAGS: usize = 13;
// @ts-ignore: decorator
@inline export const TCP_CHECKSUM: usize = 16;
// @ts-ignore: decorator
@inline export const TCP_MIN_LEN: u32 = 20;

// @ts-ignore: decorator
@inline export const TCP_FIN: u32 = 0x01;
// @ts-ignore: decorator
@inline export const TCP_SYN: u32 = 0x02;
// @ts-ignore: decorator
@inline export const TCP_RST: u32 = 0x04;
// @ts-ignore: decorator
@inline export const TCP_ACK: u32 = 0x10;

// @ts-ignore: decorator
@inline export function tcpHeaderLen(p: usize): u32 {
  return (<u32>load<u8>(p + TCP_OFFSET) >> 4) << 2;
}
