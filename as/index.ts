// The engine's exports: the only functions the shim (or a test) calls.
//
// Every export takes and returns plain integers; buffers are exchanged
// through linear memory at offsets the engine hands out, and the caller
// bounds-checks every offset it gets back. Nothing managed crosses.
//
// Calls must be serialised by the caller (the shim holds one lock around
// every call). A trap leaves the engine in an unknown state: the caller
// throws the instance away and builds a new one.
//
// Life cycle: eng_init -> eng_config* -> eng_start -> (eng_process,
// eng_take_released, eng_take_queries, eng_owner, eng_tick, eng_lookup,
// eng_next_event)* ; times are milliseconds from any monotonic clock, mod 2^32.
//
// The packet batch (after eng_start): BATCH_MAX records of META bytes at
// eng_batch_meta(), packet bytes in the area at eng_batch_data():
//   +0 u32 cookie low   +4 u32 cookie high   (the caller's packet handle)
//   +8 u32 offset of the packet in the data area   +12 u32 length
//   +16 u32 flags: 1 outbound, 2 loopback, 4 transport checksum not ready
//   +20 u32 interface index   +24 u32 sub-interface index
//   +28 u32 out: verdict (0 pass as is, 1 pass rewritten, 2 drop, 3 held)
//       | out-flags << 8 (1 send as outbound, 2 checksums are valid)
// Held packets come back later from eng_take_released (see held.ts).

import { ERR_BUF, errReset, errLength, errPut, errNum } from "./errtext";
import { parseConfig, policyGeneration, activePolicy } from "./config/config";
import { shouldIntercept } from "./config/policy";
import {
  engineSetSelf, engineSetAppPort, engineStart, engineApplyTimeouts, alwaysExcluded, engineNeverIntercept,
  processPacket, ownerFact,
  ownerProcess, takeQueries, tick, writeOrigin, findByProxyKey, started, appPort, QUERY, ORIGIN, O_UNKNOWN,
} from "./engine";
import { heldTake, releasePtr } from "./held";
import { eventCount, eventPeek, eventPop } from "./events";
import { procPathLen, procPathPtr } from "./procs";
import { flowsCapacity, flowsBytesPerFlow, F_PROC } from "./flows";
import { STATS, STATS_COUNT, bump, S_LOOKUPS, S_LOOKUP_MISSES } from "./stats";

/** Interface version; the shim refuses an engine with another number. */
export const ENGINE_ABI: u32 = 3;

// @ts-ignore: decorator
@inline const BATCH_MAX: u32 = 256;
// @ts-ignore: decorator
@inline const META: u32 = 32;
// @ts-ignore: decorator
@inline const BATCH_DATA: u32 = 4 << 20;
// @ts-ignore: decorator
@inline const QUERY_MAX: u32 = 256;

// The I/O buffer: the shim writes config text, owner facts and lookup keys
// here, and reads lookup answers and events. Grows on request.
let ioPtr: usize = 0;
let ioCap: u32 = 0;
// @ts-ignore: decorator
@inline const IO_MAX: u32 = 64 << 20;

let batchMeta: usize = 0;
let batchData: usize = 0;
let queries: usize = 0;

// Fault injection for tests: bit 1 = trap in the next config call, bit 2 =
// in the next packet batch.
let faultArmed: u32 = 0;
// @ts-ignore: decorator
@inline const FAULT_CONFIG: u32 = 1;
// @ts-ignore: decorator
@inline const FAULT_PACKETS: u32 = 2;

/**
 * The abort handler (asc --use abort=...): records where the engine gave up,
 * then traps. Writes only to static memory, so it works with a broken heap.
 */
export function engineAbort(msg: string | null, file: string | null, line: u32, col: u32): void {
  errReset();
  errPut("engine assertion failed");
  if (msg !== null) {
    errPut(": ");
    errPut(msg);
  }
  if (file !== null) {
    errPut(" at ");
    errPut(file);
    errPut(":");
    errNum(line);
    errPut(":");
    errNum(col);
  }
  unreachable();
}

export function eng_abi(): u32 {
  return ENGINE_ABI;
}

/** Sets up a fresh instance. pid: the host process, never intercepted; seed: hash seed. */
export function eng_init(pid: u32, seed: u32): i32 {
  engineSetSelf(pid, seed);
  return 0;
}

/**
 * After eng_init: a PID the host's OS never lets be intercepted (Windows: 4,
 * the System process). 0, or -1 when the list (8) is full.
 */
export function eng_never_intercept(pid: u32): i32 {
  return engineNeverIntercept(pid) ? 0 : -1;
}

/** A buffer of at least `len` bytes for the caller to write into; 0 if too large. */
export function eng_io(len: u32): usize {
  if (len > IO_MAX) return 0;
  if (len > ioCap || ioPtr == 0) {
    if (ioPtr != 0) heap.free(ioPtr);
    const cap = len < 4096 ? 4096 : len;
    ioPtr = heap.alloc(cap);
    ioCap = cap;
  }
  return ioPtr;
}

export function eng_io_cap(): u32 {
  return ioCap;
}

export function eng_err_ptr(): usize {
  return ERR_BUF;
}

export function eng_err_len(): u32 {
  return errLength();
}

/**
 * Applies the configuration text in the I/O buffer ([0, len)).
 * 0 accepted; -2 malformed or invalid field; -3 not UTF-8. The error text
 * says why.
 */
export function eng_config(len: u32): i32 {
  errReset();
  if ((faultArmed & FAULT_CONFIG) != 0) {
    faultArmed &= ~FAULT_CONFIG;
    unreachable();
  }
  if (ioPtr == 0 || len > ioCap) {
    errPut("configuration buffer not set up");
    return -2;
  }
  const r = parseConfig(ioPtr, len);
  if (r == 0 && started) engineApplyTimeouts();
  return r;
}

/** Generation of the policy in force (bumped by every accepted config). */
export function eng_config_generation(): u32 {
  return policyGeneration;
}

export function eng_set_app_port(port: u32): void {
  engineSetAppPort(port);
}

export function eng_app_port(): u32 {
  return appPort;
}

/** Arms a deliberate trap at the next call of the given kinds (tests only). */
export function eng_arm_fault(bits: u32): void {
  faultArmed |= bits;
}

/**
 * Would a process be intercepted under the policy in force? The process path
 * (UTF-8, may be empty) is in the I/O buffer [0, pathLen). 1 yes, 0 no.
 */
export function eng_would_intercept(pid: u32, pathLen: u32): i32 {
  if (alwaysExcluded(pid)) return 0;
  if (pathLen > ioCap) pathLen = 0;
  return shouldIntercept(activePolicy, pid, ioPtr, pathLen) ? 1 : 0;
}

/** Allocates the tables (sizes from the config in force) and starts. */
export function eng_start(now: u32): i32 {
  if (batchMeta == 0) {
    batchMeta = heap.alloc(<usize>BATCH_MAX * META);
    batchData = heap.alloc(BATCH_DATA);
    queries = heap.alloc(<usize>QUERY_MAX * QUERY);
  }
  engineStart(now);
  return 0;
}

export function eng_batch_meta(): usize {
  return batchMeta;
}

export function eng_batch_data(): usize {
  return batchData;
}

export function eng_batch_max(): u32 {
  return BATCH_MAX;
}

export function eng_batch_data_cap(): u32 {
  return BATCH_DATA;
}

/** Decides `count` packets of the batch; writes each verdict word. */
export function eng_process(count: u32, now: u32): i32 {
  if ((faultArmed & FAULT_PACKETS) != 0) {
    faultArmed &= ~FAULT_PACKETS;
    unreachable();
  }
  if (!started || batchMeta == 0 || count > BATCH_MAX) return -1;
  for (let i: u32 = 0; i < count; i++) {
    const m = batchMeta + <usize>i * META;
    const off = load<u32>(m, 8);
    const len = load<u32>(m, 12);
    let v: u32;
    if (<u64>off + <u64>len > <u64>BATCH_DATA) {
      v = 0; // not a packet we can read: pass it as it is
    } else {
      v = processPacket(batchData + off, len, load<u32>(m, 16), load<u32>(m, 20), load<u32>(m, 24),
        load<u32>(m, 0), load<u32>(m, 4), now);
    }
    store<u32>(m, v, 28);
  }
  return <i32>count;
}

/** Packets released since the last take: count, records at eng_released_ptr(). */
export function eng_take_released(): u32 {
  return started ? heldTake() : 0;
}

export function eng_released_ptr(): usize {
  return releasePtr();
}

/**
 * Up to `max` pending flows whose owner to look up: count, records at
 * eng_queries_ptr(). A flow is handed out once, so the caller asks for no
 * more than it can answer; the rest wait for the next call.
 */
export function eng_take_queries(max: u32): u32 {
  return started ? takeQueries(queries, max < QUERY_MAX ? max : QUERY_MAX) : 0;
}

export function eng_queries_ptr(): usize {
  return queries;
}

/** The most queries eng_take_queries hands out at once: the size of the caller's buffer. */
export function eng_query_max(): u32 {
  return QUERY_MAX;
}

/**
 * An owner fact, in the I/O buffer:
 *   +0 u8 kind (1 connect, 2 accept, 3 bind, 4 listen, 5 close, 6 unknown)
 *   +1 u8 protocol   +2 u8 family (4/6)   +4 [16] local addr  +20 [16] remote addr
 *   +36 u16 local port   +38 u16 remote port   +40 u32 pid   +44 u32 path length
 *   +48 path (UTF-8)
 * 0 applied; -1 malformed.
 */
export function eng_owner(len: u32, now: u32): i32 {
  if (ioPtr == 0 || len < 48 || len > ioCap) return -1;
  const p = ioPtr;
  const kind = <u32>load<u8>(p);
  const proto = <u32>load<u8>(p, 1);
  const fam = <u32>load<u8>(p, 2);
  const pathLen = load<u32>(p, 44);
  if (kind < 1 || kind > 6 || (proto != 6 && proto != 17) || (fam != 4 && fam != 6) || <u64>pathLen + 48 > <u64>len) {
    return -1;
  }
  const pid = load<u32>(p, 40);
  const proc = kind == O_UNKNOWN ? 0 : ownerProcess(pid, p + 48, pathLen, now);
  ownerFact(kind, proto, fam == 6, p + 4, <u32>load<u16>(p, 36), p + 20, <u32>load<u16>(p, 38), pid, proc, now);
  return 0;
}

/** Hold timeouts and idle expiry. */
export function eng_tick(now: u32): void {
  tick(now);
}

function isV4Mapped(a: usize): bool {
  return load<u64>(a) == 0 && load<u32>(a, 8) == 0xffff0000;
}

function isZero16(a: usize): bool {
  return load<u64>(a) == 0 && load<u64>(a, 8) == 0;
}

/**
 * Where was a connection the proxy received going? The I/O buffer holds:
 *   +0 u32 protocol  +4 u32 family (4/6)  +8 [16] peer addr  +24 u32 peer port
 *   +28 [16] local addr (all zero: any)   +44 u32 local port
 * IPv4-mapped IPv6 addresses (a dual-stack socket) count as IPv4.
 * 0: the origin is in the I/O buffer (see engine.ts); -1 no such flow;
 * -2 malformed question.
 */
export function eng_lookup(len: u32): i32 {
  if (ioPtr == 0 || len < 48 || ioCap < ORIGIN + 1024) return -2;
  const p = ioPtr;
  const proto = load<u32>(p);
  let fam = load<u32>(p, 4);
  if ((proto != 6 && proto != 17) || (fam != 4 && fam != 6)) return -2;
  let peer = p + 8;
  let local = p + 28;
  let any = fam == 4 ? load<u32>(local) == 0 : isZero16(local);
  if (fam == 6 && isV4Mapped(peer)) {
    fam = 4;
    peer += 12;
    if (isV4Mapped(local)) local += 12;
    else if (!any) return -1;
  }
  const f = started ? findByProxyKey(proto, fam == 6, local, load<u32>(p, 44) & 0xffff, peer,
    load<u32>(p, 24) & 0xffff, any) : 0;
  if (f == 0) {
    bump(S_LOOKUP_MISSES);
    return -1;
  }
  bump(S_LOOKUPS);
  const ref = load<u32>(f, F_PROC);
  let plen = procPathLen(ref);
  if (plen > ioCap - ORIGIN) plen = 0;
  writeOrigin(p, 0, f, 0, procPathPtr(ref), plen);
  return 0;
}

/** The oldest event, as an origin in the I/O buffer: its length, or 0 when none. */
export function eng_next_event(): u32 {
  const e = eventPeek();
  if (e == 0) return 0;
  eng_io(ORIGIN + 1024);
  const f = e + 32;
  const ref = load<u32>(f, F_PROC);
  let plen = procPathLen(ref);
  if (plen > ioCap - ORIGIN) plen = 0;
  writeOrigin(ioPtr, load<u32>(e), f, load<u32>(e, 12), procPathPtr(ref), plen);
  eventPop();
  return ORIGIN + plen;
}

/** How many events wait to be read (the shim wakes readers when it grows). */
export function eng_events_waiting(): u32 {
  return eventCount();
}

export function eng_stats_ptr(): usize {
  return STATS;
}

export function eng_stats_count(): u32 {
  return STATS_COUNT;
}

export function eng_flow_capacity(): u32 {
  return flowsCapacity();
}

export function eng_bytes_per_flow(): u32 {
  return flowsBytesPerFlow();
}
