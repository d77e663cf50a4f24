// Process trees: which tree entries of the policy (policy.ts, "tree:")
// each process belongs to, remembered by the process's identity (PID and
// creation time), with the parent it had when it was created.
//
// A process is in an entry's tree when it is the entry's root itself or when
// its parent (as it was at the process's creation) is in the tree. The host
// hands an ancestry (the process, its parent, ..., as far as it sees: a
// parent that has exited, or whose PID now names a younger process, ends it).
// Each process of it is entered here with the parent it is listed with the
// first time; a later ancestry that lists another parent (Linux re-parents an
// orphan to init or a subreaper) does not change it. So a process whose parent
// exits keeps its membership, and so do the processes it starts later, as
// long as the engine saw it (or an ancestry through it) while its parent
// lived. A tree mask is cached per identity and policy generation: once
// decided, an identity is never decided again under the same policy, unless
// an ancestry lists it (as the process, or as a parent) with another path
// than it was decided with (Linux: exec() keeps the PID and start time, not
// the program; a child started after the exec() is decided under the new
// program).
//
// No paths are kept, so under a new policy a remembered ancestor could not be
// matched by a pattern again: its membership of each pattern tree that both
// policies name (the same pattern) is carried over to the new tree bits
// (keep); that of trees the new policy drops goes. PID trees and the pattern
// trees the new policy adds are decided again from the parents remembered (a
// process that exited before is not matched by a new pattern). A process
// that exec()s another program drops what it carried.
//
// A tree entry by PID names the process that had the PID when the
// configuration was set: a process created after that (from its age in the
// ancestry) is not that entry's root, whatever its PID.
//
// Fixed capacity, open addressing by (PID, creation time); the least recently
// used entry of a probe run makes room.

import { activePolicy, policyGeneration } from "./config/config";
import { Policy, treeCarry, treeRoots, TREE_MAX } from "./config/policy";
import { Ancestor, ANCESTOR_SIZE, ANCESTRY_MAX } from "../build/gen/contract";

@unmanaged
class Line {
  pid: u32;
  used: u32;      // 0 = free, else last use (the clock's low bits | 1)
  mask: u32;      // tree mask under policy generation maskGen
  maskGen: u32;   // 0: not decided
  parentPid: u32; // 0: no parent known
  pathHash: u32;  // the path the mask was decided with (pathHashOf), 0: none
  lastPath: u32;  // the path last seen for the identity (pathHashOf), 0: none yet
  keep: u32;      // pattern-tree membership carried from earlier configurations (bits of the policy in force)
  gen: u32;       // counts the identities the slot has held (references name it: refOf)
  ctime: u64;
  parentCtime: u64;
  created: i64;   // creation on the engine's clock (ms); NO_TIME: not known
}

const CAPACITY: u32 = 16384;
const PROBE: u32 = 32;
const NO_TIME: i64 = i64.MAX_VALUE;
const DEPTH_MAX: i32 = 64;

let table: usize = 0;

/** The engine's clock, ms: the host's u32 `now` widened to 64 bits. */
let clock: i64 = 0;
let lastNow: u32 = 0;
let clockSet: bool = false;
/** When the policy in force was set, on that clock. */
let configAt: i64 = 0;

export function clockAt(now: u32): i64 {
  if (!clockSet) {
    clockSet = true;
    clock = <i64>now;
  } else {
    const d = now - lastNow; // a u32 difference: wraps correctly
    // A step back (threads' readings arriving out of order) counts as none,
    // and the latest reading stays the mark: the next step forward counts
    // only what is new, so the clock does not run ahead of the host's.
    if (d >= 0x80000000) return clock;
    clock += <i64>d;
  }
  lastNow = now;
  return clock;
}

const carry = new StaticArray<u32>(<i32>TREE_MAX);

/**
 * The configuration in force was set at `now`, replacing `old` (policy
 * generation policyGeneration - 1). Each remembered identity's membership of
 * a pattern tree that both name is carried over (keep, remapped to the new
 * tree bits): the engine keeps no paths, so a remembered ancestor could not
 * be matched by its pattern again. Trees new in this configuration, and PID
 * trees, are decided again from the parents remembered.
 */
export function lineageConfigSet(now: u32, old: Policy): void {
  configAt = clockAt(now);
  if (table == 0) return;
  treeCarry(old, activePolicy, carry);
  const oldGen = policyGeneration - 1;
  for (let i: u32 = 0; i < CAPACITY; i++) {
    const s = slot(i);
    if (s.used == 0) continue;
    const base = s.maskGen != 0 && s.maskGen == oldGen ? s.mask : s.keep;
    let k: u32 = 0;
    for (let m = base; m != 0; m &= m - 1) k |= unchecked(carry[<i32>ctz(m)]);
    s.keep = k;
  }
}

export function lineageInit(): void {
  if (table == 0) table = heap.alloc(<usize>CAPACITY * offsetof<Line>());
  memory.fill(table, 0, <usize>CAPACITY * offsetof<Line>());
}

// @ts-ignore: decorator
@inline function slot(i: u32): Line {
  return changetype<Line>(table + <usize>i * offsetof<Line>());
}

function hashId(pid: u32, ctime: u64): u32 {
  let h = pid * 0x9e3779b1 ^ <u32>ctime * 0x85ebca6b ^ <u32>(ctime >> 32);
  h ^= h >> 15;
  return h & (CAPACITY - 1);
}

// A reference handed out (lastRef, procs.ts): the slot index + 1 and the
// slot's gen, so one kept while its slot went to another identity (the same
// PID, another creation time) no longer names it.
const REF_SHIFT: u32 = 15;
const GEN_MASK: u32 = 0x1ffff;

function refOf(ref: u32): u32 {
  return ref == 0 ? 0 : ref | (slot(ref - 1).gen << REF_SHIFT);
}

/** The slot (+1) a reference names, or 0 when the slot holds another identity since. */
function unref(ext: u32): u32 {
  if (ext == 0 || table == 0) return 0;
  const ref = ext & ((1 << REF_SHIFT) - 1);
  if (ref == 0 || ref > CAPACITY) return 0;
  const s = slot(ref - 1);
  return s.used != 0 && s.gen == ext >>> REF_SHIFT ? ref : 0;
}

/** The slot index + 1 of an identity, or 0. */
function find(pid: u32, ctime: u64): u32 {
  if (table == 0) return 0;
  const h = hashId(pid, ctime);
  for (let k: u32 = 0; k < PROBE; k++) {
    const i = (h + k) & (CAPACITY - 1);
    const s = slot(i);
    if (s.used != 0 && s.pid == pid && s.ctime == ctime) return i + 1;
  }
  return 0;
}

/** The slot index + 1 of an identity, entered if new. */
function enter(pid: u32, ctime: u64): u32 {
  if (table == 0) lineageInit();
  const stamp = <u32>clock | 1;
  const h = hashId(pid, ctime);
  let free: i32 = -1;
  let victim: u32 = h;
  let victimAge: u32 = 0;
  for (let k: u32 = 0; k < PROBE; k++) {
    const i = (h + k) & (CAPACITY - 1);
    const s = slot(i);
    if (s.used == 0) {
      if (free < 0) free = <i32>i;
      continue;
    }
    if (s.pid == pid && s.ctime == ctime) {
      s.used = stamp;
      return i + 1;
    }
    const age = stamp - s.used;
    if (age >= victimAge) {
      victimAge = age;
      victim = i;
    }
  }
  const i = free >= 0 ? <u32>free : victim;
  const s = slot(i);
  s.pid = pid;
  s.ctime = ctime;
  s.used = stamp;
  s.mask = 0;
  s.maskGen = 0;
  s.parentPid = 0;
  s.parentCtime = 0;
  s.pathHash = 0;
  s.lastPath = 0;
  s.keep = 0;
  s.gen = (s.gen + 1) & GEN_MASK;
  if (s.gen == 0) s.gen = 1;
  s.created = NO_TIME;
  return i + 1;
}

/** A path's fingerprint (FNV-1a), never 0; 0 for no path. */
function pathHashOf(path: usize, len: u32): u32 {
  if (len == 0) return 0;
  let h: u32 = 0x811c9dc5;
  for (let i: u32 = 0; i < len; i++) h = (h ^ <u32>load<u8>(path + i)) * 0x01000193;
  return h | 1;
}

/** Was the process created before the configuration in force was set? */
function beforeConfig(s: Line): bool {
  return s.created != NO_TIME && s.created <= configAt;
}

/**
 * The tree mask of a remembered identity (ref: slot + 1), decided again
 * from its remembered parent when the policy changed since. Its path is
 * not remembered: under a new policy only PID roots match it by itself,
 * unless the caller has its path (path, pathLen); the pattern trees it was
 * in under the policy before, and which this one names too, it keeps.
 */
function maskOf(ref: u32, path: usize, pathLen: u32, depth: i32): u32 {
  if (ref == 0) return 0;
  const s = slot(ref - 1);
  if (s.maskGen == policyGeneration) return s.mask;
  let m = s.keep | treeRoots(activePolicy, s.pid, path, pathLen, beforeConfig(s));
  if (s.parentPid != 0 && depth < DEPTH_MAX) m |= maskOf(find(s.parentPid, s.parentCtime), 0, 0, depth + 1);
  settle(s, m, pathHashOf(path, pathLen));
  return m;
}

/** Records mask m as decided under the policy in force, with the path of fingerprint h (0: none). */
function settle(s: Line, m: u32, h: u32): void {
  s.mask = m;
  s.maskGen = policyGeneration;
  s.pathHash = h;
  if (h != 0) s.lastPath = h;
}

// Scratch for one ancestry: each process's slot (+1), record and path fingerprint.
const refs = new StaticArray<u32>(<i32>ANCESTRY_MAX);
const recs = new StaticArray<usize>(<i32>ANCESTRY_MAX);
const hashes = new StaticArray<u32>(<i32>ANCESTRY_MAX);

/** The identity the last lineageDecide was about (a reference: refOf), for procs.ts. */
export let lastRef: u32 = 0;

/**
 * Decides the tree mask of the first process of an ancestry: `count`
 * Ancestor records from `p` (each followed by its path, the next at the
 * next multiple of 8), not past `end`. Returns the mask; lastRef names the
 * process's identity. With no tree entry in force, nothing is remembered.
 */
export function lineageDecide(p: usize, count: u32, end: usize, now: u32): u32 {
  lastRef = 0;
  clockAt(now);
  if (activePolicy.treeCount == 0 || count == 0) return 0;
  if (count > ANCESTRY_MAX) count = ANCESTRY_MAX;
  let n: u32 = 0;
  while (n < count) {
    // (In 64 bits: a path length near 2^32 must not wrap past `end`.)
    if (<u64>p + <u64>ANCESTOR_SIZE > <u64>end) break;
    const a = changetype<Ancestor>(p);
    const plen = a.pathLen;
    if (<u64>p + <u64>ANCESTOR_SIZE + <u64>plen > <u64>end) break;
    unchecked(recs[n] = p);
    const ref = enter(a.pid, a.ctime);
    unchecked(refs[n] = ref);
    const s = slot(ref - 1);
    if (s.created == NO_TIME && a.ageMs != u64.MAX_VALUE) s.created = clock - <i64>a.ageMs;
    n++;
    p = (p + ANCESTOR_SIZE + <usize>plen + 7) & ~<usize>7;
  }
  if (n == 0) return 0;
  // Each process's parent, the first time it is listed with one.
  for (let i: u32 = 0; i + 1 < n; i++) {
    const s = slot(unchecked(refs[i]) - 1);
    if (s.parentPid == 0) {
      const q = changetype<Ancestor>(unchecked(recs[i + 1]));
      s.parentPid = q.pid;
      s.parentCtime = q.ctime;
    }
  }
  // The youngest process of the ancestry whose mask stands: decided under
  // this policy, with the path it is listed with (or listed with none). The
  // ones before it are decided now, from the oldest, each from its parent's
  // mask. A process listed with another path than its mask was decided with
  // (Linux: it exec()ed another program since, the same PID and start time;
  // or it was decided with no path, as a parent under a new policy) is
  // decided again, its own roots by the new path, wherever it is in the
  // ancestry: the first process, or a parent, whose child was started by the
  // new program. With another path than it was last seen with, what it
  // carried from earlier configurations goes too. Its children decided so
  // far (started by the program before, or decided when the host had only
  // the old path) keep their masks.
  let top = n;
  for (let i: u32 = 0; i < n; i++) {
    const s = slot(unchecked(refs[i]) - 1);
    const a = changetype<Ancestor>(unchecked(recs[i]));
    const h = pathHashOf(a.path, a.pathLen);
    unchecked(hashes[i] = h);
    if (h != 0 && s.lastPath != 0 && s.lastPath != h) s.keep = 0;
    if (s.maskGen == policyGeneration && (h == 0 || h == s.pathHash)) {
      top = i;
      break;
    }
  }
  let m: u32 = top < n ? slot(unchecked(refs[top]) - 1).mask : 0;
  let i = <i32>(top < n ? top : n);
  while (--i >= 0) {
    const ref = unchecked(refs[i]);
    const s = slot(ref - 1);
    const a = changetype<Ancestor>(unchecked(recs[i]));
    // (Every process before `top` had its fingerprint taken in the search.)
    const listed = <u32>i + 1 < n && s.parentPid == changetype<Ancestor>(unchecked(recs[i + 1])).pid &&
      s.parentCtime == changetype<Ancestor>(unchecked(recs[i + 1])).ctime;
    const parentMask = listed ? m : s.parentPid != 0 ? maskOf(find(s.parentPid, s.parentCtime), 0, 0, 0) : 0;
    m = parentMask | s.keep | treeRoots(activePolicy, a.pid, a.path, a.pathLen, beforeConfig(s));
    settle(s, m, unchecked(hashes[i]));
  }
  lastRef = refOf(unchecked(refs[0]));
  return m;
}

/**
 * The tree mask of a remembered process (a reference from lastRef) under the
 * policy in force (path: its own, for pattern roots); 0 when the reference's
 * slot holds another identity since.
 */
export function lineageMask(ext: u32, pid: u32, path: usize, pathLen: u32): u32 {
  const ref = unref(ext);
  if (ref == 0 || slot(ref - 1).pid != pid) return 0;
  return maskOf(ref, path, pathLen, 0);
}
