// The Internet checksum (RFC 1071): one's-complement sum of 16-bit
// big-endian words, and its incremental update (RFC 1624, eqn. 3):
//   HC' = ~(~HC + ~m + m')

/** Adds bytes [p, p+len) to a running 32-bit sum (not yet folded). */
export function sumBytes(p: usize, len: u32, sum: u64): u64 {
  let i: u32 = 0;
  // 8 bytes at a time: add four big-endian words.
  while (i + 8 <= len) {
    const v = load<u64>(p + i);
    sum += <u64>bswap<u16>(<u16>v) + <u64>bswap<u16>(<u16>(v >> 16)) +
      <u64>bswap<u16>(<u16>(v >> 32)) + <u64>bswap<u16>(<u16>(v >> 48));
    i += 8;
  }
  while (i + 2 <= len) {
    sum += <u64>bswap<u16>(load<u16>(p + i));
    i += 2;
  }
  if (i < len) sum += <u64>load<u8>(p + i) << 8;
  return sum;
}

/** Folds a sum to 16 bits and complements it. */
export function finish(sum: u64): u32 {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return <u32>(~sum) & 0xffff;
}

/** The checksum of bytes [p, p+len). */
export function checksum(p: usize, len: u32): u32 {
  return finish(sumBytes(p, len, 0));
}

/** Big-endian 16-bit load/store. */
// @ts-ignore: decorator
@inline export function be16(p: usize): u32 {
  return <u32>bswap<u16>(load<u16>(p));
}

// @ts-ignore: decorator
@inline export function setBe16(p: usize, v: u32): void {
  store<u16>(p, bswap<u16>(<u16>v));
}
