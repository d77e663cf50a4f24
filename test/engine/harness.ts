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
  eng_config(len: number): number;
  eng_config_generation(): number;
  eng_set_app_port(port: number): void;
  eng_app_port(): number;
  eng_would_intercept(pid: number, pathLen: number): number;
  eng_arm_fault(bits: number): void;
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

  config(json: string | Uint8Array): { rc: number; error: string } {
    const data = typeof json === "string" ? Buffer.from(json, "utf8") : json;
    this.io(data);
    const rc = this.x.eng_config(data.length);
    return { rc, error: rc === 0 ? "" : this.error() };
  }

  wouldIntercept(pid: number, path = ""): boolean {
    const data = Buffer.from(path, "utf8");
    this.io(data);
    return this.x.eng_would_intercept(pid, data.length) === 1;
  }
}

// ---------------------------------------------------------------------------
// The packet path

import { formatAddr, parseAddr, type Endpoint } from "./packets.ts";

export const IN_OUTBOUND = 1;
export const IN_LOOPBACK = 2;
export const IN_CSUM_PARTIAL = 4;
export const V_PASS = 0;
export const V_MODIFIED = 1;
export const V_DROP = 2;
export const V_HELD = 3;
export const OUT_OUTBOUND = 1;
export const OUT_CSUM_VALID = 2;

export const O_CONNECT = 1;
export const O_ACCEPT = 2;
export const O_BIND = 3;
export const O_LISTEN = 4;
export const O_CLOSE = 5;
export const O_UNKNOWN = 6;

export const STAT_NAMES = [
  "packets", "rewritten", "passed", "held", "dropped", "malformed", "fragments", "flowsActive",
  "flowsRedirected", "flowsPassed", "flowsExpired", "tableFull", "evictions", "holdTimeouts", "ownerFacts",
  "ownerQueries", "eventsLost", "natConflicts", "bypassed", "lookups", "lookupMisses",
] as const;
export type Stats = Record<(typeof STAT_NAMES)[number], number>;

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

function readAddr(mem: DataView, off: number, v6: boolean): string {
  return formatAddr(new Uint8Array(mem.buffer, mem.byteOffset + off, v6 ? 16 : 4).slice());
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

  /** Runs packets through eng_process; returns one result per packet. */
  process(pkts: InPacket[], now = 0): OutPacket[] {
    const meta = this.p.eng_batch_meta();
    const data = this.p.eng_batch_data();
    let off = 0;
    const dv = () => this.view();
    pkts.forEach((pk, i) => {
      const m = meta + i * 32;
      this.bytes(data + off, pk.data.length).set(pk.data);
      const v = dv();
      v.setUint32(m, pk.cookie ?? i, true);
      v.setUint32(m + 4, 0, true);
      v.setUint32(m + 8, off, true);
      v.setUint32(m + 12, pk.data.length, true);
      const flags = (pk.outbound === false ? 0 : IN_OUTBOUND) | (pk.loopback ? IN_LOOPBACK : 0) | (pk.partial ? IN_CSUM_PARTIAL : 0);
      v.setUint32(m + 16, flags, true);
      v.setUint32(m + 20, pk.ifIdx ?? 7, true);
      v.setUint32(m + 24, 0, true);
      v.setUint32(m + 28, 0xdead, true);
      off += (pk.data.length + 7) & ~7;
    });
    const n = this.p.eng_process(pkts.length, now);
    if (n !== pkts.length) throw new Error("eng_process returned " + n);
    off = 0;
    return pkts.map((pk, i) => {
      const out = this.record(meta + i * 32, data + off, pk.data.length);
      off += (pk.data.length + 7) & ~7;
      return out;
    });
  }

  released(): OutPacket[] {
    const n = this.p.eng_take_released();
    const base = this.p.eng_released_ptr();
    const out: OutPacket[] = [];
    for (let i = 0; i < n; i++) {
      const r = base + i * 32;
      const v = this.view();
      out.push(this.record(r, v.getUint32(r + 8, true), v.getUint32(r + 12, true)));
    }
    return out;
  }

  /** A packet record (META layout: cookie, verdict word, interface) with its bytes at [data, data+len). */
  private record(m: number, data: number, len: number): OutPacket {
    const v = this.view();
    const w = v.getUint32(m + 28, true);
    return {
      verdict: w & 0xff,
      outbound: ((w >> 8) & OUT_OUTBOUND) !== 0,
      csumValid: ((w >> 8) & OUT_CSUM_VALID) !== 0,
      data: this.bytes(data, len).slice(),
      cookie: v.getUint32(m, true),
      ifIdx: v.getUint32(m + 20, true),
    };
  }

  /** Up to `max` pending flows to find owners for (each is handed out once). */
  queries(max = 256): Query[] {
    const n = this.p.eng_take_queries(max);
    const base = this.p.eng_queries_ptr();
    const out: Query[] = [];
    for (let i = 0; i < n; i++) {
      const v = this.view();
      const q = base + i * 40;
      const v6 = v.getUint8(q + 1) === 6;
      out.push({
        proto: v.getUint8(q),
        v6,
        inbound: v.getUint8(q + 2) === 1,
        local: { addr: readAddr(v, q + 4, v6), port: v.getUint16(q + 36, true) },
        remote: { addr: readAddr(v, q + 20, v6), port: v.getUint16(q + 38, true) },
      });
    }
    return out;
  }

  owner(kind: number, proto: "tcp" | "udp", local: Endpoint, remote: Endpoint | null, pid: number, path: string, now = 0): void {
    const v6 = local.addr.includes(":");
    const pathBytes = Buffer.from(path, "utf8");
    const rec = new Uint8Array(48 + pathBytes.length);
    const dv = new DataView(rec.buffer);
    rec[0] = kind;
    rec[1] = proto === "tcp" ? 6 : 17;
    rec[2] = v6 ? 6 : 4;
    rec.set(addrBytes(local.addr, v6), 4);
    if (remote) rec.set(addrBytes(remote.addr, v6), 20);
    dv.setUint16(36, local.port, true);
    dv.setUint16(38, remote?.port ?? 0, true);
    dv.setUint32(40, pid, true);
    dv.setUint32(44, pathBytes.length, true);
    rec.set(pathBytes, 48);
    this.io(rec);
    const r = this.p.eng_owner(rec.length, now);
    if (r !== 0) throw new Error("eng_owner " + r);
  }

  tick(now: number): void {
    this.p.eng_tick(now);
  }

  private readOrigin(p: number): Origin {
    const v = this.view();
    const v6 = v.getUint32(p + 8, true) === 6;
    const plen = v.getUint32(p + 108, true);
    return {
      type: v.getUint32(p, true),
      proto: v.getUint32(p + 4, true),
      v6,
      inbound: v.getUint32(p + 12, true) === 1,
      pid: v.getUint32(p + 16, true),
      flowId: v.getUint32(p + 20, true),
      destination: { addr: readAddr(v, p + 24, v6), port: v.getUint32(p + 40, true) },
      client: { addr: readAddr(v, p + 44, v6), port: v.getUint32(p + 60, true) },
      peer: { addr: readAddr(v, p + 64, v6), port: v.getUint32(p + 80, true) },
      appPort: v.getUint32(p + 84, true),
      bytesUp: v.getBigUint64(p + 88, true),
      bytesDown: v.getBigUint64(p + 96, true),
      time: v.getUint32(p + 104, true),
      path: Buffer.from(this.bytes(p + 112, plen)).toString("utf8"),
    };
  }

  lookup(proto: "tcp" | "udp", peer: Endpoint, local: Endpoint): Origin | null {
    const v6 = peer.addr.includes(":");
    const q = new Uint8Array(48);
    const dv = new DataView(q.buffer);
    dv.setUint32(0, proto === "tcp" ? 6 : 17, true);
    dv.setUint32(4, v6 ? 6 : 4, true);
    q.set(addrBytes(peer.addr, v6), 8);
    dv.setUint32(24, peer.port, true);
    q.set(addrBytes(local.addr, local.addr.includes(":")), 28);
    dv.setUint32(44, local.port, true);
    const p = this.x.eng_io(4096);
    this.bytes(p, 48).set(q);
    const r = this.p.eng_lookup(48);
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
    const p = this.p.eng_stats_ptr();
    const n = this.p.eng_stats_count();
    const v = this.view();
    const out = {} as Stats;
    STAT_NAMES.forEach((name, i) => {
      if (i < n) out[name] = Number(v.getBigUint64(p + i * 8, true));
    });
    return out;
  }
}
