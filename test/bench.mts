// `npm run bench`: the engine's figures (build/linux/bench_engine, through
// the engine host the backends use) and Go lookups including the cgo call
// (go/bench_hit_linux_test.go, against a real redirected connection while
// other redirected traffic flows, in network namespaces). Prints a table;
// these are measurements, not pass/fail tests.
//
//   tsx test/bench.mts [seconds] [--baseline DIR]
//
// --baseline DIR: DIR is another checkout of this repository built the same
// way (`npx tsx build/build.ts --linux-only` there), e.g. a `git worktree` of
// an older commit. Every figure is then measured for both trees in one run,
// taking turns (this, baseline, baseline, this, this, baseline), and the
// table shows each tree's median and their ratio: above 1 means this tree is
// faster (or smaller, for memory).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { cpus } from "node:os";
import { join, resolve } from "node:path";
import { root } from "../build/build.ts";
import { Lines, SERVER4, TestNet } from "./e2e/netns.ts";

const args = process.argv.slice(2);
const at = args.indexOf("--baseline");
const baseline = at >= 0 ? resolve(args[at + 1] ?? "") : null;
const seconds = args.find((a, i) => !a.startsWith("--") && (at < 0 || i !== at + 1)) ?? "2";
if (baseline && !existsSync(join(baseline, "build", "linux", "bench_engine"))) {
  console.error(`--baseline ${baseline}: no build/linux/bench_engine there (build it first)`);
  process.exit(2);
}
const trees = baseline ? [root, baseline] : [root];
// Taking turns in this order cancels a steady drift of the machine's speed.
const order = baseline ? [0, 1, 1, 0, 0, 1] : [0];

/** One measure: its name in the figures, how to show it, and whether more is better. */
interface Measure {
  what: string;
  key: string;
  show: (n: number) => string;
  more: boolean;
  target: string;
}

const fmt = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: 0 });
const engineMeasures: Measure[] = [
  { what: "established-flow rewrite, one core", key: "established", show: (n) => `${fmt(n)} packets/s`, more: true, target: ">= 10,000,000" },
  { what: "new-flow decisions (SYN held, owner fact, released)", key: "new-flows", show: (n) => `${fmt(n)} flows/s`, more: true, target: ">= 1,000,000" },
  { what: "memory per flow (entry + index share)", key: "memory", show: (n) => `${n} bytes`, more: false, target: "<= 200" },
  { what: "lookups, engine host (C)", key: "lookups", show: (n) => `${fmt(n)} lookups/s (${fmt(1e9 / n)} ns)`, more: true, target: "" },
];
const goMeasures: Measure[] = [
  { what: "Go Lookup(conn), a hit, incl. cgo", key: "hit", show: (n) => `${n} ns`, more: false, target: "<= 300 ns" },
  { what: "Go Lookup(conn), a hit, while traffic flows", key: "busy", show: (n) => `${n} ns`, more: false, target: "" },
  { what: "Go Lookup from 4 goroutines, traffic flowing", key: "four", show: (n) => `${fmt(n)} lookups/s`, more: true, target: ">= 1,000,000" },
];

/** bench_engine's "name value unit" lines. */
function engineFigures(tree: string): Record<string, number> {
  const out = execFileSync(join(tree, "build", "linux", "bench_engine"), [seconds], { encoding: "utf8" });
  const num = (name: string) => Number(new RegExp(`^${name} ([\\d.]+)`, "m").exec(out)?.[1] ?? NaN);
  return Object.fromEntries(engineMeasures.map((m) => [m.key, num(m.key)]));
}

/** The Go lookup benchmarks of tree's binding, in the test network. */
function goFigures(tree: string, net: TestNet): Record<string, number> {
  const r = spawnSync("ip", ["netns", "exec", net.host, "go", "test", "-run", "^$", "-bench", "LookupHit",
    "-benchtime", `${seconds}s`, "."], {
    cwd: join(tree, "go"),
    encoding: "utf8",
    env: {
      ...process.env, GOPROXY: "off", GOFLAGS: "-mod=mod", CGO_ENABLED: "1",
      // The tree's own library (go/ finds it through pkg-config; older trees link build/linux directly).
      PKG_CONFIG_PATH: join(tree, "build", "linux"),
      WR_BENCH_CLIENT: join(tree, "build", "linux", "wr_testclient"),
      WR_BENCH_SERVER_ADDR: SERVER4, WR_BENCH_SERVER_PORT: "80",
    },
  });
  const out = r.stdout + r.stderr;
  const one = /BenchmarkLookupHit-\d+\s+\d+\s+([\d.]+) ns\/op/.exec(out);
  const busy = /BenchmarkLookupHitBusy-\d+\s+\d+\s+([\d.]+) ns\/op/.exec(out);
  const four = /BenchmarkLookupHit4-\d+\s+\d+\s+([\d.]+) ns\/op.*?([\d.e+]+) lookups\/s/.exec(out);
  if (!one || !busy || !four) process.stdout.write(out);
  return { hit: Number(one?.[1] ?? NaN), busy: Number(busy?.[1] ?? NaN), four: Number(four?.[2] ?? NaN) };
}

/** Each tree's figures, measured in turns; per tree and key, the median. */
function measured(run: (tree: string) => Record<string, number>): Record<string, number>[] {
  const seen: Record<string, number[]>[] = trees.map(() => ({}));
  for (const t of order) {
    for (const [k, v] of Object.entries(run(trees[t]))) (seen[t][k] ??= []).push(v);
  }
  return seen.map((s) => Object.fromEntries(Object.entries(s).map(([k, vs]) => {
    const ok = vs.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
    return [k, ok.length ? ok[Math.floor(ok.length / 2)] : NaN];
  })));
}

const rows: string[][] = [];
function addRows(measures: Measure[], figures: Record<string, number>[]): void {
  for (const m of measures) {
    const v = figures.map((f) => f[m.key]);
    const shown = v.map((n) => (Number.isNaN(n) ? "failed" : m.show(n)));
    if (!baseline) {
      rows.push([m.what, shown[0], m.target]);
      continue;
    }
    const ratio = m.more ? v[0] / v[1] : v[1] / v[0];
    rows.push([m.what, shown[0], shown[1], Number.isNaN(ratio) ? "" : ratio.toFixed(2), m.target]);
  }
}

addRows(engineMeasures, measured(engineFigures));

if (process.getuid?.() === 0) {
  TestNet.removeStale("wrbench");
  const net = new TestNet("wrbench").create();
  try {
    const srv = net.start(net.net, join(root, "build", "linux", "wr_testserver"), [SERVER4, "80"]);
    await new Lines(srv).next((l) => l === "ready");
    addRows(goMeasures, measured((tree) => goFigures(tree, net)));
  } finally {
    net.destroy();
  }
} else {
  rows.push(["Go lookups", "not run (needs root for the test network)", ...(baseline ? ["", ""] : []), ""]);
}

const head = baseline ? ["measure", "result", "baseline", "ratio", "target"] : ["measure", "result", "target"];
const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (r: string[]) => r.map((c, i) => (i + 1 < r.length ? c.padEnd(w[i]) : c)).join("  ").trimEnd();
console.log(`\n${line(head)}`);
for (const r of rows) console.log(line(r));
if (baseline) console.log(`\nbaseline: ${baseline}; medians of ${order.length / 2} runs each, taken in turns; ratio above 1: this tree is faster`);
console.log(`\n(${seconds} s per figure; ${process.arch}, ${cpus().length} cores: ${cpus()[0]?.model ?? "?"})`);
