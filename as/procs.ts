// The process table: PID -> executable path, filled from owner facts, and a
// cached intercept decision per process and policy generation.
//
// Fixed capacity, open addressing by PID (linear probing over PROBE slots).
// A slot is referenced from flows as (index | generation << 16); the
// generation changes when the slot is reused, so a stale reference reads as
// "path unknown" instead of another process's path.

import { activePolicy, policyGeneration } from "./config/config";
import { shouldIntercept, treeRoots } from "./config/policy";
import { lineageMask } from "./lineage";

/** A slot (SLOT_SIZE bytes): the fields, then the path. */
@unmanaged
class Proc {
  pid: u32;
  gen: u32;         // generation; 0 = free
  lastUse: u32;     // ms
  pathLen: u32;
  decisionGen: u32; // the policy generation the decision is for
  decision: u32;    // 1 intercepted, 0 not
  line: u32;        // the process's identity in lineage.ts (a reference: lastRef), 0: none
  private pathStart: u64; // the path starts here (PATH_MAX bytes; a longer path keeps its tail, where the file name is)

  @inline get path(): usize {
    return changetype<usize>(this) + offsetof<Proc>("pathStart");
  }
}

const CAPACITY: u32 = 4096;
const SLOT_SIZE: u32 = 1024;
export const PATH_MAX: u32 = SLOT_SIZE - offsetof<Proc>("pathStart");
const PROBE: u32 = 16;

// The path starts 32 bytes into the slot (PATH_MAX is part of what callers see).
if (offsetof<Proc>("pathStart") != 32) ERROR("Proc's path must start at 32");

let table: usize = 0;
let genCounter: u32 = 0;

export function procsInit(): void {
  if (table == 0) table = heap.alloc(<usize>CAPACITY * SLOT_SIZE);
  memory.fill(table, 0, CAPACITY * SLOT_SIZE);
}

// @ts-ignore: decorator
@inline function slot(i: u32): Proc {
  return changetype<Proc>(table + <usize>i * SLOT_SIZE);
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
 * Records the path of a PID (UTF-8 at [path, path+len)) and its identity in
 * lineage.ts (line, 0: none); returns the process reference. A different path
 * or identity for a known PID (a reused PID) gets a new generation.
 */
export function procPut(pid: u32, path: usize, len: u32, now: u32, line: u32): u32 {
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
    const gen = s.gen;
    if (gen != 0 && s.pid == pid) {
      target = <i32>i;
      break;
    }
    if (gen == 0) {
      if (target < 0) target = <i32>i;
      continue;
    }
    const age = now - s.lastUse;
    if (victimUsed == 0xffffffff || age > victimUsed) {
      victimUsed = age;
      victim = i;
    }
  }
  if (target < 0) target = <i32>victim;
  const s = slot(<u32>target);
  // The same process: the same path and the same identity (none, from a
  // fact without ancestry, is not the same as one: the PID may name another
  // process since).
  const same = s.gen != 0 && s.pid == pid && s.pathLen == len && memory.compare(s.path, path, len) == 0 &&
    s.line == line;
  if (!same) {
    s.pid = pid;
    s.gen = nextGen();
    s.pathLen = len;
    s.decisionGen = 0;
    s.line = line;
    memory.copy(s.path, path, len);
  }
  s.lastUse = now;
  return <u32>target | (s.gen << 16);
}

/** The slot of a reference, or null when it is stale. */
function live(ref: u32): Proc | null {
  if (table == 0 || ref == 0) return null;
  const i = ref & 0xffff;
  if (i >= CAPACITY) return null;
  const s = slot(i);
  return s.gen == ref >>> 16 ? s : null;
}

export function procPathPtr(ref: u32): usize {
  const s = live(ref);
  return s === null ? 0 : s.path;
}

export function procPathLen(ref: u32): u32 {
  const s = live(ref);
  return s === null ? 0 : s.pathLen;
}

/** The policy's decision for a process (cached per policy generation). */
export function procIntercepted(ref: u32, pid: u32): bool {
  const s = live(ref);
  if (s === null) return shouldIntercept(activePolicy, pid, 0, 0, 0);
  if (s.decisionGen != policyGeneration) {
    s.decisionGen = policyGeneration;
    // No identity (a backend that gives no ancestry): a process is in the
    // trees it is the root of, by its PID or path (as redirector_would_intercept
    // answers).
    const mask = s.line != 0 ? lineageMask(s.line, pid, s.path, s.pathLen)
      : treeRoots(activePolicy, pid, s.path, s.pathLen, true);
    s.decision = shouldIntercept(activePolicy, pid, s.path, s.pathLen, mask) ? 1 : 0;
  }
  return s.decision != 0;
}
