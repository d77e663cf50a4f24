// Local port owners: which process listens on, or bound, a local address
// and port. Used for inbound connections to listeners and for UDP sockets,
// when no fact names the exact connection. Fixed capacity, open addressing.
//
// An entry is keyed by (protocol, family, local address, port), the address
// as the socket was bound: a wildcard (0.0.0.0, ::) or one address. A
// connection to (proto, A, port) belongs to (portOwnerCovering)
//   1. a socket bound to A itself, else
//   2. a wildcard socket of A's family, else
//   3. for IPv4 A, a socket bound to [::]: a dual-stack socket serves IPv4
//      too. Whether a [::] socket is v6-only no backend can tell (WinDivert's
//      events carry no such fact), so one is taken as dual-stack, but only
//      after every IPv4 socket on the port: an IPv4 listener always wins.
// An entry goes only when its own socket is released: the same key and PID
// (portOwnerRemove), never on the close of one of its connections.

@unmanaged
class PortOwner {
  key: u32;   // v6 << 24 | proto << 16 | port; 0 = free, TOMB = removed
  pid: u32;
  proc: u32;  // process reference (procs.ts)
  time: u32;  // ms, when last put
  addr0: u64; // the local address: 4 or 16 bytes, the rest zero
  addr1: u64;
}

const ENTRY: u32 = offsetof<PortOwner>();

const CAPACITY: u32 = 16384;
const PROBE: u32 = 16;
// A removed entry: keeps probe chains intact, reusable by puts.
const TOMB: u32 = 0xffff0000;

let table: usize = 0;

// The address of the entry being looked for (16 bytes, zero-padded).
const want = memory.data(16);

export function portOwnersInit(): void {
  if (table == 0) table = heap.alloc(<usize>CAPACITY * ENTRY);
  memory.fill(table, 0, CAPACITY * ENTRY);
}

/** The key for (proto, family, port); its address goes to `want`. */
function setWant(proto: u32, v6: bool, addr: usize, port: u32): u32 {
  memory.fill(want, 0, 16);
  memory.copy(want, addr, v6 ? 16 : 4);
  return (v6 ? 1 << 24 : 0) | (proto << 16) | port;
}

function start(key: u32): u32 {
  let h = key * 0x9e3779b1;
  h ^= load<u32>(want) * 0x85ebca6b;
  h ^= load<u32>(want, 4) * 0xc2b2ae35;
  h ^= load<u32>(want, 8) * 0x27d4eb2f;
  h ^= load<u32>(want, 12) * 0x165667b1;
  h ^= h >> 16;
  return h & (CAPACITY - 1);
}

// @ts-ignore: decorator
@inline function at(i: u32): PortOwner {
  return changetype<PortOwner>(table + <usize>i * ENTRY);
}

function matches(e: PortOwner, key: u32): bool {
  return e.key == key && e.addr0 == load<u64>(want) && e.addr1 == load<u64>(want, 8);
}

/**
 * The entry whose key is exactly `key` and `want`, or 0. A never-used slot
 * ends the search: a put takes the first free slot of its chain, and a
 * removal leaves TOMB, never 0, so nothing of this key lies beyond one. (A
 * miss, the common case for a new flow, then costs one probe, not PROBE.)
 */
function find(key: u32): usize {
  if (table == 0) return 0;
  const h = start(key);
  for (let k: u32 = 0; k < PROBE; k++) {
    const e = at((h + k) & (CAPACITY - 1));
    if (matches(e, key)) return changetype<usize>(e);
    if (e.key == 0) break;
  }
  return 0;
}

/** Records the owner of a socket bound to (proto, addr, port); addr: 4 or 16 bytes. */
export function portOwnerPut(proto: u32, v6: bool, addr: usize, port: u32, pid: u32, proc: u32, now: u32): void {
  if (table == 0) return;
  const key = setWant(proto, v6, addr, port);
  const h = start(key);
  let target: i32 = -1;
  let oldest: u32 = h;
  let oldestAge: u32 = 0;
  for (let k: u32 = 0; k < PROBE; k++) {
    const i = (h + k) & (CAPACITY - 1);
    const e = at(i);
    const ek = e.key;
    if (matches(e, key)) { target = <i32>i; break; }
    if ((ek == 0 || ek == TOMB) && target < 0) target = <i32>i;
    const age = now - e.time;
    if (ek != 0 && ek != TOMB && age >= oldestAge) { oldestAge = age; oldest = i; }
  }
  const e = at(target >= 0 ? <u32>target : oldest);
  e.key = key;
  e.addr0 = load<u64>(want);
  e.addr1 = load<u64>(want, 8);
  e.pid = pid;
  e.proc = proc;
  e.time = now;
}

const ANY = memory.data(16);

/**
 * The owner of a connection to (proto, addr, port) on this host: the socket
 * bound to addr, else a wildcard of its family, else (IPv4) a [::] socket.
 * The entry, or 0.
 */
export function portOwnerCovering(proto: u32, v6: bool, addr: usize, port: u32): usize {
  let e = find(setWant(proto, v6, addr, port));
  if (e == 0) e = find(setWant(proto, v6, ANY, port));
  if (e == 0 && !v6) e = find(setWant(proto, true, ANY, port));
  return e;
}

/**
 * Does a socket bound to (ownerV6, owner) serve connections to (v6, addr)?
 * The same rule as portOwnerCovering, for one socket.
 */
export function portOwnerCovers(ownerV6: bool, owner: usize, v6: bool, addr: usize): bool {
  const wildcard = isUnspecified(owner, ownerV6);
  if (ownerV6 != v6) return ownerV6 && !v6 && wildcard;
  return wildcard || memory.compare(owner, addr, v6 ? 16 : 4) == 0;
}

/** 0.0.0.0 or :: (4 or 16 bytes at a). */
export function isUnspecified(a: usize, v6: bool): bool {
  if (!v6) return load<u32>(a) == 0;
  return load<u64>(a) == 0 && load<u64>(a, 8) == 0;
}

/** Forgets the socket bound to (proto, addr, port) when `pid` owns it. */
export function portOwnerRemove(proto: u32, v6: bool, addr: usize, port: u32, pid: u32): void {
  const e = find(setWant(proto, v6, addr, port));
  if (e != 0 && changetype<PortOwner>(e).pid == pid) changetype<PortOwner>(e).key = TOMB;
}

export function portOwnerPid(e: usize): u32 {
  return changetype<PortOwner>(e).pid;
}

export function portOwnerProc(e: usize): u32 {
  return changetype<PortOwner>(e).proc;
}
