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
//
// Process trees: an entry prefixed with "tree:" ("tree:1234", "tree:bash",
// "!tree:1234") names a process and every process it starts, and theirs, and
// so on: a process is in the tree when it matches the entry itself or when
// an ancestor of it (as it was when the process was created) is in the tree.
// The engine remembers each process's tree membership by identity (PID and
// creation time: lineage.ts), so a process whose parent exits keeps it. A
// tree entry by PID names the process that had that PID when the
// configuration was set: one created later with the same PID (a reused PID)
// is not it. intercept_trees are extra tree includes after the entries. A new
// configuration keeps membership of the pattern trees it names too
// (treeCarry).

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
  /** A tree entry: this process and its descendants. */
  tree: bool = false;
  /** A tree entry's bit in a process's tree mask (lineage.ts). */
  treeBit: u32 = 0;
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
  /** Tree entries (at most TREE_MAX), each with its bit. */
  treeCount: u32 = 0;
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
  /**
   * No port list and no destination list, include or exclude: every port,
   * every destination passes (set with the lists; spares each new flow the
   * lists' walks).
   */
  anyPort: bool = true;
  anyDestination: bool = true;
  bypass: u32 = Bypass.All;
  maxFlows: u32 = 65536;
  holdTimeoutMs: u32 = 2000;
  maxHeldPackets: u32 = 1024;
  tcpIdleMs: u32 = 7200000;
  udpIdleMs: u32 = 60000;
}

/** The most tree entries a configuration may have (a process's tree mask is a u32). */
export const TREE_MAX: u32 = 32;

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

/**
 * Does the entry's own PID or pattern (a tree entry's root) match a process?
 * For a tree entry, the tree mask says whether the process is in its tree.
 */
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
export function shouldIntercept(pol: Policy, pid: u32, path: usize, pathLen: u32, treeMask: u32): bool {
  let v = pol.startValue;
  const rules = pol.rules;
  const n = rules.length;
  for (let i = 0; i < n; i++) {
    const r = unchecked(rules[i]);
    if (r.exclude) {
      if (v && entryMatches(r, pid, path, pathLen, treeMask)) v = false;
    } else if (!v && entryMatches(r, pid, path, pathLen, treeMask)) {
      v = true;
    }
  }
  return v || pidListed(pol.pids, pid);
}

// @ts-ignore: decorator
@inline function entryMatches(r: Rule, pid: u32, path: usize, pathLen: u32, treeMask: u32): bool {
  return r.tree ? (treeMask & (1 << r.treeBit)) != 0 : ruleMatches(r, pid, path, pathLen);
}

/**
 * The tree entries whose root a process is itself (bit treeBit each), by its
 * PID and path alone. rootPidOk: false when the process was created after the
 * configuration was set, so a tree entry's PID cannot name it (a reused PID).
 */
export function treeRoots(pol: Policy, pid: u32, path: usize, pathLen: u32, rootPidOk: bool): u32 {
  if (pol.treeCount == 0) return 0;
  let m: u32 = 0;
  const rules = pol.rules;
  const n = rules.length;
  for (let i = 0; i < n; i++) {
    const r = unchecked(rules[i]);
    if (!r.tree) continue;
    if (r.isPid ? rootPidOk && r.pid == pid : ruleMatches(r, pid, path, pathLen)) m |= 1 << r.treeBit;
  }
  return m;
}

/**
 * The same tree by its root pattern: both pattern entries ("tree:agent"
 * and "!tree:AGENT" name the same tree; the pattern is kept lower-cased).
 */
function samePatternTree(a: Rule, b: Rule): bool {
  if (a.isPid || b.isPid || a.wild != b.wild) return false;
  const n = a.pattern.length;
  if (b.pattern.length != n) return false;
  for (let i = 0; i < n; i++) if (unchecked(a.pattern[i]) != unchecked(b.pattern[i])) return false;
  return true;
}

/**
 * Tree membership carried from one configuration to the next (lineage.ts):
 * for each tree bit of `old`, the bits of the same pattern tree in `next`
 * (0: not in `next`). Only pattern trees carry over: a PID tree is decided
 * again from the parents remembered (its root needs no path), as the
 * process that had the PID when `next` was set.
 */
export function treeCarry(old: Policy, next: Policy, out: StaticArray<u32>): void {
  for (let b = 0; b < out.length; b++) unchecked(out[b] = 0);
  if (old.treeCount == 0 || next.treeCount == 0) return;
  const ro = old.rules;
  const rn = next.rules;
  for (let i = 0; i < ro.length; i++) {
    const a = unchecked(ro[i]);
    if (!a.tree || a.isPid) continue;
    let m: u32 = 0;
    for (let j = 0; j < rn.length; j++) {
      const b = unchecked(rn[j]);
      if (b.tree && samePatternTree(a, b)) m |= 1 << b.treeBit;
    }
    unchecked(out[<i32>a.treeBit] = m);
  }
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
