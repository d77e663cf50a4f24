// The redirect: per-packet decisions, owner facts, held packets, expiry,
// lookups and events. Knows packets, flows and policy; nothing of WinDivert
// or NFQUEUE. See shared/DESIGN.md, "The redirect".
//
// Outbound flow of an intercepted process, client C:c to destination D:d,
// app port P (the proxy listens there), proxy port c' (= c unless taken):
//   client  C:c  -> D:d    becomes  D:c' -> C:P   (injected inbound)
//   proxy   C:P  -> D:c'   becomes  D:d  -> C:c   (injected inbound)
// Inbound flow, remote R:r to a listener C:L of an intercepted process:
//   remote  R:r  -> C:L    becomes  R:r' -> C:P   (stays inbound)
//   proxy   C:P  -> R:r'   becomes  C:L  -> R:r   (stays outbound)
// The proxy looks up (peer, local) = (D:c', C:P) or (R:r', C:P).

import { activePolicy } from "./config/config";
import {
  Policy, BYPASS_BROADCAST, BYPASS_DHCP, BYPASS_LINK_LOCAL, BYPASS_LOOPBACK, BYPASS_MULTICAST,
  destinationAllowed, portAllowed,
} from "./config/policy";
import {
  parsePacket, P_OK, P_MALFORMED, P_FRAGMENT, PROTO_TCP, PROTO_UDP, pktDport, pktDst, pktPayload, pktProto,
  pktSport, pktSrc, pktTcpFlags, pktV6,
} from "./packet";
import { rewrite } from "./nat";
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from "./wire/tcp";
import {
  flowsInit, flowsSetTimeouts, flowFind, foundSide, flowNew, flowFree, flowTouch, flowExpired, flowLinkProxy,
  proxyKeyFree, listOldest, listNewer, flowsSeed, F_KIND, F_PROTO, F_V6, F_TCP, F_FLAGS, F_LADDR, F_RADDR,
  F_LPORT, F_RPORT, F_PPORT, F_APP, F_PID, F_PROC, F_UP, F_DOWN, F_HELD_FIRST, F_HELD_LAST, F_HELD_N, F_DIR,
  F_ID, K_PENDING, K_PASS, K_OUT, K_IN, K_FACT, T_SYN, T_ESTABLISHED, T_CLOSING, T_CLOSED, FL_FIN_CLIENT,
  FL_FIN_PROXY, FL_QUERIED, FL_OPENED, FL_CLOSED, L_PENDING, L_SHORT, L_UDPPASS, L_RSHORT, L_UDP, L_TCP,
} from "./flows";
import { heldInit, heldPut, heldRelease, rec, PER_FLOW } from "./held";
import { eventsInit, eventPush, EV_OPENED, EV_CLOSED } from "./events";
import { procsInit, procPut, procIntercepted } from "./procs";
import { portOwnersInit, portOwnerPut, portOwnerGet, portOwnerRemove, portOwnerPid, portOwnerProc } from "./portowners";
import {
  bump, statsReset, S_PACKETS, S_REWRITTEN, S_PASSED, S_HELD, S_DROPPED, S_MALFORMED, S_FRAGMENTS,
  S_FLOWS_REDIRECTED, S_FLOWS_PASSED, S_TABLE_FULL, S_HOLD_TIMEOUTS, S_OWNER_FACTS, S_OWNER_QUERIES,
  S_NAT_CONFLICTS, S_BYPASSED,
} from "./stats";

// Packet metadata in-flags (from the capture layer).
// @ts-ignore: decorator
@inline export const IN_OUTBOUND: u32 = 1;
// @ts-ignore: decorator
@inline export const IN_LOOPBACK: u32 = 2;
// @ts-ignore: decorator
@inline export const IN_CSUM_PARTIAL: u32 = 4;

// Verdicts (low byte) and out-flags (<< 8).
// @ts-ignore: decorator
@inline export const V_PASS: u32 = 0;
// @ts-ignore: decorator
@inline export const V_MODIFIED: u32 = 1;
// @ts-ignore: decorator
@inline export const V_DROP: u32 = 2;
// @ts-ignore: decorator
@inline export const V_HELD: u32 = 3;
// @ts-ignore: decorator
@inline export const OUT_OUTBOUND: u32 = 1 << 8;
// @ts-ignore: decorator
@inline export const OUT_CSUM_VALID: u32 = 2 << 8;

// Owner fact kinds.
// @ts-ignore: decorator
@inline export const O_CONNECT: u32 = 1;
// @ts-ignore: decorator
@inline export const O_ACCEPT: u32 = 2;
// @ts-ignore: decorator
@inline export const O_BIND: u32 = 3;
// @ts-ignore: decorator
@inline export const O_LISTEN: u32 = 4;
// @ts-ignore: decorator
@inline export const O_CLOSE: u32 = 5;
// @ts-ignore: decorator
@inline export const O_UNKNOWN: u32 = 6;

// @ts-ignore: decorator
@inline const DIR_OUT: u32 = 0;
// @ts-ignore: decorator
@inline const DIR_IN: u32 = 1;

export let selfPid: u32 = 0;
export let appPort: u32 = 0;
export let started = false;

// The current packet's metadata while it is processed.
let curFlags: u32 = 0;
let curIf: u32 = 0;
let curSubIf: u32 = 0;
let curCookieLo: u32 = 0;
let curCookieHi: u32 = 0;
let curData: usize = 0;
let curLen: u32 = 0;
let now: u32 = 0;

export function engineSetSelf(pid: u32, seed: u32): void {
  selfPid = pid;
  flowsSeed(seed);
}

export function engineSetAppPort(port: u32): void {
  appPort = port & 0xffff;
}

// PIDs the host's OS says are never a user's process (Windows: 4, the
// System process), given by the host after eng_init: the engine knows no OS.
// @ts-ignore: decorator
@inline const NEVER_MAX: i32 = 8;
const neverPids = new StaticArray<u32>(NEVER_MAX);
let neverCount: i32 = 0;

/** Adds a PID never to intercept; false when the list is full. */
export function engineNeverIntercept(pid: u32): bool {
  if (neverCount >= NEVER_MAX) return false;
  unchecked((neverPids[neverCount++] = pid));
  return true;
}

/** The host itself, PID 0 (no owner) and the OS's never-intercept PIDs. */
export function alwaysExcluded(pid: u32): bool {
  if (pid == selfPid || pid == 0) return true;
  for (let i = 0; i < neverCount; i++) {
    if (unchecked(neverPids[i]) == pid) return true;
  }
  return false;
}

/** Sizes and clears every table from the policy in force. */
export function engineStart(t: u32): void {
  const pol = activePolicy;
  statsReset();
  flowsInit(pol.maxFlows);
  engineApplyTimeouts();
  heldInit(pol.maxHeldPackets);
  eventsInit();
  procsInit();
  portOwnersInit();
  now = t;
  started = true;
}

/** Timeouts apply at once; table sizes only at the next start. */
export function engineApplyTimeouts(): void {
  const pol = activePolicy;
  flowsSetTimeouts(pol.holdTimeoutMs, pol.udpIdleMs, pol.tcpIdleMs);
}

// ---------------------------------------------------------------------------
// Address classes

function isLoopback(a: usize, v6: bool): bool {
  if (!v6) return load<u8>(a) == 127;
  return load<u64>(a) == 0 && load<u32>(a, 8) == 0 && load<u32>(a, 12) == 0x01000000;
}

function isMulticast(a: usize, v6: bool): bool {
  if (!v6) return (load<u8>(a) & 0xf0) == 0xe0;
  return load<u8>(a) == 0xff;
}

function isBroadcast(a: usize, v6: bool): bool {
  return !v6 && load<u32>(a) == 0xffffffff;
}

function isLinkLocal(a: usize, v6: bool): bool {
  if (!v6) return load<u8>(a) == 169 && load<u8>(a, 1) == 254;
  return load<u8>(a) == 0xfe && (load<u8>(a, 1) & 0xc0) == 0x80;
}

function isDhcpPort(p: u32): bool {
  return p == 67 || p == 68 || p == 546 || p == 547;
}

/** True when the parsed packet belongs to a class the policy bypasses. */
function bypassed(pol: Policy, local: usize, remote: usize): bool {
  const b = pol.bypass;
  const v6 = pktV6;
  if ((b & BYPASS_LOOPBACK) != 0 &&
    ((curFlags & IN_LOOPBACK) != 0 || isLoopback(remote, v6) || isLoopback(local, v6))) return true;
  if ((b & BYPASS_MULTICAST) != 0 && (isMulticast(remote, v6) || isMulticast(local, v6))) return true;
  if ((b & BYPASS_BROADCAST) != 0 && (isBroadcast(remote, v6) || isBroadcast(local, v6))) return true;
  if ((b & BYPASS_LINK_LOCAL) != 0 && (isLinkLocal(remote, v6) || isLinkLocal(local, v6))) return true;
  if ((b & BYPASS_DHCP) != 0 && pktProto == PROTO_UDP && (isDhcpPort(pktSport) || isDhcpPort(pktDport))) return true;
  return false;
}

function passFlags(): u32 {
  return (curFlags & IN_OUTBOUND) != 0 ? OUT_OUTBOUND : 0;
}

function pass(): u32 {
  bump(S_PASSED);
  return V_PASS | passFlags();
}

// ---------------------------------------------------------------------------
// Flows: removal, decisions, held packets

/** The closed event of a redirected flow, once: at its close or its removal. */
function closedEvent(f: usize): void {
  const fl = load<u32>(f, F_FLAGS);
  if ((fl & (FL_OPENED | FL_CLOSED)) != FL_OPENED) return;
  store<u32>(f, fl | FL_CLOSED, F_FLAGS);
  eventPush(EV_CLOSED, f, now);
}

function removeFlow(f: usize): void {
  const kind = load<u8>(f, F_KIND);
  if (kind == K_PENDING) releaseHeld(f, true);
  closedEvent(f);
  flowFree(f);
}

/** A proxy-side port for a redirected flow whose proxy key is free, or 0. */
function choosePort(f: usize, preferred: u32): u32 {
  const proto = <u32>load<u8>(f, F_PROTO);
  const v6 = load<u8>(f, F_V6) != 0;
  const app = <u32>load<u16>(f, F_APP);
  if (proxyKeyFree(proto, v6, f + F_LADDR, app, f + F_RADDR, preferred)) return preferred;
  let h = preferred * 0x9e3779b1 + load<u32>(f, F_ID);
  for (let k = 0; k < 64; k++) {
    h = h * 1103515245 + 12345;
    const p = 49152 + ((h >>> 8) & 16383);
    if (proxyKeyFree(proto, v6, f + F_LADDR, app, f + F_RADDR, p)) return p;
  }
  return 0;
}

/** Decides a flow whose owner is now known (pid, process ref). */
function decide(f: usize, pid: u32, proc: u32): void {
  store<u32>(f, pid, F_PID);
  store<u32>(f, proc, F_PROC);
  const tcp = load<u8>(f, F_PROTO) == PROTO_TCP;
  if (appPort == 0 || alwaysExcluded(pid) || !procIntercepted(proc, pid)) {
    decidePass(f);
    return;
  }
  const dir = <u32>load<u8>(f, F_DIR);
  store<u16>(f, <u16>appPort, F_APP);
  const pport = choosePort(f, dir == DIR_OUT ? <u32>load<u16>(f, F_LPORT) : <u32>load<u16>(f, F_RPORT));
  if (pport == 0) {
    bump(S_NAT_CONFLICTS);
    decidePass(f);
    return;
  }
  store<u16>(f, <u16>pport, F_PPORT);
  store<u8>(f, dir == DIR_OUT ? K_OUT : K_IN, F_KIND);
  store<u8>(f, T_SYN, F_TCP);
  flowLinkProxy(f);
  flowTouch(f, tcp ? L_RSHORT : L_UDP, now);
  store<u32>(f, load<u32>(f, F_FLAGS) | FL_OPENED, F_FLAGS);
  bump(S_FLOWS_REDIRECTED);
  eventPush(EV_OPENED, f, now);
}

function decidePass(f: usize): void {
  store<u8>(f, K_PASS, F_KIND);
  flowTouch(f, load<u8>(f, F_PROTO) == PROTO_TCP ? L_SHORT : L_UDPPASS, now);
  bump(S_FLOWS_PASSED);
}

/** Holds the current packet on a pending flow. */
function hold(f: usize): u32 {
  const n = <u32>load<u16>(f, F_HELD_N);
  const i = n >= PER_FLOW ? 0 : heldPut(curData, curLen, curFlags, curIf, curSubIf, curCookieLo, curCookieHi);
  if (i == 0) {
    bump(S_DROPPED);
    return V_DROP;
  }
  const last = load<u32>(f, F_HELD_LAST);
  if (last != 0) store<u32>(rec(last), i, 28);
  else store<u32>(f, i, F_HELD_FIRST);
  store<u32>(f, i, F_HELD_LAST);
  store<u16>(f, <u16>(n + 1), F_HELD_N);
  bump(S_HELD);
  return V_HELD;
}

/**
 * Releases a flow's held packets in order: each runs through the decided
 * flow (rewritten or passed); `asIs` releases them unchanged.
 */
function releaseHeld(f: usize, asIs: bool): void {
  let i = load<u32>(f, F_HELD_FIRST);
  store<u32>(f, 0, F_HELD_FIRST);
  store<u32>(f, 0, F_HELD_LAST);
  store<u16>(f, 0, F_HELD_N);
  while (i != 0) {
    const r = rec(i);
    const next = load<u32>(r, 28);
    const flags = load<u32>(r, 8);
    let verdict: u32;
    setCurrent(<usize>load<u32>(r, 20), load<u32>(r, 24), flags, load<u32>(r, 12), load<u32>(r, 16),
      load<u32>(r, 0), load<u32>(r, 4));
    if (asIs || parsePacket(curData, curLen) != P_OK) verdict = pass();
    else verdict = onFlowPacket(f, 0);
    if ((verdict & 0xff) == V_HELD) verdict = V_PASS | passFlags(); // cannot happen: the flow is decided
    heldRelease(i, verdict);
    i = next;
  }
}

function resolve(f: usize, pid: u32, proc: u32, known: bool): void {
  if (known) decide(f, pid, proc);
  else decidePass(f);
  releaseHeld(f, false);
}

/**
 * No socket owns this connection (a raw socket's packet, or a socket already
 * closed): its packets pass, and the decision is not remembered for TCP, so
 * a real connection that later uses the same ports is decided afresh. (UDP
 * keeps its "pass" entry: datagrams of a socketless sender would otherwise
 * each cost a look-up.)
 */
function resolveOwnerless(f: usize): void {
  resolve(f, 0, 0, false);
  if (load<u8>(f, F_PROTO) == PROTO_TCP) flowFree(f);
}

// ---------------------------------------------------------------------------
// Packets

function setCurrent(data: usize, len: u32, flags: u32, ifIdx: u32, subIf: u32, cLo: u32, cHi: u32): void {
  curData = data;
  curLen = len;
  curFlags = flags;
  curIf = ifIdx;
  curSubIf = subIf;
  curCookieLo = cLo;
  curCookieHi = cHi;
}

function trackTcp(f: usize, side: u32): void {
  const fl = pktTcpFlags;
  let st = load<u8>(f, F_TCP);
  if ((fl & TCP_RST) != 0) {
    st = T_CLOSED;
  } else {
    if ((fl & TCP_FIN) != 0) {
      const bits = load<u32>(f, F_FLAGS) | (side == 0 ? FL_FIN_CLIENT : FL_FIN_PROXY);
      store<u32>(f, bits, F_FLAGS);
      if ((bits & (FL_FIN_CLIENT | FL_FIN_PROXY)) == (FL_FIN_CLIENT | FL_FIN_PROXY)) st = T_CLOSING;
    }
    if (st == T_SYN && side == 1 && (fl & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) st = T_ESTABLISHED;
  }
  store<u8>(f, st, F_TCP);
  flowTouch(f, st == T_ESTABLISHED ? L_TCP : L_RSHORT, now);
  // Both FINs or a RST: the connection is over for its users; the entry
  // lingers for stray packets.
  if (st >= T_CLOSING) closedEvent(f);
}

function checksumFull(): bool {
  return (curFlags & IN_CSUM_PARTIAL) != 0;
}

/** A packet of a known flow; side 0 = client key matched, 1 = proxy key. */
function onFlowPacket(f: usize, side: u32): u32 {
  const kind = load<u8>(f, F_KIND);
  const outbound = (curFlags & IN_OUTBOUND) != 0;
  if (kind == K_PENDING) return side == 0 ? hold(f) : pass();
  if (kind == K_PASS) {
    if (load<u8>(f, F_PROTO) == PROTO_UDP) flowTouch(f, L_UDPPASS, now);
    return pass();
  }
  const tcp = pktProto == PROTO_TCP;
  let up = false;
  if (kind == K_OUT) {
    if (!outbound) return pass(); // our own injection seen again, or a stray reply
    if (side == 0) {
      // client C:c -> D:d  =>  D:c' -> C:P
      rewrite(f + F_RADDR, load<u16>(f, F_PPORT), f + F_LADDR, load<u16>(f, F_APP), checksumFull());
      up = true;
    } else {
      // proxy C:P -> D:c'  =>  D:d -> C:c
      rewrite(f + F_RADDR, load<u16>(f, F_RPORT), f + F_LADDR, load<u16>(f, F_LPORT), checksumFull());
    }
  } else if (kind == K_IN) {
    if (side == 0 && !outbound) {
      // remote R:r -> C:L  =>  R:r' -> C:P
      rewrite(f + F_RADDR, load<u16>(f, F_PPORT), f + F_LADDR, load<u16>(f, F_APP), checksumFull());
      up = true;
    } else if (side == 1 && outbound) {
      // proxy C:P -> R:r'  =>  C:L -> R:r
      rewrite(f + F_LADDR, load<u16>(f, F_LPORT), f + F_RADDR, load<u16>(f, F_RPORT), checksumFull());
    } else {
      return pass();
    }
  } else {
    return pass();
  }
  const field = up ? F_UP : F_DOWN;
  store<u64>(f + field, load<u64>(f + field) + <u64>pktPayload);
  if (tcp) trackTcp(f, side);
  else flowTouch(f, L_UDP, now);
  bump(S_REWRITTEN);
  // Redirected outbound traffic is injected inbound (to the proxy, or back
  // to the client); inbound redirects keep their direction.
  const dirOut = kind == K_IN && side == 1 ? OUT_OUTBOUND : 0;
  return V_MODIFIED | dirOut | OUT_CSUM_VALID;
}

/**
 * May the current packet start a redirected flow? Checks what does not
 * depend on the owner: protocol, direction, a bare SYN, bypassed classes,
 * destination port and address.
 */
function eligible(outbound: bool, laddr: usize, lport: u32, raddr: usize, rport: u32): bool {
  const pol = activePolicy;
  if (!started || appPort == 0 || pol.interceptsNothing) return false;
  const tcp = pktProto == PROTO_TCP;
  if (tcp ? !pol.tcp : !pol.udp) return false;
  if (outbound ? !pol.outbound : !pol.inbound) return false;
  if (!isFlowStart()) return false;
  if (bypassed(pol, laddr, raddr)) {
    bump(S_BYPASSED);
    return false;
  }
  // The original destination: the remote end outbound, the listener inbound.
  return portAllowed(pol, outbound ? rport : lport) && destinationAllowed(pol, pktV6, outbound ? raddr : laddr);
}

/** A packet that matches no flow. */
function onNewPacket(outbound: bool, laddr: usize, lport: u32, raddr: usize, rport: u32): u32 {
  if (!eligible(outbound, laddr, lport, raddr, rport)) return pass();
  const dir = outbound ? DIR_OUT : DIR_IN;
  const f = flowNew(K_PENDING, pktProto, pktV6, laddr, lport, raddr, rport, dir, L_PENDING, now, removeFlow);
  if (f == 0) return tableFull();
  // A known local port owner (a listener, a bound UDP socket) decides now.
  const po = portOwnerGet(pktProto, lport);
  if (po != 0 && (!outbound || pktProto == PROTO_UDP)) {
    decide(f, portOwnerPid(po), portOwnerProc(po));
    return onFlowPacket(f, 0);
  }
  return hold(f);
}

function tableFull(): u32 {
  bump(S_TABLE_FULL);
  return pass();
}

/** Processes the current packet (setCurrent first). Returns the verdict word. */
export function processCurrent(): u32 {
  bump(S_PACKETS);
  const r = parsePacket(curData, curLen);
  if (r != P_OK) {
    if (r == P_MALFORMED) bump(S_MALFORMED);
    else if (r == P_FRAGMENT) bump(S_FRAGMENTS);
    return pass();
  }
  const outbound = (curFlags & IN_OUTBOUND) != 0;
  const laddr = outbound ? pktSrc : pktDst;
  const raddr = outbound ? pktDst : pktSrc;
  const lport = outbound ? pktSport : pktDport;
  const rport = outbound ? pktDport : pktSport;
  let f = flowFind(pktProto, pktV6, laddr, lport, raddr, rport);
  if (f != 0) {
    const side = foundSide;
    const kind = load<u8>(f, F_KIND);
    if (kind == K_FACT) {
      // The owner was known before the first packet.
      if (side == 0 && isFlowStart()) {
        // Decided now, once: a retransmission keeps this decision.
        if (eligible(outbound, laddr, lport, raddr, rport)) {
          store<u8>(f, K_PENDING, F_KIND);
          decide(f, load<u32>(f, F_PID), load<u32>(f, F_PROC));
          return onFlowPacket(f, 0);
        }
        decidePass(f);
      }
      return pass();
    }
    // A new SYN on a closed redirected flow: the port was reused.
    if (side == 0 && pktProto == PROTO_TCP && isFlowStart() && (kind == K_OUT || kind == K_IN) &&
      load<u8>(f, F_TCP) >= T_CLOSING) {
      removeFlow(f);
      f = 0;
    } else {
      return onFlowPacket(f, side);
    }
  }
  return onNewPacket(outbound, laddr, lport, raddr, rport);
}

function isFlowStart(): bool {
  if (pktProto == PROTO_UDP) return true;
  return (pktTcpFlags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) == TCP_SYN;
}

export function processPacket(data: usize, len: u32, flags: u32, ifIdx: u32, subIf: u32, cLo: u32, cHi: u32,
  t: u32): u32 {
  now = t;
  setCurrent(data, len, flags, ifIdx, subIf, cLo, cHi);
  return processCurrent();
}

// ---------------------------------------------------------------------------
// Owner facts

/**
 * An owner fact. kind: O_*; addresses point at 4 or 16 bytes. For
 * O_UNKNOWN the flow (laddr:lport, raddr:rport) had no owner to find.
 */
export function ownerFact(kind: u32, proto: u32, v6: bool, laddr: usize, lport: u32, raddr: usize, rport: u32,
  pid: u32, proc: u32, t: u32): void {
  now = t;
  bump(S_OWNER_FACTS);
  if (kind == O_BIND || kind == O_LISTEN) {
    portOwnerPut(proto, lport, pid, proc, now);
    // Flows waiting for this local port's owner.
    let f = listOldest(L_PENDING);
    while (f != 0) {
      const next = listNewer(f);
      if (<u32>load<u8>(f, F_PROTO) == proto && <u32>load<u16>(f, F_LPORT) == lport &&
        (load<u8>(f, F_DIR) == DIR_IN || proto == PROTO_UDP)) {
        resolve(f, pid, proc, true);
      }
      f = next;
    }
    return;
  }
  if (kind == O_CLOSE) {
    portOwnerRemove(proto, lport, pid);
    return;
  }
  const f = flowFind(proto, v6, laddr, lport, raddr, rport);
  if (f != 0 && foundSide == 0) {
    const k = load<u8>(f, F_KIND);
    if (k == K_PENDING) {
      if (kind == O_UNKNOWN) resolveOwnerless(f);
      else resolve(f, pid, proc, true);
    }
    else if (k == K_FACT && kind != O_UNKNOWN) {
      store<u32>(f, pid, F_PID);
      store<u32>(f, proc, F_PROC);
    }
    return;
  }
  if (f == 0 && kind != O_UNKNOWN && started) {
    // Before the first packet: remember it for a while.
    const dir = kind == O_ACCEPT ? DIR_IN : DIR_OUT;
    const g = flowNew(K_FACT, proto, v6, laddr, lport, raddr, rport, dir, L_SHORT, now, removeFlow);
    if (g != 0) {
      store<u32>(g, pid, F_PID);
      store<u32>(g, proc, F_PROC);
    }
  }
}

/** Records a process path and returns its reference (0 when pid is unknown). */
export function ownerProcess(pid: u32, path: usize, len: u32, t: u32): u32 {
  return procPut(pid, path, len, t);
}

// ---------------------------------------------------------------------------
// Queries: pending flows whose owner the shim has not been asked for yet.
//
//   query (QUERY bytes): +0 u8 proto  +1 u8 family (4/6)  +2 u8 direction
//   +4 [16] local addr  +20 [16] remote addr  +36 u16 local port
//   +38 u16 remote port

// @ts-ignore: decorator
@inline export const QUERY: u32 = 40;

export function takeQueries(out: usize, max: u32): u32 {
  let n: u32 = 0;
  let f = listOldest(L_PENDING);
  while (f != 0 && n < max) {
    const flags = load<u32>(f, F_FLAGS);
    if ((flags & FL_QUERIED) == 0) {
      store<u32>(f, flags | FL_QUERIED, F_FLAGS);
      const q = out + <usize>n * QUERY;
      const v6 = load<u8>(f, F_V6) != 0;
      memory.fill(q, 0, QUERY);
      store<u8>(q, load<u8>(f, F_PROTO), 0);
      store<u8>(q, v6 ? 6 : 4, 1);
      store<u8>(q, load<u8>(f, F_DIR), 2);
      memory.copy(q + 4, f + F_LADDR, v6 ? 16 : 4);
      memory.copy(q + 20, f + F_RADDR, v6 ? 16 : 4);
      store<u16>(q, load<u16>(f, F_LPORT), 36);
      store<u16>(q, load<u16>(f, F_RPORT), 38);
      n++;
      bump(S_OWNER_QUERIES);
    }
    f = listNewer(f);
  }
  return n;
}

// ---------------------------------------------------------------------------
// Time

/** Hold timeouts and idle expiry. */
export function tick(t: u32): void {
  now = t;
  if (!started) return;
  let f = flowExpired(L_PENDING, now);
  while (f != 0) {
    bump(S_HOLD_TIMEOUTS);
    resolve(f, 0, 0, false);
    f = flowExpired(L_PENDING, now);
  }
  for (let l = L_SHORT; l <= L_TCP; l++) {
    f = flowExpired(<u8>l, now);
    while (f != 0) {
      removeFlow(f);
      f = flowExpired(<u8>l, now);
    }
  }
}

// ---------------------------------------------------------------------------
// Origins: what lookups and events hand out.
//
//   origin (ORIGIN bytes + path):
//   +0  u32 type (0 lookup, 1 opened, 2 closed)   +4  u32 protocol (6/17)
//   +8  u32 family (4/6)   +12 u32 direction (0 outbound, 1 inbound)
//   +16 u32 pid            +20 u32 flow id
//   +24 [16] original destination  +40 u32 its port
//   +44 [16] client                +60 u32 its port
//   +64 [16] proxy's peer          +80 u32 its port
//   +84 u32 app port       +88 u64 bytes up   +96 u64 bytes down
//   +104 u32 time (ms)     +108 u32 path length   +112 path (UTF-8)

// @ts-ignore: decorator
@inline export const ORIGIN: u32 = 112;

function putAddr(out: usize, f: usize, field: usize, v6: bool): void {
  memory.fill(out, 0, 16);
  memory.copy(out, f + field, v6 ? 16 : 4);
}

/** Writes the origin of flow entry (or event copy) `f` at `out`. */
export function writeOrigin(out: usize, type: u32, f: usize, time: u32, path: usize, pathLen: u32): void {
  const v6 = load<u8>(f, F_V6) != 0;
  const inbound = load<u8>(f, F_KIND) == K_IN;
  store<u32>(out, type, 0);
  store<u32>(out, <u32>load<u8>(f, F_PROTO), 4);
  store<u32>(out, v6 ? 6 : 4, 8);
  store<u32>(out, inbound ? 1 : 0, 12);
  store<u32>(out, load<u32>(f, F_PID), 16);
  store<u32>(out, load<u32>(f, F_ID), 20);
  putAddr(out + 24, f, inbound ? F_LADDR : F_RADDR, v6);
  store<u32>(out, <u32>load<u16>(f + (inbound ? F_LPORT : F_RPORT)), 40);
  putAddr(out + 44, f, inbound ? F_RADDR : F_LADDR, v6);
  store<u32>(out, <u32>load<u16>(f + (inbound ? F_RPORT : F_LPORT)), 60);
  putAddr(out + 64, f, F_RADDR, v6);
  store<u32>(out, <u32>load<u16>(f, F_PPORT), 80);
  store<u32>(out, <u32>load<u16>(f, F_APP), 84);
  store<u64>(out, load<u64>(f, F_UP), 88);
  store<u64>(out, load<u64>(f, F_DOWN), 96);
  store<u32>(out, time, 104);
  store<u32>(out, pathLen, 108);
  if (pathLen > 0) memory.copy(out + ORIGIN, path, pathLen);
}

/** The redirected flow the proxy sees as (peer, local), or 0. */
export function findByProxyKey(proto: u32, v6: bool, local: usize, lport: u32, peer: usize, pport: u32,
  anyLocal: bool): usize {
  const f = flowFind(proto, v6, local, lport, peer, pport, anyLocal);
  if (f == 0 || foundSide != 1) return 0;
  const k = load<u8>(f, F_KIND);
  return k == K_OUT || k == K_IN ? f : 0;
}
