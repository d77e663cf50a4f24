// Error text: one fixed buffer in static memory that the shim reads after a
// call returns an error. Writing never allocates, so it is safe on any path.
//
//   ERR_BUF [0 .. ERR_CAP)   UTF-8 text, not NUL-terminated; errLength() bytes
//
// Text that does not fit is cut at ERR_CAP - 3 and ends in "...".

export const ERR_CAP: u32 = 1024;
export const ERR_BUF: usize = memory.data(ERR_CAP);

let errLen: u32 = 0;
let errFull = false;

export function errReset(): void {
  errLen = 0;
  errFull = false;
}

export function errLength(): u32 {
  return errLen;
}

function putByte(b: u32): void {
  if (errFull) return;
  if (errLen >= ERR_CAP - 3) {
    store<u8>(ERR_BUF + errLen, 0x2e);
    store<u8>(ERR_BUF + errLen + 1, 0x2e);
    store<u8>(ERR_BUF + errLen + 2, 0x2e);
    errLen += 3;
    errFull = true;
    return;
  }
  store<u8>(ERR_BUF + errLen, <u8>b);
  errLen++;
}

/** Appends a string literal (ASCII expected; other code units become '?'). */
export function errPut(s: string): void {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = <u32>s.charCodeAt(i);
    putByte(c < 0x80 ? c : 0x3f);
  }
}

/** Appends an unsigned decimal number. */
export function errNum(v: u64): void {
  const digits = memory.data(24);
  let n = 0;
  do {
    store<u8>(digits + n, <u8>(0x30 + <u32>(v % 10)));
    v /= 10;
    n++;
  } while (v != 0);
  while (n > 0) {
    n--;
    putByte(load<u8>(digits + n));
  }
}

/**
 * Appends user bytes for display: printable ASCII as is, whole UTF-8
 * sequences as they are (the config text was validated before parsing),
 * control bytes as '?'. At most `max` bytes, never cutting a sequence; a
 * longer snippet ends in "...".
 */
export function errSnippet(ptr: usize, len: u32, max: u32): void {
  let i: u32 = 0;
  while (i < len) {
    const b = <u32>load<u8>(ptr + i);
    let n: u32 = 1;
    if (b >= 0xf0) n = 4;
    else if (b >= 0xe0) n = 3;
    else if (b >= 0xc0) n = 2;
    if (i + n > max || i + n > len || errLen + n > ERR_CAP - 3) break;
    if (n == 1) {
      putByte(b < 0x20 || b == 0x7f || b >= 0x80 ? 0x3f : b);
    } else {
      for (let k: u32 = 0; k < n; k++) putByte(load<u8>(ptr + i + k));
    }
    i += n;
  }
  if (i < len) errPut("...");
}
