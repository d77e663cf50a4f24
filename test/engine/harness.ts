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
  eng_init(pid: number): number;
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

  constructor(selfPid = 1000) {
    module ??= new WebAssembly.Module(readFileSync(wasmPath));
    const inst = new WebAssembly.Instance(module, {});
    this.x = inst.exports as unknown as EngineExports;
    this.x.eng_init(selfPid);
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
