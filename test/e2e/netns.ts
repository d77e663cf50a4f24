// A two-namespace test network, for the end-to-end tests and the demo:
//
//   <name>-host  (the redirector, the proxy, the clients)
//       veth 198.18.0.1/24, fd00:198:18::1/64
//       routes 198.19.0.0/16 and fd00:198:19::/48 via the peer
//   <name>-net   ("the internet")
//       veth 198.18.0.2/24, fd00:198:18::2/64
//       servers on 198.19.0.10 and fd00:198:19::10 (on its loopback)
//
// Only addresses inside these namespaces are ever used. This kernel has no
// dummy devices, so the server addresses live on the peer's loopback.
import { execFileSync, spawn, spawnSync, type ChildProcess, type SpawnOptions } from "node:child_process";


export const SERVER4 = "198.19.0.10";
export const SERVER6 = "fd00:198:19::10";
export const HOST4 = "198.18.0.1";
export const HOST6 = "fd00:198:18::1";
export const PEER4 = "198.18.0.2";
export const PEER6 = "fd00:198:18::2";

/**
 * What the tests are waiting for right now, so that a case ended by its time
 * limit can say what never came.
 */
const waits = new Map<number, string>();
let waitSeq = 0;

/** Resolves as `p` does, and meanwhile lists `what` among the pending waits. */
export async function waitingFor<T>(what: string, p: Promise<T>): Promise<T> {
  const id = ++waitSeq;
  waits.set(id, what);
  try {
    return await p;
  } finally {
    waits.delete(id);
  }
}

export function pendingWaits(): string[] {
  return [...waits.values()];
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

// Each started child's exit, listened for from the moment it is spawned: a
// wait that begins after the child has exited still ends at once.
const exits = new WeakMap<ChildProcess, Promise<Exit>>();

function watchExit(c: ChildProcess): ChildProcess {
  exits.set(c, new Promise((resolve) => c.once("exit", (code, signal) => resolve({ code, signal }))));
  // A write to a child that has gone (a test ending at its limit) is not an error of the runner.
  c.stdin?.on("error", () => {});
  return c;
}

/** The exit of a child started by TestNet.start (or any child): never missed, never waited for twice. */
export function exited(c: ChildProcess): Promise<Exit> {
  if (!exits.has(c)) {
    if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve({ code: c.exitCode, signal: c.signalCode });
    watchExit(c);
  }
  const p = exits.get(c)!;
  return waitingFor(`the exit of ${c.spawnargs.join(" ")} (pid ${c.pid})`, p);
}

function ip(args: string[]): void {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

export class TestNet {
  readonly host: string;
  readonly net: string;
  private children: ChildProcess[] = [];

  constructor(readonly name: string) {
    this.host = `${name}-host`;
    this.net = `${name}-net`;
  }

  /** Removes namespaces whose names start with `prefix` (left by a killed run). */
  static removeStale(prefix: string): void {
    const out = spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout ?? "";
    for (const line of out.split("\n")) {
      const ns = line.split(" ")[0];
      if (ns.startsWith(prefix)) spawnSync("ip", ["netns", "del", ns]);
    }
  }

  /**
   * The test network of one test file: what a killed run left under `stem`
   * is removed, a network named `stem` and this process's PID is created, and
   * it is removed when this process exits or is interrupted.
   */
  static forThisRun(stem: string): TestNet {
    TestNet.removeStale(stem);
    const net = new TestNet(`${stem}${process.pid % 10000}`).create();
    process.on("exit", () => net.destroy());
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      process.on(sig, () => {
        net.destroy();
        process.exit(1);
      });
    }
    return net;
  }

  create(): this {
    this.destroy();
    ip(["netns", "add", this.host]);
    ip(["netns", "add", this.net]);
    const a = `${this.name.slice(-8)}h`;
    const b = `${this.name.slice(-8)}n`;
    ip(["link", "add", a, "netns", this.host, "type", "veth", "peer", "name", b, "netns", this.net]);
    for (const [ns, dev, v4, v6] of [[this.host, a, HOST4, HOST6], [this.net, b, PEER4, PEER6]]) {
      ip(["-n", ns, "link", "set", "lo", "up"]);
      ip(["-n", ns, "addr", "add", `${v4}/24`, "dev", dev]);
      ip(["-n", ns, "addr", "add", `${v6}/64`, "dev", dev, "nodad"]);
      ip(["-n", ns, "link", "set", dev, "up"]);
    }
    ip(["-n", this.net, "addr", "add", `${SERVER4}/32`, "dev", "lo"]);
    ip(["-n", this.net, "addr", "add", `${SERVER6}/128`, "dev", "lo"]);
    ip(["-n", this.host, "route", "add", "198.19.0.0/16", "via", PEER4]);
    ip(["-n", this.host, "route", "add", "fd00:198:19::/48", "via", PEER6]);
    // Static neighbours: the first IPv6 packet otherwise waits about a
    // second for neighbour discovery, which would only slow every test.
    const mac = (ns: string, dev: string) =>
      (JSON.parse(execFileSync("ip", ["-n", ns, "-j", "link", "show", "dev", dev], { encoding: "utf8" })) as
        Array<{ address: string }>)[0].address;
    const [macA, macB] = [mac(this.host, a), mac(this.net, b)];
    for (const [ns, dev, addr, lladdr] of [[this.host, a, PEER6, macB], [this.net, b, HOST6, macA],
      [this.host, a, PEER4, macB], [this.net, b, HOST4, macA]]) {
      ip(["-n", ns, "neigh", "replace", addr, "lladdr", lladdr, "dev", dev, "nud", "permanent"]);
    }
    return this;
  }

  /**
   * Runs a command in a namespace to its end; resolves with its status and
   * output. Asynchronous on purpose: a synchronous wait would stop this
   * process from reading the output of children it started (a proxy), whose
   * pipes would then fill and block them.
   */
  run(ns: string, cmd: string, args: string[], opts: { input?: string; timeout?: number } = {}):
    Promise<{ status: number; stdout: string; stderr: string }> {
    return waitingFor(`${cmd} ${args.join(" ")} to finish`, new Promise((resolve) => {
      const c = spawn("ip", ["netns", "exec", ns, cmd, ...args], { stdio: ["pipe", "pipe", "pipe"] });
      this.children.push(c);
      let stdout = "";
      let stderr = "";
      c.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
      c.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      const timer = setTimeout(() => c.kill("SIGKILL"), opts.timeout ?? 60_000);
      c.on("close", (code) => {
        clearTimeout(timer);
        resolve({ status: code ?? -1, stdout, stderr });
      });
      c.stdin!.on("error", () => {});
      c.stdin!.end(opts.input ?? "");
    }));
  }

  /** Starts a command in a namespace; it is killed by destroy(). */
  start(ns: string, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const c = watchExit(spawn("ip", ["netns", "exec", ns, cmd, ...args], { stdio: ["pipe", "pipe", "pipe"], ...opts }));
    this.children.push(c);
    return c;
  }

  /**
   * Runs one test case under a time limit. At the limit the case fails with
   * what it was waiting for, and every process it started is killed, so that
   * what it awaited ends and its clean-up runs before the next case.
   */
  async limited(name: string, ms: number, fn: () => Promise<void>): Promise<void> {
    const mark = this.children.length;
    const run = fn();
    run.catch(() => {}); // its failure is reported through the race below, or not at all after the limit
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const w = pendingWaits();
        for (const c of this.children.slice(mark)) {
          if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
        }
        reject(new Error(`"${name}" was still running after its limit of ${ms / 1000} s; it was waiting for:\n  ` +
          (w.length ? w.join("\n  ") : "(nothing it had said)")));
      }, ms);
    });
    try {
      await Promise.race([run, limit]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kills what was started and removes both namespaces. */
  destroy(): void {
    for (const c of this.children) {
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    }
    this.children = [];
    spawnSync("ip", ["netns", "del", this.host]);
    spawnSync("ip", ["netns", "del", this.net]);
  }
}

/** Collects a child's stdout lines; `next(pred)` waits for a matching one. */
export class Lines {
  private lines: string[] = [];
  private waiters: Array<{ pred: (l: string) => boolean; resolve: (l: string) => void }> = [];
  private buf = "";

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf("\n")) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        this.lines.push(line);
        this.waiters = this.waiters.filter((w) => {
          if (w.pred(line)) {
            w.resolve(line);
            return false;
          }
          return true;
        });
      }
    });
  }

  all(): string[] {
    return [...this.lines];
  }

  /**
   * The first line (seen from `from` on) that matches, waiting up to `ms`;
   * `what` names it in a failure (by default, the predicate's text).
   */
  next(pred: (l: string) => boolean, ms = 10_000, from = 0, what = pred.toString()): Promise<string> {
    const hit = this.lines.slice(from).find(pred);
    if (hit !== undefined) return Promise.resolve(hit);
    return waitingFor(`a line ${what} from ${this.child.spawnargs.slice(3).join(" ")}`, new Promise((resolve, reject) => {
      const w = { pred, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`no line ${what} within ${ms} ms; got:\n${this.lines.join("\n")}`));
      }, ms).unref();
    }));
  }

  count(): number {
    return this.lines.length;
  }
}
