// Excluded sockets: local ends of the host process's own sockets (the proxy's
// upstream connections, where the capture sees the host's packets too)
// whose packets pass at once, both ways: no flow entry, no hold, no owner
// look-up.
//
// An entry is (protocol, family, local address, local port); an all-zero
// address stands for any address of its family (a socket bound to the
// wildcard), and a dual-stack entry (an IPv6 socket on [::] that carries
// IPv4 too) matches IPv4 packets as well.
//
// The host cannot say when a socket closes, so the entries of a port go at
// any owner fact for (protocol, port) but this process's own bind, connect,
// listen or accept: a CLOSE (ours, whatever PID the event names), or any
// fact of another process (a claim on the port can only follow our socket's
// close). That may remove more than the closed socket's entry (another
// socket of ours on the same port number, of the other family; an entry
// whose socket another process's socket merely shares a port number with):
// that socket's packets then wait for their owner like any new flow's, and
// pass when it is known. Never the other way: an entry outliving its socket
// would let another process's connection on the reused port pass
// unredirected.
//
// Fixed capacity (max_flows, sized at start), chained buckets by
// (protocol, port), a free list: adding to a full table fails, with no
// eviction (evicting would only make the caller's socket slower, silently).

import { addrEq } from "./flows";
import { bucketsFor, freeList, zeroed } from "./pool";

@unmanaged
class Exclusion {
  key: u32;     // proto << 16 | port; 0 = free
  next: u32;    // the next entry in the bucket's chain, or in the free list (1-based; 0 = none)
  family: u8;   // 4 or 6
  dual: u8;     // 1: an IPv6 wildcard that carries IPv4 too
  private pad: u16;
  private addr0: u64; // 4 or 16 bytes; all zero: any
  private addr1: u64;

  @inline get addr(): usize {
    return changetype<usize>(this) + offsetof<Exclusion>("addr0");
  }
}

const ENTRY: u32 = offsetof<Exclusion>();

let entries: usize = 0;
let capacity: u32 = 0;
let buckets: usize = 0;
let bucketMask: u32 = 0;
let freeHead: u32 = 0;
let used: u32 = 0;

// @ts-ignore: decorator
@inline function at(i: u32): Exclusion {
  return changetype<Exclusion>(entries + <usize>(i - 1) * ENTRY);
}

function bucketOf(key: u32): usize {
  let h = key * 0x9e3779b1;
  h ^= h >> 16;
  return buckets + (<usize>(h & bucketMask) << 2);
}

/** Preallocates `cap` entries, all free. */
export function exclusionsInit(cap: u32): void {
  capacity = cap;
  const nb = bucketsFor(cap);
  bucketMask = nb - 1;
  entries = zeroed(<usize>cap * ENTRY);
  buckets = zeroed(<usize>nb * 4);
  freeHead = freeList(entries, cap, ENTRY, offsetof<Exclusion>("next"));
  used = 0;
}

export function exclusionsCapacity(): u32 {
  return capacity;
}

function isZero(a: usize, v6: bool): bool {
  return v6 ? load<u64>(a) == 0 && load<u64>(a, 8) == 0 : load<u32>(a) == 0;
}

/** The entry of exactly this socket end, or 0. */
function find(key: u32, v6: bool, addr: usize): u32 {
  let i = load<u32>(bucketOf(key));
  while (i != 0) {
    const e = at(i);
    if (e.key == key && (e.family == 6) == v6 && addrEq(e.addr, addr, v6)) return i;
    i = e.next;
  }
  return 0;
}

/**
 * Adds a socket's local end (addr: 4 or 16 bytes, all zero for any). The
 * same end twice is one entry (dual widened if asked). false when the table
 * is full.
 */
export function exclusionAdd(proto: u32, v6: bool, addr: usize, port: u32, dual: bool): bool {
  const key = (proto << 16) | port;
  const have = capacity == 0 ? 0 : find(key, v6, addr);
  if (have != 0) {
    if (dual) at(have).dual = 1;
    return true;
  }
  if (freeHead == 0) return false;
  const i = freeHead;
  const e = at(i);
  freeHead = e.next;
  e.key = key;
  e.family = v6 ? 6 : 4;
  e.dual = dual ? 1 : 0;
  memory.fill(e.addr, 0, 16);
  memory.copy(e.addr, addr, v6 ? 16 : 4);
  const b = bucketOf(key);
  e.next = load<u32>(b);
  store<u32>(b, i);
  used++;
  return true;
}

/** Does a packet's local end (protocol, family, address, port) belong to an excluded socket? */
export function exclusionMatch(proto: u32, v6: bool, addr: usize, port: u32): bool {
  if (used == 0) return false;
  const key = (proto << 16) | port;
  let i = load<u32>(bucketOf(key));
  while (i != 0) {
    const e = at(i);
    if (e.key == key) {
      const ev6 = e.family == 6;
      if (ev6 == v6) {
        if (isZero(e.addr, v6) || addrEq(e.addr, addr, v6)) return true;
      } else if (e.dual != 0 && !v6) {
        return true; // a dual-stack wildcard: IPv4 from any address too
      }
    }
    i = e.next;
  }
  return false;
}

/** Removes every entry of (protocol, port), whatever its family and address. */
export function exclusionsDropPort(proto: u32, port: u32): void {
  if (used == 0) return;
  const key = (proto << 16) | port;
  const b = bucketOf(key);
  let prev: u32 = 0;
  let i = load<u32>(b);
  while (i != 0) {
    const e = at(i);
    const next = e.next;
    if (e.key == key) {
      if (prev == 0) store<u32>(b, next);
      else at(prev).next = next;
      e.key = 0;
      e.next = freeHead;
      freeHead = i;
      used--;
    } else {
      prev = i;
    }
    i = next;
  }
}
