// The flow table: fixed capacity, preallocated at start, no allocation per
// packet. An entry is found by its client-side key (the connection as the
// intercepted process sees it) and, once redirected, by its proxy-side key
// (the connection as the proxy sees it):
//
//   client key  (proto, local addr, local port, remote addr, remote port)
//   proxy key   (proto, local addr, app port,   remote addr, proxy port)
//
// "local" is this host's end, so a key is the same whichever way a packet
// goes. Both keys hash into one bucket array of tagged references
// (index << 1 | side). The local address is left out of the hash so a proxy
// that does not know its local address (a UDP socket on 0.0.0.0) can still
// look up by the rest.
//
// Every entry sits on one list, by timeout class; each list is kept in
// last-use order (most recent at the head), so expiry reads tails only:
//
//   PENDING   owner unknown; timeout = hold_timeout_ms, then decided as "pass"
//   SHORT     passed TCP, owner facts: 30 s                  (evictable)
//   UDPPASS   passed UDP: udp_idle_timeout_ms                (evictable)
//   RSYN      redirected TCP whose SYN the proxy has not answered yet, in the
//             order of their first SYN: 1 s, then counted as unanswered and
//             moved to RSHORT
//   RSHORT    redirected TCP not yet established, or closing: 30 s
//   UDP       redirected UDP: udp_idle_timeout_ms
//   TCP       redirected, established TCP: tcp_idle_timeout_ms
//
// When the table is full, a new flow takes the place of the oldest evictable
// entry; a redirected connection is never evicted (a flood cannot break one).
//
// An entry is a Flow (FLOW_SIZE bytes, fields in the order below).

import { bump, drop1, Stat } from "./stats";
import { bucketsFor, freeList, zeroed } from "./pool";

export const FLOW_SIZE: u32 = 128;

@unmanaged
export class Flow {
  kind: u8;          // Kind
  proto: u8;         // 6 or 17
  v6: u8;            // 1 for IPv6
  tcpState: u8;      // TcpState of a redirected TCP flow
  flags: u32;        // FlowFlag bits
  lastUse: u32;      // ms
  created: u32;      // ms
  private localAddr0: u64;   // this host's end: 4 or 16 bytes (see localAddr)
  private localAddr1: u64;
  private remoteAddr0: u64;
  private remoteAddr1: u64;
  localPort: u16;
  remotePort: u16;
  proxyPort: u16;    // the proxy-side port (c' or r')
  appPort: u16;      // the app port P when redirected
  pid: u32;          // the owner
  proc: u32;         // its process reference (procs.ts)
  bytesUp: u64;      // payload client -> destination
  bytesDown: u64;    // and back
  nextClientKey: u32; // next reference in the client key's bucket chain
  nextProxyKey: u32;  // and in the proxy key's
  heldFirst: u32;    // held packets (held.ts records), in order
  heldLast: u32;
  heldCount: u16;
  list: u8;          // List
  dir: u8;           // 0 outbound, 1 inbound
  listPrev: u32;     // neighbours on the list (entry indexes)
  listNext: u32;
  id: u32;           // flow id, handed out in origins

  /** Where this host's end's address is (4 or 16 bytes). */
  @inline get localAddr(): usize {
    return changetype<usize>(this) + offsetof<Flow>("localAddr0");
  }

  @inline get remoteAddr(): usize {
    return changetype<usize>(this) + offsetof<Flow>("remoteAddr0");
  }
}

// A compile-time check: the entry's fields fit its slot (events copy FLOW_SIZE bytes).
if (offsetof<Flow>() > FLOW_SIZE) ERROR("Flow is larger than FLOW_SIZE");

/** The entry at `p` (a flow handle from this module). */
// @ts-ignore: decorator
@inline export function flow(p: usize): Flow {
  return changetype<Flow>(p);
}

/** What an entry is (Flow.kind). */
export const enum Kind {
  Free = 0,
  Pending = 1, // waiting for its owner
  Pass = 2,    // decided: not intercepted
  Out = 3,     // outbound, redirected to the app port
  In = 4,      // inbound to a listener, redirected
  Fact = 5,    // owner known, no packet seen yet
}

/** TCP states of redirected flows (Flow.tcpState). */
export const enum TcpState {
  Syn = 0,
  Established = 1,
  Closing = 2,
  Closed = 3,
}

/** Flow.flags bits. */
export const enum FlowFlag {
  FinClient = 1,
  FinProxy = 2,
  Queried = 4,
  Opened = 8,
  ProxyLinked = 16,
  Closed = 32, // the closed event was sent
  Stray = 64, // widens the capture scope beyond the policy in force (scope.ts)
  Loopback = 128, // loopback traffic (the capture's flag, or a loopback address)
}

/** The lists an entry sits on, by timeout class (Flow.list). */
export const enum List {
  None = 0,
  Pending = 1,
  Short = 2,
  UdpPass = 3,
  RShort = 4,
  Udp = 5,
  Tcp = 6,
  RSyn = 7,
}

export const LISTS: u32 = 8;

export const SHORT_TIMEOUT_MS: u32 = 30000;
/** How long a redirected SYN may wait for the proxy's answer (List.RSyn). */
export const SYN_ANSWER_MS: u32 = 1000;

let entries: usize = 0;
let capacity: u32 = 0;
let buckets: usize = 0;
let bucketMask: u32 = 0;
let freeHead: u32 = 0;
let used: u32 = 0;
let seed: u32 = 0x2545f491;
let nextId: u32 = 1;

const heads: usize = memory.data(<i32>LISTS * 4);
const tails: usize = memory.data(<i32>LISTS * 4);
const timeouts: usize = memory.data(<i32>LISTS * 4);

export function flowsSeed(s: u32): void {
  seed = s | 1;
}

/** Preallocates `cap` entries and their buckets (2 keys per entry, load <= 1/2). */
export function flowsInit(cap: u32): void {
  capacity = cap;
  const nb = bucketsFor(cap * 4);
  bucketMask = nb - 1;
  entries = zeroed(<usize>cap * FLOW_SIZE);
  buckets = zeroed(<usize>nb * 4);
  freeHead = freeList(entries, cap, FLOW_SIZE, offsetof<Flow>("listNext"));
  used = 0;
  memory.fill(heads, 0, LISTS * 4);
  memory.fill(tails, 0, LISTS * 4);
}

export function flowsSetTimeouts(hold: u32, udp: u32, tcp: u32): void {
  store<u32>(timeouts + 4 * List.Pending, hold);
  store<u32>(timeouts + 4 * List.Short, SHORT_TIMEOUT_MS);
  store<u32>(timeouts + 4 * List.UdpPass, udp);
  store<u32>(timeouts + 4 * List.RShort, SHORT_TIMEOUT_MS);
  store<u32>(timeouts + 4 * List.Udp, udp);
  store<u32>(timeouts + 4 * List.Tcp, tcp);
  store<u32>(timeouts + 4 * List.RSyn, SYN_ANSWER_MS);
}

export function flowsCapacity(): u32 {
  return capacity;
}

/** Bytes of memory per flow: the entry plus its share of the buckets. */
export function flowsBytesPerFlow(): u32 {
  return capacity == 0 ? 0 : FLOW_SIZE + ((bucketMask + 1) * 4) / capacity;
}

// @ts-ignore: decorator
@inline export function flowAt(i: u32): usize {
  return entries + <usize>(i - 1) * FLOW_SIZE;
}

// @ts-ignore: decorator
@inline export function flowIndex(f: usize): u32 {
  return <u32>((f - entries) / FLOW_SIZE) + 1;
}

// ---------------------------------------------------------------------------
// Keys and hashing

// @ts-ignore: decorator
@inline function mix(h: u32, w: u32): u32 {
  h ^= w * 0xcc9e2d51;
  h = rotl<u32>(h, 15) * 0x1b873593;
  return h;
}

/** Hash of (proto, remote address, local port, remote port). */
function hashKey(proto: u32, v6: bool, raddr: usize, lport: u32, rport: u32): u32 {
  let h = mix(seed, (proto << 1) | (v6 ? 1 : 0));
  h = mix(h, (lport << 16) | rport);
  h = mix(h, load<u32>(raddr));
  if (v6) {
    h = mix(h, load<u32>(raddr, 4));
    h = mix(h, load<u32>(raddr, 8));
    h = mix(h, load<u32>(raddr, 12));
  }
  h ^= h >> 16;
  h *= 0x85ebca6b;
  h ^= h >> 13;
  h *= 0xc2b2ae35;
  h ^= h >> 16;
  return h;
}

/** Are two addresses (4 or 16 bytes) equal? */
export function addrEq(a: usize, b: usize, v6: bool): bool {
  if (load<u32>(a) != load<u32>(b)) return false;
  if (!v6) return true;
  return load<u64>(a, 4) == load<u64>(b, 4) && load<u32>(a, 12) == load<u32>(b, 12);
}

// @ts-ignore: decorator
@inline function nextOf(ref: u32): u32 {
  const f = flowAt(ref >> 1);
  return (ref & 1) != 0 ? flow(f).nextProxyKey : flow(f).nextClientKey;
}

/** Which side the last `flowFind` matched: 0 client key, 1 proxy key. */
export let foundSide: u32 = 0;

/**
 * The hash chain (bucket) of a key (proto, raddr, lport, rport: the local
 * address is not hashed), or 0 before the table is sized. A caller that
 * searches a key and then adds it (flowNew, flowLinkProxy) hashes it once
 * (flowFindIn, proxyKeyBucket).
 */
// @ts-ignore: decorator
@inline export function keyBucket(proto: u32, v6: bool, raddr: usize, lport: u32, rport: u32): usize {
  return capacity == 0 ? 0 : bucketAt(proto, v6, raddr, lport, rport);
}

// @ts-ignore: decorator
@inline function bucketAt(proto: u32, v6: bool, raddr: usize, lport: u32, rport: u32): usize {
  return buckets + (<usize>(hashKey(proto, v6, raddr, lport, rport) & bucketMask) << 2);
}

/**
 * Finds the entry whose client or proxy key is (proto, laddr:lport,
 * raddr:rport); with anyLocal, whatever the local address. Returns the
 * entry or 0; `foundSide` tells which key matched.
 */
export function flowFind(proto: u32, v6: bool, laddr: usize, lport: u32, raddr: usize, rport: u32,
  anyLocal: bool = false): usize {
  if (capacity == 0) return 0;
  return chainFind(bucketAt(proto, v6, raddr, lport, rport), proto, v6, laddr, lport, raddr, rport, anyLocal);
}

/** flowFind in the key's bucket `b` (keyBucket), for the callers that keep the bucket. */
// @ts-ignore: decorator
@inline export function flowFindIn(b: usize, proto: u32, v6: bool, laddr: usize, lport: u32, raddr: usize, rport: u32,
  anyLocal: bool): usize {
  return b == 0 ? 0 : chainFind(b, proto, v6, laddr, lport, raddr, rport, anyLocal);
}

// @ts-ignore: decorator
@inline function chainFind(b: usize, proto: u32, v6: bool, laddr: usize, lport: u32, raddr: usize, rport: u32,
  anyLocal: bool): usize {
  let ref = load<u32>(b);
  while (ref != 0) {
    const f = flowAt(ref >> 1);
    const side = ref & 1;
    if (flow(f).proto == proto && (flow(f).v6 != 0) == v6 && addrEq(flow(f).remoteAddr, raddr, v6) &&
      (anyLocal || addrEq(flow(f).localAddr, laddr, v6))) {
      if (side == 0) {
        if (<u32>flow(f).localPort == lport && <u32>flow(f).remotePort == rport) {
          foundSide = 0;
          return f;
        }
      } else if (<u32>flow(f).appPort == lport && <u32>flow(f).proxyPort == rport) {
        foundSide = 1;
        return f;
      }
    }
    ref = nextOf(ref);
  }
  return 0;
}

function bucketOf(f: usize, side: u32): usize {
  const v6 = flow(f).v6 != 0;
  const proto = <u32>flow(f).proto;
  const h = side == 0
    ? hashKey(proto, v6, flow(f).remoteAddr, flow(f).localPort, flow(f).remotePort)
    : hashKey(proto, v6, flow(f).remoteAddr, flow(f).appPort, flow(f).proxyPort);
  return buckets + (<usize>(h & bucketMask) << 2);
}

/** Adds a key of entry f to its bucket `b` (keyBucket of that key). */
function link(f: usize, side: u32, b: usize): void {
  if (side != 0) flow(f).nextProxyKey = load<u32>(b);
  else flow(f).nextClientKey = load<u32>(b);
  store<u32>(b, (flowIndex(f) << 1) | side);
}

function unlink(f: usize, side: u32): void {
  const b = bucketOf(f, side);
  const me = (flowIndex(f) << 1) | side;
  let prevRef: u32 = 0;
  let ref = load<u32>(b);
  while (ref != 0) {
    if (ref == me) {
      const nxt = nextOf(ref);
      if (prevRef == 0) store<u32>(b, nxt);
      else if ((prevRef & 1) != 0) flow(flowAt(prevRef >> 1)).nextProxyKey = nxt;
      else flow(flowAt(prevRef >> 1)).nextClientKey = nxt;
      return;
    }
    prevRef = ref;
    ref = nextOf(ref);
  }
}

/** Adds the proxy key of a redirected entry (app and proxy ports set), whose bucket is `b` (proxyKeyBucket). */
export function flowLinkProxy(f: usize, b: usize): void {
  link(f, 1, b);
  flow(f).flags = flow(f).flags | FlowFlag.ProxyLinked;
}

/**
 * When (proto, laddr:app, raddr:pport) is free as a proxy key (and as any
 * key): its bucket, for flowLinkProxy; else 0.
 */
export function proxyKeyBucket(proto: u32, v6: bool, laddr: usize, app: u32, raddr: usize, pport: u32): usize {
  const b = keyBucket(proto, v6, raddr, app, pport);
  return flowFindIn(b, proto, v6, laddr, app, raddr, pport, false) == 0 ? b : 0;
}

// ---------------------------------------------------------------------------
// Lists

function listRemove(f: usize): void {
  const l = <usize>flow(f).list;
  if (l == List.None) return;
  const prev = flow(f).listPrev;
  const next = flow(f).listNext;
  if (prev != 0) flow(flowAt(prev)).listNext = next;
  else store<u32>(heads + l * 4, next);
  if (next != 0) flow(flowAt(next)).listPrev = prev;
  else store<u32>(tails + l * 4, prev);
  flow(f).list = <u8>List.None;
  flow(f).listPrev = 0;
  flow(f).listNext = 0;
}

function listPushHead(f: usize, l: List): void {
  const i = flowIndex(f);
  const h = load<u32>(heads + <usize>l * 4);
  flow(f).listPrev = 0;
  flow(f).listNext = h;
  if (h != 0) flow(flowAt(h)).listPrev = i;
  else store<u32>(tails + <usize>l * 4, i);
  store<u32>(heads + <usize>l * 4, i);
  flow(f).list = <u8>l;
}

/** Marks an entry used now and moves it to the head of list `l`. */
export function flowTouch(f: usize, l: List, now: u32): void {
  flow(f).lastUse = now;
  if (flow(f).list == l && load<u32>(heads + <usize>l * 4) == flowIndex(f)) return;
  listRemove(f);
  listPushHead(f, l);
}

/** Has the timeout of the list entry f is on passed since its last use? */
export function flowTimedOut(f: usize, now: u32): bool {
  const age = now - flow(f).lastUse;
  // Ages beyond 2^31 ms are clock jumps backwards: treat as fresh.
  if (<i32>age < 0) return false;
  return age >= load<u32>(timeouts + <usize>flow(f).list * 4);
}

/** The oldest entry of list l whose timeout has passed, or 0. */
export function flowExpired(l: List, now: u32): usize {
  const t = load<u32>(tails + <usize>l * 4);
  if (t == 0) return 0;
  const f = flowAt(t);
  return flowTimedOut(f, now) ? f : 0;
}

// ---------------------------------------------------------------------------
// Allocation

/**
 * A new entry with its client key, on list `l`; or 0 when the table is full
 * and nothing can be evicted. `evict` is called on an entry that must go to
 * make room (it must call flowFree). `b` is the key's bucket (keyBucket).
 */
export function flowNew(kind: Kind, proto: u32, v6: bool, laddr: usize, lport: u32, raddr: usize, rport: u32,
  dir: u32, l: List, now: u32, evict: (f: usize) => void, b: usize): usize {
  if (freeHead == 0) {
    // Make room: the oldest passed TCP entry or owner fact, then the oldest
    // passed UDP flow. Redirected connections are never evicted.
    let victim = tailOf(List.Short);
    if (victim == 0) victim = tailOf(List.UdpPass);
    if (victim == 0) return 0;
    bump(Stat.evictions);
    evict(victim);
    if (freeHead == 0) return 0;
  }
  const i = freeHead;
  const f = flowAt(i);
  freeHead = flow(f).listNext;
  memory.fill(f, 0, FLOW_SIZE);
  flow(f).kind = <u8>kind;
  flow(f).proto = <u8>proto;
  flow(f).v6 = v6 ? 1 : 0;
  memory.copy(flow(f).localAddr, laddr, v6 ? 16 : 4);
  memory.copy(flow(f).remoteAddr, raddr, v6 ? 16 : 4);
  flow(f).localPort = <u16>lport;
  flow(f).remotePort = <u16>rport;
  flow(f).dir = <u8>dir;
  flow(f).created = now;
  flow(f).id = nextId++;
  if (nextId == 0) nextId = 1;
  link(f, 0, b);
  listPushHead(f, l);
  flow(f).lastUse = now;
  used++;
  bump(Stat.flowsActive);
  return f;
}

function tailOf(l: List): usize {
  const t = load<u32>(tails + <usize>l * 4);
  return t == 0 ? 0 : flowAt(t);
}

/** Unlinks and frees an entry (its held packets must be gone already). */
export function flowFree(f: usize): void {
  const kind = flow(f).kind;
  if (kind == Kind.Free) return;
  unlink(f, 0);
  if ((flow(f).flags & FlowFlag.ProxyLinked) != 0) unlink(f, 1);
  listRemove(f);
  flow(f).kind = <u8>Kind.Free;
  flow(f).listNext = freeHead;
  freeHead = flowIndex(f);
  used--;
  drop1(Stat.flowsActive);
  bump(Stat.flowsExpired);
}

/** Walks entries of list `l` from oldest to newest: first, then next. */
export function listOldest(l: List): usize {
  return tailOf(l);
}

export function listNewer(f: usize): usize {
  const p = flow(f).listPrev;
  return p == 0 ? 0 : flowAt(p);
}
