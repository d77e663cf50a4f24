// A strict JSON (RFC 8259) reader over bytes in linear memory.
//
// Pull style: the caller walks the document with `jsonEat`, `jsonString`,
// `jsonNumber` and `jsonSkipValue`; every function returns false on a syntax
// error after writing "JSON syntax error at line L, column C: ..." to the
// error text. Strings are decoded (escapes resolved, UTF-8 out) into one
// scratch buffer sized to the whole input, so nothing is allocated per value.
// Nesting is walked iteratively, to a fixed depth, so hostile input cannot
// exhaust the stack.

import { errPut, errNum } from "../errtext";

const MAX_DEPTH: u32 = 1024;
const depthBits: usize = memory.data(MAX_DEPTH / 8);

let base: usize = 0;
let end: usize = 0;
let pos: usize = 0;
let scratch: usize = 0;

/** The last string read: decoded UTF-8 bytes at strPtr, strLen long. */
export let strPtr: usize = 0;
export let strLen: u32 = 0;
/** Set when a \u escape named a lone surrogate (text not convertible to UTF-8). */
export let badSurrogate = false;

/** The last number read. numInt: no fraction, no exponent. numBig: did not fit in u64. */
export let numNeg = false;
export let numInt = false;
export let numBig = false;
export let numVal: u64 = 0;
export let numStart: usize = 0;
export let numLen: u32 = 0;

/**
 * True when bytes [ptr, ptr+len) are well-formed UTF-8 (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF).
 */
export function validUtf8(ptr: usize, len: u32): bool {
  let i: u32 = 0;
  while (i < len) {
    const b = <u32>load<u8>(ptr + i);
    if (b < 0x80) { i++; continue; }
    let n: u32;
    let lo: u32 = 0x80;
    let hi: u32 = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) n = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      n = 2;
      if (b == 0xe0) lo = 0xa0;
      else if (b == 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3;
      if (b == 0xf0) lo = 0x90;
      else if (b == 0xf4) hi = 0x8f;
    } else return false;
    if (len - i <= n) return false;
    const b1 = <u32>load<u8>(ptr + i + 1);
    if (b1 < lo || b1 > hi) return false;
    for (let k: u32 = 2; k <= n; k++) {
      const c = <u32>load<u8>(ptr + i + k);
      if (c < 0x80 || c > 0xbf) return false;
    }
    i += n + 1;
  }
  return true;
}

export function jsonBegin(ptr: usize, len: u32): void {
  base = ptr;
  end = ptr + len;
  pos = ptr;
  scratch = heap.alloc(<usize>len + 4);
  strPtr = scratch;
  strLen = 0;
  badSurrogate = false;
}

export function jsonEnd(): void {
  if (scratch != 0) heap.free(scratch);
  scratch = 0;
}

/** Writes "JSON syntax error at line L, column C: " + msg + more; returns false. */
export function jsonFailAt(msg: string, more: string = ""): bool {
  let line: u32 = 1;
  let col: u32 = 1;
  for (let p = base; p < pos && p < end; p++) {
    if (load<u8>(p) == 0x0a) { line++; col = 1; } else col++;
  }
  errPut("JSON syntax error at line ");
  errNum(line);
  errPut(", column ");
  errNum(col);
  errPut(": ");
  errPut(msg);
  errPut(more);
  return false;
}

/** Fails with "unexpected end of input|character, expected <what>". */
export function jsonUnexpected(what: string): bool {
  if (pos >= end) return jsonFailAt("unexpected end of input, expected ", what);
  return jsonFailAt("unexpected character, expected ", what);
}

export function jsonWs(): void {
  while (pos < end) {
    const c = load<u8>(pos);
    if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) break;
    pos++;
  }
}

/** Next non-space byte without consuming it, or -1 at the end. */
export function jsonPeek(): i32 {
  jsonWs();
  return pos < end ? <i32>load<u8>(pos) : -1;
}

/** Consumes `c` (after spaces) if it is next. */
export function jsonEat(c: i32): bool {
  if (jsonPeek() == c) { pos++; return true; }
  return false;
}

export function jsonExpect(c: i32, what: string): bool {
  if (jsonEat(c)) return true;
  return jsonUnexpected(what);
}

/** True when only spaces remain. */
export function jsonAtEnd(): bool {
  jsonWs();
  return pos >= end;
}

function hex4(): i32 {
  if (end - pos < 4) return -1;
  let v: i32 = 0;
  for (let k = 0; k < 4; k++) {
    const c = <i32>load<u8>(pos + k);
    let d: i32;
    if (c >= 0x30 && c <= 0x39) d = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
    else if (c >= 0x41 && c <= 0x46) d = c - 0x41 + 10;
    else return -1;
    v = (v << 4) | d;
  }
  pos += 4;
  return v;
}

function putCodePoint(out: usize, cp: u32): usize {
  if (cp < 0x80) {
    store<u8>(out, <u8>cp);
    return out + 1;
  }
  if (cp < 0x800) {
    store<u8>(out, <u8>(0xc0 | (cp >> 6)));
    store<u8>(out + 1, <u8>(0x80 | (cp & 0x3f)));
    return out + 2;
  }
  if (cp < 0x10000) {
    store<u8>(out, <u8>(0xe0 | (cp >> 12)));
    store<u8>(out + 1, <u8>(0x80 | ((cp >> 6) & 0x3f)));
    store<u8>(out + 2, <u8>(0x80 | (cp & 0x3f)));
    return out + 3;
  }
  store<u8>(out, <u8>(0xf0 | (cp >> 18)));
  store<u8>(out + 1, <u8>(0x80 | ((cp >> 12) & 0x3f)));
  store<u8>(out + 2, <u8>(0x80 | ((cp >> 6) & 0x3f)));
  store<u8>(out + 3, <u8>(0x80 | (cp & 0x3f)));
  return out + 4;
}

/**
 * Reads a string (after spaces) and decodes it into strPtr/strLen. A lone
 * surrogate escape decodes as U+FFFD and sets badSurrogate.
 */
export function jsonString(): bool {
  if (jsonPeek() != 0x22) return jsonUnexpected("a string");
  pos++;
  let out = scratch;
  while (true) {
    if (pos >= end) return jsonFailAt("unterminated string");
    const c = <u32>load<u8>(pos);
    if (c == 0x22) { pos++; break; }
    if (c < 0x20) return jsonFailAt("control character in a string (escape it)");
    if (c != 0x5c) {
      store<u8>(out, <u8>c);
      out++;
      pos++;
      continue;
    }
    pos++;
    if (pos >= end) return jsonFailAt("unterminated string");
    const e = <u32>load<u8>(pos);
    pos++;
    if (e == 0x22 || e == 0x5c || e == 0x2f) { store<u8>(out, <u8>e); out++; }
    else if (e == 0x62) { store<u8>(out, 0x08); out++; }
    else if (e == 0x66) { store<u8>(out, 0x0c); out++; }
    else if (e == 0x6e) { store<u8>(out, 0x0a); out++; }
    else if (e == 0x72) { store<u8>(out, 0x0d); out++; }
    else if (e == 0x74) { store<u8>(out, 0x09); out++; }
    else if (e == 0x75) {
      const u = hex4();
      if (u < 0) return jsonFailAt("\\u must be followed by four hex digits");
      let cp = <u32>u;
      if (cp >= 0xd800 && cp <= 0xdbff) {
        // A high surrogate must be followed by \u and a low surrogate.
        if (end - pos >= 6 && load<u8>(pos) == 0x5c && load<u8>(pos + 1) == 0x75) {
          pos += 2;
          const lo = hex4();
          if (lo < 0) return jsonFailAt("\\u must be followed by four hex digits");
          if (lo >= 0xdc00 && lo <= 0xdfff) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (<u32>lo - 0xdc00);
          } else {
            badSurrogate = true;
            cp = 0xfffd;
            out = putCodePoint(out, cp);
            cp = <u32>lo;
            if (cp >= 0xd800 && cp <= 0xdfff) { badSurrogate = true; cp = 0xfffd; }
          }
        } else {
          badSurrogate = true;
          cp = 0xfffd;
        }
      } else if (cp >= 0xdc00 && cp <= 0xdfff) {
        badSurrogate = true;
        cp = 0xfffd;
      }
      out = putCodePoint(out, cp);
    } else {
      pos--;
      return jsonFailAt("invalid escape in a string");
    }
  }
  strPtr = scratch;
  strLen = <u32>(out - scratch);
  return true;
}

function digit(p: usize): bool {
  if (p >= end) return false;
  const c = load<u8>(p);
  return c >= 0x30 && c <= 0x39;
}

/** Reads a number (after spaces) into numNeg/numInt/numBig/numVal. */
export function jsonNumber(): bool {
  jsonWs();
  numStart = pos;
  numNeg = false;
  numInt = true;
  numBig = false;
  numVal = 0;
  if (pos < end && load<u8>(pos) == 0x2d) { numNeg = true; pos++; }
  if (!digit(pos)) return jsonUnexpected("a number");
  if (load<u8>(pos) == 0x30) {
    pos++;
    if (digit(pos)) return jsonFailAt("a number must not start with 0");
  } else {
    while (digit(pos)) {
      const d = <u64>(load<u8>(pos) - 0x30);
      if (numVal > (U64.MAX_VALUE - d) / 10) numBig = true;
      else numVal = numVal * 10 + d;
      pos++;
    }
  }
  if (pos < end && load<u8>(pos) == 0x2e) {
    numInt = false;
    pos++;
    if (!digit(pos)) return jsonUnexpected("a digit after the decimal point");
    while (digit(pos)) pos++;
  }
  if (pos < end && (load<u8>(pos) | 0x20) == 0x65) {
    numInt = false;
    pos++;
    if (pos < end && (load<u8>(pos) == 0x2b || load<u8>(pos) == 0x2d)) pos++;
    if (!digit(pos)) return jsonUnexpected("a digit in the exponent");
    while (digit(pos)) pos++;
  }
  numLen = <u32>(pos - numStart);
  return true;
}

function literal(s: string): bool {
  const n = <usize>s.length;
  if (end - pos < n) return false;
  for (let i: usize = 0; i < n; i++) {
    if (<u32>load<u8>(pos + i) != <u32>s.charCodeAt(<i32>i)) return false;
  }
  pos += n;
  return true;
}

/** Consumes `null` if it is next. */
export function jsonNull(): bool {
  if (jsonPeek() != 0x6e) return false;
  return literal("null");
}

/** Reads true/false. Returns 1, 0, or -1 when the next value is not a boolean. */
export function jsonBool(): i32 {
  const c = jsonPeek();
  if (c == 0x74 && literal("true")) return 1;
  if (c == 0x66 && literal("false")) return 0;
  return -1;
}

/** The kinds of JSON value (what jsonKind says comes next). */
export const enum JsonKind {
  None = -1, // nothing that can start a value
  Object = 0,
  Array = 1,
  String = 2,
  Number = 3,
  Boolean = 4,
  Null = 5,
}

/** What kind of value comes next. */
export function jsonKind(): JsonKind {
  const c = jsonPeek();
  if (c == 0x7b) return JsonKind.Object;
  if (c == 0x5b) return JsonKind.Array;
  if (c == 0x22) return JsonKind.String;
  if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return JsonKind.Number;
  if (c == 0x74 || c == 0x66) return JsonKind.Boolean;
  if (c == 0x6e) return JsonKind.Null;
  return JsonKind.None;
}

/** The name of the next value's kind, for messages. */
export function jsonKindName(): string {
  const k = jsonKind();
  if (k == JsonKind.Object) return "an object";
  if (k == JsonKind.Array) return "an array";
  if (k == JsonKind.String) return "a string";
  if (k == JsonKind.Number) return "a number";
  if (k == JsonKind.Boolean) return "a boolean";
  if (k == JsonKind.Null) return "null";
  return "nothing valid";
}

function setDepthBit(d: u32, isObj: bool): void {
  const p = depthBits + (d >> 3);
  const m = <u8>(1 << <u8>(d & 7));
  store<u8>(p, isObj ? load<u8>(p) | m : load<u8>(p) & ~m);
}

function depthIsObj(d: u32): bool {
  return (load<u8>(depthBits + (d >> 3)) & <u8>(1 << <u8>(d & 7))) != 0;
}

/** Reads and discards one value of any kind, validating its syntax. */
export function jsonSkipValue(): bool {
  let depth: u32 = 0;
  while (true) {
    // A value is expected here.
    const c = jsonPeek();
    if (c == 0x7b || c == 0x5b) {
      if (depth >= MAX_DEPTH) return jsonFailAt("nesting deeper than 1024 levels");
      pos++;
      const isObj = c == 0x7b;
      setDepthBit(depth, isObj);
      depth++;
      if (jsonEat(isObj ? 0x7d : 0x5d)) {
        depth--; // an empty container is a complete value
      } else if (isObj) {
        if (!jsonString()) return false;
        if (!jsonExpect(0x3a, "':'")) return false;
        continue;
      } else {
        continue;
      }
    } else if (c == 0x22) {
      if (!jsonString()) return false;
    } else if (c == 0x2d || (c >= 0x30 && c <= 0x39)) {
      if (!jsonNumber()) return false;
    } else if (c == 0x74 || c == 0x66) {
      if (jsonBool() < 0) return jsonFailAt("invalid literal");
    } else if (c == 0x6e) {
      if (!jsonNull()) return jsonFailAt("invalid literal");
    } else {
      return jsonUnexpected("a value");
    }
    // After a value: close containers or move to the next member.
    while (true) {
      if (depth == 0) return true;
      const isObj = depthIsObj(depth - 1);
      if (jsonEat(0x2c)) {
        if (isObj) {
          if (!jsonString()) return false;
          if (!jsonExpect(0x3a, "':'")) return false;
        }
        break;
      }
      if (jsonEat(isObj ? 0x7d : 0x5d)) {
        depth--;
        continue;
      }
      return jsonUnexpected(isObj ? "',' or '}'" : "',' or ']'");
    }
  }
}

/** True when the last string read equals the ASCII literal `s`. */
export function strIs(s: string): bool {
  const n = <u32>s.length;
  if (strLen != n) return false;
  for (let i: u32 = 0; i < n; i++) {
    if (<u32>load<u8>(strPtr + i) != <u32>s.charCodeAt(<i32>i)) return false;
  }
  return true;
}
