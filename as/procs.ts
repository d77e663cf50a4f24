// The process table: PID -> executable path, filled from owner facts, and a
// cached intercept decision per process and policy generation.
//
// Fixed capacity, open addressing by PID (linear probing over PROBE slots).
// A slot is referenced from flows as (index | generation << 16); the
// generation changes when the slot is reused, so a stale reference reads as
// "path unknown" instead of another process's path.
//
//   slot (SLOT_SIZE bytes)
//   +0  u32 pid          +4  u32 generation (0 = free)
//   +8  u32 last used    +12 u32 path length
//   +16 u32 decision generation   +20 u32 decision (0/1)
//   +32 path bytes (PATH_MAX; a longer path keeps its tail, where the file name is)

import { activePolicy, policyGeneration } from "./config/config";
import { shouldIntercept } from "./config/policy";

// @ts-ignore: decorator
@inline const CAPACITY: u32 = 4096;
// @ts-ignore: decorator
@inline const SLOT_SIZE: u32 = 1024;
// @ts-ignore: decorator
@inline export const PATH_MAX: u32 = SLOT_SIZE - 32;
// @ts-ignore: decorator
@inline const PROBE: u32 = 16;

let table: usize = 0;
let genCounter: u32 = 0;

export function procsInit(): void {
  if (table == 0) table = heap.alloc(<usize>CAPACITY * SLOT_SIZE);
  memory.fill(table, 0, CAPACITY * SLOT_SIZE);
}

// @ts-ignore: decorator
@inline function slot(i: u32): usize {
  return table + <usize>i * SLOT_SIZE;
}

function hashPid(pid: u32): u32 {
  let h = pid * 0x9e3779b1;
  h ^= h >> 15;
  return h & (CAPACITY - 1);
}

function nextGen(): u32 {
  genCounter = (genCounter + 1) & 0x7fff;
  if (genCounter == 0) genCounter = 1;
  return genCounter;
}

/**
 * Records the path of a PID (UTF-8 at [path, path+len)); returns the
 * process reference. A different path for a known PID (a reused PID) gets a
 * new generation.
 */
export function procPut(pid: u32, path: usize, len: u32, now: u32): u32 {
  if (table == 0) procsInit();
  if (len > PATH_MAX) {
    path += len - PATH_MAX;
    len = PATH_MAX;
  }
  const h = hashPid(pid);
  let victim: u32 = h;
  let victimUsed: u32 = 0xffffffff;
  let target: i32 = -1;
  for (let k: u32 = 0; k < PROBE; k++) {
    const i = (h + k) & (CAPACITY - 1);
    const s = slot(i);
    const gen = load<u32>(s, 4);
    if (gen != 0 && load<u32>(s) == pid) {
      target = <i32>i;
      break;
    }
    if (gen == 0) {
      if (target < 0) target = <i32>i;
      continue;
    }
    const age = now - load<u32>(s, 8);
    if (victimUsed == 0xffffffff || age > victimUsed) {
      victimUsed = age;
      victim = i;
    }
  }
  if (target < 0) target = <i32>victim;
  const s = slot(<u32>target);
  const same = load<u32>(s, 4) != 0 && load<u32>(s) == pid && load<u32>(s, 12) == len &&
    memory.compare(s + 32, path, len) == 0;
  if (!same) {
    store<u32>(s, pid);
    store<u32>(s, nextGen(), 4);
    store<u32>(s, len, 12);
    store<u32>(s, 0, 16);
    memory.copy(s + 32, path, len);
  }
  store<u32>(s, now, 8);
  return <u32>target | (load<u32>(s, 4) << 16);
}

/** The slot of a reference, or 0 when it is stale. */
function live(ref: u32): usize {
  if (table == 0 || ref == 0) return 0;
  const i = ref & 0xffff;
  if (i >= CAPACITY) return 0;
  const s = slot(i);
  return load<u32>(s, 4) == ref >>> 16 ? s : 0;
}

export function procPathPtr(ref: u32): usize {
  const s = live(ref);
  return s == 0 ? 0 : s + 32;
}

export function procPathLen(ref: u32): u32 {
  const s = live(ref);
  return s == 0 ? 0 : load<u32>(s, 12);
}

/** The policy's decision for a process (cached per policy generation). */
export function procIntercepted(ref: u32, pid: u32): bool {
  const s = live(ref);
  if (s == 0) return shouldIntercept(activePolicy, pid, 0, 0);
  if (load<u32>(s, 16) != policyGeneration) {
    store<u32>(s, policyGeneration, 16);
    store<u32>(s, shouldIntercept(activePolicy, pid, s + 32, load<u32>(s, 12)) ? 1 : 0, 20);
  }
  return load<u32>(s, 20) != 0;
}
