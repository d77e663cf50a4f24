// Listeners and bound sockets (the engine's port owners): which socket owns
// a connection to a local address and port (the address itself, else a
// wildcard of its family, else for IPv4 a [::] socket), and that only the
// socket's own release forgets it, never the close of one of its
// connections (WinDivert sends a CLOSE with the listener's port, its PID and
// a remote end for every accepted connection).
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { PacketEngine, V_MODIFIED, V_HELD, O_ACCEPT, O_BIND, O_CLOSE, O_LISTEN, type OutPacket } from "./harness.ts";
import { build, read, type Endpoint, type PacketSpec } from "./packets.ts";

const SELF = 1000;
const APP = 8080;
const PORT = 9000;
const PATH = "/usr/bin/server";

function engine(pids: number[] = [500, 501, 502, 503]): PacketEngine {
  const e = new PacketEngine(SELF);
  const r = e.config(JSON.stringify({ intercept_pids: pids }));
  assert.is(r.rc, 0, r.error);
  e.start(0, APP);
  return e;
}

function syn(e: PacketEngine, from: Endpoint, to: Endpoint): OutPacket {
  const spec: PacketSpec = { proto: "tcp", src: from, dst: to, flags: "S" };
  return e.process([{ data: build(spec), outbound: false }])[0];
}

/** The PID a new inbound connection from `from` to `to` is redirected for, or "held". */
function ownerOf(e: PacketEngine, from: Endpoint, to: Endpoint): number | "held" {
  const o = syn(e, from, to);
  if (o.verdict === V_HELD) return "held";
  assert.is(o.verdict, V_MODIFIED, `SYN ${from.addr} -> ${to.addr}: verdict`);
  assert.equal(read(o.data).dst, { addr: to.addr, port: APP }, "to the app port");
  const origin = e.lookup("tcp", from, { addr: to.addr, port: APP });
  assert.ok(origin, "looked up");
  assert.equal(origin!.destination, to);
  return origin!.pid;
}

const FAMILIES = [
  { fam: "IPv4", any: "0.0.0.0", local: "198.18.0.1", other: "198.18.0.2", remote: "198.18.7.", sep: "." },
  { fam: "IPv6", any: "::", local: "fd00::1", other: "fd00::2", remote: "fd00:7::", sep: ":" },
] as const;

for (const F of FAMILIES) {
  const t = suite(`listeners ${F.fam}`);
  const L: Endpoint = { addr: F.local, port: PORT };
  const R = (i: number): Endpoint => ({ addr: F.remote + i, port: 51000 + i });

  for (const bound of [F.any, F.local]) {
    t(`a listener on ${bound}: an accepted connection's CLOSE leaves it; its own release removes it`, () => {
      const e = engine();
      const at: Endpoint = { addr: bound, port: PORT };
      e.owner(O_LISTEN, "tcp", at, null, 500, PATH);
      assert.is(ownerOf(e, R(1), L), 500, "first connection");
      e.owner(O_ACCEPT, "tcp", L, R(1), 500, PATH);
      // The accepted connection ends: the driver's CLOSE names the
      // listener's port and PID, with the connection's remote end.
      e.owner(O_CLOSE, "tcp", L, R(1), 500, "");
      assert.is(ownerOf(e, R(2), L), 500, "second connection: redirected at once, no look-up");
      assert.is(e.queries().length, 0, "nothing to look up");
      // A release that is not this socket's: another PID, another address.
      e.owner(O_CLOSE, "tcp", at, null, 501, "");
      e.owner(O_CLOSE, "tcp", { addr: bound === F.any ? F.local : F.any, port: PORT }, null, 500, "");
      assert.is(ownerOf(e, R(3), L), 500, "other sockets' releases leave it");
      // Its own release: the local address as bound, no remote end.
      e.owner(O_CLOSE, "tcp", at, null, 500, "");
      assert.is(ownerOf(e, R(4), L), "held", "released: the owner is unknown again");
      assert.is(e.queries().length, 1, "and is looked up");
    });
  }

  t("the address itself, else a wildcard of its family", () => {
    const e = engine();
    e.owner(O_LISTEN, "tcp", { addr: F.any, port: PORT }, null, 501, PATH);
    e.owner(O_LISTEN, "tcp", L, null, 500, PATH);
    assert.is(ownerOf(e, R(1), L), 500, "bound to the address");
    assert.is(ownerOf(e, R(2), { addr: F.other, port: PORT }), 501, "another address: the wildcard");
    assert.is(ownerOf(e, R(3), { addr: F.local, port: PORT + 1 }), "held", "another port: nobody");
    // The specific socket goes; its address falls to the wildcard.
    e.owner(O_CLOSE, "tcp", L, null, 500, "");
    assert.is(ownerOf(e, R(4), L), 501, "after the specific socket's release");
  });

  t("a listener on another address of the port owns nothing here", () => {
    const e = engine();
    e.owner(O_LISTEN, "tcp", { addr: F.other, port: PORT }, null, 500, PATH);
    assert.is(ownerOf(e, R(1), L), "held");
  });

  t("a pending connection is decided by a listener that covers its address only", () => {
    const e = engine();
    assert.is(syn(e, R(1), L).verdict, V_HELD);
    e.owner(O_LISTEN, "tcp", { addr: F.other, port: PORT }, null, 501, PATH);
    assert.is(e.released().length, 0, "another address: still held");
    e.owner(O_LISTEN, "tcp", { addr: F.any, port: PORT }, null, 500, PATH);
    const rel = e.released();
    assert.is(rel.length, 1, "the wildcard listener releases it");
    assert.is(rel[0].verdict, V_MODIFIED);
    assert.is(e.lookup("tcp", R(1), { addr: F.local, port: APP })!.pid, 500);
  });

  t("UDP: a bound socket keeps its port through its connections' closes", () => {
    const e = engine();
    const S: Endpoint = { addr: F.any, port: 5353 };
    const dst: Endpoint = { addr: F.remote + 53, port: 53 };
    const from: Endpoint = { addr: F.local, port: 5353 };
    e.owner(O_BIND, "udp", S, null, 500, PATH);
    // Each datagram to a new destination is a new flow, decided by the binding.
    const send = (to: number) =>
      e.process([{ data: build({ proto: "udp", src: from, dst: { addr: F.remote + to, port: 53 }, payload: "q" }) }])[0];
    assert.is(send(53).verdict, V_MODIFIED, "from the wildcard-bound socket");
    e.owner(O_CLOSE, "udp", from, dst, 500, "");
    assert.is(send(54).verdict, V_MODIFIED, "a CLOSE with a remote end leaves the binding");
    e.owner(O_CLOSE, "udp", S, null, 500, "");
    assert.is(send(55).verdict, V_HELD, "the socket's release removes it");
  });

  t.run();
}

const many = suite("listeners, many");

many("800 listeners, every other one released: the rest still own their ports, the released own nothing", () => {
  // Enough entries for some to share a probe chain with a released one
  // (which leaves a tombstone there): those must still be found.
  const e = engine();
  const N = 800;
  const at = (i: number): Endpoint => ({ addr: i % 3 ? "198.18.0.1" : "0.0.0.0", port: 20000 + i });
  const pid = (i: number) => 500 + (i % 4);
  for (let i = 0; i < N; i++) e.owner(O_LISTEN, "tcp", at(i), null, pid(i), PATH);
  for (let i = 0; i < N; i += 2) e.owner(O_CLOSE, "tcp", at(i), null, pid(i), "");
  for (let i = 0; i < N; i++) {
    const to: Endpoint = { addr: "198.18.0.1", port: 20000 + i };
    assert.is(ownerOf(e, { addr: "198.18.7." + (1 + (i % 250)), port: 30000 + i }, to), i % 2 ? pid(i) : "held",
      `port ${to.port}`);
  }
});

many.run();

const dual = suite("listeners dual-stack");
const R4: Endpoint = { addr: "198.18.7.1", port: 51001 };
const L4: Endpoint = { addr: "198.18.0.1", port: PORT };

dual("IPv4 to a port whose only listener is on [::]: the [::] listener (dual-stack)", () => {
  const e = engine();
  e.owner(O_LISTEN, "tcp", { addr: "::", port: PORT }, null, 503, PATH);
  assert.is(ownerOf(e, R4, L4), 503);
  // Its accepted IPv4 connection ends (as IPv4): the listener stays.
  e.owner(O_CLOSE, "tcp", L4, R4, 503, "");
  assert.is(ownerOf(e, { addr: "198.18.7.2", port: 51002 }, L4), 503, "after a connection's close");
  e.owner(O_CLOSE, "tcp", { addr: "::", port: PORT }, null, 503, "");
  assert.is(ownerOf(e, { addr: "198.18.7.3", port: 51003 }, L4), "held", "after its release");
});

dual("an IPv4 listener always comes before [::] (which may be v6-only)", () => {
  const e = engine();
  e.owner(O_LISTEN, "tcp", { addr: "::", port: PORT }, null, 503, PATH);
  e.owner(O_LISTEN, "tcp", { addr: "0.0.0.0", port: PORT }, null, 502, PATH);
  e.owner(O_LISTEN, "tcp", L4, null, 501, PATH);
  assert.is(ownerOf(e, R4, L4), 501, "the address itself");
  assert.is(ownerOf(e, { addr: "198.18.7.2", port: 51002 }, { addr: "198.18.0.9", port: PORT }), 502, "IPv4 wildcard");
  assert.is(ownerOf(e, { addr: "fd00:7::1", port: 51003 }, { addr: "fd00::1", port: PORT }), 503, "IPv6: [::]");
  e.owner(O_CLOSE, "tcp", { addr: "0.0.0.0", port: PORT }, null, 502, "");
  assert.is(ownerOf(e, { addr: "198.18.7.4", port: 51004 }, { addr: "198.18.0.9", port: PORT }), 503,
    "with no IPv4 wildcard left: [::]");
});

dual("IPv4 listeners never own IPv6 connections, nor specific IPv6 listeners IPv4 ones", () => {
  const e = engine();
  e.owner(O_LISTEN, "tcp", { addr: "0.0.0.0", port: PORT }, null, 502, PATH);
  e.owner(O_LISTEN, "tcp", { addr: "fd00::1", port: PORT + 1 }, null, 501, PATH);
  assert.is(ownerOf(e, { addr: "fd00:7::1", port: 51001 }, { addr: "fd00::1", port: PORT }), "held", "IPv6 to 0.0.0.0's port");
  assert.is(ownerOf(e, R4, { addr: L4.addr, port: PORT + 1 }), "held", "IPv4 to a specific IPv6 listener's port");
});

dual("pending connections: 0.0.0.0 decides IPv4 ones only, [::] IPv6 ones and IPv4 ones", () => {
  const e = engine();
  const R6: Endpoint = { addr: "fd00:7::1", port: 51001 };
  const L6: Endpoint = { addr: "fd00::1", port: PORT };
  const R4b: Endpoint = { addr: "198.18.7.9", port: 51009 };
  const L4b: Endpoint = { addr: L4.addr, port: PORT + 1 };
  assert.is(syn(e, R4, L4).verdict, V_HELD);
  assert.is(syn(e, R6, L6).verdict, V_HELD);
  assert.is(syn(e, R4b, L4b).verdict, V_HELD);
  e.owner(O_LISTEN, "tcp", { addr: "0.0.0.0", port: PORT }, null, 502, PATH);
  assert.is(e.released().length, 1, "0.0.0.0 releases the IPv4 one only");
  assert.is(e.lookup("tcp", R4, { addr: L4.addr, port: APP })!.pid, 502);
  e.owner(O_LISTEN, "tcp", { addr: "::", port: PORT }, null, 503, PATH);
  assert.is(e.released().length, 1, "[::] releases the IPv6 one");
  assert.is(e.lookup("tcp", R6, { addr: L6.addr, port: APP })!.pid, 503);
  e.owner(O_LISTEN, "tcp", { addr: "::", port: PORT + 1 }, null, 503, PATH);
  assert.is(e.released().length, 1, "[::] releases an IPv4 one (dual-stack)");
  assert.is(e.lookup("tcp", R4b, { addr: L4.addr, port: APP })!.pid, 503);
});

dual.run();
