// Building and reading IPv4/IPv6 TCP/UDP packets for tests, with a checksum
// implementation of our own (independent of the engine's).

export type Family = 4 | 6;

export interface Endpoint {
  addr: string; // "198.18.0.1" or "fd00::1"
  port: number;
}

export interface PacketSpec {
  proto: "tcp" | "udp";
  src: Endpoint;
  dst: Endpoint;
  flags?: string; // TCP: any of "SAFRP" (SYN ACK FIN RST PSH)
  payload?: Uint8Array | string;
  seq?: number;
  ack?: number;
  /** IPv6 extension headers to put before the transport header. */
  ext?: Array<{ type: 0 | 43 | 60 | 51 | 44; len?: number; fragOffset?: number; more?: boolean }>;
  /** IPv4 options bytes (a multiple of 4). */
  options?: Uint8Array;
  /** Leave the UDP checksum 0 (IPv4 only). */
  noUdpChecksum?: boolean;
  /** Write a partial (pseudo-header only) checksum, as GSO/offload delivers. */
  partialChecksum?: boolean;
}

export function parseAddr(a: string): Uint8Array {
  if (!a.includes(":")) {
    const parts = a.split(".").map(Number);
    if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255))) throw new Error("bad IPv4 " + a);
    return Uint8Array.from(parts);
  }
  let [head, tail] = a.split("::") as [string, string | undefined];
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const fill = a.includes("::") ? 8 - h.length - t.length : 0;
  const groups = [...h, ...Array(fill).fill("0"), ...t];
  if (groups.length !== 8) throw new Error("bad IPv6 " + a);
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  });
  return out;
}

/** RFC 5952 text: lower case, the longest run of two or more zero groups as "::". */
export function formatAddr(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join(".");
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i] << 8) | b[i + 1]);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const hx = (a: number[]) => a.map((x) => x.toString(16)).join(":");
  if (best < 0) return hx(g);
  return hx(g.slice(0, best)) + "::" + hx(g.slice(best + bestLen));
}

function sum16(b: Uint8Array, s = 0): number {
  for (let i = 0; i + 1 < b.length; i += 2) s += (b[i] << 8) | b[i + 1];
  if (b.length & 1) s += b[b.length - 1] << 8;
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

export function internetChecksum(b: Uint8Array): number {
  return ~fold(sum16(b)) & 0xffff;
}

function pseudoSum(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  return sum16(src) + sum16(dst) + proto + len;
}

export function build(spec: PacketSpec): Uint8Array {
  const src = parseAddr(spec.src.addr);
  const dst = parseAddr(spec.dst.addr);
  const v6 = src.length === 16;
  const payload = typeof spec.payload === "string" ? new TextEncoder().encode(spec.payload) : spec.payload ?? new Uint8Array(0);
  const proto = spec.proto === "tcp" ? 6 : 17;
  const l4hl = spec.proto === "tcp" ? 20 : 8;
  const l4 = new Uint8Array(l4hl + payload.length);
  const dv = new DataView(l4.buffer);
  dv.setUint16(0, spec.src.port);
  dv.setUint16(2, spec.dst.port);
  if (spec.proto === "tcp") {
    dv.setUint32(4, spec.seq ?? 1000);
    dv.setUint32(8, spec.ack ?? 0);
    l4[12] = 5 << 4;
    const f = spec.flags ?? "A";
    l4[13] = (f.includes("F") ? 1 : 0) | (f.includes("S") ? 2 : 0) | (f.includes("R") ? 4 : 0) |
      (f.includes("P") ? 8 : 0) | (f.includes("A") ? 16 : 0);
    dv.setUint16(14, 65535);
  } else {
    dv.setUint16(4, l4.length);
  }
  l4.set(payload, l4hl);
  const csOff = spec.proto === "tcp" ? 16 : 6;
  const ps = pseudoSum(src, dst, proto, l4.length);
  if (spec.partialChecksum) {
    dv.setUint16(csOff, fold(ps));
  } else if (!(spec.proto === "udp" && !v6 && spec.noUdpChecksum)) {
    let cs = ~fold(sum16(l4, ps)) & 0xffff;
    if (spec.proto === "udp" && cs === 0) cs = 0xffff;
    dv.setUint16(csOff, cs);
  }
  if (!v6) return ipPacket(src, dst, proto, l4, spec.options);
  const exts: Uint8Array[] = [];
  const types = (spec.ext ?? []).map((e) => e.type);
  for (let i = 0; i < (spec.ext ?? []).length; i++) {
    const e = spec.ext![i];
    const next = i + 1 < types.length ? types[i + 1] : proto;
    let b: Uint8Array;
    if (e.type === 44) {
      b = new Uint8Array(8);
      const off = ((e.fragOffset ?? 0) << 3) | (e.more ? 1 : 0);
      b[2] = off >> 8;
      b[3] = off & 0xff;
    } else if (e.type === 51) {
      const words = e.len ?? 1; // payload len field: (total/4) - 2
      b = new Uint8Array((words + 2) * 4);
      b[1] = words;
    } else {
      const units = e.len ?? 0;
      b = new Uint8Array((units + 1) * 8);
      b[1] = units;
    }
    b[0] = next;
    exts.push(b);
  }
  const body = new Uint8Array(exts.reduce((n, b) => n + b.length, 0) + l4.length);
  let o = 0;
  for (const b of [...exts, l4]) {
    body.set(b, o);
    o += b.length;
  }
  return ipPacket(src, dst, types.length ? types[0] : proto, body);
}

/**
 * An IP packet of `payload` (its first header `next`): IPv4 (DF, TTL 64,
 * `options` in the header, the header checksum computed) or IPv6 (hop limit
 * 64), by the addresses' family.
 */
function ipPacket(src: Uint8Array, dst: Uint8Array, next: number, payload: Uint8Array, options?: Uint8Array): Uint8Array {
  if (src.length === 16) {
    const p = new Uint8Array(40 + payload.length);
    const h = new DataView(p.buffer);
    p[0] = 0x60;
    h.setUint16(4, payload.length);
    p[6] = next;
    p[7] = 64;
    p.set(src, 8);
    p.set(dst, 24);
    p.set(payload, 40);
    return p;
  }
  const opts = options ?? new Uint8Array(0);
  const hl = 20 + opts.length;
  const p = new Uint8Array(hl + payload.length);
  const h = new DataView(p.buffer);
  p[0] = 0x40 | (hl >> 2);
  h.setUint16(2, p.length);
  h.setUint16(4, 0x1234);
  h.setUint16(6, 0x4000);
  p[8] = 64;
  p[9] = next;
  p.set(src, 12);
  p.set(dst, 16);
  p.set(opts, 20);
  h.setUint16(10, internetChecksum(p.subarray(0, hl)));
  p.set(payload, hl);
  return p;
}

export interface Parsed {
  v6: boolean;
  proto: number;
  src: Endpoint;
  dst: Endpoint;
  flags: number;
  payload: Uint8Array;
  l4: Uint8Array;
  l4Offset: number;
}

/** Reads a packet built by build() back (extension headers walked). */
export function read(p: Uint8Array): Parsed {
  const v6 = p[0] >> 4 === 6;
  let off: number;
  let proto: number;
  let src: Uint8Array;
  let dst: Uint8Array;
  let end: number;
  if (!v6) {
    off = (p[0] & 15) * 4;
    proto = p[9];
    src = p.slice(12, 16);
    dst = p.slice(16, 20);
    end = (p[2] << 8) | p[3];
  } else {
    src = p.slice(8, 24);
    dst = p.slice(24, 40);
    end = 40 + ((p[4] << 8) | p[5]);
    let nh = p[6];
    off = 40;
    while (nh === 0 || nh === 43 || nh === 60 || nh === 44 || nh === 51) {
      const len = nh === 44 ? 8 : nh === 51 ? (p[off + 1] + 2) * 4 : (p[off + 1] + 1) * 8;
      nh = p[off];
      off += len;
    }
    proto = nh;
  }
  const l4 = p.subarray(off, end);
  const hl = proto === 6 ? (l4[12] >> 4) * 4 : 8;
  return {
    v6, proto,
    src: { addr: formatAddr(src), port: (l4[0] << 8) | l4[1] },
    dst: { addr: formatAddr(dst), port: (l4[2] << 8) | l4[3] },
    flags: proto === 6 ? l4[13] : 0,
    payload: l4.subarray(hl),
    l4,
    l4Offset: off,
  };
}

/** Recomputes a packet's IPv4 header and transport checksums in place. */
export function fixChecksums(p: Uint8Array): Uint8Array {
  const r = read(p);
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
  if (!r.v6) {
    const hl = (p[0] & 15) * 4;
    dv.setUint16(10, 0);
    dv.setUint16(10, internetChecksum(p.subarray(0, hl)));
  }
  const cs = r.l4Offset + (r.proto === 6 ? 16 : 6);
  dv.setUint16(cs, 0);
  let v = ~fold(sum16(r.l4, pseudoSum(parseAddr(r.src.addr), parseAddr(r.dst.addr), r.proto, r.l4.length))) & 0xffff;
  if (r.proto === 17 && v === 0) v = 0xffff;
  dv.setUint16(cs, v);
  return p;
}

/** True when the IP header (v4) and transport checksums are right. */
export function checksumsValid(p: Uint8Array): boolean {
  const r = read(p);
  if (!r.v6 && internetChecksum(p.subarray(0, (p[0] & 15) * 4)) !== 0) return false;
  const src = parseAddr(r.src.addr);
  const dst = parseAddr(r.dst.addr);
  if (r.proto === 17 && !r.v6 && r.l4[6] === 0 && r.l4[7] === 0) return true; // no UDP checksum
  if (r.proto === 17 && r.v6 && r.l4[6] === 0 && r.l4[7] === 0) return false; // mandatory in IPv6
  return (~fold(sum16(r.l4, pseudoSum(src, dst, r.proto, r.l4.length))) & 0xffff) === 0;
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

export function fromHex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s.replace(/\s+/g, ""), "hex"));
}

// ---------------------------------------------------------------------------
// ICMP and ICMPv6 messages

export interface IcmpSpec {
  /** The error's own addresses (IPv4 for ICMP, IPv6 for ICMPv6). */
  src: string;
  dst: string;
  type: number;
  code: number;
  /** The word after the checksum: unused, a next-hop MTU, an MTU, a pointer. */
  rest?: number;
  /** The message body: for an error, the invoking packet as quoted. */
  body: Uint8Array;
}

/** An ICMP (IPv4) or ICMPv6 (IPv6) message, checksums by our own code. */
export function buildIcmp(spec: IcmpSpec): Uint8Array {
  const src = parseAddr(spec.src);
  const dst = parseAddr(spec.dst);
  const v6 = src.length === 16;
  const msg = new Uint8Array(8 + spec.body.length);
  const m = new DataView(msg.buffer);
  msg[0] = spec.type;
  msg[1] = spec.code;
  m.setUint32(4, spec.rest ?? 0);
  msg.set(spec.body, 8);
  const ps = v6 ? pseudoSum(src, dst, 58, msg.length) : 0;
  m.setUint16(2, ~fold(sum16(msg, ps)) & 0xffff);
  return ipPacket(src, dst, v6 ? 58 : 1, msg);
}

export interface IcmpParsed {
  v6: boolean;
  src: string;
  dst: string;
  type: number;
  code: number;
  rest: number;
  body: Uint8Array;
}

/** Reads a message built by buildIcmp back (no extension headers). */
export function readIcmp(p: Uint8Array): IcmpParsed {
  const v6 = p[0] >> 4 === 6;
  const hl = v6 ? 40 : (p[0] & 15) * 4;
  const msg = p.subarray(hl);
  return {
    v6,
    src: formatAddr(v6 ? p.slice(8, 24) : p.slice(12, 16)),
    dst: formatAddr(v6 ? p.slice(24, 40) : p.slice(16, 20)),
    type: msg[0],
    code: msg[1],
    rest: new DataView(msg.buffer, msg.byteOffset).getUint32(4),
    body: msg.subarray(8),
  };
}

/** True when the IPv4 header's and the ICMP/ICMPv6 message's checksums are right. */
export function icmpChecksumsValid(p: Uint8Array): boolean {
  const v6 = p[0] >> 4 === 6;
  if (v6) {
    const msg = p.subarray(40);
    return (~fold(sum16(msg, pseudoSum(p.subarray(8, 24), p.subarray(24, 40), 58, msg.length))) & 0xffff) === 0;
  }
  const hl = (p[0] & 15) * 4;
  return internetChecksum(p.subarray(0, hl)) === 0 && internetChecksum(p.subarray(hl)) === 0;
}

/** Sets an IPv4 header's TTL (as a router quoting it saw it) and recomputes its checksum. */
export function withTtl(p: Uint8Array, ttl: number): Uint8Array {
  const q = p.slice();
  q[8] = ttl;
  q[10] = 0;
  q[11] = 0;
  new DataView(q.buffer).setUint16(10, internetChecksum(q.subarray(0, (q[0] & 15) * 4)));
  return q;
}
