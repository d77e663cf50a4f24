// The engine/host contract (build/contract.ts) against what uses it: the
// generated files in build/gen, the compiled engine's behaviour at the
// table's offsets and sizes, and the public header's redirector_stats. The C
// side's layouts are checked by the _Static_asserts in build/gen/contract.h
// when the shim compiles.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { contractHash, generateAssemblyScript, generateC, layout, RECORD_NAMES, STATS } from "../../build/contract.ts";
import { PacketEngine, root, IN_OUTBOUND, O_CONNECT, V_HELD, V_MODIFIED, V_PASS, OUT_OUTBOUND } from "./harness.ts";
import { build, parseAddr } from "./packets.ts";
import { bytes, decode, encode, size } from "./records.ts";

const contract = suite("contract");

const SELF = 1000;
const C = { addr: "10.0.0.2", port: 40000 };
const D = { addr: "198.18.0.10", port: 80 };
const PATH = "/usr/bin/curl";

function engine(): PacketEngine {
  const e = new PacketEngine(SELF);
  assert.is(e.config(`{"intercept_pids":[500]}`).rc, 0);
  e.start(0, 8080);
  return e;
}

function addr16(a: string): Uint8Array {
  const out = new Uint8Array(16);
  out.set(parseAddr(a));
  return out;
}

contract("build/gen holds what the table generates now", () => {
  for (const [file, text] of [["contract.ts", generateAssemblyScript()], ["contract.h", generateC()]]) {
    const p = join(root, "build", "gen", file);
    assert.ok(existsSync(p), p + " is missing: run the build");
    assert.ok(readFileSync(p, "utf8") === text, p + " is stale: run the build");
  }
});

contract("every record's fields are inside it, in order, without overlap", () => {
  for (const n of RECORD_NAMES) {
    const l = layout(n);
    let end = 0;
    for (const f of l.fields) {
      assert.ok(f.offset >= end, `${n}.${f.name} overlaps the field before it`);
      assert.ok(f.offset % Math.min(f.size, 8) === 0 || f.type === "addr", `${n}.${f.name} is misaligned`);
      end = f.offset + f.size;
    }
    assert.ok(end <= l.size, `${n} is smaller than its fields`);
  }
});

contract("the engine reports the table's hash", () => {
  const e = engine();
  assert.is(e.x.eng_abi() >>> 0, contractHash(), "(a u32: JavaScript reads it signed)");
});

contract("meta: the engine reads the packet where the table says and writes only the verdict", () => {
  const e = engine();
  const meta = e.p.eng_batch_meta();
  const data = e.p.eng_batch_data();
  const pkt = build({ proto: "tcp", src: C, dst: D, flags: "S" });
  // Somewhere in the data area other than offset 0, so the offset field matters.
  const off = 4096;
  e.bytes(data + off, pkt.length).set(pkt);
  e.owner(O_CONNECT, "tcp", C, D, 500, PATH);
  encode("meta", e.view(), meta, {
    cookieLo: 0x11223344, cookieHi: 0x55667788, data: off, len: pkt.length, flags: IN_OUTBOUND, ifIdx: 9,
    subIfIdx: 3, verdict: 0xdeadbeef,
  });
  const before = e.bytes(meta, size("meta")).slice();
  assert.is(e.p.eng_process(1, 0), 1);
  const after = e.bytes(meta, size("meta")).slice();
  const v = layout("meta").byName.verdict;
  for (let i = 0; i < size("meta"); i++) {
    if (i < v.offset || i >= v.offset + v.size) assert.is(after[i], before[i], `meta byte ${i} changed`);
  }
  const m = decode("meta", e.view(), meta);
  assert.is(m.verdict & 0xff, V_MODIFIED, "the packet was read at data/len and redirected");
  // The length field bounds the packet: one byte short is malformed, passed.
  encode("meta", e.view(), meta, { data: off, len: pkt.length - 1, flags: IN_OUTBOUND, verdict: 0xdeadbeef });
  e.bytes(data + off, pkt.length).set(pkt);
  e.p.eng_process(1, 0);
  assert.is(decode("meta", e.view(), meta).verdict, V_PASS | (OUT_OUTBOUND << 8));
  assert.is(e.stats().malformed, 1);
});

contract("rel and query: a held packet's query, then its release, field by field", () => {
  const e = engine();
  const pkt = build({ proto: "tcp", src: C, dst: D, flags: "S" });
  const [o] = e.process([{ data: pkt, cookie: 0xabcdef, ifIdx: 42 }]);
  assert.is(o.verdict, V_HELD);
  assert.is(e.p.eng_take_queries(8), 1);
  const q = decode("query", e.view(), e.p.eng_queries_ptr());
  assert.equal(
    { ...q, local: Array.from(q.local), remote: Array.from(q.remote) },
    {
      proto: 6, family: 4, direction: 0, local: Array.from(addr16(C.addr)), remote: Array.from(addr16(D.addr)),
      localPort: C.port, remotePort: D.port,
    },
  );
  assert.is(e.bytes(e.p.eng_queries_ptr() + layout("query").byName.pad0.offset, 1)[0], 0, "padding is zero");
  e.owner(O_CONNECT, "tcp", C, D, 500, PATH);
  assert.is(e.p.eng_take_released(), 1);
  const r = decode("rel", e.view(), e.p.eng_released_ptr());
  assert.is(r.cookieLo, 0xabcdef);
  assert.is(r.cookieHi, 0);
  assert.is(r.len, pkt.length);
  assert.is(r.flags, IN_OUTBOUND);
  assert.is(r.ifIdx, 42);
  assert.is(r.subIfIdx, 0);
  assert.is(r.verdict & 0xff, V_MODIFIED);
  assert.is(e.bytes(r.data, 20)[0] >> 4, 4, "data points at the (rewritten) IPv4 packet");
});

contract("owner and lookup: sizes and the path length bound what the engine accepts", () => {
  const e = engine();
  const path = Buffer.from(PATH, "utf8");
  const owner = bytes("owner", {
    kind: O_CONNECT, proto: 6, family: 4, local: addr16(C.addr), remote: addr16(D.addr), localPort: C.port,
    remotePort: D.port, pid: 500, pathLen: path.length,
  }, path);
  e.io(owner);
  assert.is(e.p.eng_owner(size("owner") - 1, 0), -1, "shorter than the record");
  assert.is(e.p.eng_owner(owner.length - 1, 0), -1, "path_len past the end");
  assert.is(e.p.eng_owner(owner.length, 0), 0);
  const [out] = e.process([{ data: build({ proto: "tcp", src: C, dst: D, flags: "S" }) }]);
  assert.is(out.verdict, V_MODIFIED, "the owner fact matched the flow: its addresses and ports were read right");
  const q = bytes("lookup", {
    proto: 6, peerFamily: 4, peer: addr16(D.addr), peerPort: C.port, localFamily: 4, local: addr16(C.addr),
    localPort: 8080,
  });
  const p = e.x.eng_io(4096);
  e.bytes(p, q.length).set(q);
  assert.is(e.p.eng_lookup(size("lookup") - 1), -2, "shorter than the record");
  assert.is(e.p.eng_lookup(size("lookup")), 0);
  const o = decode("origin", e.view(), p);
  assert.equal(
    [o.type, o.proto, o.family, o.direction, o.pid, o.dstPort, o.clientPort, o.peerPort, o.appPort, o.pathLen],
    [0, 6, 4, 0, 500, D.port, C.port, C.port, 8080, path.length],
  );
  assert.equal(Array.from(o.dst), Array.from(addr16(D.addr)));
  assert.equal(Array.from(o.client), Array.from(addr16(C.addr)));
  assert.equal(Array.from(o.peer), Array.from(addr16(D.addr)));
  assert.is(o.bytesUp, 0n);
  assert.is(Buffer.from(e.bytes(p + size("origin"), o.pathLen)).toString("utf8"), PATH, "the path follows the record");
});

contract("exclusion: the engine reads each field where the table says", () => {
  const e = engine();
  const rec = bytes("exclusion", { proto: 17, family: 6, dualStack: 1, local: new Uint8Array(16), localPort: 0x9c41 });
  e.io(rec);
  assert.is(e.p.eng_exclude(size("exclusion") - 1), -2, "shorter than the record");
  assert.is(e.p.eng_exclude(size("exclusion")), 0);
  // proto 17, the dual-stack flag and the port, read right: an IPv4
  // datagram from port 0x9c41 passes at once.
  const dgram = build({ proto: "udp", src: { addr: C.addr, port: 0x9c41 }, dst: D, payload: "x" });
  const [o] = e.process([{ data: dgram }]);
  assert.is(o.verdict, V_PASS);
  const other = build({ proto: "udp", src: { addr: C.addr, port: 0x419c }, dst: D, payload: "x" });
  assert.is(e.process([{ data: other }])[0].verdict, V_HELD, "not the port byte-swapped");
  // The address is read too: one given address is not the wildcard.
  e.io(bytes("exclusion", { proto: 6, family: 4, local: addr16("10.9.9.9"), localPort: 40001 }));
  assert.is(e.p.eng_exclude(size("exclusion")), 0);
  const [s] = e.process([{ data: build({ proto: "tcp", src: { addr: C.addr, port: 40001 }, dst: D, flags: "S" }) }]);
  assert.is(s.verdict, V_HELD, "another local address");
});

contract("counters: the engine has the table's count, and redirector_stats names each", () => {
  const e = engine();
  assert.is(e.p.eng_stats_count(), STATS.length);
  const header = readFileSync(join(root, "include", "windows_redirector.h"), "utf8");
  const body = /typedef struct redirector_stats \{([\s\S]*?)\} redirector_stats;/.exec(header)?.[1] ?? "";
  const members = [...body.matchAll(/uint64_t (\w+);/g)].map((m) => m[1]);
  const host = ["engine_restarts", "flow_capacity", "bytes_per_flow"]; // filled by the host, not the engine
  assert.equal(members.filter((m) => !host.includes(m)), STATS.map((s) => s[0]));
  // One counter by position: a malformed packet bumps packets, passed and malformed only.
  e.process([{ data: Uint8Array.from([0x45, 0, 0]) }]);
  const base = e.p.eng_stats_ptr();
  const v = e.view();
  const nonzero = STATS.map((s, i) => [s[0], v.getBigUint64(base + i * 8, true)] as const).filter(([, n]) => n !== 0n);
  assert.equal(nonzero.map(([name]) => name), ["packets", "passed", "malformed"]);
});

contract.run();
