// Packet views: real packet bytes through the engine's parser, checked by
// what the engine does with them (redirect, pass, count as malformed or
// fragment). Each protocol: parse, emit (rewrite), impossible lengths.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { PacketEngine, V_PASS, V_MODIFIED, V_HELD, O_CONNECT } from "./harness.ts";
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
