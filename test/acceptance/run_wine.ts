// npm test's "acceptance" suite: the Windows acceptance program
// (wr_acceptance.exe, test/acceptance/acceptance.c) under wine, against the
// stand-in WinDivert.dll in live mode, over real kernel traffic.
//
// A network namespace of its own ("this machine"): lo, and a veth pair whose
// wra0 holds the non-loopback local addresses 198.18.77.1/24 and
// fd00:198:18:77::1/64. Its TCP and UDP packets are queued (OUTPUT; INPUT
// from devices other than lo) to the relay (build/linux/wr_live_relay),
// which hands them to the stand-in and puts back what the library sends.
// wine runs inside the namespace with a prefix and a wineserver of its own
// (wineserver makes wine's sockets, so it must live there too): the
// runner's prefix with "-netns" added, booted on first use and kept.
//
// Needs root. Every wait is bounded; everything started is ended and the
// namespace (with its rules) deleted, also on failure or SIGTERM. Prints
// the program's table and ends with "acceptance: N passed, N failed".
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(fileURLToPath(import.meta.url), "..", "..", "..");
const NS = `wracc${process.pid % 100000}`;
const QUEUE = 7871;
const RELAY_PORT = 47870;
const MARK = "0x5752";
const LOCAL4 = "198.18.77.1";
const LOCAL6 = "fd00:198:18:77::1";
const prefix = `${process.env.WINEPREFIX ?? "/tmp/windows-redirector-wine"}-netns`;
const wineEnv = { ...process.env, WINEPREFIX: prefix, WINEDEBUG: "-all" };
const outDir = join(root, "build", "test", "acceptance");
const wdLog = join(outDir, "windivert.log");

let relay: ChildProcess | undefined;
let relayErr = "";

function run(cmd: string, args: string[], timeoutS = 30, env = process.env) {
  const r = spawnSync(cmd, args, { encoding: "utf8", env, timeout: timeoutS * 1000, killSignal: "SIGKILL" });
  return { code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}`, error: r.error };
}

function must(cmd: string, args: string[]): void {
  const r = run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.error?.message ?? r.out.trim()}`);
}

function inNs(cmd: string, args: string[]): [string, string[]] {
  return ["ip", ["netns", "exec", NS, cmd, ...args]];
}

/** Removes what an earlier run killed before its clean-up left behind. */
function removeStale(): void {
  run("/usr/lib/wine/wineserver", ["-k"], 30, wineEnv);
  const list = run("ip", ["netns", "list"]).out;
  for (const line of list.split("\n")) {
    const ns = line.split(" ")[0];
    if (/^wracc\d+$/.test(ns)) run("ip", ["netns", "del", ns]);
  }
}

/** Ends the relay and waits (up to 5 s) for its last words: what it did. */
function stopRelay(): Promise<void> {
  const r = relay;
  if (!r || r.exitCode !== null || r.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 5000);
    r.on("close", () => {
      clearTimeout(timer);
      resolve();
    });
    r.kill("SIGTERM");
  });
}

function cleanUp(): void {
  if (relay && relay.exitCode === null && relay.signalCode === null) relay.kill("SIGTERM");
  run("/usr/lib/wine/wineserver", ["-k"], 30, wineEnv); // every wine process of the prefix
  run("ip", ["netns", "del", NS]);
}

function createNamespace(): void {
  must("ip", ["netns", "add", NS]);
  must("ip", ["-n", NS, "link", "set", "lo", "up"]);
  must("ip", ["-n", NS, "link", "add", "wra0", "type", "veth", "peer", "name", "wra1"]);
  must("ip", ["-n", NS, "addr", "add", `${LOCAL4}/24`, "dev", "wra0"]);
  must("ip", ["-n", NS, "addr", "add", `${LOCAL6}/64`, "dev", "wra0", "nodad"]);
  must("ip", ["-n", NS, "link", "set", "wra0", "up"]);
  must("ip", ["-n", NS, "link", "set", "wra1", "up"]);
  // What the relay injects carries MARK and is not queued again; the relay's
  // own connection (127.0.0.1:RELAY_PORT) is never queued.
  const q = ["-j", "NFQUEUE", "--queue-num", String(QUEUE), "--queue-bypass"];
  for (const ipt of ["iptables", "ip6tables"]) {
    const rules = [
      ["-t", "raw", "-A", "OUTPUT", "-m", "mark", "--mark", MARK, "-j", "ACCEPT"],
      ["-t", "raw", "-A", "OUTPUT", "-p", "tcp", "--dport", String(RELAY_PORT), "-j", "ACCEPT"],
      ["-t", "raw", "-A", "OUTPUT", "-p", "tcp", "--sport", String(RELAY_PORT), "-j", "ACCEPT"],
      ["-t", "raw", "-A", "OUTPUT", "-p", "tcp", ...q],
      ["-t", "raw", "-A", "OUTPUT", "-p", "udp", ...q],
      ["-t", "mangle", "-A", "INPUT", "!", "-i", "lo", "-p", "tcp", ...q],
      ["-t", "mangle", "-A", "INPUT", "!", "-i", "lo", "-p", "udp", ...q],
    ];
    for (const r of rules) must(...inNs(ipt, r));
  }
}

function startRelay(): Promise<void> {
  const [cmd, args] = inNs(join(root, "build", "linux", "wr_live_relay"),
    ["--queue", String(QUEUE), "--port", String(RELAY_PORT), "--mark", MARK]);
  relay = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  relay.stderr!.setEncoding("utf8").on("data", (d: string) => (relayErr += d));
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`the relay was not ready within 10 s:\n${out}${relayErr}`)), 10_000);
    relay!.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (out.includes("live_relay: ready")) {
        clearTimeout(timer);
        resolve();
      }
    });
    relay!.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the relay ended (exit ${code}):\n${out}${relayErr}`));
    });
  });
}

/**
 * wine's server for the prefix, inside the namespace; the prefix booted once.
 * A first program starts wine's service processes, whose standard handles
 * stay open as long as the server lives: they get /dev/null, not the pipes
 * the test program's output is read from.
 */
function wineUp(): void {
  // wineserver starts only in a prefix folder that exists (a fresh machine has none).
  mkdirSync(prefix, { recursive: true });
  // Its output not to pipes: the server it leaves running would hold them.
  const [cmd, args] = inNs("/usr/lib/wine/wineserver", ["-p"]);
  const r = spawnSync(cmd, args, { env: wineEnv, stdio: "ignore", timeout: 30_000, killSignal: "SIGKILL" });
  if (r.status !== 0) throw new Error(`wineserver -p: exit ${r.status ?? r.signal ?? r.error?.message}`);
  const boot = !existsSync(join(prefix, "drive_c"));
  if (boot) console.log(`acceptance: booting the wine prefix ${prefix} (once)`);
  const [c, a] = inNs(join(root, "build", "wine-run.sh"), boot ? ["wineboot", "-i"] : ["cmd", "/c", "exit"]);
  const b = spawnSync(c, a, { env: wineEnv, stdio: "ignore", timeout: 300_000, killSignal: "SIGKILL" });
  // (wine writes system.reg only later, when its server saves the registry)
  if (b.status !== 0 || !existsSync(join(prefix, "drive_c"))) {
    throw new Error(`${a.slice(-3).join(" ")}: exit ${b.status ?? b.signal ?? b.error?.message}`);
  }
}

/** Runs the program; resolves with its exit code and output. */
function runProgram(): Promise<{ code: number | null; out: string }> {
  const exe = join(root, "build", "windows", "wr_acceptance.exe");
  const fakewd = `Z:${join(root, "build", "windows", "fakewd").replaceAll("/", "\\")}`;
  const [cmd, args] = inNs(join(root, "build", "wine-run.sh"), [exe, "--windivert", fakewd, "--timeout", "40"]);
  const env = {
    ...wineEnv,
    WR_FAKE_WINDIVERT_LIVE: `127.0.0.1:${RELAY_PORT}`,
    WR_FAKE_WINDIVERT_LOG: `Z:${wdLog.replaceAll("/", "\\")}`,
  };
  const p = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const take = (d: string) => {
    out += d;
    process.stdout.write(d);
  };
  p.stdout!.setEncoding("utf8").on("data", take);
  p.stderr!.setEncoding("utf8").on("data", take);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      out += "\n(wr_acceptance.exe was still running after 180 s: ended)\n";
      run("/usr/lib/wine/wineserver", ["-k"], 30, wineEnv);
      p.kill("SIGKILL");
    }, 180_000);
    // Its exit, then what is left in the pipes (at most 2 s more: a wine
    // process it started could hold them open).
    p.on("exit", (code) => {
      clearTimeout(timer);
      const done = () => resolve({ code, out });
      const grace = setTimeout(done, 2000);
      p.on("close", () => {
        clearTimeout(grace);
        done();
      });
    });
  });
}

/** What the stand-in's log says besides its packets' bytes (on a failure). */
function standInSummary(): string {
  if (!existsSync(wdLog)) return "(no stand-in log)";
  const lines = readFileSync(wdLog, "utf8").split("\n");
  const kept = lines.filter((l) => l !== "" && !l.includes(" hex=") && !l.startsWith("recv "));
  return `${lines.length} lines, besides packets:\n${kept.slice(-60).join("\n")}`;
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.log("acceptance: needs root (a network namespace, iptables, NFQUEUE)");
    return 1;
  }
  mkdirSync(outDir, { recursive: true });
  rmSync(wdLog, { force: true });
  const t0 = Date.now();
  const since = (t: number) => `${((Date.now() - t) / 1000).toFixed(1)} s`;
  removeStale();
  createNamespace();
  await startRelay();
  console.log(`acceptance: namespace ${NS}, rules and relay ready: ${since(t0)}`);
  const t1 = Date.now();
  wineUp();
  console.log(`acceptance: wine up in the namespace (prefix ${prefix}): ${since(t1)}`);
  const t2 = Date.now();
  const r = await runProgram();
  console.log(`acceptance: wr_acceptance.exe ran ${since(t2)}`);
  const m = /^wr_acceptance: (\d+) passed, (\d+) failed, (\d+) skipped$/m.exec(r.out);
  const passed = m ? Number(m[1]) : 0;
  let failed = m ? Number(m[2]) : 0;
  const problems: string[] = [];
  if (!m) problems.push("the program printed no summary");
  if (m && Number(m[3]) !== 0) problems.push(`${m[3]} rows skipped: every address exists here`);
  if (r.code !== 0 && failed === 0) problems.push(`exit code ${r.code}`);
  // It found the namespace's non-loopback addresses itself (GetAdaptersAddresses).
  if (!r.out.includes(`servers on ${LOCAL4}, 127.0.0.1, ${LOCAL6}, ::1`)) problems.push("not the local addresses expected");
  for (const p of problems) console.log(`acceptance: FAIL: ${p}`);
  failed += problems.length;
  if (failed > 0) console.log(`\nthe stand-in (${wdLog}): ${standInSummary()}`);
  await stopRelay();
  console.log(`\nthe relay:\n${relayErr.trim()}\n\nacceptance: ${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    cleanUp();
    process.exit(1);
  });
}

let code = 1;
try {
  code = await main();
} catch (e) {
  console.log(`acceptance: FAIL: ${(e as Error).message}\n\nacceptance: 0 passed, 1 failed`);
} finally {
  cleanUp();
}
process.exit(code);
