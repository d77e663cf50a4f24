// The redirect: per-packet decisions, owner facts, held packets, expiry,
// lookups and events. Knows packets, flows and policy; nothing of WinDivert
// or NFQUEUE. docs/architecture.md follows a packet through it.
//
// Outbound flow of an intercepted process, client C:c to destination D:d,
// app port P (the proxy listens there), proxy port c' (= c unless taken):
//   client  C:c  -> D:d    becomes  D:c' -> C:P   (injected inbound)
//   proxy   C:P  -> D:c'   becomes  D:d  -> C:c   (injected inbound)
// Inbound flow, remote R:r to a listener C:L of an intercepted process:
//   remote  R:r  -> C:L    becomes  R:r' -> C:P   (stays inbound)
//   proxy   C:P  -> R:r'   becomes  C:L  -> R:r   (stays outbound)
// The proxy looks up (peer, local) = (D:c', C:P) or (R:r', C:P).
//
// ICMP/ICMPv6 errors about rewritten packets go to the socket that sent the
// packet, translated to what it sent (onIcmp; docs/architecture.md, "ICMP
// errors"):
//   local stack  C -> D  [D:c' -> C:P]  becomes  D -> C  [C:c -> D:d]   (to the client)
//   local stack  C -> D  [D:d -> C:c]   becomes  D -> C  [C:P -> D:c']  (to the proxy)
//   local stack  C -> R  [R:r' -> C:P]  becomes  C -> R  [R:r -> C:L]   (to the remote)
//   router X     X -> C  [C:L -> R:r]   becomes  X -> C  [C:P -> R:r']  (to the proxy)

import { activePolicy } from "./config/config";
import { Policy, Bypass, destinationAllowed, portAllowed } from "./config/policy";
import { Packet, Parse, PROTO_TCP, PROTO_UDP } from "./packet";
import { rewrite, translateIcmpError } from "./nat";
import { ICMP_HEADER_LEN, IcmpPacket, Icmpv6Packet } from "./wire/icmp";
import { TcpFlag } from "./wire/tcp";
import {
  addrEq, flowsInit, flowsSetTimeouts, flowFind, flowFindIn, keyBucket, foundSide, flowNew, flowFree, flowTouch,
  flowExpired, flowTimedOut, flowLinkProxy, proxyKeyBucket, listOldest, listNewer, flowsSeed, flow, Kind, TcpState,
  FlowFlag, List,
} from "./flows";
import { heldInit, heldPut, heldRelease, rec, PER_FLOW } from "./held";
import { eventsInit, eventPush, EventType } from "./events";
import { procsInit, procPut, procIntercepted } from "./procs";
import { lineageInit } from "./lineage";
import { exclusionsInit, exclusionMatch, exclusionsDropPort } from "./exclusions";
import {
  portOwnersInit, portOwnerPut, portOwnerCovering, portOwnerCovers, portOwnerRemove, portOwnerPid, portOwnerProc,
  isUnspecified,
} from "./portowners";
import { bump, statsReset, Stat } from "./stats";
import { scopeChanged, scopeFlowGone } from "./scope";
import { InFlag, Meta, Origin, ORIGIN_SIZE, OutFlag, OwnerKind, Query, QUERY_SIZE, Verdict } from "../build/gen/contract";

// The in-flags, verdicts, out-flags and owner fact kinds are the contract's
// (build/contract.ts): a verdict word is Verdict | OutFlag << OUT_SHIFT.
export { InFlag, Verdict, OutFlag, OwnerKind };

const OUT_SHIFT: u32 = 8;

/** Flow.dir. */
const enum Dir {
  Out = 0,
  In = 1,
}

export let selfPid: u32 = 0;
export let appPort: u32 = 0;
export let started = false;

let now: u32 = 0;

// The packet views: one for the packet of the batch being decided, one for
// the held packets a decision releases (which may happen while the batch's
// packet is being decided).
const batchPacket = changetype<Packet>(memory.data(offsetof<Packet>()));
const heldPacket = changetype<Packet>(memory.data(offsetof<Packet>()));
// And one for the packet an ICMP error of the batch quotes.
const quotedPacket = changetype<Packet>(memory.data(offsetof<Packet>()));

export function engineSetSelf(pid: u32, seed: u32): void {
  selfPid = pid;
  flowsSeed(seed);
}

export function engineSetAppPort(port: u32): void {
  const p = port & 0xffff;
  if (p != appPort) scopeChanged();
  appPort = p;
}

// PIDs the host's OS says are never a user's process (Windows: 4, the
// System process), given by the host after eng_init: the engine knows no OS.
const NEVER_MAX: i32 = 8;
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
  lineageInit();
  portOwnersInit();
  exclusionsInit(pol.maxFlows);
  now = t;
  started = true;
  scopeChanged();
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

/** Marks a flow of loopback traffic (the capture's flag, or a loopback address): the capture scope keeps it. */
function noteLoopback(f: usize, pk: Packet, local: usize, remote: usize): void {
  if ((pk.flags & InFlag.Loopback) != 0 || isLoopback(remote, pk.v6) || isLoopback(local, pk.v6)) {
    flow(f).flags = flow(f).flags | FlowFlag.Loopback;
  }
}

/** True when the parsed packet belongs to a class the policy bypasses. */
function bypassed(pol: Policy, pk: Packet, local: usize, remote: usize): bool {
  const b = pol.bypass;
  const v6 = pk.v6;
  if ((b & Bypass.Loopback) != 0 &&
    ((pk.flags & InFlag.Loopback) != 0 || isLoopback(remote, v6) || isLoopback(local, v6))) return true;
  if ((b & Bypass.Multicast) != 0 && (isMulticast(remote, v6) || isMulticast(local, v6))) return true;
  if ((b & Bypass.Broadcast) != 0 && (isBroadcast(remote, v6) || isBroadcast(local, v6))) return true;
  if ((b & Bypass.LinkLocal) != 0 && (isLinkLocal(remote, v6) || isLinkLocal(local, v6))) return true;
  if ((b & Bypass.Dhcp) != 0 && pk.proto == PROTO_UDP && (isDhcpPort(pk.sport) || isDhcpPort(pk.dport))) return true;
  return false;
}

function passFlags(pk: Packet): u32 {
  return (pk.flags & InFlag.Outbound) != 0 ? OutFlag.Outbound << OUT_SHIFT : 0;
}

function pass(pk: Packet): u32 {
  bump(Stat.passed);
  return Verdict.Pass | passFlags(pk);
}

// ---------------------------------------------------------------------------
// Flows: removal, decisions, held packets

/** The closed event of a redirected flow, once: at its close or its removal. */
function closedEvent(f: usize): void {
  const fl = flow(f).flags;
  if ((fl & (FlowFlag.Opened | FlowFlag.Closed)) != FlowFlag.Opened) return;
  flow(f).flags = fl | FlowFlag.Closed;
  eventPush(EventType.Closed, f, now);
}

function removeFlow(f: usize): void {
  const kind = flow(f).kind;
  if (kind == Kind.Pending) releaseHeld(f, true);
  closedEvent(f);
  scopeFlowGone(f);
  flowFree(f);
}

/**
 * Chooses a proxy-side port for a redirected flow whose proxy key is free:
 * sets the flow's proxyPort and returns the proxy key's bucket (for
 * flowLinkProxy, which then hashes nothing); 0 when no port is free.
 */
function choosePort(f: usize, preferred: u32): usize {
  const proto = <u32>flow(f).proto;
  const v6 = flow(f).v6 != 0;
  const app = <u32>flow(f).appPort;
  let b = proxyKeyBucket(proto, v6, flow(f).localAddr, app, flow(f).remoteAddr, preferred);
  if (b != 0) {
    flow(f).proxyPort = <u16>preferred;
    return b;
  }
  let h = preferred * 0x9e3779b1 + flow(f).id;
  for (let k = 0; k < 64; k++) {
    h = h * 1103515245 + 12345;
    const p = 49152 + ((h >>> 8) & 16383);
    b = proxyKeyBucket(proto, v6, flow(f).localAddr, app, flow(f).remoteAddr, p);
    if (b != 0) {
      flow(f).proxyPort = <u16>p;
      return b;
    }
  }
  return 0;
}

/** Decides a flow whose owner is now known (pid, process ref). */
function decide(f: usize, pid: u32, proc: u32): void {
  flow(f).pid = pid;
  flow(f).proc = proc;
  const tcp = flow(f).proto == PROTO_TCP;
  if (appPort == 0 || alwaysExcluded(pid) || !procIntercepted(proc, pid)) {
    decidePass(f);
    return;
  }
  const dir = <u32>flow(f).dir;
  flow(f).appPort = <u16>appPort;
  const pb = choosePort(f, dir == Dir.Out ? <u32>flow(f).localPort : <u32>flow(f).remotePort);
  if (pb == 0) {
    bump(Stat.natConflicts);
    decidePass(f);
    return;
  }
  flow(f).kind = <u8>(dir == Dir.Out ? Kind.Out : Kind.In);
  flow(f).tcpState = <u8>TcpState.Syn;
  flowLinkProxy(f, pb);
  // A TCP flow is decided on its SYN, which goes to the proxy now: it waits
  // on RSyn for the proxy's answer.
  flowTouch(f, tcp ? List.RSyn : List.Udp, now);
  flow(f).flags = flow(f).flags | FlowFlag.Opened;
  bump(Stat.flowsRedirected);
  eventPush(EventType.Opened, f, now);
}

function decidePass(f: usize): void {
  scopeFlowGone(f);
  flow(f).kind = <u8>Kind.Pass;
  flowTouch(f, flow(f).proto == PROTO_TCP ? List.Short : List.UdpPass, now);
  bump(Stat.flowsPassed);
}

/** Holds a packet of the batch on a pending flow. */
function hold(f: usize, pk: Packet): u32 {
  const m = pk.meta;
  // A released packet is never held again (its flow is decided).
  if (m === null) return pass(pk);
  const n = <u32>flow(f).heldCount;
  const i = n >= PER_FLOW ? 0 : heldPut(pk.data, pk.len, pk.flags, m.ifIdx, m.subIfIdx, m.cookieLo, m.cookieHi);
  if (i == 0) {
    bump(Stat.dropped);
    return Verdict.Drop;
  }
  const last = flow(f).heldLast;
  if (last != 0) rec(last).next = i;
  else flow(f).heldFirst = i;
  flow(f).heldLast = i;
  flow(f).heldCount = <u16>(n + 1);
  bump(Stat.held);
  return Verdict.Held;
}

/**
 * Releases a flow's held packets in order: each runs through the decided
 * flow (rewritten or passed); `asIs` releases them unchanged.
 */
function releaseHeld(f: usize, asIs: bool): void {
  let i = flow(f).heldFirst;
  flow(f).heldFirst = 0;
  flow(f).heldLast = 0;
  flow(f).heldCount = 0;
  while (i != 0) {
    const r = rec(i);
    const next = r.next;
    const pk = heldPacket;
    let verdict: u32;
    pk.set(<usize>r.data, r.len, r.flags, null);
    if (asIs || pk.parse() != Parse.Ok) verdict = pass(pk);
    else verdict = onFlowPacket(f, 0, pk);
    if ((verdict & 0xff) == Verdict.Held) verdict = Verdict.Pass | passFlags(pk); // cannot happen: the flow is decided
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
  if (flow(f).proto == PROTO_TCP) flowFree(f);
}

// ---------------------------------------------------------------------------
// Packets

/**
 * A redirected SYN the proxy did not answer within SYN_ANSWER_MS: counted
 * once (the flow leaves RSyn for good).
 */
function synUnanswered(f: usize): void {
  bump(Stat.redirectedSynUnanswered);
  flowTouch(f, List.RShort, now);
}

function trackTcp(f: usize, side: u32, pk: Packet): void {
  const fl = pk.tcpFlags;
  let st = <TcpState>flow(f).tcpState;
  // Waiting for the proxy's answer to the redirected SYN (a late answer,
  // before the tick has seen the wait is over, is still counted unanswered).
  let waiting = flow(f).list == List.RSyn;
  if (waiting && flowTimedOut(f, now)) {
    synUnanswered(f);
    waiting = false;
  }
  if (waiting && side == 1 && (fl & TcpFlag.RST) != 0) bump(Stat.redirectedSynRefused);
  if ((fl & TcpFlag.RST) != 0) {
    st = TcpState.Closed;
  } else {
    if ((fl & TcpFlag.FIN) != 0) {
      const bits = flow(f).flags | (side == 0 ? FlowFlag.FinClient : FlowFlag.FinProxy);
      flow(f).flags = bits;
      if ((bits & (FlowFlag.FinClient | FlowFlag.FinProxy)) == (FlowFlag.FinClient | FlowFlag.FinProxy)) st = TcpState.Closing;
    }
    if (st == TcpState.Syn && side == 1 && (fl & (TcpFlag.SYN | TcpFlag.ACK)) == (TcpFlag.SYN | TcpFlag.ACK)) st = TcpState.Established;
  }
  flow(f).tcpState = <u8>st;
  // Still waiting (a retransmitted SYN): the flow stays where its first SYN
  // put it, so RSyn keeps the order of first SYNs.
  if (!waiting || st != TcpState.Syn) flowTouch(f, st == TcpState.Established ? List.Tcp : List.RShort, now);
  // Both FINs or a RST: the connection is over for its users; the entry
  // lingers for stray packets.
  if (st >= TcpState.Closing) closedEvent(f);
}

/**
 * A packet of a known flow; side 0 = client key matched, 1 = proxy key. The
 * view's in-flags are read once (each read of the view is a bounds-checked
 * load, and the rewrite's writes to the packet would make it load them again).
 */
function onFlowPacket(f: usize, side: u32, pk: Packet): u32 {
  const kind = flow(f).kind;
  const inFlags = pk.flags;
  const outbound = (inFlags & InFlag.Outbound) != 0;
  if (kind == Kind.Pending) return side == 0 ? hold(f, pk) : pass(pk);
  if (kind == Kind.Pass) {
    if (flow(f).proto == PROTO_UDP) flowTouch(f, List.UdpPass, now);
    return pass(pk);
  }
  const tcp = pk.proto == PROTO_TCP;
  // The capture layer says the transport checksum is not ready: computed in full.
  const full = (inFlags & InFlag.CsumPartial) != 0;
  // The ends the packet is rewritten to, for one rewrite call (as four, the
  // calls cost every rewritten packet 24 instructions).
  let src = flow(f).remoteAddr;
  let dst = flow(f).localAddr;
  let sport: u32;
  let dport: u32;
  let up = false;
  if (kind == Kind.Out) {
    if (!outbound) return pass(pk); // our own injection seen again, or a stray reply
    if (side == 0) {
      // client C:c -> D:d  =>  D:c' -> C:P
      sport = flow(f).proxyPort;
      dport = flow(f).appPort;
      up = true;
    } else {
      // proxy C:P -> D:c'  =>  D:d -> C:c
      sport = flow(f).remotePort;
      dport = flow(f).localPort;
    }
  } else if (kind == Kind.In) {
    if (side == 0 && !outbound) {
      // remote R:r -> C:L  =>  R:r' -> C:P
      sport = flow(f).proxyPort;
      dport = flow(f).appPort;
      up = true;
    } else if (side == 1 && outbound) {
      // proxy C:P -> R:r'  =>  C:L -> R:r
      src = flow(f).localAddr;
      sport = flow(f).localPort;
      dst = flow(f).remoteAddr;
      dport = flow(f).remotePort;
    } else {
      return pass(pk);
    }
  } else {
    return pass(pk);
  }
  rewrite(pk, src, sport, dst, dport, full);
  if (up) flow(f).bytesUp += <u64>pk.payload;
  else flow(f).bytesDown += <u64>pk.payload;
  if (tcp) trackTcp(f, side, pk);
  else flowTouch(f, List.Udp, now);
  bump(Stat.rewritten);
  // Redirected outbound traffic is injected inbound (to the proxy, or back
  // to the client); inbound redirects keep their direction. Loopback traffic
  // goes back outbound either way: a capture sees it only as outbound, and
  // an inbound injection on the loopback interface is never delivered
  // (WinDivert's driver).
  const loop = (inFlags & InFlag.Loopback) != 0;
  const dirOut = (kind == Kind.In && side == 1) || loop ? OutFlag.Outbound << OUT_SHIFT : 0;
  return Verdict.Modified | dirOut | OutFlag.CsumValid << OUT_SHIFT;
}

/**
 * May the current packet start a redirected flow? Checks what does not
 * depend on the owner: protocol, direction, a bare SYN, bypassed classes,
 * destination port and address.
 */
function eligible(pk: Packet, outbound: bool, laddr: usize, lport: u32, raddr: usize, rport: u32): bool {
  const pol = activePolicy;
  if (!started || appPort == 0 || pol.interceptsNothing) return false;
  const tcp = pk.proto == PROTO_TCP;
  if (tcp ? !pol.tcp : !pol.udp) return false;
  if (outbound ? !pol.outbound : !pol.inbound) return false;
  if (!isFlowStart(pk)) return false;
  if (bypassed(pol, pk, laddr, raddr)) {
    bump(Stat.bypassed);
    return false;
  }
  // The original destination: the remote end outbound, the listener inbound.
  return (pol.anyPort || portAllowed(pol, outbound ? rport : lport)) &&
    (pol.anyDestination || destinationAllowed(pol, pk.v6, outbound ? raddr : laddr));
}

/** A packet that matches no flow. */
function onNewPacket(pk: Packet, outbound: bool, laddr: usize, lport: u32, raddr: usize, rport: u32): u32 {
  // An excluded socket of the host's own (either way: its packets and the
  // replies to it): passed at once, and no flow is kept for it.
  if (exclusionMatch(pk.proto, pk.v6, laddr, lport)) return pass(pk);
  if (!eligible(pk, outbound, laddr, lport, raddr, rport)) return pass(pk);
  const dir = outbound ? Dir.Out : Dir.In;
  const proto = pk.proto;
  // The key is hashed again here: processPacketView's flowFind hands out no
  // bucket, which would cost every established flow's packet.
  const f = flowNew(Kind.Pending, proto, pk.v6, laddr, lport, raddr, rport, dir, List.Pending, now, removeFlow,
    keyBucket(proto, pk.v6, raddr, lport, rport));
  if (f == 0) return tableFull(pk);
  noteLoopback(f, pk, laddr, raddr);
  // A known local port owner (a listener, a bound UDP socket) decides now;
  // an outbound TCP connection's is never looked for (its owner is the
  // connecting socket, not a listener on its port: up to three probes saved
  // on every outbound SYN).
  if (!outbound || proto == PROTO_UDP) {
    const po = portOwnerCovering(proto, pk.v6, laddr, lport);
    if (po != 0) {
      decide(f, portOwnerPid(po), portOwnerProc(po));
      return onFlowPacket(f, 0, pk);
    }
  }
  return hold(f, pk);
}

function tableFull(pk: Packet): u32 {
  bump(Stat.tableFull);
  return pass(pk);
}

function malformed(pk: Packet): u32 {
  bump(Stat.malformed);
  return pass(pk);
}

/**
 * An ICMP/ICMPv6 message (parse() said Icmp). An error that quotes a packet
 * the engine rewrote is translated for the socket that sent that packet:
 * the quoted packet as it left that socket, the error from where that
 * socket's peer is and to it (the table at the top). Everything else
 * passes unchanged: other messages, errors about packets that went out as
 * they were sent, and (counted as malformed) errors too short, with a wrong
 * checksum, or quoting a cut-off header.
 */
function onIcmp(pk: Packet): u32 {
  const v6 = pk.v6;
  const len = pk.l4Len;
  const icmp = IcmpPacket.at(pk.l4);
  if (!icmp.checkLen(len)) return malformed(pk);
  if (v6 ? !Icmpv6Packet.at(pk.l4).isError : !icmp.isError) return pass(pk);
  // The message is checksummed anew when translated: a corrupt one must
  // not come out right.
  if (v6 ? !Icmpv6Packet.at(pk.l4).verifyChecksum(pk.src, pk.dst, len) : !icmp.verifyChecksum(len)) {
    return malformed(pk);
  }
  const q = quotedPacket;
  q.set(icmp.quoted, len - ICMP_HEADER_LEN, 0, null);
  const r = q.parseQuoted();
  if (r == Parse.Malformed || (r == Parse.Ok && q.v6 != v6)) return malformed(pk);
  if (r != Parse.Ok) return pass(pk);
  // An error goes to the quoted packet's sender.
  if (!addrEq(pk.dst, q.src, v6)) return pass(pk);
  // The quoted packet went the other way: an error this host sends
  // (outbound) is about a packet it received.
  const outbound = (pk.flags & InFlag.Outbound) != 0;
  const f = outbound ? flowFind(q.proto, v6, q.dst, q.dport, q.src, q.sport)
    : flowFind(q.proto, v6, q.src, q.sport, q.dst, q.dport);
  if (f == 0) return pass(pk);
  const side = foundSide;
  const kind = flow(f).kind;
  const local = flow(f).localAddr;
  const remote = flow(f).remoteAddr;
  // Which rewrite made the quoted packet, and what its sender sent.
  let qsrc: usize;
  let qsport: u32;
  let qdst: usize;
  let qdport: u32;
  if (kind == Kind.Out && outbound && side == 1) {
    // the client's C:c -> D:d, delivered to the proxy as D:c' -> C:P
    qsrc = local;
    qsport = <u32>flow(f).localPort;
    qdst = remote;
    qdport = <u32>flow(f).remotePort;
  } else if (side == 0 && ((kind == Kind.Out && outbound) || (kind == Kind.In && !outbound))) {
    // the proxy's C:P -> D:c', delivered to the client as D:d -> C:c; or
    // its C:P -> R:r', sent on as C:L -> R:r
    qsrc = local;
    qsport = <u32>flow(f).appPort;
    qdst = remote;
    qdport = <u32>flow(f).proxyPort;
  } else if (kind == Kind.In && outbound && side == 1) {
    // the remote's R:r -> C:L, delivered to the proxy as R:r' -> C:P
    qsrc = remote;
    qsport = <u32>flow(f).remotePort;
    qdst = local;
    qdport = <u32>flow(f).localPort;
  } else {
    return pass(pk);
  }
  // An error from the quoted packet's destination itself comes from where
  // its sender thought it was going; a router's keeps its address.
  const src = addrEq(pk.src, q.dst, v6) ? qdst : pk.src;
  translateIcmpError(pk, q, src, qsrc, qsrc, qsport, qdst, qdport);
  bump(Stat.rewritten);
  // To the client or the proxy of an outbound redirect: injected inbound; an
  // inbound redirect's keep their direction; loopback goes back outbound.
  const loop = (pk.flags & InFlag.Loopback) != 0;
  const dirOut = (kind == Kind.In && outbound) || loop ? OutFlag.Outbound << OUT_SHIFT : 0;
  return Verdict.Modified | dirOut | OutFlag.CsumValid << OUT_SHIFT;
}

/** Decides a packet (its view set). Returns the verdict word. */
function processPacketView(pk: Packet): u32 {
  bump(Stat.packets);
  const r = pk.parse();
  if (r != Parse.Ok) {
    if (r == Parse.Icmp) return onIcmp(pk);
    if (r == Parse.Malformed) bump(Stat.malformed);
    else if (r == Parse.Fragment) bump(Stat.fragments);
    return pass(pk);
  }
  const outbound = (pk.flags & InFlag.Outbound) != 0;
  const laddr = outbound ? pk.src : pk.dst;
  const raddr = outbound ? pk.dst : pk.src;
  const lport = outbound ? pk.sport : pk.dport;
  const rport = outbound ? pk.dport : pk.sport;
  const proto = pk.proto;
  let f = flowFind(proto, pk.v6, laddr, lport, raddr, rport);
  if (f != 0) {
    const side = foundSide;
    const kind = flow(f).kind;
    if (kind == Kind.Fact) {
      // The owner was known before the first packet.
      if (side == 0 && isFlowStart(pk)) {
        // Decided now, once: a retransmission keeps this decision.
        if (eligible(pk, outbound, laddr, lport, raddr, rport)) {
          flow(f).kind = <u8>Kind.Pending;
          noteLoopback(f, pk, laddr, raddr);
          decide(f, flow(f).pid, flow(f).proc);
          return onFlowPacket(f, 0, pk);
        }
        decidePass(f);
      }
      return pass(pk);
    }
    // A new SYN on a closed redirected flow: the port was reused. (The
    // flow's state first: an established flow's packet then reads no more.)
    if (side == 0 && proto == PROTO_TCP && (kind == Kind.Out || kind == Kind.In) &&
      <TcpState>flow(f).tcpState >= TcpState.Closing && isFlowStart(pk)) {
      removeFlow(f);
      f = 0;
    } else {
      return onFlowPacket(f, side, pk);
    }
  }
  return onNewPacket(pk, outbound, laddr, lport, raddr, rport);
}

function isFlowStart(pk: Packet): bool {
  if (pk.proto == PROTO_UDP) return true;
  return (pk.tcpFlags & (TcpFlag.SYN | TcpFlag.ACK | TcpFlag.RST | TcpFlag.FIN)) == TcpFlag.SYN;
}

/** Decides one packet of the batch (its bytes and its Meta record). Returns the verdict word. */
export function processPacket(data: usize, m: Meta, t: u32): u32 {
  now = t;
  const pk = batchPacket;
  pk.set(data, m.len, m.flags, m);
  return processPacketView(pk);
}

// ---------------------------------------------------------------------------
// Owner facts

/**
 * An owner fact. kind: O_*; addresses point at 4 or 16 bytes. For
 * OwnerKind.Unknown the flow (laddr:lport, raddr:rport) had no owner to find.
 * Bind and Listen name a socket's local address as bound (maybe a
 * wildcard); Close with no remote end is that socket's release, Close with
 * one the end of a connection.
 */
export function ownerFact(kind: u32, proto: u32, v6: bool, laddr: usize, lport: u32, raddr: usize, rport: u32,
  pid: u32, proc: u32, t: u32): void {
  now = t;
  bump(Stat.ownerFacts);
  // The end of an excluded socket: any CLOSE on its port (ours, whatever PID
  // the event names), or any fact of another process on the port (which can
  // only follow that close).
  if (kind == OwnerKind.Close || pid != selfPid) {
    exclusionsDropPort(proto, lport);
  }
  if (kind == OwnerKind.Bind || kind == OwnerKind.Listen) {
    portOwnerPut(proto, v6, laddr, lport, pid, proc, now);
    // Flows waiting for an owner of this local address and port.
    let f = listOldest(List.Pending);
    while (f != 0) {
      const next = listNewer(f);
      if (<u32>flow(f).proto == proto && <u32>flow(f).localPort == lport &&
        (flow(f).dir == Dir.In || proto == PROTO_UDP) && portOwnerCovers(v6, laddr, flow(f).v6 != 0, flow(f).localAddr)) {
        resolve(f, pid, proc, true);
      }
      f = next;
    }
    return;
  }
  if (kind == OwnerKind.Close) {
    // A socket's own release has no remote end; a connection's close (one
    // a listener accepted, with the listener's port) has one, and leaves
    // the listener in place.
    if (rport == 0 && isUnspecified(raddr, v6)) portOwnerRemove(proto, v6, laddr, lport, pid);
    return;
  }
  const b = keyBucket(proto, v6, raddr, lport, rport);
  const f = flowFindIn(b, proto, v6, laddr, lport, raddr, rport, false);
  if (f != 0 && foundSide == 0) {
    const k = flow(f).kind;
    if (k == Kind.Pending) {
      if (kind == OwnerKind.Unknown) resolveOwnerless(f);
      else resolve(f, pid, proc, true);
    }
    else if (k == Kind.Fact && kind != OwnerKind.Unknown) {
      flow(f).pid = pid;
      flow(f).proc = proc;
    }
    return;
  }
  if (f == 0 && kind != OwnerKind.Unknown && started && !(pid == selfPid && exclusionMatch(proto, v6, laddr, lport))) {
    // Before the first packet: remember it for a while (not for an excluded
    // socket of ours, whose packets need no flow).
    const dir = kind == OwnerKind.Accept ? Dir.In : Dir.Out;
    const g = flowNew(Kind.Fact, proto, v6, laddr, lport, raddr, rport, dir, List.Short, now, removeFlow, b);
    if (g != 0) {
      flow(g).pid = pid;
      flow(g).proc = proc;
    }
  }
}

/** Records a process path and returns its reference (0 when pid is unknown). */
export function ownerProcess(pid: u32, path: usize, len: u32, t: u32, line: u32): u32 {
  return procPut(pid, path, len, t, line);
}

// ---------------------------------------------------------------------------
// Queries: pending flows whose owner the host has not been asked for yet,
// handed out as Query records.

export function takeQueries(out: usize, max: u32): u32 {
  let n: u32 = 0;
  let f = listOldest(List.Pending);
  while (f != 0 && n < max) {
    const flags = flow(f).flags;
    if ((flags & FlowFlag.Queried) == 0) {
      flow(f).flags = flags | FlowFlag.Queried;
      const q = changetype<Query>(out + <usize>n * QUERY_SIZE);
      const v6 = flow(f).v6 != 0;
      memory.fill(changetype<usize>(q), 0, QUERY_SIZE);
      q.proto = flow(f).proto;
      q.family = v6 ? 6 : 4;
      q.direction = flow(f).dir;
      memory.copy(q.local, flow(f).localAddr, v6 ? 16 : 4);
      memory.copy(q.remote, flow(f).remoteAddr, v6 ? 16 : 4);
      q.localPort = flow(f).localPort;
      q.remotePort = flow(f).remotePort;
      n++;
      bump(Stat.ownerQueries);
    }
    f = listNewer(f);
  }
  return n;
}

// ---------------------------------------------------------------------------
// Time

/** Hold timeouts, redirected SYNs left unanswered, idle expiry. */
export function tick(t: u32): void {
  now = t;
  if (!started) return;
  let f = flowExpired(List.Pending, now);
  while (f != 0) {
    bump(Stat.holdTimeouts);
    resolve(f, 0, 0, false);
    f = flowExpired(List.Pending, now);
  }
  f = flowExpired(List.RSyn, now);
  while (f != 0) {
    synUnanswered(f);
    f = flowExpired(List.RSyn, now);
  }
  for (let l = List.Short; l <= List.Tcp; l++) {
    f = flowExpired(l, now);
    while (f != 0) {
      removeFlow(f);
      f = flowExpired(l, now);
    }
  }
}

// ---------------------------------------------------------------------------
// Origins: what lookups and events hand out (Origin records and their path).

function putAddr(out: usize, addr: usize, v6: bool): void {
  memory.fill(out, 0, 16);
  memory.copy(out, addr, v6 ? 16 : 4);
}

/** Writes the origin of flow entry (or event copy) `f` at `out`. */
export function writeOrigin(out: usize, type: u32, f: usize, time: u32, path: usize, pathLen: u32): void {
  const v6 = flow(f).v6 != 0;
  const inbound = flow(f).kind == Kind.In;
  const o = changetype<Origin>(out);
  o.type = type;
  o.proto = <u32>flow(f).proto;
  o.family = v6 ? 6 : 4;
  o.direction = inbound ? 1 : 0;
  o.pid = flow(f).pid;
  o.flowId = flow(f).id;
  const e = flow(f);
  putAddr(o.dst, inbound ? e.localAddr : e.remoteAddr, v6);
  o.dstPort = <u32>(inbound ? e.localPort : e.remotePort);
  putAddr(o.client, inbound ? e.remoteAddr : e.localAddr, v6);
  o.clientPort = <u32>(inbound ? e.remotePort : e.localPort);
  putAddr(o.peer, e.remoteAddr, v6);
  o.peerPort = <u32>flow(f).proxyPort;
  o.appPort = <u32>flow(f).appPort;
  o.bytesUp = flow(f).bytesUp;
  o.bytesDown = flow(f).bytesDown;
  o.time = time;
  o.pathLen = pathLen;
  if (pathLen > 0) memory.copy(o.path, path, pathLen);
}

/** The redirected flow the proxy sees as (peer, local), or 0. */
export function findByProxyKey(proto: u32, v6: bool, local: usize, lport: u32, peer: usize, pport: u32,
  anyLocal: bool): usize {
  const f = flowFind(proto, v6, local, lport, peer, pport, anyLocal);
  if (f == 0 || foundSide != 1) return 0;
  const k = flow(f).kind;
  return k == Kind.Out || k == Kind.In ? f : 0;
}
