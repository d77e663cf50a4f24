// Packet views. First as/wire/ and the parser on their own (build/wire.wasm)
// on literal bytes: each header's parse, emit (setters and checksums) and
// impossible lengths. Then real packet bytes through the engine, checked by
// what it does with them (redirect, pass, count as malformed or fragment).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { PacketEngine, root, V_PASS, V_MODIFIED, V_HELD, O_CONNECT } from "./harness.ts";
import { build, checksumsValid, fixChecksums, fromHex, read, type PacketSpec } from "./packets.ts";

const SELF = 1000;
const C = { addr: "10.0.0.2", port: 40000 };
const D = { addr: "198.18.0.10", port: 80 };
const C6 = { addr: "fd00::2", port: 40000 };
const D6 = { addr: "fd00:198:18::10", port: 443 };

/** An engine that redirects everything of PID 500 and already knows the owners. */
function engine(json = `{"intercept_pids":[500]}`): PacketEngine {
  const e = new PacketEngine(SELF);
  assert.is(e.config(json).rc, 0);
  e.start(0, 8080);
  return e;
}

function redirectOne(e: PacketEngine, spec: PacketSpec, partial = false) {
  const local = spec.src;
  e.owner(O_CONNECT, spec.proto, local, spec.dst, 500, "/usr/bin/curl");
  return e.process([{ data: build(spec), partial }])[0];
}

const wire = suite("wire");

// ---------------------------------------------------------------------------
// as/wire/ on literal bytes

interface WireExports {
  memory: WebAssembly.Memory;
  alloc(len: number): number;
  checksum(p: number, len: number): number;
  pseudo_header_sum(src: number, dst: number, v6: number, proto: number, len: number): number;
  [name: string]: ((...args: number[]) => number | bigint) | WebAssembly.Memory;
}

let wireModule: WebAssembly.Module | undefined;

/** A fresh build/wire.wasm instance and a way to put bytes into it. */
function wireViews() {
  wireModule ??= new WebAssembly.Module(readFileSync(join(root, "build", "wire.wasm")));
  const env = { abort: () => { throw new Error("wire.wasm aborted"); } };
  const x = new WebAssembly.Instance(wireModule, { env }).exports as unknown as WireExports;
  const fn = (name: string) => x[name] as (...args: number[]) => number;
  return {
    x,
    call: (name: string, ...args: number[]) => fn(name)(...args),
    put(b: Uint8Array): number {
      const p = x.alloc(b.length);
      new Uint8Array(x.memory.buffer, p, b.length).set(b);
      return p;
    },
    get: (p: number, len: number) => new Uint8Array(x.memory.buffer, p, len).slice(),
    /** ipv6_walk returns a u64 (a BigInt, signed on the JS side). */
    walk: (p: number, len: number) => BigInt.asUintN(64, (x.ipv6_walk as (p: number, len: number) => bigint)(p, len)),
  };
}

// IPv4 + TCP SYN 10.0.0.2:40000 -> 198.18.0.10:80 (DF, ttl 64), and the same
// packet rewritten to 198.18.0.10:40000 -> 10.0.0.2:8080; checksums by hand.
const V4_SYN = fromHex("45000028123440004006587e0a000002c612000a9c40005001020304000000005002ffff3f2e0000");
const V4_SYN_REWRITTEN = fromHex("45000028123440004006587ec612000a0a0000029c401f9001020304000000005002ffff1fee0000");
// IPv6 + hop-by-hop (PadN) + UDP fd00::2:5353 -> fd00::10:53, "abcd".
const V6_UDP = fromHex(
  "6000000000140040" + "fd000000000000000000000000000002" + "fd000000000000000000000000000010" +
    "1100010400000000" + "14e90035000c2bde61626364",
);

wire("test_parse ipv4: every field of a literal header", () => {
  const w = wireViews();
  const p = w.put(V4_SYN);
  assert.ok(w.call("ipv4_check_len", p, V4_SYN.length));
  assert.is(w.call("ipv4_version", p), 4);
  assert.is(w.call("ipv4_header_len", p), 20);
  assert.is(w.call("ipv4_total_len", p), 40);
  assert.is(w.call("ipv4_is_fragment", p), 0, "DF alone is not a fragment");
  assert.is(w.call("ipv4_protocol", p), 6);
  assert.equal(Array.from(w.get(w.call("ipv4_src_addr", p), 4)), [10, 0, 0, 2]);
  assert.equal(Array.from(w.get(w.call("ipv4_dst_addr", p), 4)), [198, 18, 0, 10]);
  assert.is(w.call("ipv4_checksum", p), 0x587e);
  assert.ok(w.call("ipv4_verify_checksum", p));
  const frag = V4_SYN.slice();
  frag[6] = 0x20; // MF
  assert.ok(w.call("ipv4_is_fragment", w.put(frag)));
  frag[6] = 0x00;
  frag[7] = 0x01; // offset 1
  assert.ok(w.call("ipv4_is_fragment", w.put(frag)));
});

wire("test_emit ipv4: setters and fill_checksum produce the literal bytes", () => {
  const w = wireViews();
  const p = w.put(V4_SYN);
  const c = w.put(V4_SYN.subarray(12, 16));
  const d = w.put(V4_SYN.subarray(16, 20));
  w.call("ipv4_set_src_addr", p, d);
  w.call("ipv4_set_dst_addr", p, c);
  const broken = w.get(p, 20);
  broken[10] ^= 0xff;
  const q = w.put(broken);
  assert.not.ok(w.call("ipv4_verify_checksum", q));
  w.call("ipv4_fill_checksum", q);
  assert.equal(Array.from(w.get(q, 20)), Array.from(V4_SYN_REWRITTEN.subarray(0, 20)));
});

wire("impossible lengths ipv4", () => {
  const w = wireViews();
  const cases: [string, Uint8Array, number][] = [
    ["shorter than a header", V4_SYN, 19],
    ["IHL 4", (() => { const b = V4_SYN.slice(); b[0] = 0x44; return b; })(), 40],
    ["IHL 15 past the total length", (() => { const b = V4_SYN.slice(); b[0] = 0x4f; return b; })(), 40],
    ["total length below the header", (() => { const b = V4_SYN.slice(); b[3] = 19; return b; })(), 40],
    ["total length past the bytes", V4_SYN, 39],
  ];
  for (const [what, b, len] of cases) assert.not.ok(w.call("ipv4_check_len", w.put(b), len), what);
  assert.ok(w.call("ipv4_check_len", w.put(V4_SYN), 60), "trailing bytes after the total length are allowed");
});

wire("test_parse tcp: ports, header length, flags, checksum with the pseudo-header", () => {
  const w = wireViews();
  const p = w.put(V4_SYN);
  const t = p + 20;
  assert.ok(w.call("tcp_check_len", t, 20));
  assert.is(w.call("tcp_src_port", t), 40000);
  assert.is(w.call("tcp_dst_port", t), 80);
  assert.is(w.call("tcp_header_len", t), 20);
  assert.is(w.call("tcp_flags", t), 0x02);
  assert.is(w.call("tcp_checksum", t), 0x3f2e);
  assert.ok(w.call("tcp_verify_checksum", t, p + 12, p + 16, 0, 20));
  assert.not.ok(w.call("tcp_verify_checksum", t, p + 16, p + 12, 0, 21), "another length is another pseudo-header");
});

wire("test_emit tcp: set ports, fill_checksum over the new pseudo-header", () => {
  const w = wireViews();
  const p = w.put(V4_SYN_REWRITTEN.subarray(0, 20));
  const seg = V4_SYN.slice(20);
  const t = w.put(seg);
  w.call("tcp_set_src_port", t, 40000);
  w.call("tcp_set_dst_port", t, 8080);
  w.call("tcp_fill_checksum", t, p + 12, p + 16, 0, 20);
  assert.equal(Array.from(w.get(t, 20)), Array.from(V4_SYN_REWRITTEN.subarray(20)));
});

wire("impossible lengths tcp", () => {
  const w = wireViews();
  const seg = V4_SYN.slice(20);
  assert.not.ok(w.call("tcp_check_len", w.put(seg), 19), "shorter than a header");
  const off4 = seg.slice();
  off4[12] = 0x40;
  assert.not.ok(w.call("tcp_check_len", w.put(off4), 20), "data offset 4");
  const off15 = seg.slice();
  off15[12] = 0xf0;
  assert.not.ok(w.call("tcp_check_len", w.put(off15), 40), "data offset 60 past the segment");
  assert.ok(w.call("tcp_check_len", w.put(off15), 60));
});

wire("test_parse ipv6: header fields and the extension-header walk", () => {
  const w = wireViews();
  const p = w.put(V6_UDP);
  assert.ok(w.call("ipv6_check_len", p, V6_UDP.length));
  assert.is(w.call("ipv6_version", p), 6);
  assert.is(w.call("ipv6_payload_len", p), 20);
  assert.is(w.call("ipv6_next_header", p), 0);
  assert.equal(Array.from(w.get(w.call("ipv6_src_addr", p), 16)), Array.from(V6_UDP.subarray(8, 24)));
  assert.equal(Array.from(w.get(w.call("ipv6_dst_addr", p), 16)), Array.from(V6_UDP.subarray(24, 40)));
  const walk = w.walk(p, 60);
  assert.is(Number(walk >> 32n), 48, "UDP after 40 + 8 bytes");
  assert.is(Number(walk & 0xffn), 17);
  assert.is(Number(walk & 0x100n), 0, "not a fragment");
});

wire("ipv6 walk: fragments, truncated and over-long chains", () => {
  const w = wireViews();
  const walk = (b: Uint8Array, len = b.length) => w.walk(w.put(b), len);
  const MALFORMED = (1n << 64n) - 1n;
  // A fragment header (44) with M set, then UDP.
  const frag = V6_UDP.slice();
  frag[6] = 44;
  frag.set([17, 0, 0, 1, 0, 0, 0, 1], 40);
  assert.is(walk(frag) & 0x1ffn, 0x111n, "UDP, fragment");
  // An atomic fragment (offset 0, no M) is not a fragment.
  frag.set([17, 0, 0, 0, 0, 0, 0, 1], 40);
  assert.is(walk(frag) & 0x1ffn, 0x11n);
  assert.is(walk(V6_UDP, 47), MALFORMED, "hop-by-hop runs past the end");
  const long = V6_UDP.slice();
  long[41] = 2; // hop-by-hop of 24 bytes
  assert.is(walk(long), MALFORMED, "header length past the end");
  // 17 destination-options headers: longer than the walk follows.
  const chain = new Uint8Array(40 + 17 * 8);
  chain.set(V6_UDP.subarray(0, 40));
  chain[6] = 60;
  for (let i = 0; i < 17; i++) chain[40 + i * 8] = i < 16 ? 60 : 17;
  assert.is(walk(chain), MALFORMED);
});

wire("impossible lengths ipv6 and udp", () => {
  const w = wireViews();
  assert.not.ok(w.call("ipv6_check_len", w.put(V6_UDP), 39), "shorter than a header");
  assert.not.ok(w.call("ipv6_check_len", w.put(V6_UDP), 59), "payload length past the bytes");
  const u = V6_UDP.slice(48);
  assert.ok(w.call("udp_check_len", w.put(u), 12));
  assert.not.ok(w.call("udp_check_len", w.put(u), 7), "shorter than a header");
  assert.not.ok(w.call("udp_check_len", w.put(u), 11), "length past the datagram");
  const short = u.slice();
  short[5] = 7;
  assert.not.ok(w.call("udp_check_len", w.put(short), 12), "length below 8");
});

wire("test_parse and test_emit udp: fields, checksum, IPv6's zero sent as 0xffff, IPv4's zero means none", () => {
  const w = wireViews();
  const p = w.put(V6_UDP);
  const u = p + 48;
  assert.is(w.call("udp_src_port", u), 5353);
  assert.is(w.call("udp_dst_port", u), 53);
  assert.is(w.call("udp_length", u), 12);
  assert.is(w.call("udp_checksum", u), 0x2bde);
  assert.ok(w.call("udp_verify_checksum", u, p + 8, p + 24, 1, 12));
  w.call("udp_set_src_port", u, 5354);
  assert.not.ok(w.call("udp_verify_checksum", u, p + 8, p + 24, 1, 12));
  w.call("udp_set_src_port", u, 5353);
  w.call("udp_fill_checksum", u, p + 8, p + 24, 1, 12);
  assert.equal(Array.from(w.get(p, V6_UDP.length)), Array.from(V6_UDP));
  // Payload 0xf0a8 makes the computed sum 0: sent as 0xffff.
  const zero = Uint8Array.from([0x14, 0xe9, 0x00, 0x35, 0x00, 0x0a, 0x12, 0x34, 0xf0, 0xa8]);
  const z = w.put(zero);
  w.call("udp_fill_checksum", z, p + 8, p + 24, 1, 10);
  assert.is(w.call("udp_checksum", z), 0xffff);
  assert.ok(w.call("udp_verify_checksum", z, p + 8, p + 24, 1, 10));
  const none = Uint8Array.from([0x14, 0xe9, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00]);
  assert.ok(w.call("udp_verify_checksum", w.put(none), p + 8, p + 24, 0, 8), "IPv4: 0 is no checksum");
});

wire("checksum.ts: RFC 1071's example and the pseudo-header sum", () => {
  const w = wireViews();
  // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d).
  assert.is(w.call("checksum", w.put(fromHex("0001f203f4f5f6f7")), 8), 0x220d);
  // An odd length pads with a zero byte: 0001 + f203 + f4f5 + f600 = 2dcf9, folded dcfb.
  assert.is(w.call("checksum", w.put(fromHex("0001f203f4f5f6")), 7), 0x2304);
  // 10.0.0.2 + 198.18.0.10 + 6 + 20, folded.
  const p = w.put(V4_SYN);
  const sum = 0x0a00 + 0x0002 + 0xc612 + 0x000a + 6 + 20;
  assert.is(w.call("pseudo_header_sum", p + 12, p + 16, 0, 6, 20), (sum & 0xffff) + (sum >> 16));
});

wire("the parser's view of literal packets", () => {
  const w = wireViews();
  const p = w.put(V4_SYN);
  assert.is(w.call("parse", p, V4_SYN.length, 1), 0);
  assert.equal(
    ["pk_v6", "pk_proto", "pk_ip_len", "pk_sport", "pk_dport", "pk_tcp_flags", "pk_payload", "pk_l4_len"].map((n) => w.call(n)),
    [0, 6, 40, 40000, 80, 2, 0, 20],
  );
  assert.equal([w.call("pk_src") - p, w.call("pk_dst") - p, w.call("pk_l4") - p], [12, 16, 20]);
  const q = w.put(V6_UDP);
  assert.is(w.call("parse", q, V6_UDP.length, 1), 0);
  assert.equal(
    ["pk_v6", "pk_proto", "pk_ip_len", "pk_sport", "pk_dport", "pk_tcp_flags", "pk_payload", "pk_l4_len"].map((n) => w.call(n)),
    [1, 17, 60, 5353, 53, 0, 4, 12],
  );
  assert.equal([w.call("pk_src") - q, w.call("pk_dst") - q, w.call("pk_l4") - q], [8, 24, 48]);
  // Malformed 1, fragment 2, not TCP/UDP/ICMP 3, ICMP 4.
  assert.is(w.call("parse", p, 39, 1), 1);
  const frag = V4_SYN.slice();
  frag[6] = 0x20;
  assert.is(w.call("parse", w.put(frag), 40, 1), 2);
  const other = V4_SYN.slice();
  other[9] = 47;
  assert.is(w.call("parse", w.put(other), 40, 1), 3, "GRE");
  other[9] = 58;
  assert.is(w.call("parse", w.put(other), 40, 1), 3, "ICMPv6 over IPv4");
  other[9] = 1;
  assert.is(w.call("parse", w.put(other), 40, 1), 4, "ICMP");
  const q6 = V6_UDP.slice();
  q6[40] = 1;
  assert.is(w.call("parse", w.put(q6), V6_UDP.length, 1), 3, "ICMP over IPv6");
  q6[40] = 58;
  const p6 = w.put(q6);
  assert.is(w.call("parse", p6, V6_UDP.length, 1), 4, "ICMPv6 after hop-by-hop");
  assert.equal([w.call("pk_l4") - p6, w.call("pk_l4_len")], [48, 12]);
  assert.is(w.call("parse", w.put(Uint8Array.from([0x20])), 1, 1), 3, "IP version 2");
  assert.is(w.call("parse", p, 0, 1), 1, "no bytes");
});

wire("the parser then nat.ts: a literal SYN rewritten to the literal result", () => {
  for (const full of [0, 1]) {
    const w = wireViews();
    const p = w.put(V4_SYN);
    assert.is(w.call("parse", p, V4_SYN.length, 1), 0);
    const d = w.put(V4_SYN.subarray(16, 20));
    const c = w.put(V4_SYN.subarray(12, 16));
    w.call("rewrite", d, 40000, c, 8080, full);
    assert.equal(Array.from(w.get(p, V4_SYN.length)), Array.from(V4_SYN_REWRITTEN), full ? "full checksum" : "incremental");
  }
});

// ICMP errors. A router 198.18.0.254 says "fragmentation needed, next-hop MTU
// 1280" to 10.0.0.2 about V4_SYN, all of it quoted; checksums by hand
// (an independent script).
const V4_FRAG_NEEDED = fromHex(
  "450000444321000040016686c61200fe0a000002" + "0304c83400000500" + Buffer.from(V4_SYN).toString("hex"),
);
// fd00:198:18::fe says "packet too big, MTU 1280" to fd00::2 about V6_UDP.
const V6_TOO_BIG = fromHex(
  "6000000000443a40fd0001980018000000000000000000fefd000000000000000000000000000002" + "02008994" + "00000500" +
    Buffer.from(V6_UDP).toString("hex"),
);
// This host 10.0.0.2 answers V4_SYN_REWRITTEN (198.18.0.10:40000 ->
// 10.0.0.2:8080) with "port unreachable", quoting 28 bytes; translated, it
// is 198.18.0.10's about V4_SYN's first 28 bytes.
const V4_UNREACH_RW28 = fromHex(
  "4500003843210000400167860a000002c612000a" + "03033d2600000000" + Buffer.from(V4_SYN_REWRITTEN.subarray(0, 28)).toString("hex"),
);
const V4_UNREACH28 = fromHex(
  "450000384321000040016786c612000a0a000002" + "03035c6600000000" + Buffer.from(V4_SYN.subarray(0, 28)).toString("hex"),
);
// The same in IPv6: TCP SYN fd00::2:40000 -> fd00::10:443, rewritten
// fd00::10:40000 -> fd00::2:8080; the error quotes 48 bytes.
const V6_SYN = fromHex(
  "6000000000140640fd000000000000000000000000000002fd000000000000000000000000000010" +
    "9c4001bb01020304000000005002ffff13ce0000",
);
const V6_SYN_REWRITTEN = fromHex(
  "6000000000140640fd000000000000000000000000000010fd000000000000000000000000000002" +
    "9c401f9001020304000000005002fffff5f80000",
);
const V6_UNREACH_RW48 = fromHex(
  "6000000000383a40fd000000000000000000000000000002fd000000000000000000000000000010" + "0104e43600000000" +
    Buffer.from(V6_SYN_REWRITTEN.subarray(0, 48)).toString("hex"),
);
const V6_UNREACH48 = fromHex(
  "6000000000383a40fd000000000000000000000000000010fd000000000000000000000000000002" + "0104020c00000000" +
    Buffer.from(V6_SYN.subarray(0, 48)).toString("hex"),
);

wire("test_parse icmp: header fields, error types, the quote, checksum", () => {
  const w = wireViews();
  const p = w.put(V4_FRAG_NEEDED);
  const m = p + 20;
  assert.ok(w.call("icmp_check_len", m, 8));
  assert.not.ok(w.call("icmp_check_len", m, 7), "shorter than a header");
  assert.equal([w.call("icmp_type", m), w.call("icmp_code", m), w.call("icmp_checksum", m)], [3, 4, 0xc834]);
  assert.is(w.call("icmp_quoted", m), m + 8);
  assert.ok(w.call("icmp_is_error", m));
  assert.ok(w.call("icmp_verify_checksum", m, 48));
  assert.not.ok(w.call("icmp_verify_checksum", m, 44), "the last words left out");
  for (const [type, error] of [[0, 0], [3, 1], [4, 0], [5, 0], [8, 0], [11, 1], [12, 1], [13, 0]]) {
    const b = V4_FRAG_NEEDED.slice(20);
    b[0] = type;
    assert.is(w.call("icmp_is_error", w.put(b)), error, `ICMP type ${type}`);
  }
  // The quote: a whole IPv4 header, the rest may be cut off.
  const q = m + 8;
  assert.ok(w.call("ipv4_check_header_len", q, 40));
  assert.ok(w.call("ipv4_check_header_len", q, 20), "the header alone");
  assert.not.ok(w.call("ipv4_check_len", q, 28), "a whole packet it is not");
  assert.not.ok(w.call("ipv4_check_header_len", q, 19));
  const ihl = V4_SYN.slice();
  ihl[0] = 0x46;
  assert.not.ok(w.call("ipv4_check_header_len", w.put(ihl), 20), "IHL 6 past 20 bytes");
  ihl[0] = 0x44;
  assert.not.ok(w.call("ipv4_check_header_len", w.put(ihl), 40), "IHL 4");
  const total = V4_SYN.slice();
  total[3] = 16;
  assert.not.ok(w.call("ipv4_check_header_len", w.put(total), 40), "total length below the header");
});

wire("test_emit icmp and icmpv6: fill_checksum produces the literal bytes", () => {
  const w = wireViews();
  const b = V4_FRAG_NEEDED.slice(20);
  b[2] = 0xde;
  b[3] = 0xad;
  const m = w.put(b);
  assert.not.ok(w.call("icmp_verify_checksum", m, 48));
  w.call("icmp_fill_checksum", m, 48);
  assert.equal(Array.from(w.get(m, 48)), Array.from(V4_FRAG_NEEDED.subarray(20)));
  const p = w.put(V6_TOO_BIG);
  const m6 = p + 40;
  assert.equal([w.call("icmp_type", m6), w.call("icmp_code", m6), w.call("icmp_checksum", m6)], [2, 0, 0x8994]);
  assert.ok(w.call("icmpv6_verify_checksum", m6, p + 8, p + 24, 68));
  assert.not.ok(w.call("icmpv6_verify_checksum", m6, p + 24, p + 8, 67), "another length is another pseudo-header");
  assert.not.ok(w.call("icmp_verify_checksum", m6, 68), "ICMPv6 needs its pseudo-header");
  const c = w.put(V6_TOO_BIG.subarray(8, 24));
  w.call("ipv6_set_src_addr", p, w.put(V6_TOO_BIG.subarray(24, 40)));
  assert.not.ok(w.call("icmpv6_verify_checksum", m6, p + 8, p + 24, 68), "the addresses are summed");
  w.call("ipv6_set_src_addr", p, c);
  w.call("icmpv6_fill_checksum", m6, p + 8, p + 24, 68);
  assert.equal(Array.from(w.get(p, V6_TOO_BIG.length)), Array.from(V6_TOO_BIG));
  for (const [type, error] of [[1, 1], [2, 1], [3, 1], [4, 1], [0, 0], [5, 0], [127, 0], [128, 0], [135, 0]]) {
    const e = V6_TOO_BIG.slice(40);
    e[0] = type;
    assert.is(w.call("icmpv6_is_error", w.put(e)), error, `ICMPv6 type ${type}`);
  }
});

wire("the parser's view of an error and of its quote", () => {
  const w = wireViews();
  const p = w.put(V4_FRAG_NEEDED);
  assert.is(w.call("parse", p, V4_FRAG_NEEDED.length, 0), 4);
  assert.equal([w.call("pk_l4") - p, w.call("pk_l4_len"), w.call("pk_v6")], [20, 48, 0]);
  const q = p + 28;
  for (const len of [40, 28, 60]) {
    assert.is(w.call("parse_quoted", q, len), 0, `${len} bytes`);
    assert.equal(
      ["q_v6", "q_proto", "q_ip_len", "q_sport", "q_dport", "q_l4_len"].map((n) => w.call(n)),
      [0, 6, Math.min(len, 40), 40000, 80, Math.min(len, 40) - 20], `${len} bytes: trailing bytes past the total length are not the packet's`,
    );
    assert.equal([w.call("q_src") - q, w.call("q_dst") - q, w.call("q_l4") - q], [12, 16, 20]);
  }
  assert.is(w.call("parse_quoted", q, 27), 1, "7 bytes of TCP: no room for what an error must quote");
  assert.is(w.call("parse_quoted", q, 19), 1, "a header cut short");
  assert.is(w.call("parse_quoted", q, 0), 1);
  const frag = V4_SYN.slice();
  frag[7] = 1;
  assert.is(w.call("parse_quoted", w.put(frag), 28), 2, "a fragment");
  const icmp = V4_FRAG_NEEDED.slice();
  assert.is(w.call("parse_quoted", w.put(icmp), 28), 3, "ICMP in a quote is other");
  const p6 = w.put(V6_TOO_BIG);
  assert.is(w.call("parse", p6, V6_TOO_BIG.length, 0), 4);
  assert.equal([w.call("pk_l4") - p6, w.call("pk_l4_len"), w.call("pk_v6")], [40, 68, 1]);
  const q6 = p6 + 48;
  assert.is(w.call("parse_quoted", q6, 56), 0, "hop-by-hop walked within the quote");
  assert.equal(["q_v6", "q_proto", "q_ip_len", "q_sport", "q_dport", "q_l4_len"].map((n) => w.call(n)), [1, 17, 56, 5353, 53, 8]);
  assert.is(w.call("parse_quoted", q6, 55), 1, "7 bytes of UDP");
  assert.is(w.call("parse_quoted", q6, 47), 1, "the hop-by-hop header cut short");
  assert.is(w.call("parse_quoted", q6, 39), 1);
});

wire("the parser then nat.ts: literal errors translated to the literal results", () => {
  for (const [what, from, to, ipLen] of [["IPv4", V4_UNREACH_RW28, V4_UNREACH28, 20], ["IPv6", V6_UNREACH_RW48, V6_UNREACH48, 40]] as const) {
    const w = wireViews();
    const p = w.put(from);
    assert.is(w.call("parse", p, from.length, 1), 4, what);
    assert.is(w.call("parse_quoted", p + ipLen + 8, from.length - ipLen - 8), 0, what);
    const n = ipLen === 20 ? 4 : 16;
    const [s, d] = ipLen === 20 ? [12, 16] : [8, 24];
    // The error's ends swap; the quote becomes C:40000 -> D:80 (or :443).
    const c = w.put(from.subarray(s, s + n));
    const dd = w.put(from.subarray(d, d + n));
    w.call("translate_icmp_error", dd, c, c, 40000, dd, ipLen === 20 ? 80 : 443);
    assert.equal(Array.from(w.get(p, from.length)), Array.from(to), what);
  }
});

// A real SYN captured from Linux (curl to 198.18.0.10:80), options included.
const REAL_SYN = fromHex(
  "4500003c1c4640004006" + "0000" + "0a000002c612000a" +
    "9c400050a1b2c3d400000000a002faf0" + "0000" + "0000020405b40402080a0001e2400000000001030307",
);

wire("IPv4 TCP SYN with options (captured bytes): redirected, options untouched", () => {
  const pkt = fixChecksums(REAL_SYN.slice());
  assert.ok(checksumsValid(pkt));
  const spec = read(pkt);
  const e = engine();
  e.owner(O_CONNECT, "tcp", spec.src, spec.dst, 500, "/usr/bin/curl");
  const [out] = e.process([{ data: pkt }]);
  assert.is(out.verdict, V_MODIFIED);
  const r = read(out.data);
  assert.equal(r.src, { addr: "198.18.0.10", port: 40000 });
  assert.equal(r.dst, { addr: "10.0.0.2", port: 8080 });
  assert.ok(checksumsValid(out.data));
  assert.equal(Array.from(out.data.subarray(40)), Array.from(pkt.subarray(40)));
});

wire("IPv4 with header options", () => {
  const e = engine();
  const out = redirectOne(e, { proto: "tcp", src: C, dst: D, flags: "S", options: Uint8Array.from([1, 1, 1, 0]) });
  assert.is(out.verdict, V_MODIFIED);
  assert.is(out.data[0] & 15, 6);
  assert.ok(checksumsValid(out.data));
  assert.equal(read(out.data).dst, { addr: C.addr, port: 8080 });
});

wire("IPv4 fragments pass untouched and are counted", () => {
  const e = engine();
  const p = build({ proto: "udp", src: C, dst: D, payload: "x" });
  p[6] = 0x20; // more fragments
  const q = build({ proto: "udp", src: C, dst: D, payload: "x" });
  q[7] = 0x10; // offset != 0
  const out = e.process([{ data: p }, { data: q }]);
  assert.ok(out.every((o) => o.verdict === V_PASS));
  assert.is(e.stats().fragments, 2);
});

wire("UDP v4 with checksum 0 keeps it 0; v6 UDP checksum is always set", () => {
  const e = engine();
  const out = redirectOne(e, { proto: "udp", src: C, dst: { addr: D.addr, port: 53 }, payload: "q", noUdpChecksum: true });
  assert.is(out.verdict, V_MODIFIED);
  assert.is(out.data[26], 0);
  assert.is(out.data[27], 0);
  const out6 = redirectOne(e, { proto: "udp", src: C6, dst: { addr: D6.addr, port: 53 }, payload: "q" });
  assert.is(out6.verdict, V_MODIFIED);
  assert.ok(checksumsValid(out6.data));
});

for (const ext of [
  { name: "hop-by-hop", ext: [{ type: 0 as const }] },
  { name: "routing", ext: [{ type: 43 as const, len: 2 }] },
  { name: "destination options", ext: [{ type: 60 as const, len: 1 }] },
  { name: "atomic fragment header", ext: [{ type: 44 as const }] },
  { name: "authentication header", ext: [{ type: 51 as const, len: 4 }] },
  { name: "all of them chained", ext: [{ type: 0 as const }, { type: 60 as const }, { type: 43 as const }, { type: 44 as const }, { type: 60 as const, len: 3 }] },
]) {
  wire(`IPv6 ${ext.name}: walked with the right lengths and redirected`, () => {
    const e = engine();
    const spec: PacketSpec = { proto: "tcp", src: C6, dst: D6, flags: "S", ext: ext.ext };
    const pkt = build(spec);
    assert.ok(checksumsValid(pkt));
    const out = redirectOne(e, spec);
    assert.is(out.verdict, V_MODIFIED, ext.name);
    const r = read(out.data);
    assert.equal(r.src, { addr: D6.addr, port: C6.port });
    assert.equal(r.dst, { addr: C6.addr, port: 8080 });
    assert.ok(checksumsValid(out.data));
    // Extension headers are byte-for-byte the same.
    assert.equal(Array.from(out.data.subarray(40, r.l4Offset)), Array.from(pkt.subarray(40, r.l4Offset)));
  });
}

wire("IPv6 fragments (offset or M flag) pass and are counted", () => {
  const e = engine();
  const a = build({ proto: "udp", src: C6, dst: D6, payload: "x", ext: [{ type: 44, more: true }] });
  const b = build({ proto: "udp", src: C6, dst: D6, payload: "x", ext: [{ type: 44, fragOffset: 100 }] });
  const out = e.process([{ data: a }, { data: b }]);
  assert.ok(out.every((o) => o.verdict === V_PASS));
  assert.is(e.stats().fragments, 2);
});

wire("impossible lengths: passed unchanged and counted as malformed", () => {
  const e = engine(`{"intercept":"!nothing"}`);
  const good = build({ proto: "tcp", src: C, dst: D, flags: "S" });
  const good6 = build({ proto: "udp", src: C6, dst: D6, payload: "abc", ext: [{ type: 0 }] });
  const cases: Uint8Array[] = [
    new Uint8Array(0),
    good.subarray(0, 19), // shorter than an IPv4 header
    good.subarray(0, 30), // total length says more
    (() => { const p = good.slice(); p[0] = 0x44; return p; })(), // IHL 4
    (() => { const p = good.slice(); p[0] = 0x4f; return p; })(), // IHL 15 > total
    (() => { const p = good.slice(); p[2] = 0; p[3] = 10; return p; })(), // total < IHL
    (() => { const p = good.slice(); p[32] = 0x40; return p; })(), // TCP data offset 4
    (() => { const p = good.slice(); p[32] = 0xf0; return p; })(), // TCP data offset 60 > segment
    good6.subarray(0, 39),
    good6.subarray(0, 50), // payload length says more
    (() => { const p = good6.slice(); p[41] = 200; return p; })(), // hop-by-hop length past the end
    (() => { const p = good6.slice(); p[52] = 0; p[53] = 4; return p; })(), // UDP length < 8
    (() => { const p = good6.slice(); p[52] = 0; p[53] = 200; return p; })(), // UDP length > segment
  ];
  const out = e.process(cases.map((data) => ({ data })));
  out.forEach((o, i) => {
    assert.is(o.verdict, V_PASS, `case ${i}`);
    assert.equal(Array.from(o.data), Array.from(cases[i]), `case ${i} unchanged`);
  });
  assert.is(e.stats().malformed, cases.length);
});

wire("not TCP or UDP: passed, not malformed", () => {
  const e = engine(`{"intercept":"!nothing"}`);
  const icmp = build({ proto: "udp", src: C, dst: D, payload: "ping" });
  icmp[9] = 1;
  const arp = Uint8Array.from([0x00, 0x01, 0x08, 0x00]);
  const out = e.process([{ data: icmp }, { data: arp }]);
  assert.ok(out.every((o) => o.verdict === V_PASS));
  assert.is(e.stats().malformed, 0);
});

wire("partial (offload) checksums are computed in full on rewrite", () => {
  const e = engine();
  const spec: PacketSpec = { proto: "tcp", src: C, dst: D, flags: "S", payload: "hello", partialChecksum: true };
  assert.not.ok(checksumsValid(build(spec)));
  const out = redirectOne(e, spec, true);
  assert.is(out.verdict, V_MODIFIED);
  assert.ok(checksumsValid(out.data));
  const spec6: PacketSpec = { proto: "udp", src: C6, dst: D6, payload: "hello6", partialChecksum: true };
  const out6 = redirectOne(e, spec6, true);
  assert.ok(checksumsValid(out6.data));
});

wire("a packet with an unknown owner is held, not rewritten", () => {
  const e = engine();
  const [out] = e.process([{ data: build({ proto: "tcp", src: C, dst: D, flags: "S" }) }]);
  assert.is(out.verdict, V_HELD);
});

wire.run();
