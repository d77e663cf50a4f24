// Excluded sockets (eng_exclude, as/exclusions.ts): the host's own sockets
// whose packets pass at once, both ways, with no flow, no hold and no owner
// query; matched by their exact local end (a wildcard address matches any of
// its family, a dual-stack [::] IPv4 too); gone when an owner fact shows the
// socket is; a table of max_flows entries that refuses more.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { PacketEngine, V_PASS, V_HELD, V_MODIFIED, O_CONNECT, O_BIND, O_CLOSE, O_LISTEN, type OutPacket } from "./harness.ts";
import { build, type Endpoint, type PacketSpec } from "./packets.ts";

const SELF = 1000;
const PID = 500;
const PATH = "/usr/bin/curl";
const APP = 8080;

function engine(json: object = { intercept_pids: [PID] }): PacketEngine {
  const e = new PacketEngine(SELF);
  const r = e.config(JSON.stringify(json));
  assert.is(r.rc, 0, r.error);
  e.start(0, APP);
  return e;
}

function one(e: PacketEngine, spec: PacketSpec, outbound = true): OutPacket {
  return e.process([{ data: build(spec), outbound }])[0];
}

/** A SYN from `src` to `dst`: its verdict. */
function syn(e: PacketEngine, src: Endpoint, dst: Endpoint): number {
  return one(e, { proto: "tcp", src, dst, flags: "S" }).verdict;
}

function passedOut(o: OutPacket, what: string): void {
  assert.is(o.verdict, V_PASS, what + ": passed");
  assert.ok(o.outbound, what + ": as it came (outbound)");
}

for (const [fam, C, C2, D, any] of [
  ["IPv4", "10.0.0.2", "10.0.0.3", "198.18.0.10", "0.0.0.0"],
  ["IPv6", "fd00::2", "fd00::3", "fd00:198:18::10", "::"],
] as const) {
  const t = suite(`excluded sockets ${fam}`);
  const dst: Endpoint = { addr: D, port: 443 };

  t("an excluded socket's packets pass at once, both ways, with no flow and no query", () => {
    const e = engine();
    assert.is(e.exclude("tcp", { addr: any, port: 40000 }), 0);
    assert.is(e.exclude("udp", { addr: C, port: 5353 }), 0);
    const local: Endpoint = { addr: C, port: 40000 };
    passedOut(one(e, { proto: "tcp", src: local, dst, flags: "S" }), "SYN");
    const synack = one(e, { proto: "tcp", src: dst, dst: local, flags: "SA" }, false);
    assert.is(synack.verdict, V_PASS, "SYN-ACK to it");
    assert.not.ok(synack.outbound, "SYN-ACK stays inbound");
    passedOut(one(e, { proto: "tcp", src: local, dst, flags: "PA", payload: "GET /" }), "data");
    const udpLocal: Endpoint = { addr: C, port: 5353 };
    passedOut(one(e, { proto: "udp", src: udpLocal, dst: { addr: D, port: 53 }, payload: "q" }), "datagram");
    const reply = one(e, { proto: "udp", src: { addr: D, port: 53 }, dst: udpLocal, payload: "a" }, false);
    assert.is(reply.verdict, V_PASS, "a reply to it, though inbound UDP would be held");
    // Any other socket of this process still waits for its owner.
    assert.is(syn(e, { addr: C, port: 40001 }, dst), V_HELD, "another socket's SYN is held");
    assert.is(one(e, { proto: "udp", src: { addr: D, port: 53 }, dst: { addr: C, port: 5354 }, payload: "a" }, false).verdict,
      V_HELD, "a datagram to another port is held");
    assert.is(e.queries().length, 2, "queries for the other two only");
    const s = e.stats();
    assert.is(s.flowsActive, 2, "no flow for the excluded sockets");
    assert.is(s.held, 2);
    assert.is(s.flowsRedirected, 0);
  });

  t("the match is exact: protocol, port, address (unless a wildcard), family", () => {
    const e = engine();
    assert.is(e.exclude("tcp", { addr: C, port: 40000 }), 0);
    assert.is(syn(e, { addr: C, port: 40000 }, dst), V_PASS, "its own end");
    assert.is(syn(e, { addr: C2, port: 40000 }, dst), V_HELD, "another local address, same port");
    assert.is(syn(e, { addr: C, port: 40002 }, dst), V_HELD, "another port");
    assert.is(one(e, { proto: "udp", src: { addr: C, port: 40000 }, dst, payload: "x" }).verdict, V_HELD, "UDP on its port");
    // A wildcard covers every address of its family, and only of it.
    assert.is(e.exclude("tcp", { addr: any, port: 40003 }), 0);
    assert.is(syn(e, { addr: C2, port: 40003 }, dst), V_PASS, "wildcard: any address");
    const other = fam === "IPv4"
      ? { src: { addr: "fd00::2", port: 40003 }, dst: { addr: "fd00:198:18::10", port: 443 } }
      : { src: { addr: "10.0.0.2", port: 40003 }, dst: { addr: "198.18.0.10", port: 443 } };
    assert.is(syn(e, other.src, other.dst), V_HELD, "wildcard: not the other family (its own port space)");
  });

  t("no flow for an excluded socket's own CONNECT fact, which arrives before its SYN", () => {
    const e = engine();
    const local: Endpoint = { addr: C, port: 40000 };
    assert.is(e.exclude("tcp", { addr: any, port: 40000 }), 0);
    e.owner(O_CONNECT, "tcp", local, dst, SELF, "/opt/proxy");
    assert.is(e.stats().flowsActive, 0, "the fact is not kept");
    assert.is(syn(e, local, dst), V_PASS);
    assert.is(e.stats().flowsActive, 0);
  });

  t("a CLOSE on the port ends the exclusion, whatever PID it names; this process's BIND does not", () => {
    const e = engine();
    const local: Endpoint = { addr: C, port: 40000 };
    assert.is(e.exclude("tcp", { addr: any, port: 40000 }), 0);
    assert.is(e.exclude("tcp", { addr: any, port: 40001 }), 0);
    e.owner(O_CLOSE, "udp", local, null, SELF, "");
    e.owner(O_BIND, "tcp", local, null, SELF, "");
    e.owner(O_CONNECT, "tcp", local, dst, SELF, "");
    assert.is(syn(e, local, dst), V_PASS, "still excluded");
    e.owner(O_CLOSE, "tcp", { addr: C2, port: 40000 }, dst, SELF, "");
    assert.is(syn(e, local, { addr: D, port: 444 }), V_HELD, "after its CLOSE (any address), a new SYN waits");
    e.owner(O_CLOSE, "tcp", { addr: C, port: 40001 }, null, 0, "");
    assert.is(syn(e, { addr: C, port: 40001 }, dst), V_HELD, "a CLOSE naming no process ends it too");
  });

  t("another process's claim on the port ends the exclusion: a reused port is intercepted", () => {
    const e = engine();
    const local: Endpoint = { addr: C, port: 40000 };
    assert.is(e.exclude("tcp", { addr: any, port: 40000 }), 0);
    assert.is(e.exclude("udp", { addr: any, port: 40000 }), 0);
    // Our sockets closed unseen (a lost CLOSE); an intercepted process
    // binds the UDP port and connects from the TCP one.
    e.owner(O_BIND, "udp", local, null, PID, PATH);
    const dgram = one(e, { proto: "udp", src: local, dst: { addr: D, port: 53 }, payload: "q" });
    assert.is(dgram.verdict, V_MODIFIED, "the new owner's datagram is redirected, not passed");
    e.owner(O_CONNECT, "tcp", local, { addr: D, port: 444 }, PID, PATH);
    assert.is(syn(e, local, dst), V_HELD, "a SYN of the port to elsewhere waits for its owner");
    assert.is(e.exclude("tcp", { addr: any, port: 40005 }), 0);
    e.owner(O_LISTEN, "tcp", { addr: any, port: 40005 }, null, PID, PATH);
    assert.is(syn(e, { addr: C, port: 40005 }, dst), V_HELD, "a LISTEN of another process ends it too");
  });

  t("the table holds max_flows sockets and refuses more, with the reason", () => {
    const e = engine({ intercept_pids: [PID], max_flows: 16 });
    for (let i = 0; i < 16; i++) assert.is(e.exclude("tcp", { addr: any, port: 41000 + i }), 0, `socket ${i}`);
    assert.is(e.exclude("tcp", { addr: any, port: 41000 }), 0, "one already there costs nothing");
    assert.is(e.exclude("udp", { addr: any, port: 42000 }), -1, "the 17th is refused");
    assert.match(e.error(), "the table of excluded sockets is full (16 sockets");
    assert.is(one(e, { proto: "udp", src: { addr: C, port: 42000 }, dst, payload: "x" }).verdict, V_HELD, "not excluded");
    for (let i = 0; i < 16; i++) assert.is(syn(e, { addr: C, port: 41000 + i }, dst), V_PASS, `socket ${i} still excluded`);
    e.owner(O_CLOSE, "tcp", { addr: C, port: 41003 }, null, SELF, "");
    assert.is(e.exclude("udp", { addr: any, port: 42000 }), 0, "a CLOSE makes room");
  });

  t.run();
}

const d = suite("excluded sockets: dual stack, refusals");

d("a dual-stack [::] socket carries IPv4 too; an IPv6-only one does not", () => {
  const e = engine();
  const D4: Endpoint = { addr: "198.18.0.10", port: 443 };
  assert.is(e.exclude("tcp", { addr: "::", port: 40000 }, true), 0);
  assert.is(e.exclude("tcp", { addr: "::", port: 40001 }), 0);
  assert.is(syn(e, { addr: "10.0.0.2", port: 40000 }, D4), V_PASS, "IPv4 from the dual-stack socket");
  assert.is(syn(e, { addr: "fd00::2", port: 40000 }, { addr: "fd00::10", port: 443 }), V_PASS, "and IPv6");
  assert.is(syn(e, { addr: "10.0.0.2", port: 40001 }, D4), V_HELD, "not IPv4 from the IPv6-only one");
});

d("refused: before start, a malformed record", () => {
  const idle = new PacketEngine(SELF);
  assert.is(idle.exclude("tcp", { addr: "0.0.0.0", port: 40000 }), -2, "not started");
  assert.match(idle.error(), "not running");
  const e = engine();
  assert.is(e.exclude("tcp", { addr: "0.0.0.0", port: 0 }), -2, "port 0");
  assert.is(e.exclude("tcp", { addr: "0.0.0.0", port: 1 }, true), -2, "dual stack is IPv6's");
  assert.is(e.exclude("tcp", { addr: "fd00::2", port: 1 }, true), -2, "dual stack is the wildcard's");
  assert.match(e.error(), "malformed");
  assert.is(e.p.eng_exclude(1), -2, "shorter than the record");
  assert.is(syn(e, { addr: "10.0.0.2", port: 1 }, { addr: "198.18.0.10", port: 443 }), V_HELD, "none of them added");
});

d.run();
