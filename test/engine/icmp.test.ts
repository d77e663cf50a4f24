// ICMP and ICMPv6 errors through the engine: an error quoting a packet the
// engine rewrote reaches the socket that sent that packet, quoting it as
// that socket sent it (byte for byte, checked against the packet itself),
// with every checksum right (checked by packets.ts's own code); everything
// else passes unchanged, and the malformed is counted, never a trap.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { PacketEngine, V_PASS, V_MODIFIED, O_CONNECT, O_LISTEN, O_BIND, type OutPacket } from "./harness.ts";
import {
  build, buildIcmp, checksumsValid, hex, icmpChecksumsValid, read, readIcmp, withTtl, type Endpoint, type PacketSpec,
} from "./packets.ts";

const SELF = 1000;
const PID = 500;
const APP = 8080;

interface Net {
  C: Endpoint; // this host: an intercepted client
  D: Endpoint; // where it connects
  R: Endpoint; // a remote client (inbound)
  L: Endpoint; // an intercepted listener (this host)
  X: string;   // a router on the way
}

const NET4: Net = {
  C: { addr: "10.0.0.2", port: 40000 },
  D: { addr: "198.18.0.10", port: 53 },
  R: { addr: "198.18.7.7", port: 51000 },
  L: { addr: "10.0.0.2", port: 9000 },
  X: "198.18.0.254",
};
const NET6: Net = {
  C: { addr: "fd00::2", port: 40000 },
  D: { addr: "fd00:198:18::10", port: 53 },
  R: { addr: "fd00:198:18::77", port: 51000 },
  L: { addr: "fd00::2", port: 9000 },
  X: "fd00:198:18::fe",
};

// Error types and codes.
const UNREACH = { 4: 3, 6: 1 } as const;
const PORT_UNREACH = { 4: 3, 6: 4 } as const;
const TIME_EXCEEDED = { 4: 11, 6: 3 } as const;

function engine(json: object = { intercept_pids: [PID] }): PacketEngine {
  const e = new PacketEngine(SELF);
  const r = e.config(JSON.stringify(json));
  assert.is(r.rc, 0, r.error);
  e.start(0, APP);
  return e;
}

function one(e: PacketEngine, data: Uint8Array, outbound: boolean, loopback = false): OutPacket {
  return e.process([{ data, outbound, loopback }])[0];
}

/** Runs a TCP/UDP packet through the engine and expects it rewritten. */
function rewritten(e: PacketEngine, spec: PacketSpec, outbound: boolean, loopback = false): Uint8Array {
  const o = one(e, build(spec), outbound, loopback);
  assert.is(o.verdict, V_MODIFIED, "the flow's packet is rewritten");
  return o.data;
}

/** The first n bytes of a packet, as an error quotes it (all of it when n is past its end). */
function cut(p: Uint8Array, n: number): Uint8Array {
  return p.slice(0, Math.min(n, p.length));
}

/**
 * Expects the error translated: from src to dst, the same type, code and
 * word, quoting `quoted` exactly, every checksum right, sent that way.
 */
function expectTranslated(o: OutPacket, src: string, dst: string, type: number, code: number, rest: number,
  quoted: Uint8Array, outbound: boolean, what: string): void {
  assert.is(o.verdict, V_MODIFIED, what + ": verdict");
  const m = readIcmp(o.data);
  assert.is(m.src, src, what + ": source");
  assert.is(m.dst, dst, what + ": destination");
  assert.equal([m.type, m.code, m.rest], [type, code, rest], what + ": type, code and the word after the checksum");
  assert.is(hex(m.body), hex(quoted), what + ": the quoted packet is what its sender sent");
  assert.ok(icmpChecksumsValid(o.data), what + ": IPv4 header and ICMP checksums");
  assert.is(o.outbound, outbound, what + ": direction");
  assert.ok(o.csumValid, what + ": checksum flag");
}

function expectPassed(o: OutPacket, sent: Uint8Array, what: string): void {
  assert.is(o.verdict, V_PASS, what + ": verdict");
  assert.is(hex(o.data), hex(sent), what + ": unchanged");
}

for (const [fam, N] of [[4, NET4], [6, NET6]] as const) {
  const t = suite(`icmp IPv${fam}`);
  const P: Endpoint = { addr: N.C.addr, port: APP };
  const Dc: Endpoint = { addr: N.D.addr, port: N.C.port }; // the proxy's peer, outbound
  const v6 = fam === 6;

  t(`inbound TCP: a router's ${v6 ? "packet too big" : "fragmentation needed"} about the proxy's segment reaches the proxy`, () => {
    // The remote R:r connects to the listener C:L; the proxy answers from
    // C:P to R:r (r' = r), rewritten to C:L -> R:r and sent on.
    const e = engine();
    e.owner(O_LISTEN, "tcp", N.L, null, PID, "/usr/bin/server");
    rewritten(e, { proto: "tcp", src: N.R, dst: N.L, flags: "S" }, false);
    const payload = new Uint8Array(1400).map((_, i) => i * 7);
    const sent = build({ proto: "tcp", src: P, dst: N.R, flags: "PA", payload, seq: 77777, ack: 1 });
    const onWire = one(e, sent, true).data;
    assert.equal(read(onWire).src, N.L);
    // A router with a smaller MTU on the way quotes as much as fits.
    const quote = v6 ? cut(onWire, 1280 - 48) : withTtl(cut(onWire, 576 - 28), 1);
    const err = buildIcmp({ src: N.X, dst: N.C.addr, type: v6 ? 2 : UNREACH[4], code: v6 ? 0 : 4, rest: 1280, body: quote });
    const o = one(e, err, false);
    const expected = v6 ? cut(sent, 1280 - 48) : withTtl(cut(sent, 576 - 28), 1);
    expectTranslated(o, N.X, N.C.addr, v6 ? 2 : 3, v6 ? 0 : 4, 1280, expected, false, "to the proxy");
    // The quoted TCP header names the proxy's socket, its checksum as sent.
    const q = readIcmp(o.data).body;
    assert.equal([read(withLength(q)).src, read(withLength(q)).dst], [P, N.R]);
    assert.is(e.stats().rewritten, 3);
    assert.is(e.stats().malformed, 0);
  });

  t("inbound TCP: the remote's own port unreachable, quoting only 8 bytes of TCP, reaches the proxy", () => {
    const e = engine();
    e.owner(O_LISTEN, "tcp", N.L, null, PID, "/usr/bin/server");
    rewritten(e, { proto: "tcp", src: N.R, dst: N.L, flags: "S" }, false);
    const sent = build({ proto: "tcp", src: P, dst: N.R, flags: "SA" });
    const onWire = one(e, sent, true).data;
    const ipLen = v6 ? 40 : 20;
    const err = buildIcmp({ src: N.R.addr, dst: N.C.addr, type: UNREACH[fam], code: PORT_UNREACH[fam], body: cut(onWire, ipLen + 8) });
    const o = one(e, err, false);
    // The TCP checksum is not quoted: only the ports change.
    expectTranslated(o, N.R.addr, N.C.addr, UNREACH[fam], PORT_UNREACH[fam], 0, cut(sent, ipLen + 8), false, "to the proxy");
  });

  t("outbound UDP, the proxy not listening: this host's port unreachable reaches the client as if from D", () => {
    const e = engine();
    e.owner(O_CONNECT, "udp", N.C, N.D, PID, "/usr/bin/dig");
    const sent = build({ proto: "udp", src: N.C, dst: N.D, payload: "query example.com" });
    const toProxy = one(e, sent, true).data;
    assert.equal([read(toProxy).src, read(toProxy).dst], [Dc, P]);
    // Nothing listens on the app port: the stack answers C -> D, quoting
    // what it received.
    const err = buildIcmp({ src: N.C.addr, dst: N.D.addr, type: UNREACH[fam], code: PORT_UNREACH[fam], body: toProxy });
    const o = one(e, err, true);
    expectTranslated(o, N.D.addr, N.C.addr, UNREACH[fam], PORT_UNREACH[fam], 0, sent, false, "to the client, inbound");
    assert.ok(checksumsValid(readIcmp(o.data).body), "the quoted datagram's checksums, whole");
  });

  t("outbound UDP, the client gone: this host's port unreachable reaches the proxy as if from its peer", () => {
    const e = engine();
    e.owner(O_CONNECT, "udp", N.C, N.D, PID, "/usr/bin/dig");
    rewritten(e, { proto: "udp", src: N.C, dst: N.D, payload: "query" }, true);
    const sent = build({ proto: "udp", src: P, dst: Dc, payload: "answer" });
    const toClient = one(e, sent, true).data;
    assert.equal([read(toClient).src, read(toClient).dst], [N.D, N.C]);
    const err = buildIcmp({ src: N.C.addr, dst: N.D.addr, type: UNREACH[fam], code: PORT_UNREACH[fam], body: toClient });
    expectTranslated(one(e, err, true), N.D.addr, N.C.addr, UNREACH[fam], PORT_UNREACH[fam], 0, sent, false, "to the proxy");
  });

  t("inbound UDP, the proxy not listening: this host's port unreachable reaches the remote about its own datagram", () => {
    const e = engine();
    e.owner(O_BIND, "udp", N.L, null, PID, "/usr/bin/server");
    const sent = build({ proto: "udp", src: N.R, dst: N.L, payload: "hello", noUdpChecksum: !v6 });
    const toProxy = one(e, sent, false).data;
    assert.equal(read(toProxy).dst, P);
    const err = buildIcmp({ src: N.C.addr, dst: N.R.addr, type: UNREACH[fam], code: PORT_UNREACH[fam], body: toProxy });
    expectTranslated(one(e, err, true), N.C.addr, N.R.addr, UNREACH[fam], PORT_UNREACH[fam], 0, sent, true,
      "to the remote, outbound");
  });

  t("loopback: an error about a rewritten packet goes back outbound", () => {
    const lo = v6 ? "::1" : "127.0.0.1";
    const C: Endpoint = { addr: lo, port: 41000 };
    const S: Endpoint = { addr: lo, port: 6000 };
    const e = engine({ intercept_pids: [PID], bypass: [] });
    e.owner(O_CONNECT, "udp", C, S, PID, "/usr/bin/dig");
    const sent = build({ proto: "udp", src: C, dst: S, payload: "q" });
    const toProxy = one(e, sent, true, true).data;
    const err = buildIcmp({ src: lo, dst: lo, type: UNREACH[fam], code: PORT_UNREACH[fam], body: toProxy });
    expectTranslated(one(e, err, true, true), lo, lo, UNREACH[fam], PORT_UNREACH[fam], 0, sent, true, "loopback");
  });

  t("errors about packets that went out as they were sent pass unchanged", () => {
    const e = engine();
    e.owner(O_CONNECT, "udp", N.C, N.D, PID, "/usr/bin/dig");
    const client = build({ proto: "udp", src: N.C, dst: N.D, payload: "query" });
    const toProxy = one(e, client, true).data;
    // Another process's flow, passed.
    const other: Endpoint = { addr: N.C.addr, port: 40001 };
    e.owner(O_CONNECT, "udp", other, N.D, 501, "/usr/bin/other");
    const passed = build({ proto: "udp", src: other, dst: N.D, payload: "q" });
    assert.is(one(e, passed, true).verdict, V_PASS);
    const errs: Array<[string, Uint8Array, boolean]> = [
      ["a flow the engine never saw", buildIcmp({ src: N.X, dst: N.C.addr, type: TIME_EXCEEDED[fam], code: 0,
        body: build({ proto: "tcp", src: N.C, dst: { addr: N.D.addr, port: 443 }, flags: "S" }) }), false],
      ["a flow passed", buildIcmp({ src: N.X, dst: N.C.addr, type: UNREACH[fam], code: 1, body: passed }), false],
      // The client's datagram as it left it never reaches the network.
      ["the client's own datagram", buildIcmp({ src: N.X, dst: N.C.addr, type: UNREACH[fam], code: 1, body: client }), false],
      // Nor does the proxy's answer as it leaves the proxy.
      ["the proxy's answer as sent", buildIcmp({ src: N.X, dst: N.C.addr, type: UNREACH[fam], code: 1,
        body: build({ proto: "udp", src: P, dst: Dc, payload: "answer" }) }), false],
      // Outbound, to someone other than the quoted packet's sender.
      ["sent to another than the sender", buildIcmp({ src: N.C.addr, dst: N.X, type: UNREACH[fam], code: PORT_UNREACH[fam],
        body: toProxy }), true],
      ["an echo request", buildIcmp({ src: N.C.addr, dst: N.D.addr, type: v6 ? 128 : 8, code: 0, rest: 0x10001,
        body: toProxy }), true],
      ["a redirect or neighbour solicitation", buildIcmp({ src: N.X, dst: N.C.addr, type: v6 ? 135 : 5, code: 0,
        body: toProxy }), false],
      ["an error about an error", buildIcmp({ src: N.C.addr, dst: N.D.addr, type: UNREACH[fam], code: 3,
        body: buildIcmp({ src: N.D.addr, dst: N.C.addr, type: v6 ? 128 : 8, code: 0, body: new Uint8Array(8) }) }), true],
    ];
    const before = e.stats();
    for (const [what, err, outbound] of errs) expectPassed(one(e, err, outbound), err, what);
    const s = e.stats();
    assert.is(s.passed - before.passed, errs.length);
    assert.is(s.rewritten, before.rewritten);
    assert.is(s.malformed, 0);
  });

  t("truncated and malformed errors pass unchanged, counted; none traps", () => {
    const e = engine();
    e.owner(O_CONNECT, "udp", N.C, N.D, PID, "/usr/bin/dig");
    const toProxy = one(e, build({ proto: "udp", src: N.C, dst: N.D, payload: "query" }), true).data;
    const ipLen = v6 ? 40 : 20;
    const err = (body: Uint8Array, type: number = UNREACH[fam]) =>
      buildIcmp({ src: N.C.addr, dst: N.D.addr, type, code: PORT_UNREACH[fam], body });
    const good = err(toProxy);
    const icmpAt = ipLen;
    const badSum = good.slice();
    badSum[icmpAt + 8 + ipLen + 7] ^= 0x01; // a quoted byte changed, the checksum not
    // 4 bytes of ICMP: the IP header's lengths say so.
    const shortHeader = good.slice(0, ipLen + 4);
    if (v6) new DataView(shortHeader.buffer).setUint16(4, 4);
    else new DataView(shortHeader.buffer).setUint16(2, shortHeader.length);
    const longIhl = toProxy.slice();
    if (!v6) longIhl[0] = 0x4f; // 60-byte header, past the 28 bytes quoted below
    // Destination options before UDP: its length byte is the UDP source
    // port's low byte (40000 & 0xff = 64: 520 bytes), past the quote.
    const extPast = toProxy.slice();
    if (v6) extPast[6] = 60;
    const mixed = v6
      ? build({ proto: "udp", src: NET4.D, dst: NET4.C, payload: "x" })
      : build({ proto: "udp", src: NET6.D, dst: NET6.C, payload: "x" });
    const cases: Array<[string, Uint8Array]> = [
      ["an ICMP header cut short", shortHeader],
      ["a wrong checksum", badSum],
      ["a quoted IP header cut short", err(cut(toProxy, ipLen - 4))],
      ["the quote ends inside the UDP header", err(cut(toProxy, ipLen + 6))],
      [v6 ? "a quoted extension header past the quote" : "a quoted IHL past the quote",
        err(cut(v6 ? extPast : longIhl, ipLen + 8))],
      ["a quote of the other IP version", err(mixed)],
      ["an empty quote", err(new Uint8Array(0))],
    ];
    const before = e.stats();
    for (const [what, p] of cases) expectPassed(one(e, p, true), p, what);
    const s = e.stats();
    assert.is(s.malformed - before.malformed, cases.length, "each counted as malformed");
    assert.is(s.rewritten, before.rewritten);
    // A quoted non-first fragment has no ports: passed, not malformed.
    const frag = toProxy.slice();
    if (v6) {
      // Fragment header (offset 8) before the UDP header.
      const f = new Uint8Array(frag.length + 8);
      f.set(frag.subarray(0, 40));
      f[6] = 44;
      f.set([17, 0, 0, 8 << 3, 0, 0, 0, 1], 40);
      f.set(frag.subarray(40), 48);
      new DataView(f.buffer).setUint16(4, f.length - 40);
      expectPassed(one(e, err(f), true), err(f), "a quoted fragment");
    } else {
      frag[6] = 0x00;
      frag[7] = 0x10;
      expectPassed(one(e, err(frag), true), err(frag), "a quoted fragment");
    }
    assert.is(e.stats().malformed - before.malformed, cases.length);
  });

  t.run();
}

/** A quoted packet cut off, with its length fields made to fit what is there (for read()). */
function withLength(q: Uint8Array): Uint8Array {
  const p = q.slice();
  const dv = new DataView(p.buffer);
  if (p[0] >> 4 === 6) dv.setUint16(4, p.length - 40);
  else dv.setUint16(2, p.length);
  return p;
}

const misc = suite("icmp misc");

misc("1000 random mutations of a translated error's input: no trap, every output's checksums right or the input unchanged", () => {
  const e = engine();
  const C = NET4.C;
  const D = NET4.D;
  e.owner(O_CONNECT, "udp", C, D, PID, "/usr/bin/dig");
  const toProxy = one(e, build({ proto: "udp", src: C, dst: D, payload: "query" }), true).data;
  const good = buildIcmp({ src: C.addr, dst: D.addr, type: 3, code: 3, body: toProxy });
  let s = 12345;
  const r = () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 8);
  let translated = 0;
  for (let i = 0; i < 1000; i++) {
    let p = good.slice();
    for (let k = r() % 4; k >= 0; k--) p[r() % p.length] ^= 1 << (r() % 8);
    if (r() % 3 === 0) p = p.slice(0, r() % (p.length + 1));
    const o = one(e, p, true);
    if (o.verdict === V_MODIFIED) {
      translated++;
      assert.ok(icmpChecksumsValid(o.data), `case ${i}: checksums of a translated error`);
    } else {
      assert.is(hex(o.data), hex(p), `case ${i}: passed unchanged`);
    }
  }
  assert.ok(translated > 0);
});

misc.run();
