// The intercept policy: which processes, protocols, ports and destinations
// are redirected. A small pure module: the config parser builds a Policy, the
// flow code asks it questions; nothing here touches packets or the OS.
//
// The process spec follows mitmproxy's intercept_conf: a list of entries,
// evaluated in order, each either an include or (with a leading '!') an
// exclude; a number is a PID, anything else a process pattern. The starting
// value is "intercept" only when the first entry is an exclusion:
//
//   "curl"          -> only processes matching curl
//   "!curl"         -> everything except curl
//   "!curl,1234"    -> everything except curl, and PID 1234 even if it is curl
//
// Patterns match case-insensitively (ASCII letters). With '*' or '?' a pattern
// must match the whole file name or the whole path; without, it matches any
// part of the path. The seed's intercept_pids are extra includes on top.

/** Traffic classes the policy can pass untouched (Policy.bypass bits). */
export const enum Bypass {
  Loopback = 1,
  Multicast = 2,
  Broadcast = 4,
  LinkLocal = 8,
  Dhcp = 16,
  All = 31,
}

export class Rule {
  exclude: bool = false;
  isPid: bool = false;
  pid: u32 = 0;
  wild: bool = false;
  /** Lower-cased pattern bytes (UTF-8). */
  pattern: StaticArray<u8> = new StaticArray<u8>(0);
}

export class Cidr {
  v6: bool = false;
  prefix: u32 = 0;
  addr: StaticArray<u8> = new StaticArray<u8>(16);
}

export class Policy {
  /** Sorted, without duplicates. */
  pids: StaticArray<u32> = new StaticArray<u32>(0);
  rules: Array<Rule> = new Array<Rule>();
  startValue: bool = false;
  /** No PID and no rule: nothing can be intercepted (no owner lookups needed). */
  interceptsNothing: bool = true;
  tcp: bool = true;
  udp: bool = true;
  outbound: bool = true;
  inbound: bool = true;
  /** Port ranges as (lo << 16 | hi); empty include list means every port. */
  ports: Array<u32> = new Array<u32>();
  excludePorts: Array<u32> = new Array<u32>();
  destinations: Array<Cidr> = new Array<Cidr>();
  excludeDestinations: Array<Cidr> = new Array<Cidr>();
  bypass: u32 = Bypass.All;
  maxFlows: u32 = 65536;
  holdTimeoutMs: u32 = 2000;
  maxHeldPackets: u32 = 1024;
  tcpIdleMs: u32 = 7200000;
  udpIdleMs: u32 = 60000;
}

// ---------------------------------------------------------------------------
// Process matching

function lower(b: u32): u32 {
  return b >= 0x41 && b <= 0x5a ? b | 0x20 : b;
}

/** Glob match of pattern p against text [t, t+tn): '*' any run, '?' one byte. */
function globMatch(p: StaticArray<u8>, t: usize, tn: u32): bool {
  const pn = <u32>p.length;
  let pi: u32 = 0;
  let ti: u32 = 0;
  let starP: i32 = -1;
  let starT: u32 = 0;
  while (ti < tn) {
    if (pi < pn) {
      const pc = <u32>unchecked(p[pi]);
      if (pc == 0x2a) {
        starP = <i32>pi;
        starT = ti;
        pi++;
        continue;
      }
      if (pc == 0x3f || pc == lower(<u32>load<u8>(t + ti))) {
        pi++;
        ti++;
        continue;
      }
    }
    if (starP < 0) return false;
    pi = <u32>starP + 1;
    starT++;
    ti = starT;
  }
  while (pi < pn && unchecked(p[pi]) == 0x2a) pi++;
  return pi == pn;
}

/** Case-insensitive substring search of pattern p in [t, t+tn). */
function contains(p: StaticArray<u8>, t: usize, tn: u32): bool {
  const pn = <u32>p.length;
  if (pn > tn) return false;
  for (let i: u32 = 0; i + pn <= tn; i++) {
    let k: u32 = 0;
    while (k < pn && <u32>unchecked(p[k]) == lower(<u32>load<u8>(t + i + k))) k++;
    if (k == pn) return true;
  }
  return false;
}

/** Offset of the file name in a path: after the last '/' or '\'. */
function fileNameStart(path: usize, len: u32): u32 {
  let s: u32 = 0;
  for (let i: u32 = 0; i < len; i++) {
    const c = load<u8>(path + i);
    if (c == 0x2f || c == 0x5c) s = i + 1;
  }
  return s;
}

export function ruleMatches(r: Rule, pid: u32, path: usize, pathLen: u32): bool {
  if (r.isPid) return r.pid == pid;
  if (pathLen == 0) return false;
  if (!r.wild) return contains(r.pattern, path, pathLen);
  const f = fileNameStart(path, pathLen);
  return globMatch(r.pattern, path + f, pathLen - f) || globMatch(r.pattern, path, pathLen);
}

function pidListed(pids: StaticArray<u32>, pid: u32): bool {
  let lo: i32 = 0;
  let hi: i32 = pids.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = unchecked(pids[mid]);
    if (v == pid) return true;
    if (v < pid) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

/**
 * Should a process be intercepted? The caller applies the always-excluded
 * PIDs (its own, 0 and the OS's never-intercept list) before asking.
 */
export function shouldIntercept(pol: Policy, pid: u32, path: usize, pathLen: u32): bool {
  let v = pol.startValue;
  const rules = pol.rules;
  const n = rules.length;
  for (let i = 0; i < n; i++) {
    const r = unchecked(rules[i]);
    if (r.exclude) {
      if (v && ruleMatches(r, pid, path, pathLen)) v = false;
    } else if (!v && ruleMatches(r, pid, path, pathLen)) {
      v = true;
    }
  }
  return v || pidListed(pol.pids, pid);
}

// ---------------------------------------------------------------------------
// Ports and addresses

function portIn(list: Array<u32>, port: u32): bool {
  const n = list.length;
  for (let i = 0; i < n; i++) {
    const r = unchecked(list[i]);
    if (port >= (r >>> 16) && port <= (r & 0xffff)) return true;
  }
  return false;
}

/** True when a destination port passes the include and exclude lists. */
export function portAllowed(pol: Policy, port: u32): bool {
  if (pol.ports.length > 0 && !portIn(pol.ports, port)) return false;
  return !portIn(pol.excludePorts, port);
}

export function cidrContains(c: Cidr, v6: bool, addr: usize): bool {
  if (c.v6 != v6) return false;
  const bits = c.prefix;
  const full = bits >> 3;
  for (let i: u32 = 0; i < full; i++) {
    if (unchecked(c.addr[i]) != load<u8>(addr + i)) return false;
  }
  const rest = bits & 7;
  if (rest == 0) return true;
  const mask = <u8>(<u32>0xff << (8 - rest));
  return (unchecked(c.addr[full]) & mask) == (load<u8>(addr + full) & mask);
}

function cidrIn(list: Array<Cidr>, v6: bool, addr: usize): bool {
  const n = list.length;
  for (let i = 0; i < n; i++) {
    if (cidrContains(unchecked(list[i]), v6, addr)) return true;
  }
  return false;
}

/** True when a destination address passes the include and exclude lists. */
export function destinationAllowed(pol: Policy, v6: bool, addr: usize): bool {
  if (pol.destinations.length > 0 && !cidrIn(pol.destinations, v6, addr)) return false;
  return !cidrIn(pol.excludeDestinations, v6, addr);
}
