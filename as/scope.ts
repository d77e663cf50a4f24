// The capture scope: which packets a backend must capture so that the engine
// sees every packet it may redirect, for the configuration in force and for
// the flows alive. Backend-neutral (a backend turns it into its own filter:
// shim/capture/windivert/filter.c); the host reads it with
// eng_capture_scope, a Scope record and its lists (build/contract.ts).
//
// What must be captured, and why:
//   - outbound interception: the remote end of a flow (its destination port
//     and address: what `ports` and `destinations` name), whichever way a
//     packet goes, so the remote side's lists match the remote end of both
//     the client's packets and anything coming back;
//   - inbound interception: the local end (the listener's port and address:
//     what `ports` and `destinations` name for an inbound connection);
//   - the app ports: the proxy's replies come from C:P (local port P);
//   - loopback traffic only when loopback is not bypassed;
//   - every flow alive that is pending or redirected, decided under an
//     earlier configuration or app port: a flow keeps its decision, so a
//     narrower configuration must not strand its packets. Its end widens its
//     side's lists, its protocol, loopback and app port are added, and it is
//     marked Stray; when the last such flow ends the scope generation moves
//     on, so the backend narrows its capture again.
// A side's ports and networks are two lists (any port of one with any
// network of the other), so a scope is a superset of what is needed, never
// less. A list longer than its maximum becomes "any"; too many app ports
// make the scope "all".

import { Policy, Bypass, Cidr, cidrContains } from "./config/policy";
import { flow, listOldest, listNewer, Kind, FlowFlag, List, LISTS } from "./flows";
import {
  Scope, SCOPE_SIZE, ScopePorts, SCOPE_PORTS_SIZE, ScopeNet, SCOPE_NET_SIZE, ScopeFlag, SCOPE_PORTS_MAX,
  SCOPE_NETS_MAX, SCOPE_APP_PORTS_MAX,
} from "../build/gen/contract";

export { ScopeFlag };

/** Bumped whenever the scope may have changed: a configuration, an app port, a start, a Stray flow's end. */
export let scopeGeneration: u32 = 1;

export function scopeChanged(): void {
  scopeGeneration++;
}

/** A flow stops needing the capture (decided pass, or removed): a Stray one lets the scope narrow. */
export function scopeFlowGone(f: usize): void {
  const fl = flow(f).flags;
  if ((fl & FlowFlag.Stray) == 0) return;
  flow(f).flags = fl & ~FlowFlag.Stray;
  scopeChanged();
}

/** One end of flows: ports (lo << 16 | hi) and networks, or any. */
class Side {
  on: bool = false;
  anyPort: bool = false;
  anyNet: bool = false;
  ports: Array<u32> = new Array<u32>();
  nets: Array<Cidr> = new Array<Cidr>();
}

function portIn(list: Array<u32>, port: u32): bool {
  for (let i = 0; i < list.length; i++) {
    const r = unchecked(list[i]);
    if (port >= (r >>> 16) && port <= (r & 0xffff)) return true;
  }
  return false;
}

function netIn(list: Array<Cidr>, v6: bool, addr: usize): bool {
  for (let i = 0; i < list.length; i++) {
    if (cidrContains(unchecked(list[i]), v6, addr)) return true;
  }
  return false;
}

/** The policy's ports and networks on a side (empty lists: any). */
function sidePolicy(s: Side, ports: Array<u32>, nets: Array<Cidr>): void {
  s.on = true;
  if (ports.length == 0 || ports.length > <i32>SCOPE_PORTS_MAX * 4) s.anyPort = true;
  else for (let i = 0; i < ports.length; i++) s.ports.push(unchecked(ports[i]));
  if (nets.length == 0 || nets.length > <i32>SCOPE_NETS_MAX) s.anyNet = true;
  else for (let i = 0; i < nets.length; i++) s.nets.push(unchecked(nets[i]));
}

function sideCovers(s: Side, port: u32, v6: bool, addr: usize): bool {
  return s.on && (s.anyPort || portIn(s.ports, port)) && (s.anyNet || netIn(s.nets, v6, addr));
}

/** Widens a side to one end of a flow. */
function sideAdd(s: Side, port: u32, v6: bool, addr: usize): void {
  if (!s.on) {
    s.on = true;
    s.anyPort = false;
    s.anyNet = false;
  }
  if (!s.anyPort && !portIn(s.ports, port)) {
    if (s.ports.length >= <i32>SCOPE_PORTS_MAX * 4) {
      s.anyPort = true;
      s.ports = new Array<u32>();
    } else {
      s.ports.push((port << 16) | port);
    }
  }
  if (!s.anyNet && !netIn(s.nets, v6, addr)) {
    if (s.nets.length >= <i32>SCOPE_NETS_MAX) {
      s.anyNet = true;
      s.nets = new Array<Cidr>();
    } else {
      const c = new Cidr();
      c.v6 = v6;
      c.prefix = v6 ? 128 : 32;
      memory.copy(changetype<usize>(c.addr), addr, v6 ? 16 : 4);
      s.nets.push(c);
    }
  }
}

/** Sorts and merges a side's port ranges; too many: any port. */
function normalizePorts(s: Side): void {
  if (s.anyPort) return;
  const l = s.ports;
  l.sort((x: u32, y: u32): i32 => (x < y ? -1 : x > y ? 1 : 0));
  const out = new Array<u32>();
  for (let i = 0; i < l.length; i++) {
    const r = unchecked(l[i]);
    const n = out.length;
    if (n > 0 && (r >>> 16) <= (unchecked(out[n - 1]) & 0xffff) + 1) {
      const last = unchecked(out[n - 1]);
      const hi = max<u32>(last & 0xffff, r & 0xffff);
      unchecked((out[n - 1] = (last & 0xffff0000) | hi));
    } else {
      out.push(r);
    }
  }
  if (out.length > <i32>SCOPE_PORTS_MAX) {
    s.anyPort = true;
    s.ports = new Array<u32>();
  } else {
    s.ports = out;
  }
}

/** Is network a inside network b? */
function netInside(a: Cidr, b: Cidr): bool {
  return a.v6 == b.v6 && a.prefix >= b.prefix && cidrContains(b, a.v6, changetype<usize>(a.addr));
}

/** Orders networks: IPv4 first, then by address, then by prefix. */
function netOrder(a: Cidr, b: Cidr): i32 {
  if (a.v6 != b.v6) return a.v6 ? 1 : -1;
  for (let i = 0; i < 16; i++) {
    const x = unchecked(a.addr[i]);
    const y = unchecked(b.addr[i]);
    if (x != y) return x < y ? -1 : 1;
  }
  return a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0;
}

/** Drops networks inside others and sorts the rest (the same set gives the same scope). */
function normalizeNets(s: Side): void {
  if (s.anyNet) return;
  const l = s.nets;
  const out = new Array<Cidr>();
  for (let i = 0; i < l.length; i++) {
    const a = unchecked(l[i]);
    let inside = false;
    for (let j = 0; j < l.length && !inside; j++) {
      if (j == i) continue;
      const b = unchecked(l[j]);
      // Of two equal networks the first stays.
      inside = netInside(a, b) && (a.prefix != b.prefix || j < i);
    }
    if (!inside) out.push(a);
  }
  out.sort(netOrder);
  s.nets = out;
}

function addAppPort(list: Array<u32>, port: u32): bool {
  if (port == 0) return false;
  for (let i = 0; i < list.length; i++) if (unchecked(list[i]) == port) return false;
  list.push(port);
  return true;
}

/**
 * Writes the scope at `out` (room for scopeMaxSize() bytes) for policy `pol`
 * and app port `app`, with the pending and redirected flows alive; returns
 * its length. Marks Stray the flows that widen it.
 */
export function captureScope(out: usize, pol: Policy, app: u32): u32 {
  let flags: u32 = 0;
  const remote = new Side();
  const local = new Side();
  const apps = new Array<u32>();
  if (app != 0 && !pol.interceptsNothing) {
    if (pol.tcp) flags |= ScopeFlag.Tcp;
    if (pol.udp) flags |= ScopeFlag.Udp;
    if ((pol.bypass & Bypass.Loopback) == 0) flags |= ScopeFlag.Loopback;
    if (pol.outbound) sidePolicy(remote, pol.ports, pol.destinations);
    if (pol.inbound) sidePolicy(local, pol.ports, pol.destinations);
    addAppPort(apps, app);
  }
  // The flows alive that may still be redirected, or are (on whichever
  // list: their kind says).
  for (let l: u32 = List.Pending; l < LISTS; l++) {
    for (let f = listOldest(<List>l); f != 0; f = listNewer(f)) {
      const kind = flow(f).kind;
      if (kind != Kind.Pending && kind != Kind.Out && kind != Kind.In) continue;
      let stray = false;
      const bit: u32 = flow(f).proto == 6 ? ScopeFlag.Tcp : ScopeFlag.Udp;
      if ((flags & bit) == 0) {
        flags |= bit;
        stray = true;
      }
      if ((flow(f).flags & FlowFlag.Loopback) != 0 && (flags & ScopeFlag.Loopback) == 0) {
        flags |= ScopeFlag.Loopback;
        stray = true;
      }
      const v6 = flow(f).v6 != 0;
      // The end `ports` and `destinations` name: the remote one of an
      // outbound flow, the listener's of an inbound one.
      const inbound = kind == Kind.In || (kind == Kind.Pending && flow(f).dir == 1);
      const s = inbound ? local : remote;
      const port = inbound ? <u32>flow(f).localPort : <u32>flow(f).remotePort;
      const addr = inbound ? flow(f).localAddr : flow(f).remoteAddr;
      if (!sideCovers(s, port, v6, addr)) {
        sideAdd(s, port, v6, addr);
        stray = true;
      }
      if (kind != Kind.Pending && addAppPort(apps, <u32>flow(f).appPort)) stray = true;
      const fl = flow(f).flags;
      flow(f).flags = stray ? fl | FlowFlag.Stray : fl & ~FlowFlag.Stray;
    }
  }
  normalizePorts(remote);
  normalizePorts(local);
  normalizeNets(remote);
  normalizeNets(local);
  if (apps.length > <i32>SCOPE_APP_PORTS_MAX) {
    flags |= ScopeFlag.All;
    apps.length = 0;
  }
  apps.sort((x: u32, y: u32): i32 => (x < y ? -1 : x > y ? 1 : 0));
  if (remote.on) {
    flags |= ScopeFlag.Remote;
    if (remote.anyPort) flags |= ScopeFlag.RemoteAnyPort;
    if (remote.anyNet) flags |= ScopeFlag.RemoteAnyNet;
  }
  if (local.on) {
    flags |= ScopeFlag.Local;
    if (local.anyPort) flags |= ScopeFlag.LocalAnyPort;
    if (local.anyNet) flags |= ScopeFlag.LocalAnyNet;
  }
  const h = changetype<Scope>(out);
  h.flags = flags;
  h.appPorts = <u32>apps.length;
  h.remotePorts = <u32>remote.ports.length;
  h.localPorts = <u32>local.ports.length;
  h.remoteNets = <u32>remote.nets.length;
  h.localNets = <u32>local.nets.length;
  let p = out + SCOPE_SIZE;
  for (let i = 0; i < apps.length; i++) p = putPorts(p, (unchecked(apps[i]) << 16) | unchecked(apps[i]));
  for (let i = 0; i < remote.ports.length; i++) p = putPorts(p, unchecked(remote.ports[i]));
  for (let i = 0; i < local.ports.length; i++) p = putPorts(p, unchecked(local.ports[i]));
  for (let i = 0; i < remote.nets.length; i++) p = putNet(p, unchecked(remote.nets[i]));
  for (let i = 0; i < local.nets.length; i++) p = putNet(p, unchecked(local.nets[i]));
  return <u32>(p - out);
}

function putPorts(p: usize, r: u32): usize {
  const rec = changetype<ScopePorts>(p);
  rec.lo = <u16>(r >>> 16);
  rec.hi = <u16>(r & 0xffff);
  return p + SCOPE_PORTS_SIZE;
}

function putNet(p: usize, c: Cidr): usize {
  const rec = changetype<ScopeNet>(p);
  memory.fill(p, 0, SCOPE_NET_SIZE);
  rec.family = c.v6 ? 6 : 4;
  rec.prefix = <u8>c.prefix;
  // Host bits zero, as the record promises (a configuration may give them).
  const a = rec.addr;
  const n: u32 = c.v6 ? 16 : 4;
  for (let i: u32 = 0; i < n; i++) {
    const bits = <i32>c.prefix - <i32>(i * 8);
    const mask: u32 = bits >= 8 ? 0xff : bits <= 0 ? 0 : (0xff << (8 - bits)) & 0xff;
    store<u8>(a + i, <u8>(<u32>unchecked(c.addr[i]) & mask));
  }
  return p + SCOPE_NET_SIZE;
}

/** The most bytes captureScope writes. */
export function scopeMaxSize(): u32 {
  return SCOPE_SIZE + (SCOPE_APP_PORTS_MAX + 2 * SCOPE_PORTS_MAX) * SCOPE_PORTS_SIZE + 2 * SCOPE_NETS_MAX * SCOPE_NET_SIZE;
}
