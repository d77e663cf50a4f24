// Hostile input at volume: a million random and mutated packets (TCP, UDP
// and ICMP errors; bit flips, truncations, bogus lengths) never trap and keep
// the counters consistent; a million-SYN flood against a full table leaves
// memory flat and counts every refused flow.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { PacketEngine, O_CLOSE, O_CONNECT, O_LISTEN, O_UNKNOWN } from "./harness.ts";
import { build, buildIcmp, type PacketSpec } from "./packets.ts";
import { encode, size } from "./records.ts";

const SELF = 1000;

/** A small deterministic PRNG (xorshift32), so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

const corpus: Uint8Array[] = (() => {
  const specs: PacketSpec[] = [];
  const ends4 = [["10.0.0.2", "198.18.0.10"], ["10.0.0.3", "198.19.1.1"]];
  const ends6 = [["fd00::2", "fd00:198:18::10"], ["fd00::3", "fd00:198:18::99"]];
  for (const [a, b] of [...ends4, ...ends6]) {
    for (const flags of ["S", "SA", "A", "PA", "FA", "RA"]) {
      specs.push({ proto: "tcp", src: { addr: a, port: 40000 }, dst: { addr: b, port: 80 }, flags, payload: "GET /" });
      specs.push({ proto: "tcp", src: { addr: b, port: 80 }, dst: { addr: a, port: 40000 }, flags, payload: "200" });
    }
    specs.push({ proto: "udp", src: { addr: a, port: 5353 }, dst: { addr: b, port: 53 }, payload: "query" });
  }
  specs.push({ proto: "tcp", src: { addr: "fd00::2", port: 1 }, dst: { addr: "fd00::9", port: 2 }, flags: "S", ext: [{ type: 0 }, { type: 60, len: 2 }, { type: 44 }] });
  specs.push({ proto: "tcp", src: { addr: "10.0.0.2", port: 1 }, dst: { addr: "198.18.0.1", port: 2 }, flags: "S", options: Uint8Array.from([1, 1, 1, 0, 1, 1, 1, 0]) });
  const pkts = specs.map(build);
  // ICMP errors: about packets as the engine rewrites them, and as sent.
  for (const [a, b] of [...ends4, ...ends6]) {
    const v6 = a.includes(":");
    const quoted = [
      build({ proto: "tcp", src: { addr: b, port: 40000 }, dst: { addr: a, port: 8080 }, flags: "S" }),
      build({ proto: "tcp", src: { addr: b, port: 80 }, dst: { addr: a, port: 40000 }, flags: "SA" }),
      build({ proto: "udp", src: { addr: b, port: 5353 }, dst: { addr: a, port: 8080 }, payload: "query" }),
      build({ proto: "tcp", src: { addr: a, port: 40000 }, dst: { addr: b, port: 80 }, flags: "PA", payload: "GET /" }),
    ];
    for (const q of quoted) {
      pkts.push(buildIcmp({ src: a, dst: b, type: v6 ? 1 : 3, code: v6 ? 4 : 3, body: q }));
      pkts.push(buildIcmp({ src: b, dst: a, type: v6 ? 2 : 3, code: v6 ? 0 : 4, rest: 1280, body: q.slice(0, v6 ? 48 : 28) }));
    }
  }
  return pkts;
})();

function mutate(r: () => number, src: Uint8Array): Uint8Array {
  const kind = r() % 6;
  if (kind === 0) {
    // random bytes, random length
    const n = r() % 120;
    const p = new Uint8Array(n);
    for (let i = 0; i < n; i++) p[i] = r() & 0xff;
    if (n > 0 && r() % 2) p[0] = (r() % 2 ? 0x45 : 0x60) | (p[0] & 0x0f);
    return p;
  }
  let p = src.slice();
  if (kind === 1 || kind === 5) {
    // bit flips
    const flips = 1 + (r() % 8);
    for (let i = 0; i < flips; i++) {
      const at = r() % p.length;
      p[at] ^= 1 << (r() % 8);
    }
  }
  if (kind === 2 || kind === 5) {
    // truncation
    p = p.slice(0, r() % (p.length + 1));
  }
  if (kind === 3) {
    // bogus length fields: IPv4 total length / IHL, IPv6 payload length, TCP offset, UDP length
    const fields = [2, 3, 0, 4, 5, 20 + 12, 40 + 12, 24, 25, 44, 45];
    const at = fields[r() % fields.length];
    if (at < p.length) p[at] = r() & 0xff;
  }
  if (kind === 4) {
    // extension header chain garbage
    if (p.length > 48) {
      p[6] = [0, 43, 44, 51, 60, 59, 50][r() % 7];
      p[41] = r() & 0xff;
    }
  }
  return p;
}

/** Sends n SYNs from n different sources (10.x.y.z:1) to 198.18.0.10:443. */
function synFlood(e: PacketEngine, n: number, now: number): void {
  const syn = build({ proto: "tcp", src: { addr: "10.9.0.2", port: 1 }, dst: { addr: "198.18.0.10", port: 443 }, flags: "S" });
  const p = e.p;
  for (let done = 0; done < n; done += 256) {
    const count = Math.min(256, n - done);
    const meta = p.eng_batch_meta();
    const data = p.eng_batch_data();
    const mem = new Uint8Array(e.x.memory.buffer);
    const dv = new DataView(e.x.memory.buffer);
    for (let i = 0; i < count; i++) {
      const k = done + i;
      const off = i * 64;
      mem.set(syn, data + off);
      mem[data + off + 13] = (k >> 16) & 0xff;
      mem[data + off + 14] = (k >> 8) & 0xff;
      mem[data + off + 15] = k & 0xff;
      encode("meta", dv, meta + i * size("meta"), { data: off, len: syn.length, flags: 1 });
    }
    p.eng_process(count, now);
  }
}

const fuzz = suite("fuzz");

fuzz("1,000,000 random and mutated packets: no trap, counters consistent", () => {
  const e = new PacketEngine(SELF);
  assert.is(e.config(JSON.stringify({ intercept: "!nothing", bypass: [], max_flows: 4096, max_held_packets: 256 })).rc, 0);
  e.start(0, 8080);
  const r = rng(12345);
  const x = e.x;
  const p = e.p;
  const meta = p.eng_batch_meta();
  const data = p.eng_batch_data();
  const TOTAL = 1_000_000;
  const BATCH = 256;
  let released = 0;
  let now = 0;
  const excluded: Array<{ proto: "tcp" | "udp"; local: { addr: string; port: number } }> = [];
  for (let done = 0; done < TOTAL; done += BATCH) {
    const n = Math.min(BATCH, TOTAL - done);
    const mem = new Uint8Array(x.memory.buffer);
    const dv = new DataView(x.memory.buffer);
    let off = 0;
    for (let i = 0; i < n; i++) {
      const pk = mutate(r, corpus[r() % corpus.length]);
      mem.set(pk, data + off);
      encode("meta", dv, meta + i * size("meta"), { cookieLo: i, data: off, len: pk.length, flags: r() & 7, ifIdx: 1 });
      off += (pk.length + 7) & ~7;
    }
    now += 10;
    assert.is(p.eng_process(n, now), n);
    // Owners arrive for some of what was asked, others are unknown.
    for (const q of e.queries()) {
      const k = r() % 3;
      if (k === 0) e.owner(O_CONNECT, q.proto === 6 ? "tcp" : "udp", q.local, q.remote, 500 + (r() % 3), "/bin/x", now);
      else if (k === 1) e.owner(O_UNKNOWN, q.proto === 6 ? "tcp" : "udp", q.local, q.remote, 0, "", now);
      else if (q.inbound) e.owner(O_LISTEN, q.proto === 6 ? "tcp" : "udp", q.local, null, 7, "/bin/l", now);
      else {
        // Or the port becomes an excluded socket of the host's (the table may fill: -1).
        const any = r() % 2 === 0 ? { addr: q.v6 ? "::" : "0.0.0.0", port: q.local.port } : q.local;
        const rc = e.exclude(q.proto === 6 ? "tcp" : "udp", any, q.v6 && any !== q.local && r() % 2 === 0);
        assert.ok(rc === 0 || rc === -1 || (rc === -2 && q.local.port === 0), `eng_exclude ${rc}`);
        excluded.push({ proto: q.proto === 6 ? "tcp" : "udp", local: q.local });
      }
    }
    // Some excluded sockets close.
    while (excluded.length > 0 && r() % 2 === 0) {
      const x = excluded.splice(r() % excluded.length, 1)[0];
      e.owner(O_CLOSE, x.proto, x.local, null, SELF, "", now);
    }
    if (done % (BATCH * 16) === 0) p.eng_tick(now);
    released += p.eng_take_released();
  }
  p.eng_tick(now + 100_000);
  released += p.eng_take_released();
  const s = e.stats();
  assert.is(s.packets, TOTAL);
  // Every packet (and every released one again) ends in exactly one bucket.
  assert.is(s.rewritten + s.passed + s.held + s.dropped, s.packets + released);
  assert.ok(s.malformed > 100_000, `malformed ${s.malformed}`);
  assert.ok(s.rewritten > 1000, `rewritten ${s.rewritten}`);
  assert.ok(s.held > 1000, `held ${s.held}`);
});

fuzz("SYN flood of 1,000,000 new flows against a full table: memory flat, refusals counted", () => {
  const e = new PacketEngine(SELF);
  const CAP = 1024;
  assert.is(e.config(JSON.stringify({ intercept_pids: [500], max_flows: CAP })).rc, 0);
  e.start(0, 8080);
  // Fill the table with established redirected connections.
  for (let i = 0; i < CAP; i++) {
    const C = { addr: "10.0.0.2", port: 10000 + i };
    const D = { addr: "198.18.0.10", port: 443 };
    e.owner(O_CONNECT, "tcp", C, D, 500, "/bin/app");
    e.process([{ data: build({ proto: "tcp", src: C, dst: D, flags: "S" }) }]);
    e.process([{ data: build({ proto: "tcp", src: { addr: "10.0.0.2", port: 8080 }, dst: { addr: D.addr, port: C.port }, flags: "SA" }) }]);
  }
  assert.is(e.stats().flowsActive, CAP);
  const bytesBefore = e.x.memory.buffer.byteLength;
  const FLOOD = 1_000_000;
  synFlood(e, FLOOD, 1000);
  const s = e.stats();
  assert.is(s.tableFull, FLOOD, "every flood SYN refused (established flows are never evicted)");
  assert.is(s.flowsActive, CAP);
  assert.is(e.x.memory.buffer.byteLength, bytesBefore, "memory did not grow");
  // The established connections still work.
  const C = { addr: "10.0.0.2", port: 10000 };
  const [o] = e.process([{ data: build({ proto: "tcp", src: C, dst: { addr: "198.18.0.10", port: 443 }, flags: "PA", payload: "x" }) }]);
  assert.is(o.verdict, 1);
});

fuzz("SYN flood of unknown owners: the table fills with pending flows, then refuses; they time out", () => {
  const e = new PacketEngine(SELF);
  assert.is(e.config(JSON.stringify({ intercept: "!nothing", max_flows: 1024, max_held_packets: 2048, hold_timeout_ms: 1000 })).rc, 0);
  e.start(0, 8080);
  const bytesBefore = e.x.memory.buffer.byteLength;
  const N = 200_000;
  synFlood(e, N, 10);
  const s = e.stats();
  assert.is(s.held, 1024);
  assert.is(s.tableFull, N - 1024);
  e.tick(2000);
  assert.is(e.released().length, 1024, "every held SYN released after the hold timeout");
  assert.is(e.stats().holdTimeouts, 1024);
  assert.is(e.x.memory.buffer.byteLength, bytesBefore);
});

fuzz("a redirected connection still in its handshake survives a flood of passed flows that fills the table", () => {
  const e = new PacketEngine(SELF);
  assert.is(e.config(JSON.stringify({ intercept_pids: [500], max_flows: 256 })).rc, 0);
  e.start(0, 8080);
  const C = { addr: "10.0.0.2", port: 40000 };
  const D = { addr: "198.18.0.10", port: 443 };
  e.owner(O_CONNECT, "tcp", C, D, 500, "/bin/app");
  const [syn] = e.process([{ data: build({ proto: "tcp", src: C, dst: D, flags: "S" }) }]);
  assert.is(syn.verdict, 1);
  // 10,000 new flows of another process: each is decided "pass" and the
  // table is full many times over.
  for (let i = 0; i < 10_000; i++) {
    const src = { addr: "10.0.1.2", port: 1024 + i };
    e.owner(O_CONNECT, "udp", src, D, 501, "/bin/other");
    e.process([{ data: build({ proto: "udp", src, dst: D, payload: "x" }) }]);
  }
  assert.ok(e.stats().evictions > 9000, `evictions ${e.stats().evictions}`);
  const [ack] = e.process([{ data: build({ proto: "tcp", src: { addr: C.addr, port: 8080 }, dst: { addr: D.addr, port: C.port }, flags: "SA" }) }]);
  assert.is(ack.verdict, 1, "the proxy's SYN-ACK still finds its connection");
});

fuzz.run();
