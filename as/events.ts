// A bounded ring of events (intercepted flow opened / closed), read by the
// shim one at a time. When full, new events are dropped and counted.
//
//   event (EV bytes): +0 u32 type  +4 u32 flow slot  +8 u32 flow id
//   +12 u32 time  +16 u64 bytes up  +24 u64 bytes down
//   The flow's addresses are copied in at +32 (FLOW_COPY bytes), so the
//   event outlives the flow.

import { bump, Stat } from "./stats";

// @ts-ignore: decorator
@inline export const EV_OPENED: u32 = 1;
// @ts-ignore: decorator
@inline export const EV_CLOSED: u32 = 2;
// @ts-ignore: decorator
@inline const CAPACITY: u32 = 4096;
// @ts-ignore: decorator
@inline export const FLOW_COPY: u32 = 128;
// @ts-ignore: decorator
@inline export const EV: u32 = 32 + FLOW_COPY;

let ring: usize = 0;
let head: u32 = 0;
let count: u32 = 0;

export function eventsInit(): void {
  if (ring == 0) ring = heap.alloc(<usize>CAPACITY * EV);
  head = 0;
  count = 0;
}

/** Appends an event with a copy of the flow entry at `flow`. */
export function eventPush(type: u32, flow: usize, now: u32): void {
  if (ring == 0) return;
  if (count == CAPACITY) {
    bump(Stat.eventsLost);
    return;
  }
  const e = ring + <usize>((head + count) & (CAPACITY - 1)) * EV;
  store<u32>(e, type, 0);
  store<u32>(e, now, 12);
  memory.copy(e + 32, flow, FLOW_COPY);
  count++;
}

/** How many events wait to be read. */
export function eventCount(): u32 {
  return count;
}

/** The oldest event, or 0 when none; `eventPop` removes it. */
export function eventPeek(): usize {
  if (count == 0) return 0;
  return ring + <usize>head * EV;
}

export function eventPop(): void {
  if (count == 0) return;
  head = (head + 1) & (CAPACITY - 1);
  count--;
}

