// Properties over random valid flows (fast-check): a redirect followed by the
// reverse redirect restores the original bytes; every packet the engine
// emits has valid checksums (checked by our own checksum code).
import { suite } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { PacketEngine, V_MODIFIED, O_CONNECT, O_LISTEN } from "./harness.ts";
import { build, checksumsValid, formatAddr, read, type Endpoint, type PacketSpec } from "./packets.ts";

const SELF = 1000;
const APP = 8080;

/** Swaps source and destination (addresses and ports); checksums stay valid. */
function swap(p: Uint8Array): Uint8Array {
  const q = p.slice();
  const r = read(q);
  const v6 = r.v6;
  const [s, d, n] = v6 ? [8, 24, 16] : [12, 16, 4];
  const src = q.slice(s, s + n);
  q.copyWithin(s, d, d + n);
  q.set(src, d);
  const o = r.l4Offset;
  const sp = q.slice(o, o + 2);
  q.copyWithin(o, o + 2, o + 4);
  q.set(sp, o + 2);
  return q;
}

const octet = fc.integer({ min: 0, max: 255 });
// Unicast addresses outside every bypassed class.
const v4addr = fc.tuple(fc.integer({ min: 1, max: 126 }), octet, octet, fc.integer({ min: 1, max: 254 }))
  .filter(([a, b]) => !(a === 10 && b === 0) && !(a === 169 && b === 254))
  .map((o) => o.join("."));
const v6addr = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 7, maxLength: 7 })
  .map((g) => formatAddr(Uint8Array.from([0xfd, 0x00, ...g.flatMap((x) => [x >> 8, x & 0xff])])));
const port = fc.integer({ min: 1, max: 65535 }).filter((p) => ![67, 68, 546, 547, APP].includes(p));

const flow = fc.record({
  v6: fc.boolean(),
  proto: fc.constantFrom("tcp" as const, "udp" as const),
  c4: v4addr, d4: v4addr, c6: v6addr, d6: v6addr,
  cport: port, dport: port,
  partial: fc.boolean(),
  payloads: fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 6 }),
  flags: fc.array(fc.constantFrom("A", "PA", "FA"), { minLength: 6, maxLength: 6 }),
}).filter((f) => (f.v6 ? f.c6 !== f.d6 : f.c4 !== f.d4));

type Flow = typeof flow extends fc.Arbitrary<infer F> ? F : never;

/** A flow's two ends in its family: this host's, then the other's. */
function ends(f: Flow): [Endpoint, Endpoint] {
  return [{ addr: f.v6 ? f.c6 : f.c4, port: f.cport }, { addr: f.v6 ? f.d6 : f.d4, port: f.dport }];
}

/** A fresh engine intercepting PID 500, with a small table. */
function fresh(): PacketEngine {
  return PacketEngine.started({ intercept_pids: [500], max_flows: 64 }, { self: SELF, appPort: APP });
}

const props = suite("properties");

/**
 * Sends each packet through the engine, then its mirror image (what the
 * proxy sends back on that connection), and checks that the mirror of the
 * second rewrite is the original packet byte for byte, every checksum valid,
 * and the directions right: `inbound` flows stay inbound and their replies
 * outbound; outbound flows are injected inbound both ways.
 */
function roundTrips(e: PacketEngine, packets: PacketSpec[], inbound: boolean): boolean {
  for (const spec of packets) {
    const x = build(spec);
    const [x1] = e.process([{ data: x, outbound: !inbound }]);
    if (x1.verdict !== V_MODIFIED || x1.outbound || !checksumsValid(x1.data)) return false;
    const [y] = e.process([{ data: swap(x1.data), outbound: true }]);
    if (y.verdict !== V_MODIFIED || y.outbound !== inbound || !checksumsValid(y.data)) return false;
    if (Buffer.compare(Buffer.from(swap(y.data)), Buffer.from(x)) !== 0) return false;
  }
  return true;
}

props("outbound: rewrite then reverse rewrite restores every byte; all checksums valid", () => {
  fc.assert(
    fc.property(flow, (f) => {
      const e = fresh();
      const [C, D] = ends(f);
      e.owner(O_CONNECT, f.proto, C, D, 500, "/bin/app");
      return roundTrips(e, [
        { proto: f.proto, src: C, dst: D, flags: "S", payload: f.proto === "udp" ? f.payloads[0] : undefined },
        ...f.payloads.map((payload, i) => ({ proto: f.proto, src: C, dst: D, flags: f.flags[i], payload, seq: 1000 + i })),
      ], false);
    }),
    { numRuns: 300 },
  );
});

props("inbound: the same round trip through a listener redirect", () => {
  fc.assert(
    fc.property(flow, (f) => {
      const e = fresh();
      const [L, R] = ends(f);
      e.owner(O_LISTEN, f.proto, L, null, 500, "/bin/server");
      return roundTrips(e, [
        { proto: f.proto, src: R, dst: L, flags: "S" },
        ...f.payloads.map((payload, i) => ({ proto: f.proto, src: R, dst: L, flags: f.flags[i], payload })),
      ], true);
    }),
    { numRuns: 200 },
  );
});

props("partial checksums: every emitted packet has a full, valid checksum", () => {
  fc.assert(
    fc.property(flow, (f) => {
      const e = fresh();
      const [C, D] = ends(f);
      e.owner(O_CONNECT, f.proto, C, D, 500, "/bin/app");
      const [a] = e.process([{ data: build({ proto: f.proto, src: C, dst: D, flags: "S", partialChecksum: true }), partial: true }]);
      if (a.verdict !== V_MODIFIED || !checksumsValid(a.data)) return false;
      for (const payload of f.payloads) {
        const [b] = e.process([{ data: build({ proto: f.proto, src: C, dst: D, flags: "PA", payload, partialChecksum: true }), partial: true }]);
        if (b.verdict !== V_MODIFIED || !checksumsValid(b.data)) return false;
      }
      return true;
    }),
    { numRuns: 200 },
  );
});

props.run();
