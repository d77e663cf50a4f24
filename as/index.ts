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
// eng_take_released, eng_take_queries, eng_owner, eng_exclude, eng_tick,
// eng_lookup, eng_next_event, eng_capture_scope)* ; times are milliseconds
// from any monotonic clock, mod 2^32.
//
// The records exchanged through memory (Meta, Rel, Query, Owner, Exclusion,
// Lookup, Origin, Scope) and the counters' order are the engine/host contract,
// written once in build/contract.ts and generated into build/gen/contract.ts;
// eng_abi() reports its hash. The packet batch (after eng_start): BATCH_MAX Meta
// records at eng_batch_meta(), packet bytes in the area at eng_batch_data().
// Held packets come back later from eng_take_released (Rel records, see
// held.ts).

import { ERR_BUF, errReset, errLength, errPut, errNum } from "./errtext";
import { parseConfig, policyGeneration, activePolicy } from "./config/config";
import { shouldIntercept, treeRoots } from "./config/policy";
import { lineageConfigSet, lineageDecide, lastRef } from "./lineage";
import {
  engineSetSelf, engineSetAppPort, engineStart, engineApplyTimeouts, alwaysExcluded, engineNeverIntercept,
  processPacket, ownerFact, ownerProcess, takeQueries, tick, writeOrigin, findByProxyKey, started, appPort, OwnerKind,
} from "./engine";
import { heldTake, releasePtr } from "./held";
import { eventCount, eventPeek, eventPop } from "./events";
import { procPathLen, procPathPtr } from "./procs";
import { flowsCapacity, flowsBytesPerFlow, flow } from "./flows";
import { exclusionAdd, exclusionsCapacity } from "./exclusions";
import { STATS, STATS_COUNT, bump, Stat } from "./stats";
import { captureScope, scopeChanged, scopeGeneration, scopeMaxSize } from "./scope";
import {
  CONTRACT_HASH, Meta, META_SIZE, Owner, OWNER_SIZE, Exclusion, EXCLUSION_SIZE, Lookup, LOOKUP_SIZE, ORIGIN_SIZE,
  ORIGIN_PATH_ROOM, QUERY_SIZE, Protocols, Ancestor, ANCESTOR_SIZE,
} from "../build/gen/contract";

const BATCH_MAX: u32 = 256;
const BATCH_DATA: u32 = 4 << 20;
const QUERY_MAX: u32 = 256;

// The I/O buffer: the shim writes config text, owner facts and lookup keys
// here, and reads lookup answers and events. Grows on request.
let ioPtr: usize = 0;
let ioCap: u32 = 0;
const IO_MAX: u32 = 64 << 20;

let batchMeta: usize = 0;
let batchData: usize = 0;
let queries: usize = 0;

// Fault injection for tests (eng_arm_fault bits).
let faultArmed: u32 = 0;
const enum Fault {
  Config = 1,  // trap in the next config call
  Packets = 2, // trap in the next packet batch
}

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

/** The contract's hash; the host refuses an engine built from another table. */
export function eng_abi(): u32 {
  return CONTRACT_HASH;
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
export function eng_config(len: u32, now: u32): i32 {
  errReset();
  if ((faultArmed & Fault.Config) != 0) {
    faultArmed &= ~Fault.Config;
    unreachable();
  }
  if (ioPtr == 0 || len > ioCap) {
    errPut("configuration buffer not set up");
    return -2;
  }
  const old = activePolicy;
  const r = parseConfig(ioPtr, len);
  if (r == 0) {
    lineageConfigSet(now, old);
    scopeChanged();
    if (started) engineApplyTimeouts();
  }
  return r;
}

/** Generation of the policy in force (bumped by every accepted config). */
export function eng_config_generation(): u32 {
  return policyGeneration;
}

export function eng_set_app_port(port: u32): void {
  engineSetAppPort(port);
}

/**
 * The capture scope (scope.ts): what a backend must capture for the
 * configuration in force, the app port and the flows alive. Writes a Scope
 * record and its lists into the I/O buffer and returns their length (0:
 * no room for them).
 */
export function eng_capture_scope(): u32 {
  const p = eng_io(scopeMaxSize());
  return p == 0 ? 0 : captureScope(p, activePolicy, appPort);
}

/** Moves on whenever the capture scope may have changed: read eng_capture_scope again then. */
export function eng_scope_generation(): u32 {
  return scopeGeneration;
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
  // No ancestry: a process is in the trees it is the root of.
  const mask = treeRoots(activePolicy, pid, ioPtr, pathLen, true);
  return shouldIntercept(activePolicy, pid, ioPtr, pathLen, mask) ? 1 : 0;
}

/**
 * Would a process be intercepted, given its ancestry? `count` Ancestor
 * records in the I/O buffer [0, len) (each followed by its path, the next at
 * the next multiple of 8): the process itself, then its parent, and so on.
 * The tree membership it decides is remembered (lineage.ts). 1 yes, 0 no,
 * -1 malformed.
 */
export function eng_would_intercept_tree(count: u32, len: u32, now: u32): i32 {
  if (ioPtr == 0 || len > ioCap || count == 0 || len < ANCESTOR_SIZE) return -1;
  const a = changetype<Ancestor>(ioPtr);
  if (<u64>a.pathLen + ANCESTOR_SIZE > <u64>len) return -1;
  const pid = a.pid;
  const mask = lineageDecide(ioPtr, count, ioPtr + len, now);
  if (alwaysExcluded(pid)) return 0;
  return shouldIntercept(activePolicy, pid, a.path, a.pathLen, mask) ? 1 : 0;
}

/** How many process trees the policy in force names (a backend may watch new processes then). */
export function eng_tree_count(): u32 {
  return activePolicy.treeCount;
}

/** The protocols the policy in force intercepts (Protocols bits). */
export function eng_protocols(): u32 {
  const pol = activePolicy;
  return (pol.tcp ? Protocols.Tcp : 0) | (pol.udp ? Protocols.Udp : 0);
}

/** Allocates the tables (sizes from the config in force) and starts. */
export function eng_start(now: u32): i32 {
  if (batchMeta == 0) {
    batchMeta = heap.alloc(<usize>BATCH_MAX * META_SIZE);
    batchData = heap.alloc(BATCH_DATA);
    queries = heap.alloc(<usize>QUERY_MAX * QUERY_SIZE);
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
  if ((faultArmed & Fault.Packets) != 0) {
    faultArmed &= ~Fault.Packets;
    unreachable();
  }
  if (!started || batchMeta == 0 || count > BATCH_MAX) return -1;
  for (let i: u32 = 0; i < count; i++) {
    const m = changetype<Meta>(batchMeta + <usize>i * META_SIZE);
    const off = m.data;
    const len = m.len;
    let v: u32;
    if (<u64>off + <u64>len > <u64>BATCH_DATA) {
      v = 0; // not a packet we can read: pass it as it is
    } else {
      v = processPacket(batchData + off, m, now);
    }
    m.verdict = v;
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

/** An owner fact (an Owner record and its path) in the I/O buffer. 0 applied; -1 malformed. */
export function eng_owner(len: u32, now: u32): i32 {
  if (ioPtr == 0 || len < OWNER_SIZE || len > ioCap) return -1;
  const o = changetype<Owner>(ioPtr);
  const kind = <u32>o.kind;
  const proto = <u32>o.proto;
  const fam = <u32>o.family;
  const pathLen = o.pathLen;
  if (kind < 1 || kind > 6 || (proto != 6 && proto != 17) || (fam != 4 && fam != 6) ||
    <u64>pathLen + OWNER_SIZE > <u64>len) {
    return -1;
  }
  const pid = o.pid;
  let line: u32 = 0;
  if (kind != OwnerKind.Unknown && o.ancestors != 0) {
    // The ancestry after the path: its first record must be the owner.
    const at = (ioPtr + OWNER_SIZE + <usize>pathLen + 7) & ~<usize>7;
    if (at + ANCESTOR_SIZE <= ioPtr + len && changetype<Ancestor>(at).pid == pid) {
      lineageDecide(at, o.ancestors, ioPtr + len, now);
      line = lastRef;
    }
  }
  const proc = kind == OwnerKind.Unknown ? 0 : ownerProcess(pid, o.path, pathLen, now, line);
  ownerFact(kind, proto, fam == 6, o.local, <u32>o.localPort, o.remote, <u32>o.remotePort, pid, proc, now);
  return 0;
}

/**
 * An excluded socket of the host process (an Exclusion record in the I/O
 * buffer): from now on packets from its local end and to it pass at once,
 * with no flow, until an owner fact shows the socket is gone (exclusions.ts).
 * 0 added (or there already); -1 the table is full; -2 malformed or not
 * started. The error text says why.
 */
export function eng_exclude(len: u32): i32 {
  errReset();
  if (!started) {
    errPut("the redirector is not running");
    return -2;
  }
  if (ioPtr == 0 || len < EXCLUSION_SIZE || len > ioCap) {
    errPut("malformed exclusion record");
    return -2;
  }
  const x = changetype<Exclusion>(ioPtr);
  const proto = <u32>x.proto;
  const fam = <u32>x.family;
  const port = <u32>x.localPort;
  if ((proto != 6 && proto != 17) || (fam != 4 && fam != 6) || port == 0 || x.dualStack > 1 ||
    (x.dualStack == 1 && (fam != 6 || !isZero16(x.local)))) {
    errPut("malformed exclusion record");
    return -2;
  }
  if (!exclusionAdd(proto, fam == 6, x.local, port, x.dualStack == 1)) {
    errPut("the table of excluded sockets is full (");
    errNum(exclusionsCapacity());
    errPut(" sockets, as many as max_flows)");
    return -1;
  }
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
 * Where was a connection the proxy received going? The I/O buffer holds a
 * Lookup record (an all-zero local address: any). IPv4-mapped IPv6
 * addresses (a dual-stack socket) count as IPv4. 0: an Origin record is in
 * the I/O buffer; -1 no such flow; -2 malformed question.
 */
export function eng_lookup(len: u32): i32 {
  if (ioPtr == 0 || len < LOOKUP_SIZE || ioCap < ORIGIN_SIZE + ORIGIN_PATH_ROOM) return -2;
  const p = ioPtr;
  const q = changetype<Lookup>(p);
  const proto = q.proto;
  let fam = q.peerFamily;
  let lfam = q.localFamily;
  if ((proto != 6 && proto != 17) || (fam != 4 && fam != 6) || (lfam != 4 && lfam != 6)) return -2;
  let peer = q.peer;
  let local = q.local;
  const lport = q.localPort & 0xffff;
  const pport = q.peerPort & 0xffff;
  // A dual-stack socket gives IPv4 ends as IPv4-mapped IPv6: the flow is IPv4's.
  if (fam == 6 && isV4Mapped(peer)) {
    fam = 4;
    peer += 12;
  }
  if (lfam == 6 && isV4Mapped(local)) {
    lfam = 4;
    local += 12;
  }
  const any = lfam == 4 ? load<u32>(local) == 0 : isZero16(local);
  // An IPv4 peer on a socket bound to [::] (any) is fine; otherwise the two
  // ends of one connection are of one family.
  if (fam != lfam && !(fam == 4 && any)) {
    bump(Stat.lookupMisses);
    return -1;
  }
  const f = started ? findByProxyKey(proto, fam == 6, local, lport, peer, pport, any) : 0;
  if (f == 0) {
    bump(Stat.lookupMisses);
    return -1;
  }
  bump(Stat.lookups);
  const ref = flow(f).proc;
  let plen = procPathLen(ref);
  if (plen > ioCap - ORIGIN_SIZE) plen = 0;
  writeOrigin(p, 0, f, 0, procPathPtr(ref), plen);
  return 0;
}

/** The oldest event, as an origin in the I/O buffer: its length, or 0 when none. */
export function eng_next_event(): u32 {
  const e = eventPeek();
  if (e === null) return 0;
  eng_io(ORIGIN_SIZE + ORIGIN_PATH_ROOM);
  const f = e.flow;
  const ref = flow(f).proc;
  let plen = procPathLen(ref);
  if (plen > ioCap - ORIGIN_SIZE) plen = 0;
  writeOrigin(ioPtr, e.type, f, e.time, procPathPtr(ref), plen);
  eventPop();
  return ORIGIN_SIZE + plen;
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
