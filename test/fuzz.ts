// Running the libFuzzer targets of build/linux-fuzz: the kept seed corpus
// (test/fuzz/corpus) plus a scratch corpus, a number of runs, and first a
// replay of every crash reproducer kept in test/fuzz/crashes.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { paths, root } from "../build/build.ts";

const CORPUS: Record<string, string> = { fuzz_packets: "packets", fuzz_config: "config" };

export interface FuzzResult {
  ok: boolean;
  runs: number;
  seconds: number;
  log: string;
}

/** Runs target for `runs` executions; with timeoutS, a run still going then fails. */
export function fuzzRun(target: "fuzz_packets" | "fuzz_config", runs: number, timeoutS?: number): FuzzResult {
  if (timeoutS !== undefined && timeoutS <= 0) return { ok: false, runs: 0, seconds: 0, log: `${target}: no time left\n` };
  const timeout = timeoutS === undefined ? undefined : timeoutS * 1000;
  const bin = join(paths.fuzz, target);
  const seeds = join(root, "test", "fuzz", "corpus", CORPUS[target]);
  const crashes = join(root, "test", "fuzz", "crashes", CORPUS[target]);
  const env = { ...process.env, UBSAN_OPTIONS: "halt_on_error=1:print_stacktrace=1", ASAN_OPTIONS: "detect_leaks=1" };
  let log = "";
  // Reproducers of past findings must pass now.
  if (existsSync(crashes)) {
    const files = readdirSync(crashes).filter((f) => !f.startsWith(".")).map((f) => join(crashes, f));
    if (files.length) {
      const r = spawnSync(bin, files, { encoding: "utf8", env, timeout });
      log += `${target}: replayed ${files.length} kept crash inputs: ${r.status === 0 ? "ok" : "FAILED"}\n`;
      if (r.status !== 0) return { ok: false, runs: 0, seconds: 0, log: log + r.stderr };
    }
  }
  const scratch = mkdtempSync(join(tmpdir(), `${target}-`));
  const t0 = Date.now();
  const r = spawnSync(bin, [`-runs=${runs}`, "-max_len=4096", "-print_final_stats=1", `-artifact_prefix=${scratch}/`,
    scratch, seeds], { encoding: "utf8", env, maxBuffer: 64 << 20, timeout });
  const seconds = (Date.now() - t0) / 1000;
  const out = `${r.stdout}${r.stderr}`;
  const done = /Done (\d+) runs/.exec(out);
  const execs = Number(/stat::number_of_executed_units:\s+(\d+)/.exec(out)?.[1] ?? done?.[1] ?? 0);
  const ok = r.status === 0 && execs >= runs;
  // At the time limit libFuzzer ends on SIGTERM with its own exit code: no finding.
  const timedOut = (r.error as NodeJS.ErrnoException | undefined)?.code === "ETIMEDOUT";
  const verdict = ok
    ? "no finding"
    : timedOut
      ? `stopped at the time limit after ${seconds.toFixed(0)} s`
      : `FINDING${r.signal ? ` (${r.signal})` : ""}`;
  log += `${target}: ${execs} executions in ${seconds.toFixed(1)} s, ${verdict}\n`;
  if (!ok && !timedOut) log += out.split("\n").filter((l) => !l.startsWith("#")).slice(-60).join("\n") + "\n";
  if (ok || timedOut) rmSync(scratch, { recursive: true, force: true });
  else log += `inputs kept in ${scratch}\n`;
  return { ok, runs: execs, seconds, log };
}
