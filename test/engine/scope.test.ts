// The capture scope (as/scope.ts, eng_capture_scope): what a backend must
// capture for a configuration, an app port and the flows alive, and when its
// generation moves on.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { Engine, PacketEngine, V_HELD, V_MODIFIED, O_CONNECT, O_LISTEN, type ScopeSide } from "./harness.ts";
import { build, type Endpoint, type PacketSpec } from "./packets.ts";

const t = suite("capture scope");

const SELF = 1000;
const PID = 500;
const APP = 8080;
const C: Endpoint = { addr: "10.0.0.2", port: 40000 };
const D: Endpoint = { addr: "198.18.0.10", port: 80 };

const ANY: ScopeSide = { on: true, anyPort: true, anyNet: true, ports: [], nets: [] };
const OFF: ScopeSide = { on: false, anyPort: false, anyNet: false, ports: [], nets: [] };

function configured(json: object, app = APP): Engine {
  const e = new Engine(SELF);
  const r = e.config(JSON.stringify(json));
  assert.is(r.rc, 0, r.error);
  e.x.eng_set_app_port(app);
  return e;
}

function started(json: object): PacketEngine {
  const e = new PacketEngine(SELF);
  const r = e.config(JSON.stringify(json));
  assert.is(r.rc, 0, r.error);
  e.start(0, APP);
  return e;
}

function one(e: PacketEngine, spec: PacketSpec, opts: { outbound?: boolean; loopback?: boolean; now?: number } = {}) {
  return e.process([{ data: build(spec), outbound: opts.outbound ?? true, loopback: opts.loopback }], opts.now ?? 0)[0];
}

function reconfigure(e: Engine, json: object): void {
  const r = e.config(JSON.stringify(json));
  assert.is(r.rc, 0, r.error);
}

t("nothing to intercept, or no app port: nothing to capture", () => {
  for (const e of [configured({}), configured({ intercept_pids: [PID] }, 0)]) {
    assert.equal(e.scope(), {
      tcp: false, udp: false, loopback: false, all: false, appPorts: [], remote: OFF, local: OFF,
    });
  }
});

t("the defaults: both protocols, both sides whole, loopback left out, the app port", () => {
  assert.equal(configured({ intercept_pids: [PID] }).scope(), {
    tcp: true, udp: true, loopback: false, all: false, appPorts: [APP], remote: ANY, local: ANY,
  });
});

t("protocols, directions and the loopback bypass narrow it", () => {
  let s = configured({ intercept: "curl", protocols: ["tcp"], directions: ["outbound"], bypass: [] }).scope();
  assert.equal([s.tcp, s.udp, s.loopback], [true, false, true]);
  assert.equal(s.remote, ANY);
  assert.equal(s.local, OFF, "no inbound interception: no local side");
  s = configured({ intercept: "curl", protocols: "udp", directions: ["inbound"], bypass: ["multicast"] }).scope();
  assert.equal([s.tcp, s.udp, s.loopback], [false, true, true]);
  assert.equal(s.remote, OFF);
  assert.equal(s.local, ANY);
});

t("ports: merged and sorted ranges, on the side the direction names; exclusions do not narrow", () => {
  const s = configured({
    intercept_pids: [PID], ports: [443, "8000-8100", 8101, 80, "79-80", 65535], exclude_ports: [8050],
  }).scope();
  const side: ScopeSide = { on: true, anyPort: false, anyNet: true, ports: ["79-80", "443", "8000-8101", "65535"], nets: [] };
  assert.equal(s.remote, side, "outbound: the destination's port");
  assert.equal(s.local, side, "inbound: the listener's port");
});

t("destinations: networks with host bits cleared, those inside others dropped, sorted", () => {
  const s = configured({
    intercept_pids: [PID],
    destinations: ["fd00::1/8", "10.1.2.3/8", "198.18.0.0/15", "10.0.0.0/16", "198.18.0.0/15", "2001:db8::5"],
    exclude_destinations: ["10.9.0.0/16"],
  }).scope();
  assert.equal(s.remote, {
    on: true, anyPort: true, anyNet: false, ports: [], nets: ["10.0.0.0/8", "198.18.0.0/15", "2001:db8::5/128", "fd00::/8"],
  });
});

t("too many ports or networks: that list becomes any", () => {
  const ports = Array.from({ length: 200 }, (_, i) => 1000 + 2 * i);
  let s = configured({ intercept_pids: [PID], ports }).scope();
  assert.ok(s.remote.anyPort && s.remote.ports.length === 0, "200 separate ports");
  s = configured({ intercept_pids: [PID], ports: ports.slice(0, 128) }).scope();
  assert.is(s.remote.ports.length, 128, "128 fit");
  const nets = Array.from({ length: 65 }, (_, i) => `10.${i}.0.0/16`);
  s = configured({ intercept_pids: [PID], destinations: nets }).scope();
  assert.ok(s.remote.anyNet && s.remote.nets.length === 0, "65 networks");
  s = configured({ intercept_pids: [PID], destinations: nets.slice(0, 64) }).scope();
  assert.is(s.remote.nets.length, 64, "64 fit");
});

t("a redirected flow keeps its capture after a narrower configuration, until it ends", () => {
  const e = started({ intercept_pids: [PID], ports: [53], protocols: ["udp"], udp_idle_timeout_ms: 1000 });
  const S: Endpoint = { addr: "192.0.2.53", port: 53 };
  e.owner(O_CONNECT, "udp", C, S, PID, "/usr/bin/dig");
  assert.is(one(e, { proto: "udp", src: C, dst: S, payload: "q" }).verdict, V_MODIFIED);
  const g0 = e.x.eng_scope_generation();
  reconfigure(e, {
    intercept_pids: [PID], ports: [443], protocols: ["tcp"], destinations: ["203.0.113.0/24"], udp_idle_timeout_ms: 1000,
  });
  const g1 = e.x.eng_scope_generation();
  assert.ok(g1 !== g0, "a configuration moves the generation on");
  let s = e.scope();
  assert.equal([s.tcp, s.udp], [true, true], "UDP stays while the UDP flow lives");
  assert.equal(s.remote, {
    on: true, anyPort: false, anyNet: false, ports: ["53", "443"], nets: ["192.0.2.53/32", "203.0.113.0/24"],
  });
  // The flow goes on being redirected, then idles out.
  assert.is(one(e, { proto: "udp", src: C, dst: S, payload: "q2" }, { now: 500 }).verdict, V_MODIFIED);
  e.tick(1000);
  assert.is(e.x.eng_scope_generation(), g1, "still alive: the generation stays");
  e.tick(2000);
  const g2 = e.x.eng_scope_generation();
  assert.ok(g2 !== g1, "its end moves the generation on");
  s = e.scope();
  assert.equal([s.tcp, s.udp], [true, false]);
  assert.equal(s.remote, { on: true, anyPort: false, anyNet: false, ports: ["443"], nets: ["203.0.113.0/24"] });
  e.tick(3000);
  assert.is(e.x.eng_scope_generation(), g2, "nothing more to narrow");
});

t("a flow the new configuration covers is not kept apart, and its end changes nothing", () => {
  const e = started({ intercept_pids: [PID], protocols: ["udp"], udp_idle_timeout_ms: 1000 });
  const S: Endpoint = { addr: "192.0.2.53", port: 53 };
  e.owner(O_CONNECT, "udp", C, S, PID, "/usr/bin/dig");
  assert.is(one(e, { proto: "udp", src: C, dst: S, payload: "q" }).verdict, V_MODIFIED);
  reconfigure(e, { intercept_pids: [PID], protocols: ["udp"], ports: ["50-60"], udp_idle_timeout_ms: 1000 });
  assert.equal(e.scope().remote.ports, ["50-60"]);
  const g = e.x.eng_scope_generation();
  e.tick(5000);
  assert.is(e.x.eng_scope_generation(), g);
});

t("a loopback flow keeps loopback captured after loopback is bypassed again", () => {
  const e = started({ intercept_pids: [PID], bypass: [], tcp_idle_timeout_ms: 1000 });
  const L: Endpoint = { addr: "127.0.0.1", port: 41000 };
  const Svc: Endpoint = { addr: "127.0.0.1", port: 5432 };
  e.owner(O_CONNECT, "tcp", L, Svc, PID, "/usr/bin/psql");
  assert.is(one(e, { proto: "tcp", src: L, dst: Svc, flags: "S" }, { loopback: true }).verdict, V_MODIFIED);
  reconfigure(e, { intercept_pids: [PID] });
  assert.ok(e.scope().loopback, "kept for the loopback flow");
  // A RST ends it; the entry lingers 30 s for strays, then goes.
  one(e, { proto: "tcp", src: L, dst: Svc, flags: "R" }, { loopback: true });
  const g = e.x.eng_scope_generation();
  e.tick(31000);
  assert.ok(e.x.eng_scope_generation() !== g);
  assert.not.ok(e.scope().loopback);
});

t("an app port change keeps the old port while its flows live, and moves the generation on", () => {
  const e = started({ intercept_pids: [PID] });
  e.owner(O_CONNECT, "tcp", C, D, PID, "/usr/bin/curl");
  assert.is(one(e, { proto: "tcp", src: C, dst: D, flags: "S" }).verdict, V_MODIFIED);
  const g = e.x.eng_scope_generation();
  e.x.eng_set_app_port(APP);
  assert.is(e.x.eng_scope_generation(), g, "the same port: no change");
  e.x.eng_set_app_port(9090);
  assert.ok(e.x.eng_scope_generation() !== g);
  assert.equal(e.scope().appPorts, [APP, 9090]);
});

t("a flow still waiting for its owner is kept: it may yet be redirected", () => {
  const e = started({ intercept_pids: [PID], ports: [80] });
  assert.is(one(e, { proto: "tcp", src: C, dst: D, flags: "S" }).verdict, V_HELD);
  reconfigure(e, { intercept_pids: [PID], ports: [443] });
  assert.equal(e.scope().remote.ports, ["80", "443"]);
  // Decided (redirected under the new process policy): still kept, now redirected.
  e.owner(O_CONNECT, "tcp", C, D, PID, "/usr/bin/curl");
  assert.is(e.released()[0].verdict, V_MODIFIED);
  assert.equal(e.scope().remote.ports, ["80", "443"]);
});

t("an inbound flow keeps its listener's end on the local side", () => {
  const e = started({ intercept_pids: [PID] });
  const Lst: Endpoint = { addr: "10.0.0.2", port: 9000 };
  const R: Endpoint = { addr: "198.51.100.7", port: 51000 };
  e.owner(O_LISTEN, "tcp", { addr: "0.0.0.0", port: Lst.port }, null, PID, "/usr/bin/server");
  assert.is(one(e, { proto: "tcp", src: R, dst: Lst, flags: "S" }, { outbound: false }).verdict, V_MODIFIED);
  reconfigure(e, { intercept_pids: [PID], directions: ["outbound"], ports: [443] });
  const s = e.scope();
  assert.equal(s.local, { on: true, anyPort: false, anyNet: false, ports: ["9000"], nets: ["10.0.0.2/32"] });
  assert.equal(s.remote.ports, ["443"]);
});

t("the generation: configurations, app ports and a start move it; packets alone do not", () => {
  const e = new PacketEngine(SELF);
  const g0 = e.x.eng_scope_generation();
  reconfigure(e, { intercept_pids: [PID] });
  const g1 = e.x.eng_scope_generation();
  assert.ok(g1 !== g0);
  assert.is(e.config("{").rc, -2);
  assert.is(e.x.eng_scope_generation(), g1, "a rejected configuration changes nothing");
  e.start(0, APP);
  const g2 = e.x.eng_scope_generation();
  assert.ok(g2 !== g1);
  e.owner(O_CONNECT, "tcp", C, D, PID, "/usr/bin/curl");
  one(e, { proto: "tcp", src: C, dst: D, flags: "S" });
  one(e, { proto: "tcp", src: C, dst: { ...D, port: 81 }, flags: "S" });
  e.tick(100);
  assert.is(e.x.eng_scope_generation(), g2);
});

t.run();
