// A bounded ring of events (intercepted flow opened / closed), read by the
// host one at a time. When full, new events are dropped and counted. Each
// event keeps a copy of its flow's entry, so it outlives the flow.

import { bump, Stat } from "./stats";
import { FLOW_SIZE } from "./flows";

@unmanaged
export class Event {
  type: u32;  // EV_*
  time: u32;  // ms
  private copy: u64; // the flow entry's copy starts here (FLOW_SIZE bytes)

  /** The copy of the flow entry (a flow handle, as flows.ts hands out). */
  @inline get flow(): usize {
    return changetype<usize>(this) + offsetof<Event>("copy");
  }
}

/** Event.type, and the origin type of an event (0 is a lookup's). */
export const enum EventType {
  Opened = 1,
  Closed = 2,
}
const CAPACITY: u32 = 4096;
const EV: u32 = offsetof<Event>("copy") + FLOW_SIZE;

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
  const e = changetype<Event>(ring + <usize>((head + count) & (CAPACITY - 1)) * EV);
  e.type = type;
  e.time = now;
  memory.copy(e.flow, flow, FLOW_SIZE);
  count++;
}

/** How many events wait to be read. */
export function eventCount(): u32 {
  return count;
}

/** The oldest event, or null when none; `eventPop` removes it. */
export function eventPeek(): Event | null {
  if (count == 0) return null;
  return changetype<Event>(ring + <usize>head * EV);
}

export function eventPop(): void {
  if (count == 0) return;
  head = (head + 1) & (CAPACITY - 1);
  count--;
}

