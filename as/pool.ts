// Fixed tables, preallocated at start: zeroed blocks, bucket arrays and free
// lists of 1-based entries (flows.ts, held.ts, exclusions.ts). Nothing here
// is freed: an instance lives for one run.

/** A block of `bytes` zero bytes. */
export function zeroed(bytes: usize): usize {
  const p = heap.alloc(bytes);
  memory.fill(p, 0, bytes);
  return p;
}

/** A bucket count for `keys` keys: a power of two, at least 16 and `keys`. */
export function bucketsFor(keys: u32): u32 {
  let nb: u32 = 16;
  while (nb < keys) nb <<= 1;
  return nb;
}

/**
 * Links entries 1..count (`size` bytes each from `base`) into a free list
 * through the u32 at offset `nextAt` of each, in order; returns its head.
 */
export function freeList(base: usize, count: u32, size: u32, nextAt: u32): u32 {
  let head: u32 = 0;
  for (let i: u32 = count; i >= 1; i--) {
    store<u32>(base + <usize>(i - 1) * size + nextAt, head);
    head = i;
  }
  return head;
}
