// `npm run soak`: the hardening suite at full scale, with its figures.
//
//   packet fuzzing      10,000,000 libFuzzer executions (ASan + UBSan)
//   config fuzzing       1,000,000 libFuzzer executions + 1,000,000 generated
//                        and mutated configs through set_redirector_config
//   ABI misuse           8 threads for 60 s while start/stop cycles run
//   ABI concurrency      8 threads x 400 calls each and 100 start/stop cycles,
//                        under ThreadSanitizer (npm test runs smaller sizes)
//   leaks                1,000 start/stop cycles with redirected traffic,
//                        under LeakSanitizer; descriptors and threads counted
//   floods               1,000,000 SYNs and 1,000,000 UDP datagrams through
//                        NFQUEUE while an intercepted connection is made
//
// Each line of the table says what ran and the command that ran it.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { buildAll, buildHardening, paths, root } from "../build/build.ts";
import { fuzzRun } from "./fuzz.ts";

if (process.getuid?.() !== 0) {
  console.log("the soak needs root (network namespaces, NFQUEUE)");
  process.exit(1);
}
buildAll();
buildHardening();

interface Row {
  what: string;
  result: string;
  ok: boolean;
  command: string;
}
const rows: Row[] = [];

for (const [target, runs] of [["fuzz_packets", 10_000_000], ["fuzz_config", 1_000_000]] as const) {
  const r = fuzzRun(target, runs);
  process.stdout.write(r.log);
  rows.push({
    what: target === "fuzz_packets" ? "packet fuzzing (libFuzzer, ASan+UBSan)" : "config fuzzing (libFuzzer, ASan+UBSan)",
    result: `${r.runs.toLocaleString("en-US")} executions in ${r.seconds.toFixed(0)} s, ${r.ok ? "no finding" : "FINDING"}`,
    ok: r.ok,
    command: `build/linux-fuzz/${target} -runs=${runs} <scratch> test/fuzz/corpus/${target === "fuzz_packets" ? "packets" : "config"}`,
  });
}

function hardening(kase: string): { ok: boolean; figures: Record<string, string>; out: string } {
  const r = spawnSync(join(paths.asan, "test_hardening"), [kase], {
    encoding: "utf8",
    env: { ...process.env, WR_SOAK: "1", UBSAN_OPTIONS: "halt_on_error=1", ASAN_OPTIONS: "detect_leaks=1" },
    maxBuffer: 64 << 20,
  });
  const out = r.stdout + r.stderr;
  process.stdout.write(out);
  const figures = Object.fromEntries([...out.matchAll(/^figure (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]));
  return { ok: r.status === 0, figures, out };
}

const cfg = hardening("config_flood");
rows.push({
  what: "generated and mutated configs (ASan+UBSan)",
  result: `${Number(cfg.figures.configs).toLocaleString("en-US")} configs (${cfg.figures["configs-rejected"]} rejected): ` +
    `documented codes only, policy unchanged by rejections${cfg.ok ? "" : " — FAILED"}`,
  ok: cfg.ok,
  command: "WR_SOAK=1 build/linux-asan/test_hardening config_flood",
});
const mis = hardening("misuse");
rows.push({
  what: "ABI misuse from 8 threads (ASan+UBSan)",
  result: `${mis.figures["misuse-seconds"]} s, ${Number(mis.figures["misuse-calls"]).toLocaleString("en-US")} hostile calls, ` +
    `${mis.figures["misuse-cycles"]} start/stop cycles${mis.ok ? ", documented codes only" : " — FAILED"}`,
  ok: mis.ok,
  command: "WR_SOAK=1 build/linux-asan/test_hardening misuse",
});
const leak = hardening("leak_cycles");
rows.push({
  what: "start/stop cycles with traffic (LeakSanitizer)",
  result: `${leak.figures["leak-cycles"]} cycles, each redirecting a connection; leaked: ${leak.ok ? "0 bytes" : "see output"}; ` +
    `descriptors ${leak.figures["leak-fds-delta"]}, threads ${leak.figures["leak-threads-delta"]} from start`,
  ok: leak.ok,
  command: "WR_SOAK=1 build/linux-asan/test_hardening leak_cycles",
});

for (const kase of ["threads", "cycles"]) {
  const t0 = Date.now();
  const r = spawnSync(join(paths.tsan, "test_abi"), [kase], {
    encoding: "utf8",
    env: { ...process.env, WR_SOAK: "1", TSAN_OPTIONS: `halt_on_error=1:suppressions=${join(root, "test", "c", "tsan.supp")}` },
    maxBuffer: 64 << 20,
  });
  process.stdout.write(r.stdout + r.stderr);
  rows.push({
    what: `ABI ${kase === "threads" ? "calls from 8 threads at once" : "start/stop cycles"} (ThreadSanitizer, full size)`,
    result: `${((Date.now() - t0) / 1000).toFixed(0)} s, ${r.status === 0 ? "no report, documented codes only" : "FAILED"}`,
    ok: r.status === 0,
    command: `WR_SOAK=1 build/linux-tsan/test_abi ${kase}`,
  });
}

const e2e = spawnSync(join(root, "node_modules", ".bin", "tsx"), ["test/e2e/nfqueue.test.ts"], {
  cwd: root,
  encoding: "utf8",
  env: { ...process.env, WR_SOAK: "1" },
  maxBuffer: 64 << 20,
});
const e2eOut = e2e.stdout + e2e.stderr;
process.stdout.write(e2eOut);
const fig = (n: string) => new RegExp(`figure ${n} (\\S+)`).exec(e2eOut)?.[1] ?? "?";
const floodOk = e2e.status === 0;
rows.push({
  what: "floods through NFQUEUE (SYN + UDP from random ports)",
  result: `${Number(fig("flood-packets")).toLocaleString("en-US")} packets in ${fig("flood-seconds")} s; proxy RSS ` +
    `+${fig("flood-rss-growth-kib")} KiB; an intercepted connection during the flood worked${floodOk ? "" : " — FAILED"}`,
  ok: floodOk,
  command: "WR_SOAK=1 tsx test/e2e/nfqueue.test.ts",
});

console.log("\n=== soak figures");
for (const r of rows) console.log(`${r.ok ? "ok  " : "FAIL"} ${r.what}: ${r.result}\n       $ ${r.command}`);
process.exit(rows.every((r) => r.ok) ? 0 : 1);
