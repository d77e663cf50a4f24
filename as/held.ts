// Packets held while a new flow's owner is unknown, and the list of packets
// released to the shim.
//
// A held packet keeps its bytes (heap block) and the metadata needed to
// re-inject it. Limits: `maxHeld` packets and MAX_HELD_BYTES bytes in total,
// PER_FLOW packets per flow. Released packets are handed out by
// `eng_take_released`; their bytes stay valid until the next take.
//
// A released packet is handed out as a Rel record (the engine/host contract,
// build/contract.ts).

import { Rel, REL_SIZE } from "../build/gen/contract";
import { freeList, zeroed } from "./pool";

/** A held packet (records are numbered from 1; 0 is none). */
@unmanaged
export class Held {
  cookieLo: u32;
  cookieHi: u32;
  flags: u32;    // meta in-flags
  ifIdx: u32;
  subIfIdx: u32;
  data: u32;     // heap block with the bytes
  len: u32;
  next: u32;     // the flow's next held record, or the next free one
}

const REC: u32 = offsetof<Held>();
export const PER_FLOW: u32 = 32;
const MAX_HELD_BYTES: u32 = 16 << 20;

let recs: usize = 0;
let cap: u32 = 0;
let freeHead: u32 = 0;
let heldCount: u32 = 0;
let heldBytes: u32 = 0;

let rel: usize = 0;
let relCount: u32 = 0;
// Blocks handed out by the last take, freed at the next one.
let handedOut: usize = 0;
let handedOutCount: u32 = 0;

export function heldInit(maxHeld: u32): void {
  cap = maxHeld;
  const n = cap > 0 ? cap : 1;
  recs = zeroed(<usize>n * REC);
  rel = heap.alloc(<usize>n * REL_SIZE);
  handedOut = heap.alloc(<usize>n * 4);
  freeHead = freeList(recs, cap, REC, offsetof<Held>("next"));
  heldCount = 0;
  heldBytes = 0;
  relCount = 0;
  handedOutCount = 0;
}

// @ts-ignore: decorator
@inline export function rec(i: u32): Held {
  return changetype<Held>(recs + <usize>(i - 1) * REC);
}

/**
 * Copies a packet into a new record (1-based index), or returns 0 when a
 * limit is reached. Released packets not yet taken count against the limit:
 * the release list has room for `cap` records.
 */
export function heldPut(data: usize, len: u32, flags: u32, ifIdx: u32, subIf: u32, cookieLo: u32, cookieHi: u32): u32 {
  if (freeHead == 0 || heldCount + relCount >= cap || heldBytes + len > MAX_HELD_BYTES) return 0;
  const i = freeHead;
  const r = rec(i);
  freeHead = r.next;
  const block = heap.alloc(len > 0 ? <usize>len : 1);
  memory.copy(block, data, len);
  r.cookieLo = cookieLo;
  r.cookieHi = cookieHi;
  r.flags = flags;
  r.ifIdx = ifIdx;
  r.subIfIdx = subIf;
  r.data = <u32>block;
  r.len = len;
  r.next = 0;
  heldCount++;
  heldBytes += len;
  return i;
}

/** Moves a held record to the release list with its verdict; frees the record. */
export function heldRelease(i: u32, verdict: u32): void {
  const r = rec(i);
  const o = changetype<Rel>(rel + <usize>relCount * REL_SIZE);
  o.cookieLo = r.cookieLo;
  o.cookieHi = r.cookieHi;
  o.data = r.data;
  o.len = r.len;
  o.flags = r.flags;
  o.ifIdx = r.ifIdx;
  o.subIfIdx = r.subIfIdx;
  o.verdict = verdict;
  relCount++;
  heldBytes -= r.len;
  heldCount--;
  r.next = freeHead;
  freeHead = i;
}

/**
 * Hands out the released packets (records at releasePtr(), valid until the
 * next engine call) and frees the blocks handed out by the previous take.
 */
export function heldTake(): u32 {
  for (let k: u32 = 0; k < handedOutCount; k++) heap.free(<usize>load<u32>(handedOut + <usize>k * 4));
  const n = relCount;
  for (let k: u32 = 0; k < n; k++) store<u32>(handedOut + <usize>k * 4, changetype<Rel>(rel + <usize>k * REL_SIZE).data);
  handedOutCount = n;
  relCount = 0;
  return n;
}

export function releasePtr(): usize {
  return rel;
}
