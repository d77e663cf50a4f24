// The configuration: JSON text in, a validated Policy out, or an error code
// with a message that names the field and what was wrong with it.
//
//   {
//     "intercept_pids": [1234, 5678],          seed: PIDs to intercept (or null)
//     "description": "...",                    seed: free text (or null)
//     "intercept": "curl,!1234" | ["curl", 5], process spec (see policy.ts);
//                                              "tree:1234", "tree:bash", "!tree:1234":
//                                              a process and all its descendants
//     "intercept_trees": [1234],               PIDs whose whole trees to intercept
//                                              (extra "tree:<pid>" includes after the spec)
//     "protocols": ["tcp", "udp"],             default both
//     "directions": ["outbound", "inbound"],   default both
//     "ports": [80, "8000-8100"],              destination ports to redirect (default all)
//     "exclude_ports": [22],
//     "destinations": ["198.18.0.0/15"],       destination ranges (default all)
//     "exclude_destinations": ["10.0.0.0/8"],
//     "bypass": ["loopback", "multicast", "broadcast", "link-local", "dhcp"],
//     "max_flows": 65536,                      flow table size (applies at start)
//     "hold_timeout_ms": 2000,                 wait for an unknown owner at most this long
//     "max_held_packets": 1024,                packets held while owners are unknown
//     "tcp_idle_timeout_ms": 7200000,
//     "udp_idle_timeout_ms": 60000
//   }
//
// Unknown fields are ignored. A field given twice is an error.
// Return codes: 0 accepted; -2 not JSON or a field is wrong; -3 not UTF-8.

import { errPut, errNum, errSnippet } from "../errtext";
import {
  jsonBegin, jsonEnd, jsonEat, jsonExpect, jsonAtEnd, jsonString, jsonNumber, jsonNull,
  jsonKind, JsonKind, jsonUnexpected, jsonKindName, jsonSkipValue, jsonFailAt, validUtf8, strIs, strPtr,
  strLen, badSurrogate, numNeg, numInt, numBig, numVal, numStart, numLen,
} from "./json";
import {
  Policy, Rule, Cidr, Bypass, TREE_MAX,
} from "./policy";

/** What parsing a configuration says (eng_config's return codes). */
export const enum ConfigResult {
  Ok = 0,
  Bad = -2,     // malformed or an invalid field
  NotUtf8 = -3,
}

/** The policy in force; replaced whole by a successful parse. */
export let activePolicy: Policy = new Policy();
/** Bumped on every accepted config, so cached decisions can be recomputed. */
export let policyGeneration: u32 = 1;

// The configuration's keys, one bit each (a key seen twice is an error).
const enum Key {
  InterceptPids = 1 << 0,
  Description = 1 << 1,
  Intercept = 1 << 2,
  Protocols = 1 << 3,
  Directions = 1 << 4,
  Ports = 1 << 5,
  ExcludePorts = 1 << 6,
  Destinations = 1 << 7,
  ExcludeDestinations = 1 << 8,
  Bypass = 1 << 9,
  MaxFlows = 1 << 10,
  HoldTimeout = 1 << 11,
  MaxHeldPackets = 1 << 12,
  TcpIdleTimeout = 1 << 13,
  UdpIdleTimeout = 1 << 14,
  InterceptTrees = 1 << 15,
}

let field: string = "";
let index: i32 = -1;

/** Starts a field error: `<field>[<index>]: ` */
function fieldError(): i32 {
  errPut(field);
  if (index >= 0) {
    errPut("[");
    errNum(<u64>index);
    errPut("]");
  }
  errPut(": ");
  return ConfigResult.Bad;
}

/** "<field>: expected <what>, got <the value or its kind>" */
function expected(what: string): i32 {
  if (jsonKind() == JsonKind.None) {
    jsonUnexpected("a value");
    return ConfigResult.Bad;
  }
  fieldError();
  errPut("expected ");
  errPut(what);
  errPut(", got ");
  if (jsonKind() == JsonKind.Number && jsonNumber()) {
    errSnippet(numStart, numLen, 40);
  } else {
    errPut(jsonKindName());
  }
  return ConfigResult.Bad;
}

/** "<field>: expected <what>, got "<the last string read>"" */
function expectedString(what: string): i32 {
  fieldError();
  errPut("expected ");
  errPut(what);
  errPut(", got \"");
  errSnippet(strPtr, strLen, 40);
  errPut("\"");
  return ConfigResult.Bad;
}

function afterString(what: string): i32 {
  fieldError();
  errPut(what);
  errPut(": \"");
  errSnippet(strPtr, strLen, 60);
  errPut("\"");
  return ConfigResult.Bad;
}

/** Reads an unsigned integer in [lo, hi]; -1 on error (already reported). */
function readUint(lo: u64, hi: u64, what: string): i64 {
  if (jsonKind() != JsonKind.Number) return expected(what);
  if (!jsonNumber()) return ConfigResult.Bad;
  if (!numInt || numNeg || numBig || numVal < lo || numVal > hi) {
    fieldError();
    errPut("expected ");
    errPut(what);
    errPut(", got ");
    errSnippet(numStart, numLen, 40);
    return ConfigResult.Bad;
  }
  return <i64>numVal;
}

/**
 * Walks an array, calling `item` for each element; `null` counts as empty.
 * A bare string is passed to `text` when given (for comma lists).
 */
function eachItem(item: () => i32, what: string): i32 {
  if (jsonNull()) return ConfigResult.Ok;
  if (!jsonEat(0x5b)) return expected(what);
  index = 0;
  if (jsonEat(0x5d)) { index = -1; return ConfigResult.Ok; }
  while (true) {
    const r = item();
    if (r != ConfigResult.Ok) return r;
    if (jsonEat(0x2c)) { index++; continue; }
    if (jsonEat(0x5d)) break;
    jsonUnexpected("',' or ']'");
    return ConfigResult.Bad;
  }
  index = -1;
  return ConfigResult.Ok;
}

// --- the parse state (a policy under construction) -----------------------

let next: Policy = new Policy();
let pidList: Array<u32> = new Array<u32>();
/** intercept_trees: PIDs whose trees to intercept. */
let treePidList: Array<u32> = new Array<u32>();
/** Where pidItem puts a PID: pidList or treePidList. */
let pidTarget: Array<u32> = pidList;

function pidItem(): i32 {
  const v = readUint(0, 0xffffffff, "a process ID (an integer from 0 to 4294967295)");
  if (v < 0) return ConfigResult.Bad;
  pidTarget.push(<u32>v);
  return ConfigResult.Ok;
}

function isDigits(p: usize, n: u32): bool {
  if (n == 0 || n > 10) return false;
  let v: u64 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const c = load<u8>(p + i);
    if (c < 0x30 || c > 0x39) return false;
    v = v * 10 + <u64>(c - 0x30);
  }
  return v <= 0xffffffff;
}

function parseDecimal(p: usize, n: u32): u32 {
  let v: u32 = 0;
  for (let i: u32 = 0; i < n; i++) v = v * 10 + <u32>(load<u8>(p + i) - 0x30);
  return v;
}

function isSpace(c: u32): bool {
  return c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d;
}

/** Adds one spec entry from bytes [p, p+n) (already a single entry, untrimmed). */
function addRule(p: usize, n: u32): i32 {
  while (n > 0 && isSpace(load<u8>(p))) { p++; n--; }
  while (n > 0 && isSpace(load<u8>(p + n - 1))) n--;
  const r = new Rule();
  if (n > 0 && load<u8>(p) == 0x21) {
    r.exclude = true;
    p++;
    n--;
    while (n > 0 && isSpace(load<u8>(p))) { p++; n--; }
  }
  if (n == 0) {
    fieldError();
    errPut(r.exclude ? "'!' must be followed by a PID or a process pattern" : "empty entry");
    return ConfigResult.Bad;
  }
  // "tree:" (any case: patterns match case-insensitively, so no pattern can
  // mean the text "tree:" itself) makes the entry a process tree.
  const t = treePrefix(p, n);
  if (t < 0) return entryError(p, n, "ambiguous: write \"tree:\" with no space before its ':'");
  if (t > 0) {
    const whole = p;
    const wholeN = n;
    r.tree = true;
    p += <u32>t;
    n -= <u32>t;
    while (n > 0 && isSpace(load<u8>(p))) { p++; n--; }
    if (n == 0) return entryError(whole, wholeN, "\"tree:\" must be followed by a PID or a process pattern");
    if (load<u8>(p) == 0x21) {
      return entryError(whole, wholeN, "ambiguous: '!' goes before \"tree:\" (\"!tree:...\" excludes a tree)");
    }
    if (treePrefix(p, n) != 0) return entryError(whole, wholeN, "ambiguous: \"tree:\" given twice");
  }
  if (isDigits(p, n)) {
    r.isPid = true;
    r.pid = parseDecimal(p, n);
  } else {
    const pat = new StaticArray<u8>(<i32>n);
    for (let i: u32 = 0; i < n; i++) {
      let c = <u32>load<u8>(p + i);
      if (c >= 0x41 && c <= 0x5a) c |= 0x20;
      if (c == 0x2a || c == 0x3f) r.wild = true;
      unchecked(pat[i] = <u8>c);
    }
    r.pattern = pat;
  }
  next.rules.push(r);
  return ConfigResult.Ok;
}

/**
 * The length of a leading "tree:" (any case) in [p, p+n), 0 when there is
 * none, -1 for "tree" followed by spaces and then ':' (ambiguous).
 */
function treePrefix(p: usize, n: u32): i32 {
  if (n < 4) return 0;
  const word = "tree";
  for (let i: u32 = 0; i < 4; i++) {
    if ((<u32>load<u8>(p + i) | 0x20) != <u32>word.charCodeAt(<i32>i)) return 0;
  }
  let i: u32 = 4;
  while (i < n && isSpace(load<u8>(p + i))) i++;
  if (i < n && load<u8>(p + i) == 0x3a) return i == 4 ? 5 : -1;
  return 0;
}

/** "<field>[<index>]: "<entry>": <what>" */
function entryError(p: usize, n: u32, what: string): i32 {
  fieldError();
  errPut("\"");
  errSnippet(p, n, 60);
  errPut("\": ");
  errPut(what);
  return ConfigResult.Bad;
}

/**
 * Gives each tree entry its bit and adds intercept_trees as tree includes
 * after the spec's entries; false (the error written) past TREE_MAX.
 */
function finishTrees(pol: Policy): bool {
  for (let i = 0; i < treePidList.length; i++) {
    const r = new Rule();
    r.tree = true;
    r.isPid = true;
    r.pid = unchecked(treePidList[i]);
    pol.rules.push(r);
  }
  let bit: u32 = 0;
  const specCount = pol.rules.length - treePidList.length;
  for (let i = 0; i < pol.rules.length; i++) {
    const r = unchecked(pol.rules[i]);
    if (!r.tree) continue;
    if (bit == TREE_MAX) {
      if (i < specCount) {
        field = "intercept";
        index = i;
      } else {
        field = "intercept_trees";
        index = i - specCount;
      }
      fieldError();
      errPut("more than ");
      errNum(<u64>TREE_MAX);
      errPut(" process trees (\"tree:\" entries and intercept_trees together)");
      return false;
    }
    r.treeBit = bit++;
  }
  pol.treeCount = bit;
  return true;
}

function specItem(): i32 {
  const k = jsonKind();
  if (k == JsonKind.Number) {
    const v = readUint(0, 0xffffffff, "a PID or a process pattern");
    if (v < 0) return ConfigResult.Bad;
    const r = new Rule();
    r.isPid = true;
    r.pid = <u32>v;
    next.rules.push(r);
    return ConfigResult.Ok;
  }
  if (k != JsonKind.String) return expected("a PID or a process pattern");
  if (!jsonString()) return ConfigResult.Bad;
  return addRule(strPtr, strLen);
}

function parseSpec(): i32 {
  if (jsonKind() == JsonKind.String) {
    if (!jsonString()) return ConfigResult.Bad;
    // A comma-separated list; an empty or all-space string means no entries.
    let s: u32 = 0;
    let blank = true;
    for (let i: u32 = 0; i < strLen; i++) if (!isSpace(load<u8>(strPtr + i))) blank = false;
    if (blank) return ConfigResult.Ok;
    index = 0;
    for (let i: u32 = 0; i <= strLen; i++) {
      if (i == strLen || load<u8>(strPtr + i) == 0x2c) {
        const r = addRule(strPtr + s, i - s);
        if (r != ConfigResult.Ok) return r;
        s = i + 1;
        index++;
      }
    }
    index = -1;
    return ConfigResult.Ok;
  }
  return eachItem(specItem, "a comma-separated string or an array of PIDs and process patterns");
}

let seenA: bool = false;
let seenB: bool = false;

function pairItem(a: string, b: string): i32 {
  if (jsonKind() != JsonKind.String) return expected("\"" + a + "\" or \"" + b + "\"");
  if (!jsonString()) return ConfigResult.Bad;
  if (strIs(a)) seenA = true;
  else if (strIs(b)) seenB = true;
  else return expectedString("\"" + a + "\" or \"" + b + "\"");
  return ConfigResult.Ok;
}

function protoItem(): i32 {
  return pairItem("tcp", "udp");
}

function dirItem(): i32 {
  return pairItem("outbound", "inbound");
}

let portTarget: Array<u32> = new Array<u32>();

function portItem(): i32 {
  const what = "a port (1-65535) or a range \"low-high\"";
  const k = jsonKind();
  if (k == JsonKind.Number) {
    const v = readUint(1, 65535, what);
    if (v < 0) return ConfigResult.Bad;
    portTarget.push(<u32>((v << 16) | v));
    return ConfigResult.Ok;
  }
  if (k != JsonKind.String) return expected(what);
  if (!jsonString()) return ConfigResult.Bad;
  let dash: i32 = -1;
  for (let i: u32 = 0; i < strLen; i++) if (load<u8>(strPtr + i) == 0x2d) { dash = <i32>i; break; }
  let lo: u32;
  let hi: u32;
  if (dash < 0) {
    if (!isDigits(strPtr, strLen)) return afterString("expected a port or a range \"low-high\"");
    lo = hi = parseDecimal(strPtr, strLen);
  } else {
    const d = <u32>dash;
    if (!isDigits(strPtr, d) || !isDigits(strPtr + d + 1, strLen - d - 1)) {
      return afterString("expected a port or a range \"low-high\"");
    }
    lo = parseDecimal(strPtr, d);
    hi = parseDecimal(strPtr + d + 1, strLen - d - 1);
  }
  if (lo < 1 || hi > 65535 || lo > hi) {
    return afterString("ports must be 1-65535 and a range low-high with low <= high");
  }
  portTarget.push((lo << 16) | hi);
  return ConfigResult.Ok;
}

let cidrTarget: Array<Cidr> = new Array<Cidr>();

/** Parses dotted IPv4 [p, p+n) into out[off..off+4); false if malformed. */
function parseV4(p: usize, n: u32, out: StaticArray<u8>, off: i32): bool {
  let part: u32 = 0;
  let digits: u32 = 0;
  let parts: i32 = 0;
  for (let i: u32 = 0; i <= n; i++) {
    const c = i < n ? <u32>load<u8>(p + i) : 0x2e;
    if (c == 0x2e) {
      if (digits == 0 || parts >= 4) return false;
      unchecked(out[off + parts] = <u8>part);
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && part == 0) return false; // no leading zeros (octal ambiguity)
      part = part * 10 + (c - 0x30);
      digits++;
      if (part > 255) return false;
    } else return false;
  }
  return parts == 4;
}

function hexVal(c: u32): i32 {
  if (c >= 0x30 && c <= 0x39) return <i32>(c - 0x30);
  c |= 0x20;
  if (c >= 0x61 && c <= 0x66) return <i32>(c - 0x61 + 10);
  return -1;
}

/** Parses an IPv6 address (RFC 4291 text forms) [p, p+n) into out. */
function parseV6(p: usize, n: u32, out: StaticArray<u8>): bool {
  const groups = new StaticArray<u32>(8);
  let count: i32 = 0;
  let gap: i32 = -1;
  let i: u32 = 0;
  if (n >= 2 && load<u8>(p) == 0x3a && load<u8>(p + 1) == 0x3a) {
    gap = 0;
    i = 2;
    if (n == 2) { for (let k = 0; k < 16; k++) unchecked(out[k] = 0); return true; }
  } else if (n > 0 && load<u8>(p) == 0x3a) return false;
  while (i < n) {
    // A trailing dotted IPv4 part fills the last two groups.
    let hasDot = false;
    let j = i;
    while (j < n && load<u8>(p + j) != 0x3a) { if (load<u8>(p + j) == 0x2e) hasDot = true; j++; }
    if (hasDot) {
      if (j != n || count > 6) return false;
      const v4 = new StaticArray<u8>(4);
      if (!parseV4(p + i, n - i, v4, 0)) return false;
      unchecked(groups[count++] = (<u32>unchecked(v4[0]) << 8) | unchecked(v4[1]));
      unchecked(groups[count++] = (<u32>unchecked(v4[2]) << 8) | unchecked(v4[3]));
      i = n;
      break;
    }
    if (j == i || j - i > 4 || count >= 8) return false;
    let g: u32 = 0;
    for (let k = i; k < j; k++) {
      const h = hexVal(load<u8>(p + k));
      if (h < 0) return false;
      g = (g << 4) | <u32>h;
    }
    unchecked(groups[count++] = g);
    i = j;
    if (i < n) {
      i++; // ':'
      if (i < n && load<u8>(p + i) == 0x3a) {
        if (gap >= 0) return false;
        gap = count;
        i++;
      } else if (i == n) return false; // trailing single ':'
    }
  }
  if (gap < 0 && count != 8) return false;
  if (gap >= 0 && count > 7) return false;
  const fill = 8 - count;
  let o = 0;
  for (let k = 0; k < count; k++) {
    if (k == gap) for (let z = 0; z < fill; z++) { unchecked(out[o++] = 0); unchecked(out[o++] = 0); }
    unchecked(out[o++] = <u8>(unchecked(groups[k]) >> 8));
    unchecked(out[o++] = <u8>unchecked(groups[k]));
  }
  if (gap == count) for (let z = 0; z < fill; z++) { unchecked(out[o++] = 0); unchecked(out[o++] = 0); }
  return o == 16;
}

function cidrItem(): i32 {
  const what = "an address range like \"198.18.0.0/15\" or \"fd00::/8\"";
  if (jsonKind() != JsonKind.String) return expected(what);
  if (!jsonString()) return ConfigResult.Bad;
  let slash: i32 = -1;
  let colon = false;
  for (let i: u32 = 0; i < strLen; i++) {
    const c = load<u8>(strPtr + i);
    if (c == 0x2f && slash < 0) slash = <i32>i;
    if (c == 0x3a) colon = true;
  }
  const alen = slash < 0 ? strLen : <u32>slash;
  const c = new Cidr();
  c.v6 = colon;
  const ok = colon ? parseV6(strPtr, alen, c.addr) : parseV4(strPtr, alen, c.addr, 0);
  if (!ok) return afterString(colon ? "not an IPv6 address" : "not an IPv4 address");
  const maxBits: u32 = colon ? 128 : 32;
  c.prefix = maxBits;
  if (slash >= 0) {
    const s = <u32>slash + 1;
    if (!isDigits(strPtr + s, strLen - s) || strLen - s > 3) return afterString("bad prefix length");
    c.prefix = parseDecimal(strPtr + s, strLen - s);
    if (c.prefix > maxBits) return afterString("prefix length too long");
  }
  cidrTarget.push(c);
  return ConfigResult.Ok;
}

function bypassItem(): i32 {
  const what = "one of \"loopback\", \"multicast\", \"broadcast\", \"link-local\", \"dhcp\"";
  if (jsonKind() != JsonKind.String) return expected(what);
  if (!jsonString()) return ConfigResult.Bad;
  if (strIs("loopback")) next.bypass |= Bypass.Loopback;
  else if (strIs("multicast")) next.bypass |= Bypass.Multicast;
  else if (strIs("broadcast")) next.bypass |= Bypass.Broadcast;
  else if (strIs("link-local")) next.bypass |= Bypass.LinkLocal;
  else if (strIs("dhcp")) next.bypass |= Bypass.Dhcp;
  else return expectedString(what);
  return ConfigResult.Ok;
}

function descValue(): i32 {
  if (jsonNull()) return ConfigResult.Ok;
  if (jsonKind() != JsonKind.String) return expected("a string");
  return jsonString() ? ConfigResult.Ok : ConfigResult.Bad;
}

function pairField(setter: (a: bool, b: bool) => void, item: () => i32, what: string, a: string, b: string): i32 {
  seenA = false;
  seenB = false;
  if (jsonKind() == JsonKind.String) {
    // Also accept "a,b" as one string.
    if (!jsonString()) return ConfigResult.Bad;
    let s: u32 = 0;
    for (let i: u32 = 0; i <= strLen; i++) {
      if (i == strLen || load<u8>(strPtr + i) == 0x2c) {
        let p = strPtr + s;
        let n = i - s;
        while (n > 0 && isSpace(load<u8>(p))) { p++; n--; }
        while (n > 0 && isSpace(load<u8>(p + n - 1))) n--;
        if (n == a.length && bytesAre(p, n, a)) seenA = true;
        else if (n == b.length && bytesAre(p, n, b)) seenB = true;
        else return expectedString("a list of \"" + a + "\" and \"" + b + "\"");
        s = i + 1;
      }
    }
  } else {
    const r = eachItem(item, what);
    if (r != ConfigResult.Ok) return r;
  }
  if (!seenA && !seenB) {
    fieldError();
    errPut("must name at least one of \"");
    errPut(a);
    errPut("\", \"");
    errPut(b);
    errPut("\"");
    return ConfigResult.Bad;
  }
  setter(seenA, seenB);
  return ConfigResult.Ok;
}

function bytesAre(p: usize, n: u32, s: string): bool {
  for (let i: u32 = 0; i < n; i++) if (<u32>load<u8>(p + i) != <u32>s.charCodeAt(<i32>i)) return false;
  return true;
}

function setProtocols(a: bool, b: bool): void {
  next.tcp = a;
  next.udp = b;
}

function setDirections(a: bool, b: bool): void {
  next.outbound = a;
  next.inbound = b;
}

function sortUnique(list: Array<u32>): StaticArray<u32> {
  list.sort((x: u32, y: u32): i32 => (x < y ? -1 : x > y ? 1 : 0));
  let n = 0;
  for (let i = 0; i < list.length; i++) {
    if (i == 0 || unchecked(list[i]) != unchecked(list[n - 1])) unchecked(list[n++] = unchecked(list[i]));
  }
  const out = new StaticArray<u32>(n);
  for (let i = 0; i < n; i++) unchecked(out[i] = unchecked(list[i]));
  return out;
}

/** Which Key bit the key just read names, or 0 for unknown keys. */
function keyField(): u32 {
  if (strIs("intercept_pids")) { field = "intercept_pids"; return Key.InterceptPids; }
  if (strIs("description")) { field = "description"; return Key.Description; }
  if (strIs("intercept")) { field = "intercept"; return Key.Intercept; }
  if (strIs("protocols")) { field = "protocols"; return Key.Protocols; }
  if (strIs("directions")) { field = "directions"; return Key.Directions; }
  if (strIs("ports")) { field = "ports"; return Key.Ports; }
  if (strIs("exclude_ports")) { field = "exclude_ports"; return Key.ExcludePorts; }
  if (strIs("destinations")) { field = "destinations"; return Key.Destinations; }
  if (strIs("exclude_destinations")) { field = "exclude_destinations"; return Key.ExcludeDestinations; }
  if (strIs("bypass")) { field = "bypass"; return Key.Bypass; }
  if (strIs("max_flows")) { field = "max_flows"; return Key.MaxFlows; }
  if (strIs("hold_timeout_ms")) { field = "hold_timeout_ms"; return Key.HoldTimeout; }
  if (strIs("max_held_packets")) { field = "max_held_packets"; return Key.MaxHeldPackets; }
  if (strIs("tcp_idle_timeout_ms")) { field = "tcp_idle_timeout_ms"; return Key.TcpIdleTimeout; }
  if (strIs("udp_idle_timeout_ms")) { field = "udp_idle_timeout_ms"; return Key.UdpIdleTimeout; }
  if (strIs("intercept_trees")) { field = "intercept_trees"; return Key.InterceptTrees; }
  return 0;
}

function fieldValue(f: u32): i32 {
  if (f == Key.InterceptPids || f == Key.InterceptTrees) {
    pidTarget = f == Key.InterceptPids ? pidList : treePidList;
    return eachItem(pidItem, "an array of process IDs");
  }
  if (f == Key.Description) return descValue();
  if (f == Key.Intercept) {
    if (jsonNull()) return ConfigResult.Ok;
    return parseSpec();
  }
  if (f == Key.Protocols) return pairField(setProtocols, protoItem, "an array of \"tcp\" and \"udp\"", "tcp", "udp");
  if (f == Key.Directions) {
    return pairField(setDirections, dirItem, "an array of \"outbound\" and \"inbound\"", "outbound", "inbound");
  }
  if (f == Key.Ports || f == Key.ExcludePorts) {
    portTarget = f == Key.Ports ? next.ports : next.excludePorts;
    return eachItem(portItem, "an array of ports and ranges");
  }
  if (f == Key.Destinations || f == Key.ExcludeDestinations) {
    cidrTarget = f == Key.Destinations ? next.destinations : next.excludeDestinations;
    return eachItem(cidrItem, "an array of address ranges");
  }
  if (f == Key.Bypass) {
    next.bypass = 0;
    return eachItem(bypassItem, "an array of bypass classes");
  }
  let v: i64 = 0;
  if (f == Key.MaxFlows) {
    v = readUint(16, 1048576, "an integer from 16 to 1048576");
    if (v >= 0) next.maxFlows = <u32>v;
  } else if (f == Key.HoldTimeout) {
    v = readUint(1, 60000, "milliseconds from 1 to 60000");
    if (v >= 0) next.holdTimeoutMs = <u32>v;
  } else if (f == Key.MaxHeldPackets) {
    v = readUint(0, 65536, "an integer from 0 to 65536");
    if (v >= 0) next.maxHeldPackets = <u32>v;
  } else if (f == Key.TcpIdleTimeout) {
    v = readUint(1000, 604800000, "milliseconds from 1000 to 604800000 (7 days)");
    if (v >= 0) next.tcpIdleMs = <u32>v;
  } else {
    v = readUint(1000, 604800000, "milliseconds from 1000 to 604800000 (7 days)");
    if (v >= 0) next.udpIdleMs = <u32>v;
  }
  return v < 0 ? ConfigResult.Bad : ConfigResult.Ok;
}

function parseObject(): i32 {
  if (!jsonEat(0x7b)) {
    if (jsonAtEnd()) {
      errPut("the configuration is empty: expected a JSON object like {\"intercept_pids\": [1234]}");
      return ConfigResult.Bad;
    }
    field = "configuration";
    index = -1;
    expected("a JSON object like {\"intercept_pids\": [1234]}");
    return ConfigResult.Bad;
  }
  let seen: u32 = 0;
  if (!jsonEat(0x7d)) {
    while (true) {
      if (!jsonString()) return ConfigResult.Bad;
      if (!jsonExpect(0x3a, "':' after a field name")) return ConfigResult.Bad;
      index = -1;
      const f = keyField();
      if (f == 0) {
        if (!jsonSkipValue()) return ConfigResult.Bad;
      } else {
        if ((seen & f) != 0) {
          fieldError();
          errPut("given more than once");
          return ConfigResult.Bad;
        }
        seen |= f;
        const r = fieldValue(f);
        if (r != ConfigResult.Ok) return r;
      }
      if (jsonEat(0x2c)) continue;
      if (jsonEat(0x7d)) break;
      jsonUnexpected("',' or '}'");
      return ConfigResult.Bad;
    }
  }
  if (!jsonAtEnd()) {
    jsonFailAt("unexpected text after the configuration object");
    return ConfigResult.Bad;
  }
  return ConfigResult.Ok;
}

/**
 * Parses the configuration text at [ptr, ptr+len). On success the new policy
 * replaces the active one whole; on failure the active one is untouched and
 * the error text says why.
 */
export function parseConfig(ptr: usize, len: u32): i32 {
  if (!validUtf8(ptr, len)) {
    errPut("the configuration is not valid UTF-8");
    return ConfigResult.NotUtf8;
  }
  next = new Policy();
  pidList = new Array<u32>();
  treePidList = new Array<u32>();
  field = "";
  index = -1;
  jsonBegin(ptr, len);
  let r = parseObject();
  if (r == ConfigResult.Ok && badSurrogate) {
    errPut("the configuration contains a \\u escape of a lone UTF-16 surrogate, which is not valid UTF-8 text");
    r = ConfigResult.NotUtf8;
  }
  jsonEnd();
  if (r == ConfigResult.Ok && !finishTrees(next)) r = ConfigResult.Bad;
  if (r == ConfigResult.Ok) {
    next.pids = sortUnique(pidList);
    next.startValue = next.rules.length > 0 && unchecked(next.rules[0]).exclude;
    next.interceptsNothing = next.rules.length == 0 && next.pids.length == 0;
    next.anyPort = next.ports.length == 0 && next.excludePorts.length == 0;
    next.anyDestination = next.destinations.length == 0 && next.excludeDestinations.length == 0;
    activePolicy = next;
    policyGeneration++;
  }
  next = new Policy();
  pidList = new Array<u32>();
  treePidList = new Array<u32>();
  return r;
}
