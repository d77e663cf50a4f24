// Counters: one block of u64 in static memory, read by the shim as a whole.
// The order is the ABI (redirector_stats in the header follows it).

// @ts-ignore: decorator
@inline export const S_PACKETS = 0;          // packets seen
// @ts-ignore: decorator
@inline export const S_REWRITTEN = 1;        // packets rewritten (redirected)
// @ts-ignore: decorator
@inline export const S_PASSED = 2;           // packets passed unchanged
// @ts-ignore: decorator
@inline export const S_HELD = 3;             // packets held while an owner was unknown
// @ts-ignore: decorator
@inline export const S_DROPPED = 4;          // packets dropped (hold limits)
// @ts-ignore: decorator
@inline export const S_MALFORMED = 5;        // truncated or malformed, passed unchanged
// @ts-ignore: decorator
@inline export const S_FRAGMENTS = 6;        // IP fragments, passed unchanged
// @ts-ignore: decorator
@inline export const S_FLOWS_ACTIVE = 7;     // gauge: entries in the flow table
// @ts-ignore: decorator
@inline export const S_FLOWS_REDIRECTED = 8; // flows redirected to the app port
// @ts-ignore: decorator
@inline export const S_FLOWS_PASSED = 9;     // flows decided not to intercept
// @ts-ignore: decorator
@inline export const S_FLOWS_EXPIRED = 10;   // entries removed by idle timeout or close
// @ts-ignore: decorator
@inline export const S_TABLE_FULL = 11;      // new flows passed because the table was full
// @ts-ignore: decorator
@inline export const S_EVICTIONS = 12;       // unestablished entries evicted for new ones
// @ts-ignore: decorator
@inline export const S_HOLD_TIMEOUTS = 13;   // owners never known: passed after the hold timeout
// @ts-ignore: decorator
@inline export const S_OWNER_FACTS = 14;     // owner facts received
// @ts-ignore: decorator
@inline export const S_OWNER_QUERIES = 15;   // owner queries handed to the shim
// @ts-ignore: decorator
@inline export const S_EVENTS_LOST = 16;     // events dropped because the ring was full
// @ts-ignore: decorator
@inline export const S_NAT_CONFLICTS = 17;   // flows passed because no proxy-side port was free
// @ts-ignore: decorator
@inline export const S_BYPASSED = 18;        // packets of bypassed classes (loopback, ...)
// @ts-ignore: decorator
@inline export const S_LOOKUPS = 19;         // lookups answered
// @ts-ignore: decorator
@inline export const S_LOOKUP_MISSES = 20;   // lookups with no match
// @ts-ignore: decorator
@inline export const STATS_COUNT: u32 = 21;

export const STATS: usize = memory.data(<i32>(STATS_COUNT * 8));

// @ts-ignore: decorator
@inline export function bump(i: i32): void {
  const p = STATS + (<usize>i << 3);
  store<u64>(p, load<u64>(p) + 1);
}

// @ts-ignore: decorator
@inline export function drop1(i: i32): void {
  const p = STATS + (<usize>i << 3);
  store<u64>(p, load<u64>(p) - 1);
}

export function statsReset(): void {
  memory.fill(STATS, 0, STATS_COUNT * 8);
}
