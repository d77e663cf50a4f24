// `npm run bench:e2e`: the same relay (test/c/wr_testproxy) behind
// (a) the library's redirect and (b) the kernel's `iptables -t nat ...
// -j REDIRECT` (the relay then learns destinations with SO_ORIGINAL_DST),
// in the test network. Bulk TCP throughput (median of 3), new connections
// per second, and connect latency against a direct connection; and the
// library's redirect again with the clients intercepted as a process tree
// ("tree:" the PID of this program, which starts them, less the server)
// instead of by name,
// with each figure's ratio to the run by name: the added cost of tree
// targeting per new connection. Prints a table; these are measurements, not
// pass/fail tests.
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { join } from "node:path";
import { root } from "../build/build.ts";
import { exited, Lines, SERVER4, TestNet } from "./e2e/netns.ts";

if (process.getuid?.() !== 0) {
  console.log("bench:e2e needs root (network namespaces, iptables, NFQUEUE)");
  process.exit(1);
}
const BIN = join(root, "build", "linux");
const BULK = 200_000_000;
const CONNS = 5000;
TestNet.removeStale("wrbe2e");
const net = new TestNet("wrbe2e").create();
// Thousands of short connections: room for their TIME_WAITs.
for (const [k, v] of [["net.ipv4.ip_local_port_range", "10000 65000"], ["net.ipv4.tcp_tw_reuse", "1"]]) {
  spawnSync("ip", ["netns", "exec", net.host, "sysctl", "-qw", `${k}=${v}`]);
}

/** A client run as nobody (so the kernel baseline can select it by owner). */
async function client(args: string[]): Promise<string> {
  const r = await net.run(net.host, "setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups",
    join(BIN, "wr_testclient"), ...args], { timeout: 120_000 });
  if (r.status !== 0) throw new Error(`client ${args.join(" ")} failed: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

async function bulk(): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = process.hrtime.bigint();
    await client(["tcp", SERVER4, "80", String(BULK)]);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    runs.push((BULK * 8) / s / 1e9); // Gbit/s each way (the echo carries as much back)
  }
  return runs.sort((a, b) => a - b)[1];
}

async function rate(): Promise<number> {
  return Number(/rate (\d+)/.exec(await client(["rate", SERVER4, "80", String(CONNS), "32"]))![1]);
}

async function latency(): Promise<[number, number]> {
  const m = /latency p50 ([\d.]+) p99 ([\d.]+)/.exec(await client(["latency", SERVER4, "80", "2000"]))!;
  return [Number(m[1]), Number(m[2])];
}

interface Figures {
  bulk: number;
  rate: number;
  p50: number;
  p99: number;
}

async function measure(): Promise<Figures> {
  const b = await bulk();
  const r = await rate();
  const [p50, p99] = await latency();
  return { bulk: b, rate: r, p50, p99 };
}

async function proxy(commands: string[]): Promise<{ lines: Lines; quit: () => Promise<void> }> {
  const p = net.start(net.host, join(BIN, "wr_testproxy"), []);
  const lines = new Lines(p);
  for (const c of commands) {
    const from = lines.count();
    p.stdin!.write(c + "\n");
    const r = await lines.next((l) => l === "ok" || l.startsWith("err"), 10_000, from);
    if (r !== "ok") throw new Error(`${c}: ${r}`);
  }
  return {
    lines,
    quit: async () => {
      p.stdin!.write("quit\n");
      await exited(p);
    },
  };
}

try {
  const srv = net.start(net.net, join(BIN, "wr_testserver"), [SERVER4, "80"]);
  await new Lines(srv).next((l) => l === "ready");

  const direct = await measure();

  // The relay excludes its upstream sockets (redirector_exclude_socket), as
  // the Go package's Dialer does.
  const lib = await proxy(["port 8080", `config {"intercept":"wr_testclient"}`, "exclude", "start"]);
  const ours = await measure();
  await lib.quit();

  // The same, the clients intercepted as descendants of this program (but
  // for the server, which it starts too: a candidate's sockets are scanned).
  const treeSpec = `tree:${process.pid},!wr_testserver`;
  const libTree = await proxy(["port 8080", `config {"intercept":"${treeSpec}"}`, "exclude", "start"]);
  const tree = await measure();
  await libTree.quit();

  for (const a of ["-A"]) {
    spawnSync("ip", ["netns", "exec", net.host, "iptables", "-t", "nat", a, "OUTPUT", "-p", "tcp", "-d", SERVER4,
      "--dport", "80", "-m", "owner", "--uid-owner", "65534", "-j", "REDIRECT", "--to-ports", "8081"]);
  }
  const kern = await proxy(["origdst", "port 8081"]);
  const kernel = await measure();
  await kern.quit();

  const f = (n: number, d = 0) => n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
  const rows = [
    ["", "direct (no proxy)", "kernel REDIRECT + relay", "library redirect + relay", "target"],
    ["bulk TCP, Gbit/s each way (median of 3)", f(direct.bulk, 2), f(kernel.bulk, 2), f(ours.bulk, 2),
      `>= 0.70 x kernel (${f(ours.bulk / kernel.bulk, 2)})`],
    ["new connections/s (32 at a time)", f(direct.rate), f(kernel.rate), f(ours.rate), ">= 5,000"],
    ["connect p50, us", f(direct.p50, 1), f(kernel.p50, 1), f(ours.p50, 1), `added ${f(ours.p50 - direct.p50, 1)}`],
    ["connect p99, us", f(direct.p99, 1), f(kernel.p99, 1), f(ours.p99, 1), `added ${f(ours.p99 - direct.p99, 1)} (<= 200)`],
  ];
  const table = (rows: string[][]) => {
    const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    console.log();
    for (const r of rows) console.log(r.map((c, i) => c.padEnd(w[i])).join("  "));
  };
  table(rows);
  table([
    ["tree targeting", "library, by name", "library, tree:<pid>", "tree / by name"],
    ["bulk TCP, Gbit/s each way", f(ours.bulk, 2), f(tree.bulk, 2), f(tree.bulk / ours.bulk, 3)],
    ["new connections/s (32 at a time)", f(ours.rate), f(tree.rate), f(tree.rate / ours.rate, 3)],
    ["connect p50, us", f(ours.p50, 1), f(tree.p50, 1), f(tree.p50 / ours.p50, 3)],
    ["connect p99, us", f(ours.p99, 1), f(tree.p99, 1), f(tree.p99 / ours.p99, 3)],
  ]);
  console.log(`\n(${BULK / 1e6} MB each way per bulk run; ${CONNS} connections; 2,000 sequential connects; ` +
    `${cpus().length} cores shared by client, relay, server and the library)`);
} finally {
  net.destroy();
}
