// Whole conversations, packet by packet, through the engine: handshakes,
// data both ways, FIN and RST, UDP, outbound and inbound redirects, IPv4 and
// IPv6, owners known before or after the first packet, hold timeouts,
// config changes in flight, the host's own PID, bypassed classes.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import {
  PacketEngine, V_PASS, V_MODIFIED, V_HELD, V_DROP, O_CONNECT, O_ACCEPT, O_LISTEN, O_BIND, O_CLOSE, O_UNKNOWN,
  type OutPacket,
} from "./harness.ts";
import { build, checksumsValid, read, type Endpoint, type PacketSpec } from "./packets.ts";

const SELF = 1000;
const PID = 500;
const PATH = "/usr/bin/curl";
const APP = 8080;

interface Net {
  C: Endpoint; // the intercepted client (this host)
  D: Endpoint; // where it connects
  R: Endpoint; // a remote client (inbound)
  L: Endpoint; // an intercepted listener (this host)
}

const NET4: Net = {
  C: { addr: "10.0.0.2", port: 40000 },
  D: { addr: "198.18.0.10", port: 80 },
  R: { addr: "198.18.7.7", port: 51000 },
  L: { addr: "10.0.0.2", port: 9000 },
};
const NET6: Net = {
  C: { addr: "fd00::2", port: 40000 },
  D: { addr: "fd00:198:18::10", port: 443 },
  R: { addr: "fd00:198:18::77", port: 51000 },
  L: { addr: "fd00::2", port: 9000 },
};

function engine(json: object = { intercept_pids: [PID] }, start = 0, neverIntercept: number[] = []): PacketEngine {
  return PacketEngine.started(json, { self: SELF, appPort: APP, now: start, neverIntercept });
}

function one(e: PacketEngine, spec: PacketSpec, outbound = true, now = 0): OutPacket {
  return e.process([{ data: build(spec), outbound }], now)[0];
}

function expectRewritten(o: OutPacket, src: Endpoint, dst: Endpoint, outbound: boolean, what: string): void {
  assert.is(o.verdict, V_MODIFIED, what + ": verdict");
  const r = read(o.data);
  assert.equal(r.src, src, what + ": source");
  assert.equal(r.dst, dst, what + ": destination");
  assert.is(o.outbound, outbound, what + ": direction");
  assert.ok(o.csumValid, what + ": checksum flag");
  assert.ok(checksumsValid(o.data), what + ": checksums");
}

for (const [fam, N] of [["IPv4", NET4], ["IPv6", NET6]] as const) {
  const t = suite(`redirect ${fam}`);
  const P: Endpoint = { addr: N.C.addr, port: APP };
  const Dc: Endpoint = { addr: N.D.addr, port: N.C.port }; // what the proxy sees as its peer

  t("owner queries: each pending flow is handed out once, none lost to a small buffer", () => {
    const e = engine();
    const ports = [40001, 40002, 40003];
    for (const port of ports) assert.is(one(e, { proto: "tcp", src: { ...N.C, port }, dst: N.D, flags: "S" }).verdict, V_HELD);
    const first = e.queries(2);
    assert.is(first.length, 2, "no more than asked for");
    const rest = e.queries(5);
    assert.is(rest.length, 1, "the third waits for the next call");
    assert.equal([...first, ...rest].map((q) => q.local.port).sort(), ports);
    assert.is(e.queries().length, 0, "each asked once");
  });

  t("outbound TCP: handshake, data both ways, FIN, lookup, events", () => {
    const e = engine();
    // 1. The client's SYN waits for its owner.
    const syn = one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" });
    assert.is(syn.verdict, V_HELD);
    const q = e.queries();
    assert.is(q.length, 1);
    assert.equal(q[0], { proto: 6, v6: fam === "IPv6", inbound: false, local: N.C, remote: N.D });
    assert.is(e.queries().length, 0, "asked once");
    // 2. The owner arrives: the SYN goes to the proxy, injected inbound.
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    const rel = e.released();
    assert.is(rel.length, 1);
    expectRewritten(rel[0], Dc, P, false, "SYN to proxy");
    // 3. Proxy SYN-ACK back to the client, as if from D.
    expectRewritten(one(e, { proto: "tcp", src: P, dst: Dc, flags: "SA" }), N.D, N.C, false, "SYN-ACK");
    // 4. ACK and data up; data down.
    expectRewritten(one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "A" }), Dc, P, false, "ACK");
    const up = one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "PA", payload: "GET / HTTP/1.1\r\n\r\n" });
    expectRewritten(up, Dc, P, false, "request");
    assert.is(Buffer.from(read(up.data).payload).toString(), "GET / HTTP/1.1\r\n\r\n");
    const down = one(e, { proto: "tcp", src: P, dst: Dc, flags: "PA", payload: "HTTP/1.1 200 OK\r\n\r\nhello" });
    expectRewritten(down, N.D, N.C, false, "response");
    // 5. The proxy asks where the connection was going.
    const o = e.lookup("tcp", Dc, P);
    assert.ok(o);
    assert.equal(o!.destination, N.D);
    assert.equal(o!.client, N.C);
    assert.equal(o!.peer, Dc);
    assert.is(o!.pid, PID);
    assert.is(o!.path, PATH);
    assert.is(o!.inbound, false);
    assert.is(o!.proto, 6);
    assert.is(o!.bytesUp, 18n);
    assert.is(o!.bytesDown, 24n);
    // Any local address works for a proxy that does not know its own.
    assert.ok(e.lookup("tcp", Dc, { addr: fam === "IPv4" ? "0.0.0.0" : "::", port: APP }));
    assert.is(e.lookup("tcp", { addr: N.D.addr, port: N.C.port + 1 }, P), null);
    assert.is(e.lookup("udp", Dc, P), null);
    // 6. FIN both ways, last ACK; the entry lingers, then goes.
    one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "FA" });
    one(e, { proto: "tcp", src: P, dst: Dc, flags: "FA" });
    one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "A" });
    assert.ok(e.lookup("tcp", Dc, P), "still there right after close");
    // The closed event comes at the close, not when the entry goes.
    assert.is(e.eventsWaiting(), 2, "opened and closed wait to be read");
    const ev = e.events();
    assert.is(e.eventsWaiting(), 0, "all read");
    e.tick(29_000);
    assert.ok(e.lookup("tcp", Dc, P), "lingers 30 s");
    e.tick(31_000);
    assert.is(e.lookup("tcp", Dc, P), null, "gone after the linger");
    assert.is(e.events().length, 0, "no second closed event at removal");
    assert.is(ev.length, 2);
    assert.is(ev[0].type, 1);
    assert.is(ev[1].type, 2);
    assert.equal(ev[1].destination, N.D);
    assert.is(ev[1].bytesUp, 18n);
    assert.is(ev[1].bytesDown, 24n);
    assert.is(ev[1].path, PATH);
    const s = e.stats();
    assert.is(s.flowsRedirected, 1);
    assert.is(s.flowsActive, 0);
  });

  t("a proxy port already taken: the next flow gets another, where the proxy finds it", () => {
    const e = engine();
    // Two connections from the same client port to two ports of D: the
    // second's preferred proxy port (its client port) is the first's.
    const D2: Endpoint = { addr: N.D.addr, port: N.D.port + 1 };
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    expectRewritten(one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" }), Dc, P, false, "first SYN");
    e.owner(O_CONNECT, "tcp", N.C, D2, PID, PATH);
    const syn2 = one(e, { proto: "tcp", src: N.C, dst: D2, flags: "S" });
    assert.is(syn2.verdict, V_MODIFIED);
    const peer2 = read(syn2.data).src;
    assert.is(peer2.addr, N.D.addr);
    assert.ok(peer2.port >= 49152 && peer2.port !== N.C.port, "another proxy port");
    expectRewritten(syn2, peer2, P, false, "second SYN");
    assert.equal(e.lookup("tcp", peer2, P)!.destination, D2);
    assert.equal(e.lookup("tcp", Dc, P)!.destination, N.D);
    expectRewritten(one(e, { proto: "tcp", src: P, dst: peer2, flags: "SA" }), D2, N.C, false, "second SYN-ACK");
    expectRewritten(one(e, { proto: "tcp", src: P, dst: Dc, flags: "SA" }), N.D, N.C, false, "first SYN-ACK");
    assert.is(e.stats().natConflicts, 0);
  });

  t("RST closes a redirected flow", () => {
    const e = engine();
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    expectRewritten(one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" }), Dc, P, false, "SYN");
    expectRewritten(one(e, { proto: "tcp", src: P, dst: Dc, flags: "RA" }), N.D, N.C, false, "RST");
    e.tick(31_000);
    assert.is(e.lookup("tcp", Dc, P), null);
  });

  // A redirected SYN the proxy never answers (a firewall dropped it on its
  // way to the app port) counts once, one second after the first SYN; a
  // RST within that second is a refusal (nothing listens there).
  const synTo = (e: PacketEngine, now: number, port = N.C.port) =>
    one(e, { proto: "tcp", src: { ...N.C, port }, dst: N.D, flags: "S" }, true, now);
  const proxyAnswer = (e: PacketEngine, flags: string, now: number, port = N.C.port) =>
    one(e, { proto: "tcp", src: P, dst: { addr: N.D.addr, port }, flags }, true, now);
  const synCounts = (e: PacketEngine) => [e.stats().redirectedSynUnanswered, e.stats().redirectedSynRefused];

  t("a redirected SYN left unanswered for 1 s counts once, retransmissions and all", () => {
    const e = engine();
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    expectRewritten(synTo(e, 10_000), Dc, P, false, "SYN");
    // A retransmission before the second is up does not restart it.
    expectRewritten(synTo(e, 10_600), Dc, P, false, "retransmitted SYN");
    e.tick(10_999);
    assert.equal(synCounts(e), [0, 0], "not yet at 0.999 s");
    e.tick(11_000);
    assert.equal(synCounts(e), [1, 0], "counted at 1 s after the first SYN");
    // Retransmissions after that (the client's own timer) count no more.
    for (const t of [11_000, 13_000, 17_000]) {
      expectRewritten(synTo(e, t), Dc, P, false, "later retransmission");
      e.tick(t + 1500);
    }
    assert.equal(synCounts(e), [1, 0], "once per connection");
    // An answer after the second (a firewall rule added meanwhile) connects
    // it, and counts nothing more.
    expectRewritten(proxyAnswer(e, "SA", 19_000), N.D, N.C, false, "late SYN-ACK");
    e.tick(25_000);
    assert.equal(synCounts(e), [1, 0]);
    assert.ok(e.lookup("tcp", Dc, P), "the connection stays (established)");
  });

  t("a redirected SYN answered within the second counts nothing; a RST answer is a refusal", () => {
    const e = engine();
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    synTo(e, 5000);
    expectRewritten(proxyAnswer(e, "SA", 5900), N.D, N.C, false, "SYN-ACK at 0.9 s");
    e.tick(7000);
    assert.equal(synCounts(e), [0, 0], "answered at 0.9 s");
    // The proxy port refuses (RST) at 0.9 s: refused, not unanswered.
    const port = N.C.port + 1;
    e.owner(O_CONNECT, "tcp", { ...N.C, port }, N.D, PID, PATH);
    synTo(e, 8000, port);
    expectRewritten(proxyAnswer(e, "RA", 8900, port), N.D, { ...N.C, port }, false, "RST at 0.9 s");
    e.tick(10_000);
    assert.equal(synCounts(e), [0, 1], "refused once");
    // A RST after the second: that connection was unanswered, and only that.
    const late = N.C.port + 2;
    e.owner(O_CONNECT, "tcp", { ...N.C, port: late }, N.D, PID, PATH);
    synTo(e, 20_000, late);
    proxyAnswer(e, "RA", 21_200, late); // no tick between: the answer itself sees the second is up
    assert.equal(synCounts(e), [1, 1]);
    e.tick(23_000);
    assert.equal(synCounts(e), [1, 1], "counted once, in one counter");
  });

  t("a SYN held for its owner waits its second from its release to the proxy", () => {
    const e = engine();
    assert.is(synTo(e, 1000).verdict, V_HELD);
    e.tick(2500);
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH, 2500);
    expectRewritten(e.released()[0], Dc, P, false, "released SYN");
    e.tick(3400);
    assert.equal(synCounts(e), [0, 0], "0.9 s after it went to the proxy");
    e.tick(3500);
    assert.equal(synCounts(e), [1, 0]);
  });

  t("owner known before the first packet (socket event first)", () => {
    const e = engine();
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    const syn = one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" });
    expectRewritten(syn, Dc, P, false, "SYN");
    assert.is(e.queries().length, 0, "no query needed");
  });

  t("owner never known: released unchanged after the hold timeout", () => {
    const e = engine({ intercept_pids: [PID], hold_timeout_ms: 500 });
    const pkt = build({ proto: "tcp", src: N.C, dst: N.D, flags: "S" });
    assert.is(e.process([{ data: pkt }], 100)[0].verdict, V_HELD);
    // A retransmission joins the queue, in order.
    assert.is(e.process([{ data: pkt, cookie: 77 }], 400)[0].verdict, V_HELD);
    e.tick(550);
    assert.is(e.released().length, 0, "not yet");
    e.tick(700);
    const rel = e.released();
    assert.is(rel.length, 2);
    assert.equal(rel.map((r) => r.cookie), [0, 77]);
    for (const r of rel) {
      assert.is(r.verdict, V_PASS);
      assert.is(r.outbound, true);
      assert.equal(Array.from(r.data), Array.from(pkt));
    }
    assert.is(e.stats().holdTimeouts, 1);
    // The flow is now "pass": the next SYN retransmission is not held.
    assert.is(e.process([{ data: pkt }], 800)[0].verdict, V_PASS);
  });

  t("the shim finds no owner: passed at once", () => {
    const e = engine();
    one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" });
    e.owner(O_UNKNOWN, "tcp", N.C, N.D, 0, "");
    const rel = e.released();
    assert.is(rel.length, 1);
    assert.is(rel[0].verdict, V_PASS);
    // Nothing owned it (a raw socket, say): a real connection that later uses
    // the same ports is decided afresh, not passed for that.
    assert.is(one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" }).verdict, V_HELD);
    assert.is(e.queries().length, 1);
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    expectRewritten(e.released()[0], Dc, P, false, "the real connection is redirected");
  });

  t("a process not in the policy is passed, and so is the host itself", () => {
    const e = engine({ intercept: "!nothing" });
    one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" });
    e.owner(O_CONNECT, "tcp", N.C, N.D, SELF, "/usr/bin/proxy");
    assert.is(e.released()[0].verdict, V_PASS, "own PID");
    const e2 = engine({ intercept_pids: [PID, 4] }, 0, [4]); // 4: as the Windows backend says
    one(e2, { proto: "tcp", src: N.C, dst: N.D, flags: "S" });
    e2.owner(O_CONNECT, "tcp", N.C, N.D, 501, "/usr/bin/wget");
    assert.is(e2.released()[0].verdict, V_PASS, "other PID");
    one(e2, { proto: "tcp", src: { addr: N.C.addr, port: 40001 }, dst: N.D, flags: "S" });
    e2.owner(O_CONNECT, "tcp", { addr: N.C.addr, port: 40001 }, N.D, 4, "System");
    assert.is(e2.released()[0].verdict, V_PASS, "PID 4");
  });

  t("a policy that intercepts nothing asks for no owners", () => {
    const e = engine({});
    assert.is(one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" }).verdict, V_PASS);
    assert.is(e.queries().length, 0);
    assert.is(e.stats().flowsActive, 0);
  });

  t("packets in the middle of a connection that started before are never redirected", () => {
    const e = engine();
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    assert.is(one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "PA", payload: "x" }).verdict, V_PASS);
    assert.is(one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "SA" }).verdict, V_PASS);
  });

  t("UDP request/response, lookup by the datagram's addresses", () => {
    const e = engine();
    const Q: PacketSpec = { proto: "udp", src: N.C, dst: { addr: N.D.addr, port: 53 }, payload: "query" };
    assert.is(one(e, Q).verdict, V_HELD);
    e.owner(O_CONNECT, "udp", N.C, Q.dst, PID, PATH);
    const [rel] = e.released();
    expectRewritten(rel, Dc, P, false, "query to proxy");
    const o = e.lookup("udp", Dc, P);
    assert.ok(o);
    assert.equal(o!.destination, { addr: N.D.addr, port: 53 });
    expectRewritten(one(e, { proto: "udp", src: P, dst: Dc, payload: "answer" }), { addr: N.D.addr, port: 53 }, N.C, false, "answer");
    // Idle UDP flows go after udp_idle_timeout_ms (60 s by default).
    e.tick(59_000);
    assert.ok(e.lookup("udp", Dc, P));
    e.tick(61_000);
    assert.is(e.lookup("udp", Dc, P), null);
  });

  t("UDP from a bound socket is decided by its port owner", () => {
    const e = engine();
    e.owner(O_BIND, "udp", { addr: N.C.addr, port: N.C.port }, null, PID, PATH);
    const o = one(e, { proto: "udp", src: N.C, dst: { addr: N.D.addr, port: 53 }, payload: "q" });
    expectRewritten(o, Dc, P, false, "bound UDP");
    e.owner(O_CLOSE, "udp", { addr: N.C.addr, port: N.C.port }, null, PID, PATH);
    const o2 = one(e, { proto: "udp", src: N.C, dst: { addr: N.D.addr, port: 54 }, payload: "q" });
    assert.is(o2.verdict, V_HELD, "after close the port has no known owner");
  });

  t("inbound TCP to an intercepted listener: redirected to the app port and back", () => {
    const e = engine();
    e.owner(O_LISTEN, "tcp", N.L, null, PID, "/usr/bin/server");
    const syn = one(e, { proto: "tcp", src: N.R, dst: N.L, flags: "S" }, false);
    expectRewritten(syn, N.R, P, false, "inbound SYN");
    // The proxy answers from the app port; the remote sees the listener's port.
    expectRewritten(one(e, { proto: "tcp", src: P, dst: N.R, flags: "SA" }), N.L, N.R, true, "SYN-ACK out");
    expectRewritten(one(e, { proto: "tcp", src: N.R, dst: N.L, flags: "PA", payload: "hi" }, false), N.R, P, false, "data in");
    const o = e.lookup("tcp", N.R, P);
    assert.ok(o);
    assert.is(o!.inbound, true);
    assert.equal(o!.destination, N.L, "the listener's original port");
    assert.equal(o!.client, N.R);
    assert.is(o!.path, "/usr/bin/server");
  });

  t("inbound without a known listener: held, query names the listener", () => {
    const e = engine();
    assert.is(one(e, { proto: "tcp", src: N.R, dst: N.L, flags: "S" }, false).verdict, V_HELD);
    const [q] = e.queries();
    assert.is(q.inbound, true);
    assert.equal(q.local, N.L);
    e.owner(O_ACCEPT, "tcp", N.L, N.R, PID, "/usr/bin/server");
    expectRewritten(e.released()[0], N.R, P, false, "released inbound SYN");
  });

  t("config change mid-connection: the flow keeps its decision, new flows follow the new config", () => {
    const e = engine();
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" });
    one(e, { proto: "tcp", src: P, dst: Dc, flags: "SA" });
    assert.is(e.config(JSON.stringify({ intercept_pids: [] })).rc, 0);
    e.x.eng_set_app_port(9999);
    expectRewritten(one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "PA", payload: "more" }), Dc, P, false, "in flight");
    const C2 = { addr: N.C.addr, port: 40002 };
    e.owner(O_CONNECT, "tcp", C2, N.D, PID, PATH);
    assert.is(one(e, { proto: "tcp", src: C2, dst: N.D, flags: "S" }).verdict, V_PASS, "new flow not intercepted");
    // And the other way: a passed flow stays passed when interception starts.
    assert.is(e.config(JSON.stringify({ intercept_pids: [PID] })).rc, 0);
    assert.is(one(e, { proto: "tcp", src: C2, dst: N.D, flags: "S" }).verdict, V_PASS, "retransmitted SYN of a passed flow");
    const C3 = { addr: N.C.addr, port: 40003 };
    e.owner(O_CONNECT, "tcp", C3, N.D, PID, PATH);
    expectRewritten(one(e, { proto: "tcp", src: C3, dst: N.D, flags: "S" }), { addr: N.D.addr, port: 40003 },
      { addr: N.C.addr, port: 9999 }, false, "new flow to the new app port");
  });

  t("loopback, multicast, link-local and DHCP are bypassed by default, and can be redirected", () => {
    const lo = fam === "IPv4" ? "127.0.0.1" : "::1";
    const mc = fam === "IPv4" ? "239.1.2.3" : "ff02::fb";
    const ll = fam === "IPv4" ? "169.254.1.1" : "fe80::1";
    const e = engine({ intercept: "!nothing" });
    assert.is(one(e, { proto: "tcp", src: { addr: lo, port: 1 }, dst: { addr: lo, port: 2 }, flags: "S" }).verdict, V_PASS);
    assert.is(e.process([{ data: build({ proto: "tcp", src: N.C, dst: N.D, flags: "S" }), loopback: true }])[0].verdict, V_PASS);
    assert.is(one(e, { proto: "udp", src: N.C, dst: { addr: mc, port: 5353 }, payload: "m" }).verdict, V_PASS);
    assert.is(one(e, { proto: "tcp", src: N.C, dst: { addr: ll, port: 80 }, flags: "S" }).verdict, V_PASS);
    assert.is(one(e, { proto: "udp", src: { addr: N.C.addr, port: 68 }, dst: { addr: N.D.addr, port: 67 }, payload: "d" }).verdict, V_PASS);
    assert.is(e.stats().bypassed, 5);
    assert.is(e.stats().flowsActive, 0);
    const e2 = engine({ intercept: "!nothing", bypass: [] });
    assert.is(one(e2, { proto: "tcp", src: { addr: lo, port: 1 }, dst: { addr: lo, port: 2 }, flags: "S" }).verdict, V_HELD);
  });

  t("loopback intercepted (bypass without \"loopback\"): rewritten packets go back outbound, both ways", () => {
    // A capture sees loopback traffic only as outbound, and an inbound
    // injection on the loopback interface is never delivered (WinDivert).
    const lo = fam === "IPv4" ? "127.0.0.1" : "::1";
    const C: Endpoint = { addr: lo, port: 41000 };
    const S: Endpoint = { addr: lo, port: 6000 }; // a local service
    const LP: Endpoint = { addr: lo, port: APP };
    const Sc: Endpoint = { addr: lo, port: 41000 }; // the proxy's peer: S's address, the client's port
    const e = engine({ intercept_pids: [PID], bypass: [] });
    e.owner(O_CONNECT, "tcp", C, S, PID, PATH);
    const syn = e.process([{ data: build({ proto: "tcp", src: C, dst: S, flags: "S" }), loopback: true }])[0];
    expectRewritten(syn, Sc, LP, true, "SYN to the proxy");
    const sa = e.process([{ data: build({ proto: "tcp", src: LP, dst: Sc, flags: "SA" }), loopback: true }])[0];
    expectRewritten(sa, S, C, true, "SYN-ACK back to the client");
    const o = e.lookup("tcp", Sc, LP);
    assert.ok(o, "the proxy learns the origin");
    assert.equal(o!.destination, S);
    // Not loopback: the usual inbound injection.
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    expectRewritten(one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" }), Dc, P, false, "a non-loopback SYN");
  });

  if (fam === "IPv4") {
    t("limited broadcast is bypassed", () => {
      const e = engine({ intercept: "!nothing" });
      assert.is(one(e, { proto: "udp", src: N.C, dst: { addr: "255.255.255.255", port: 9 }, payload: "b" }).verdict, V_PASS);
      assert.is(e.stats().bypassed, 1);
    });
  }

  t("protocol, port and destination lists", () => {
    const e = engine({ intercept_pids: [PID], protocols: ["udp"], ports: ["1-100"], exclude_ports: [53] });
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    assert.is(one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" }).verdict, V_PASS, "tcp not selected");
    const u = (port: number) => one(e, { proto: "udp", src: N.C, dst: { addr: N.D.addr, port }, payload: "x" }).verdict;
    assert.is(u(53), V_PASS, "excluded port");
    assert.is(u(200), V_PASS, "port outside the list");
    assert.is(u(99), V_HELD, "selected");
    const net = fam === "IPv4" ? "198.18.0.0/24" : "fd00:198:18::/64";
    const e2 = engine({ intercept_pids: [PID], exclude_destinations: [net] });
    assert.is(one(e2, { proto: "tcp", src: N.C, dst: N.D, flags: "S" }).verdict, V_PASS, "excluded range");
    const e3 = engine({ intercept_pids: [PID], destinations: [net], directions: ["inbound"] });
    assert.is(one(e3, { proto: "tcp", src: N.C, dst: N.D, flags: "S" }).verdict, V_PASS, "outbound not selected");
  });

  t("a new SYN reusing a closed flow's ports is a new flow", () => {
    const e = engine();
    e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
    one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" });
    one(e, { proto: "tcp", src: P, dst: Dc, flags: "RA" });
    const again = one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" });
    assert.is(again.verdict, V_HELD, "asks for the owner again");
    assert.is(e.events().filter((x) => x.type === 2).length, 1, "the old flow closed");
  });

  t("proxy-side port clash: the second flow gets another port and both look up right", () => {
    // Two clients with the same port to the same host, different ports: the
    // proxy would see the same peer twice.
    const e = engine();
    const D2 = { addr: N.D.addr, port: N.D.port + 1 };
    e.owner(O_CONNECT, "udp", N.C, N.D, PID, PATH);
    e.owner(O_CONNECT, "udp", N.C, D2, PID, PATH);
    const a = one(e, { proto: "udp", src: N.C, dst: N.D, payload: "a" });
    const b = one(e, { proto: "udp", src: N.C, dst: D2, payload: "b" });
    const pa = read(a.data).src;
    const pb = read(b.data).src;
    assert.is(pa.port, N.C.port);
    assert.is.not(pb.port, N.C.port);
    assert.equal(e.lookup("udp", pa, P)!.destination, N.D);
    assert.equal(e.lookup("udp", pb, P)!.destination, D2);
    // Replies find their own client.
    expectRewritten(one(e, { proto: "udp", src: P, dst: pb, payload: "B" }), D2, N.C, false, "reply to the second");
  });

  t("hold limits: per flow and in total; over the limit packets are dropped and counted", () => {
    const e = engine({ intercept_pids: [PID], max_held_packets: 40 });
    const pkt = build({ proto: "udp", src: N.C, dst: N.D, payload: "x" });
    const v = e.process(Array.from({ length: 40 }, () => ({ data: pkt }))).map((o) => o.verdict);
    assert.is(v.filter((x) => x === V_HELD).length, 32, "32 per flow");
    assert.is(v.filter((x) => x === V_DROP).length, 8);
    for (let i = 0; i < 3; i++) {
      e.process([{ data: build({ proto: "udp", src: { addr: N.C.addr, port: 1000 + i }, dst: N.D, payload: "x" }) }]);
    }
    assert.is(e.stats().held, 35);
    assert.is(e.stats().dropped, 8, "the 41st held packet overall would be dropped");
    e.owner(O_CONNECT, "udp", N.C, N.D, PID, PATH);
    const rel = e.released();
    assert.is(rel.length, 32);
    assert.ok(rel.every((r) => r.verdict === V_MODIFIED));
  });

  t("hold limits: released packets not yet taken count too (the release list never overflows)", () => {
    const e = engine({ intercept_pids: [PID], max_held_packets: 16 });
    const first = build({ proto: "udp", src: { addr: N.C.addr, port: 2000 }, dst: N.D, payload: "first" });
    for (let round = 0; round < 6; round++) {
      const C: Endpoint = { addr: N.C.addr, port: 2000 + round };
      const pkt = build({ proto: "udp", src: C, dst: N.D, payload: round === 0 ? "first" : "later".repeat(round) });
      const v = e.process(Array.from({ length: 16 }, () => ({ data: pkt }))).map((o) => o.verdict);
      assert.ok(v.every((x) => x === (round === 0 ? V_HELD : V_DROP)), `round ${round}: ${v}`);
      e.owner(O_CONNECT, "udp", C, N.D, PID, PATH);
    }
    const rel = e.released();
    assert.is(rel.length, 16, "only the first round was held");
    assert.ok(rel.every((r) => r.verdict === V_MODIFIED && r.data.length === first.length && checksumsValid(r.data)));
    assert.is(one(e, { proto: "udp", src: { addr: N.C.addr, port: 3000 }, dst: N.D, payload: "x" }).verdict, V_HELD,
      "after the take there is room again");
  });

  t.run();
}

const misc = suite("redirect misc");

misc("dual-stack proxy: an IPv4-mapped peer looks up the IPv4 flow", () => {
  const e = engine();
  const N = NET4;
  e.owner(O_CONNECT, "tcp", N.C, N.D, PID, PATH);
  one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" });
  const o = e.lookup("tcp", { addr: "::ffff:c612:a", port: N.C.port }, { addr: "::ffff:a00:2", port: APP });
  assert.ok(o);
  assert.equal(o!.destination, N.D);
  assert.ok(e.lookup("tcp", { addr: "::ffff:c612:a", port: N.C.port }, { addr: "::", port: APP }));
  // Mixed families, as a dual-stack socket may give them: each end is unmapped on its own.
  assert.ok(e.lookup("tcp", { addr: "198.18.0.10", port: N.C.port }, { addr: "::ffff:a00:2", port: APP }), "v4 peer, mapped local");
  assert.ok(e.lookup("tcp", { addr: "198.18.0.10", port: N.C.port }, { addr: "::", port: APP }), "v4 peer, [::] local");
  assert.ok(e.lookup("tcp", { addr: "::ffff:c612:a", port: N.C.port }, { addr: "10.0.0.2", port: APP }), "mapped peer, v4 local");
  assert.ok(e.lookup("tcp", { addr: "::ffff:c612:a", port: N.C.port }, { addr: "::ffff:0:0", port: APP }),
    "mapped peer, mapped any");
  assert.not.ok(e.lookup("tcp", { addr: "198.18.0.10", port: N.C.port }, { addr: "fd00::2", port: APP }),
    "an IPv4 peer never reaches a specific IPv6 address");
  assert.not.ok(e.lookup("tcp", { addr: "::ffff:c612:b", port: N.C.port }, { addr: "::", port: APP }), "another peer");
});

misc("a long process path keeps its tail (the file name)", () => {
  const e = engine({ intercept: "*.exe" });
  const N = NET4;
  const path = "C:\\" + "very-long-folder\\".repeat(80) + "app.exe";
  e.owner(O_CONNECT, "tcp", N.C, N.D, 42, path);
  const o = one(e, { proto: "tcp", src: N.C, dst: N.D, flags: "S" });
  assert.is(o.verdict, V_MODIFIED);
  const origin = e.lookup("tcp", { addr: N.D.addr, port: N.C.port }, { addr: N.C.addr, port: APP })!;
  assert.ok(origin.path.endsWith("\\app.exe"));
  assert.ok(path.endsWith(origin.path));
});

misc.run();

