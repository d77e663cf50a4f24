// The Internet checksum (RFC 1071): one's-complement sum of 16-bit
// big-endian words, its incremental update (RFC 1624, eqn. 3):
//   HC' = ~(~HC + ~m + m')
// and the pseudo-header TCP and UDP sum over (RFC 9293 3.1, RFC 8200 8.1).

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

/** Folds a running sum to 16 bits (not complemented). */
export function fold(s: u64): u64 {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return s;
}

/** Folds a sum to 16 bits and complements it. */
export function finish(sum: u64): u32 {
  return <u32>(~fold(sum)) & 0xffff;
}

/** The checksum of bytes [p, p+len). */
export function checksum(p: usize, len: u32): u32 {
  return finish(sumBytes(p, len, 0));
}

/**
 * The sum of an IPv4 (4 bytes) or IPv6 (16 bytes) address's words. An IPv4
 * address's two words are added here: sumBytes' call and loops would cost
 * every rewritten packet four times.
 */
// @ts-ignore: decorator
@inline export function addrSum(a: usize, v6: bool): u64 {
  return v6 ? sumBytes(a, 16, 0) : <u64>be16(a) + <u64>be16(a + 2);
}

/**
 * The pseudo-header's sum: source and destination address, protocol, and
 * the upper-layer length (the same sum for IPv4 and IPv6).
 */
export function pseudoHeaderSum(src: usize, dst: usize, v6: bool, proto: u32, len: u32): u64 {
  return addrSum(src, v6) + addrSum(dst, v6) + <u64>proto + <u64>len;
}

/**
 * The checksum a 16-bit field holding `old` gets when words summing to
 * `oldSum` are replaced by words summing to `newSum` (RFC 1624, eqn. 3).
 */
export function updateChecksum(old: u32, oldSum: u64, newSum: u64): u32 {
  const s = <u64>(~old & 0xffff) + fold(newSum) + (0xffff - fold(oldSum));
  return <u32>(~fold(s)) & 0xffff;
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
