// Counters: one block of u64 in static memory, read by the host as a whole.
// Their order is part of the engine/host contract (build/contract.ts, which
// generates the Stat enum; redirector_stats in the header names them).

import { Stat, STATS_COUNT } from "../build/gen/contract";

export { Stat, STATS_COUNT };

export const STATS: usize = memory.data(<i32>(STATS_COUNT * 8));

// @ts-ignore: decorator
@inline export function bump(i: Stat): void {
  const p = STATS + (<usize>i << 3);
  store<u64>(p, load<u64>(p) + 1);
}

// @ts-ignore: decorator
@inline export function drop1(i: Stat): void {
  const p = STATS + (<usize>i << 3);
  store<u64>(p, load<u64>(p) - 1);
}

export function statsReset(): void {
  memory.fill(STATS, 0, STATS_COUNT * 8);
}
