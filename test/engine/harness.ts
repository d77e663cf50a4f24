// Loads the very build/engine.wasm that wasm2c translated into the library,
// as a raw WebAssembly.Instance, and wraps its exports for tests.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const wasmPath = join(root, "build", "engine.wasm");
let module: WebAssembly.Module | undefined;

export interface EngineExports {
  memory: WebAssembly.Memory;
  eng_abi(): number;
  eng_init(pid: number, seed: number): number;
  eng_never_intercept(pid: number): number;
  eng_io(len: number): number;
  eng_io_cap(): number;
  eng_err_ptr(): number;
  eng_err_len(): number;
  eng_config(len: number, now: number): number;
  eng_config_generation(): number;
  eng_set_app_port(port: number): void;
  eng_app_port(): number;
  eng_would_intercept(pid: number, pathLen: number): number;
  eng_would_intercept_tree(count: number, len: number, now: number): number;
  eng_protocols(): number;
  eng_arm_fault(bits: number): void;
  eng_capture_scope(): number;
  eng_scope_generation(): number;
}

/** One side of a capture scope: port ranges ("80", "8000-8100") and networks ("10.0.0.0/8"). */
export interface ScopeSide {
  on: boolean;
  anyPort: boolean;
  anyNet: boolean;
  ports: string[];
  nets: string[];
}

/** The capture scope as eng_capture_scope writes it (build/contract.ts: scope). */
export interface CaptureScope {
  tcp: boolean;
  udp: boolean;
  loopback: boolean;
  all: boolean;
  appPorts: number[];
  remote: ScopeSide;
  local: ScopeSide;
}

/** A process as an ancestry lists it: PID, creation time (the identity), age in ms (-1: not known), path. */
export interface Proc {
  pid: number;
  ctime: number;
  age?: number;
  path?: string;
}

/** Ancestor records, each followed by its path, the next at a multiple of 8. */
export function ancestry(chain: readonly Proc[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let len = 0;
  for (const p of chain) {
    const path = Buffer.from(p.path ?? "", "utf8");
    const rec = bytes("ancestor", {
      pid: p.pid, pathLen: path.length, ctime: BigInt(p.ctime),
      ageMs: p.age === undefined || p.age < 0 ? 0xffffffffffffffffn : BigInt(p.age),
    }, path);
    const padded = new Uint8Array(Math.ceil(rec.length / 8) * 8);
    padded.set(rec);
    parts.push(padded);
    len += padded.length;
  }
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export class Engine {
  readonly x: EngineExports;

  /** neverIntercept: the OS's never-intercept PIDs, as a backend gives them (Windows: [4]). */
  constructor(selfPid = 1000, neverIntercept: number[] = []) {
    module ??= new WebAssembly.Module(readFileSync(wasmPath));
    const inst = new WebAssembly.Instance(module, {});
    this.x = inst.exports as unknown as EngineExports;
    this.x.eng_init(selfPid, 0x1234567);
    for (const pid of neverIntercept) {
      if (this.x.eng_never_intercept(pid) !== 0) throw new Error(`never-intercept list full at PID ${pid}`);
    }
  }

  bytes(ptr: number, len: number): Uint8Array {
    return new Uint8Array(this.x.memory.buffer, ptr, len);
  }

  /** Copies bytes into the I/O buffer. */
  io(data: Uint8Array): number {
    const p = this.x.eng_io(data.length);
    if (p === 0) throw new Error("engine refused an I/O buffer of " + data.length + " bytes");
    this.bytes(p, data.length).set(data);
    return p;
  }

  error(): string {
    return Buffer.from(this.bytes(this.x.eng_err_ptr(), this.x.eng_err_len())).toString("utf8");
  }

  config(json: string | Uint8Array, now = 0): { rc: number; error: string } {
    const data = typeof json === "string" ? Buffer.from(json, "utf8") : json;
    this.io(data);
    const rc = this.x.eng_config(data.length, now);
    return { rc, error: rc === 0 ? "" : this.error() };
  }

  wouldIntercept(pid: number, path = ""): boolean {
    const data = Buffer.from(path, "utf8");
    this.io(data);
    return this.x.eng_would_intercept(pid, data.length) === 1;
  }

  /**
   * Would the first process of an ancestry (itself, its parent, ...) be
   * intercepted (eng_would_intercept_tree)? The engine remembers what it
   * decides by each process's identity.
   */
  wouldInterceptTree(chain: readonly Proc[], now = 0): boolean {
    const data = ancestry(chain);
    this.io(data);
    const r = this.x.eng_would_intercept_tree(chain.length, data.length, now);
    if (r < 0) throw new Error("eng_would_intercept_tree " + r);
    return r === 1;
  }

  /** The capture scope, decoded; its record's length is checked against its counts. */
  scope(): CaptureScope {
    const len = this.x.eng_capture_scope();
    const p = this.x.eng_io(0);
    const mem = new DataView(this.x.memory.buffer);
    const h = decode("scope", mem, p);
    const F = ENUMS.scope_flag.members;
    let at = p + size("scope");
    const ports = (n: number): string[] =>
      Array.from({ length: n }, () => {
        const r = decode("scope_ports", mem, at);
        at += size("scope_ports");
        return r.lo === r.hi ? `${r.lo}` : `${r.lo}-${r.hi}`;
      });
    const nets = (n: number): string[] =>
      Array.from({ length: n }, () => {
        const r = decode("scope_net", mem, at);
        at += size("scope_net");
        return `${formatAddr(r.addr.subarray(0, r.family === 6 ? 16 : 4))}/${r.prefix}`;
      });
    const appPorts = ports(h.appPorts).map(Number);
    const remotePorts = ports(h.remotePorts);
    const localPorts = ports(h.localPorts);
    const remoteNets = nets(h.remoteNets);
    const localNets = nets(h.localNets);
    if (at - p !== len) throw new Error(`eng_capture_scope said ${len} bytes, its counts make ${at - p}`);
    const side = (on: number, anyPort: number, anyNet: number, ps: string[], ns: string[]): ScopeSide => ({
      on: (h.flags & on) !== 0, anyPort: (h.flags & anyPort) !== 0, anyNet: (h.flags & anyNet) !== 0, ports: ps, nets: ns,
    });
    return {
      tcp: (h.flags & F.tcp) !== 0,
      udp: (h.flags & F.udp) !== 0,
      loopback: (h.flags & F.loopback) !== 0,
      all: (h.flags & F.all) !== 0,
      appPorts,
      remote: side(F.remote, F.remote_any_port, F.remote_any_net, remotePorts, remoteNets),
      local: side(F.local, F.local_any_port, F.local_any_net, localPorts, localNets),
    };
  }
}

// ---------------------------------------------------------------------------
// The packet path

import { formatAddr, parseAddr, type Endpoint } from "./packets.ts";
import { ENUMS } from "../../build/contract.ts";
import { bytes, decode, decodeStats, encode, size, type Rec, type Stats } from "./records.ts";

export { STAT_NAMES, type Stats } from "./records.ts";

// The contract's named values (build/contract.ts).
const { in_flag: IN, verdict: V, out_flag: OUT, owner_kind: O } = ENUMS;
export const IN_OUTBOUND = IN.members.outbound;
export const IN_LOOPBACK = IN.members.loopback;
export const IN_CSUM_PARTIAL = IN.members.csum_partial;
export const V_PASS = V.members.pass;
export const V_MODIFIED = V.members.modified;
export const V_DROP = V.members.drop;
export const V_HELD = V.members.held;
export const OUT_OUTBOUND = OUT.members.outbound;
export const OUT_CSUM_VALID = OUT.members.csum_valid;

export const O_CONNECT = O.members.connect;
export const O_ACCEPT = O.members.accept;
export const O_BIND = O.members.bind;
export const O_LISTEN = O.members.listen;
export const O_CLOSE = O.members.close;
export const O_UNKNOWN = O.members.unknown;


export interface InPacket {
  data: Uint8Array;
  outbound?: boolean; // default true
  loopback?: boolean;
  partial?: boolean;
  cookie?: number;
  ifIdx?: number;
}

export interface OutPacket {
  verdict: number;
  outbound: boolean;
  csumValid: boolean;
  data: Uint8Array; // the bytes after the verdict (rewritten in place, or released)
  cookie: number;
  ifIdx: number;
}

export interface Query {
  proto: number;
  v6: boolean;
  inbound: boolean;
  local: Endpoint;
  remote: Endpoint;
}

export interface Origin {
  type: number;
  proto: number;
  v6: boolean;
  inbound: boolean;
  pid: number;
  flowId: number;
  destination: Endpoint;
  client: Endpoint;
  peer: Endpoint;
  appPort: number;
  bytesUp: bigint;
  bytesDown: bigint;
  time: number;
  path: string;
}

export interface PacketExports {
  eng_start(now: number): number;
  eng_batch_meta(): number;
  eng_batch_data(): number;
  eng_batch_max(): number;
  eng_batch_data_cap(): number;
  eng_process(count: number, now: number): number;
  eng_take_released(): number;
  eng_released_ptr(): number;
  eng_take_queries(max: number): number;
  eng_queries_ptr(): number;
  eng_owner(len: number, now: number): number;
  eng_exclude(len: number): number;
  eng_tick(now: number): void;
  eng_lookup(len: number): number;
  eng_next_event(): number;
  eng_events_waiting(): number;
  eng_stats_ptr(): number;
  eng_stats_count(): number;
  eng_flow_capacity(): number;
  eng_bytes_per_flow(): number;
}

function addrBytes(a: string, v6: boolean): Uint8Array {
  const b = parseAddr(a);
  const out = new Uint8Array(16);
  out.set(b);
  if (v6 !== (b.length === 16)) throw new Error("family mismatch " + a);
  return out;
}

function addrText(a: Uint8Array, v6: boolean): string {
  return formatAddr(a.subarray(0, v6 ? 16 : 4));
}

export class PacketEngine extends Engine {
  get p(): PacketExports {
    return this.x as unknown as PacketExports;
  }

  view(): DataView {
    return new DataView(this.x.memory.buffer);
  }

  start(now = 0, appPort = 8080): void {
    this.x.eng_set_app_port(appPort);
    if (this.p.eng_start(now) !== 0) throw new Error("start failed");
  }

  /** An engine given `config` (which must be accepted) and started at `now` with `appPort`. */
  static started(
    config: object | string,
    { self = 1000, appPort = 8080, now = 0, neverIntercept = [] as number[] } = {},
  ): PacketEngine {
    const e = new PacketEngine(self, neverIntercept);
    const r = e.config(typeof config === "string" ? config : JSON.stringify(config), now);
    if (r.rc !== 0) throw new Error(`config refused (${r.rc}): ${r.error}`);
    e.start(now, appPort);
    return e;
  }

  /** Runs packets through eng_process; returns one result per packet. */
  process(pkts: InPacket[], now = 0): OutPacket[] {
    const meta = this.p.eng_batch_meta();
    const data = this.p.eng_batch_data();
    const M = size("meta");
    let off = 0;
    pkts.forEach((pk, i) => {
      this.bytes(data + off, pk.data.length).set(pk.data);
      const flags = (pk.outbound === false ? 0 : IN_OUTBOUND) | (pk.loopback ? IN_LOOPBACK : 0) | (pk.partial ? IN_CSUM_PARTIAL : 0);
      encode("meta", this.view(), meta + i * M, {
        cookieLo: pk.cookie ?? i, data: off, len: pk.data.length, flags, ifIdx: pk.ifIdx ?? 7, verdict: 0xdead,
      });
      off += (pk.data.length + 7) & ~7;
    });
    const n = this.p.eng_process(pkts.length, now);
    if (n !== pkts.length) throw new Error("eng_process returned " + n);
    return pkts.map((_, i) => {
      const m = decode("meta", this.view(), meta + i * M);
      return this.record(m, data + m.data);
    });
  }

  released(): OutPacket[] {
    const n = this.p.eng_take_released();
    const base = this.p.eng_released_ptr();
    const out: OutPacket[] = [];
    for (let i = 0; i < n; i++) {
      const r = decode("rel", this.view(), base + i * size("rel"));
      out.push(this.record(r, r.data));
    }
    return out;
  }

  /** A decided packet (a meta or rel record) with its bytes at data. */
  private record(m: Rec<"meta"> | Rec<"rel">, data: number): OutPacket {
    const w = m.verdict;
    return {
      verdict: w & 0xff,
      outbound: ((w >> 8) & OUT_OUTBOUND) !== 0,
      csumValid: ((w >> 8) & OUT_CSUM_VALID) !== 0,
      data: this.bytes(data, m.len).slice(),
      cookie: m.cookieLo,
      ifIdx: m.ifIdx,
    };
  }

  /** Up to `max` pending flows to find owners for (each is handed out once). */
  queries(max = 256): Query[] {
    const n = this.p.eng_take_queries(max);
    const base = this.p.eng_queries_ptr();
    const out: Query[] = [];
    for (let i = 0; i < n; i++) {
      const q = decode("query", this.view(), base + i * size("query"));
      const v6 = q.family === 6;
      out.push({
        proto: q.proto,
        v6,
        inbound: q.direction === 1,
        local: { addr: addrText(q.local, v6), port: q.localPort },
        remote: { addr: addrText(q.remote, v6), port: q.remotePort },
      });
    }
    return out;
  }

  /** An owner fact; `chain`: the owner's ancestry (itself first), if the host gives one. */
  owner(kind: number, proto: "tcp" | "udp", local: Endpoint, remote: Endpoint | null, pid: number, path: string, now = 0,
    chain: readonly Proc[] = []): void {
    const v6 = local.addr.includes(":");
    const pathBytes = Buffer.from(path, "utf8");
    const head = bytes("owner", {
      kind, proto: proto === "tcp" ? 6 : 17, family: v6 ? 6 : 4,
      local: addrBytes(local.addr, v6), remote: remote ? addrBytes(remote.addr, v6) : undefined,
      localPort: local.port, remotePort: remote?.port ?? 0, pid, pathLen: pathBytes.length, ancestors: chain.length,
    }, pathBytes);
    let rec = head;
    if (chain.length > 0) {
      const at = Math.ceil(head.length / 8) * 8;
      const tail = ancestry(chain);
      rec = new Uint8Array(at + tail.length);
      rec.set(head);
      rec.set(tail, at);
    }
    this.io(rec);
    const r = this.p.eng_owner(rec.length, now);
    if (r !== 0) throw new Error("eng_owner " + r);
  }

  /**
   * Excludes a socket of the host's (eng_exclude): its local end, "0.0.0.0"
   * or "::" for any address; dualStack for an IPv6 socket on [::] that
   * carries IPv4 too. Returns the engine's code (0, -1 full, -2 refused).
   */
  exclude(proto: "tcp" | "udp", local: Endpoint, dualStack = false): number {
    const v6 = local.addr.includes(":");
    this.io(bytes("exclusion", {
      proto: proto === "tcp" ? 6 : 17, family: v6 ? 6 : 4, dualStack: dualStack ? 1 : 0,
      local: addrBytes(local.addr, v6), localPort: local.port,
    }));
    return this.p.eng_exclude(size("exclusion"));
  }

  tick(now: number): void {
    this.p.eng_tick(now);
  }

  private readOrigin(p: number): Origin {
    const o = decode("origin", this.view(), p);
    const v6 = o.family === 6;
    return {
      type: o.type,
      proto: o.proto,
      v6,
      inbound: o.direction === 1,
      pid: o.pid,
      flowId: o.flowId,
      destination: { addr: addrText(o.dst, v6), port: o.dstPort },
      client: { addr: addrText(o.client, v6), port: o.clientPort },
      peer: { addr: addrText(o.peer, v6), port: o.peerPort },
      appPort: o.appPort,
      bytesUp: o.bytesUp,
      bytesDown: o.bytesDown,
      time: o.time,
      path: Buffer.from(this.bytes(p + size("origin"), o.pathLen)).toString("utf8"),
    };
  }

  lookup(proto: "tcp" | "udp", peer: Endpoint, local: Endpoint): Origin | null {
    const v6 = peer.addr.includes(":");
    const q = bytes("lookup", {
      proto: proto === "tcp" ? 6 : 17, peerFamily: v6 ? 6 : 4, peer: addrBytes(peer.addr, v6), peerPort: peer.port,
      localFamily: local.addr.includes(":") ? 6 : 4, local: addrBytes(local.addr, local.addr.includes(":")),
      localPort: local.port,
    });
    const p = this.x.eng_io(4096);
    this.bytes(p, q.length).set(q);
    const r = this.p.eng_lookup(q.length);
    if (r === -1) return null;
    if (r !== 0) throw new Error("eng_lookup " + r);
    return this.readOrigin(p);
  }

  nextEvent(): Origin | null {
    const n = this.p.eng_next_event();
    if (n === 0) return null;
    return this.readOrigin(this.x.eng_io(0));
  }

  eventsWaiting(): number {
    return this.p.eng_events_waiting();
  }

  events(): Origin[] {
    const out: Origin[] = [];
    for (let e = this.nextEvent(); e; e = this.nextEvent()) out.push(e);
    return out;
  }

  stats(): Stats {
    return decodeStats(this.view(), this.p.eng_stats_ptr(), this.p.eng_stats_count());
  }
}
