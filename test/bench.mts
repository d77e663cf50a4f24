// `npm run bench`: the engine's figures (build/linux/bench_engine, through
// the engine host the backends use) and Go lookups including the cgo call
// (go/bench_hit_linux_test.go, against a real redirected connection while
// other redirected traffic flows, in network namespaces). Prints a table;
// these are measurements, not pass/fail tests.
import { execFileSync, spawnSync } from "node:child_process";
import { join } from "node:path";
import { root } from "../build/build.ts";
import { Lines, SERVER4, TestNet } from "./e2e/netns.ts";

interface Row {
  what: string;
  value: string;
  target: string;
}

const rows: Row[] = [];
const seconds = process.argv[2] ?? "2";

const eng = execFileSync(join(root, "build", "linux", "bench_engine"), [seconds], { encoding: "utf8" });
const num = (name: string) => Number(new RegExp(`^${name} ([\\d.]+)`, "m").exec(eng)?.[1] ?? NaN);
const fmt = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: 0 });
rows.push({ what: "established-flow rewrite, one core", value: `${fmt(num("established"))} packets/s`, target: ">= 10,000,000" });
rows.push({ what: "new-flow decisions (SYN held, owner fact, released)", value: `${fmt(num("new-flows"))} flows/s`, target: ">= 1,000,000" });
rows.push({ what: "memory per flow (entry + index share)", value: `${num("memory")} bytes`, target: "<= 200" });
rows.push({ what: "lookups, engine host (C)", value: `${fmt(num("lookups"))} lookups/s (${num("lookup-time")} ns)`, target: "" });

if (process.getuid?.() === 0) {
  TestNet.removeStale("wrbench");
  const net = new TestNet("wrbench").create();
  try {
    const srv = net.start(net.net, join(root, "build", "linux", "wr_testserver"), [SERVER4, "80"]);
    await new Lines(srv).next((l) => l === "ready");
    const r = spawnSync("ip", ["netns", "exec", net.host, "go", "test", "-run", "^$", "-bench", "LookupHit",
      "-benchtime", `${seconds}s`, "."], {
      cwd: join(root, "go"),
      encoding: "utf8",
      env: {
        ...process.env, GOPROXY: "off", GOFLAGS: "-mod=mod", CGO_ENABLED: "1",
        WR_BENCH_CLIENT: join(root, "build", "linux", "wr_testclient"),
        WR_BENCH_SERVER_ADDR: SERVER4, WR_BENCH_SERVER_PORT: "80",
      },
    });
    const out = r.stdout + r.stderr;
    const one = /BenchmarkLookupHit-\d+\s+\d+\s+([\d.]+) ns\/op/.exec(out);
    const busy = /BenchmarkLookupHitBusy-\d+\s+\d+\s+([\d.]+) ns\/op/.exec(out);
    const four = /BenchmarkLookupHit4-\d+\s+\d+\s+([\d.]+) ns\/op.*?([\d.e+]+) lookups\/s/.exec(out);
    if (!one || !busy || !four) process.stdout.write(out);
    rows.push({ what: "Go Lookup(conn), a hit, incl. cgo", value: one ? `${one[1]} ns` : "failed", target: "<= 300 ns" });
    rows.push({ what: "Go Lookup(conn), a hit, while traffic flows", value: busy ? `${busy[1]} ns` : "failed", target: "" });
    rows.push({ what: "Go Lookup from 4 goroutines, traffic flowing", value: four ? `${fmt(Number(four[2]))} lookups/s` : "failed", target: ">= 1,000,000" });
  } finally {
    net.destroy();
  }
} else {
  rows.push({ what: "Go lookups", value: "not run (needs root for the test network)", target: "" });
}

const w = [Math.max(...rows.map((r) => r.what.length)), Math.max(...rows.map((r) => r.value.length))];
console.log(`\n${"measure".padEnd(w[0])}  ${"result".padEnd(w[1])}  target`);
for (const r of rows) console.log(`${r.what.padEnd(w[0])}  ${r.value.padEnd(w[1])}  ${r.target}`);
console.log(`\n(${seconds} s per figure; ${process.arch}, ${(await import("node:os")).cpus().length} cores: ${(await import("node:os")).cpus()[0]?.model ?? "?"})`);
