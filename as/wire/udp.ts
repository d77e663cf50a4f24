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

// @ts-ignore: decorator
@inline export const UDP_SRC_PORT: usize = 0;
// @ts-ignore: decorator
@inline export const UDP_DST_PORT: usize = 2;
// @ts-ignore: decorator
@inline export const UDP_LENGTH: usize = 4;
// @ts-ignore: decorator
@inline export const UDP_CHECKSUM: usize = 6;
// @ts-ignore: decorator
@inline export const UDP_HEADER_LEN: u32 = 8;
