// Local port owners: which process bound or listens on (protocol, port).
// Used for inbound connections to listeners and for UDP sockets, when no
// fact names the exact connection. Fixed capacity, open addressing.

@unmanaged
class PortOwner {
  key: u32;  // proto << 16 | port; 0 = free, TOMB = removed
  pid: u32;
  proc: u32; // process reference (procs.ts)
  time: u32; // ms, when last put
}

// @ts-ignore: decorator
@inline const ENTRY: u32 = offsetof<PortOwner>();

// @ts-ignore: decorator
@inline const CAPACITY: u32 = 16384;
// @ts-ignore: decorator
@inline const PROBE: u32 = 16;
// A removed entry: keeps probe chains intact, reusable by puts.
// @ts-ignore: decorator
@inline const TOMB: u32 = 0xffff0000;

let table: usize = 0;

export function portOwnersInit(): void {
  if (table == 0) table = heap.alloc(<usize>CAPACITY * ENTRY);
  memory.fill(table, 0, CAPACITY * ENTRY);
}

function start(key: u32): u32 {
  let h = key * 0x9e3779b1;
  h ^= h >> 16;
  return h & (CAPACITY - 1);
}

// @ts-ignore: decorator
@inline function at(i: u32): PortOwner {
  return changetype<PortOwner>(table + <usize>i * ENTRY);
}

export function portOwnerPut(proto: u32, port: u32, pid: u32, proc: u32, now: u32): void {
  if (table == 0) return;
  const key = (proto << 16) | port;
  const h = start(key);
  let target: i32 = -1;
  let oldest: u32 = h;
  let oldestAge: u32 = 0;
  for (let k: u32 = 0; k < PROBE; k++) {
    const i = (h + k) & (CAPACITY - 1);
    const e = at(i);
    const ek = e.key;
    if (ek == key) { target = <i32>i; break; }
    if ((ek == 0 || ek == TOMB) && target < 0) target = <i32>i;
    const age = now - e.time;
    if (ek != 0 && ek != TOMB && age >= oldestAge) { oldestAge = age; oldest = i; }
  }
  const e = at(target >= 0 ? <u32>target : oldest);
  e.key = key;
  e.pid = pid;
  e.proc = proc;
  e.time = now;
}

/** The entry for (proto, port), or 0. */
export function portOwnerGet(proto: u32, port: u32): usize {
  if (table == 0) return 0;
  const key = (proto << 16) | port;
  const h = start(key);
  for (let k: u32 = 0; k < PROBE; k++) {
    const e = at((h + k) & (CAPACITY - 1));
    if (e.key == key) return changetype<usize>(e);
  }
  return 0;
}

export function portOwnerRemove(proto: u32, port: u32, pid: u32): void {
  const e = portOwnerGet(proto, port);
  if (e != 0 && changetype<PortOwner>(e).pid == pid) changetype<PortOwner>(e).key = TOMB;
}

export function portOwnerPid(e: usize): u32 {
  return changetype<PortOwner>(e).pid;
}

export function portOwnerProc(e: usize): u32 {
  return changetype<PortOwner>(e).proc;
}
