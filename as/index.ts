// The engine's exports: the only functions the shim (or a test) calls.
//
// Every export takes and returns plain integers; buffers are exchanged
// through linear memory at offsets the engine hands out, and the caller
// bounds-checks every offset it gets back. Nothing managed crosses.
//
// Calls must be serialised by the caller (the shim holds one lock around
// every call). A trap leaves the engine in an unknown state: the caller
// throws the instance away and builds a new one.

import { ERR_BUF, errReset, errLength, errPut, errNum } from "./errtext";
import { parseConfig, policyGeneration, activePolicy } from "./config";
import { shouldIntercept } from "./policy";

/** Interface version; the shim refuses an engine with another number. */
export const ENGINE_ABI: u32 = 1;

let selfPid: u32 = 0;
let appPort: u32 = 0;

// The I/O buffer: the shim writes config text, owner paths and lookup keys
// here. It grows on request and never shrinks.
let ioPtr: usize = 0;
let ioCap: u32 = 0;
// @ts-ignore: decorator
@inline const IO_MAX: u32 = 64 << 20;

// Fault injection for tests: bit 1 = trap in the next config call.
let faultArmed: u32 = 0;
// @ts-ignore: decorator
@inline const FAULT_CONFIG: u32 = 1;

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

/** Sets up a fresh instance. selfPid: the host process, never intercepted. */
export function eng_init(pid: u32): i32 {
  selfPid = pid;
  return 0;
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
  return parseConfig(ioPtr, len);
}

/** Generation of the policy in force (bumped by every accepted config). */
export function eng_config_generation(): u32 {
  return policyGeneration;
}

export function eng_set_app_port(port: u32): void {
  appPort = port & 0xffff;
}

export function eng_app_port(): u32 {
  return appPort;
}

export function eng_self_pid(): u32 {
  return selfPid;
}

/** Arms a deliberate trap at the next call of the given kind (tests only). */
export function eng_arm_fault(bits: u32): void {
  faultArmed |= bits;
}

/** PIDs never intercepted: the host itself (no proxy loops), 0 and 4 (System). */
export function alwaysExcluded(pid: u32): bool {
  return pid == selfPid || pid == 0 || pid == 4;
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
