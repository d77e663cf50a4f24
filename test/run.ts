// `npm test`: builds everything, runs every suite, and ends with one line
// "N passed, N failed" totalling them all. Exits non-zero on any failure.
//
//   tsx test/run.ts [--only name,name] [--hog N]   (names: see SUITES below)
//
// Only what the chosen suites need is built. --hog N keeps N busy-looping
// processes running beside the suites (a loaded machine; npm run test:loaded).
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { constants } from "node:os";
import { join } from "node:path";
import {
  buildAsan, buildDeadline, buildEngine, buildFuzz, buildLinux, buildTsan, buildWindows, limitedCommand, paths, root,
} from "../build/build.ts";
import { python3, wheelDir, wheelName } from "../build/wheel.ts";
import { fuzzRun } from "./fuzz.ts";

interface Count {
  passed: number;
  failed: number;
}

// What a suite needs built before it runs.
const BUILDS = {
  engine: buildEngine,
  linux: buildLinux,
  windows: buildWindows,
  asan: buildAsan,
  tsan: buildTsan,
  fuzz: buildFuzz,
};
type Build = keyof typeof BUILDS;

interface Suite {
  name: string;
  needs: Build[];
  run(): Count;
}

const isRoot = process.getuid?.() === 0;
const goEnv = { GOPROXY: "off", GOFLAGS: "-mod=mod", GOTOOLCHAIN: "local", CGO_ENABLED: "1" };
// Go programs for Windows run under wine 8.0, which lacks two things Go needs:
// bcryptprimitives.dll at start-up (wineUp puts a stand-in of ours into the
// prefix) and, from Go 1.24, the SIO_UDP_NETRESET ioctl on every UDP socket.
// So they are built with Go 1.23 (above the package's floor), which
// setup.sh fetches once from the Go module proxy. Real Windows has both.
const WINE_GO = "go1.23.12";
const winGoEnv = { ...goEnv, GOTOOLCHAIN: WINE_GO, GOOS: "windows", GOARCH: "amd64", CC: "x86_64-w64-mingw32-gcc" };
const wine = join(root, "build", "wine-run.sh");
const winDir = join(root, "build", "windows");

// Every command runs under a time limit, so a hung program fails its suite
// instead of the whole run: its own bound (timeoutS, default 20 min) and what
// is left of the run's budget (WR_TEST_BUDGET_S, default 75 min), whichever
// ends first. At the limit, or on Ctrl-C, build/limited.sh ends the command
// and everything it started.
const runStart = Date.now();
const budgetS = Number(process.env.WR_TEST_BUDGET_S ?? 75 * 60);
if (!Number.isInteger(budgetS) || budgetS <= 0) {
  console.log(`WR_TEST_BUDGET_S must be a whole number of seconds above 0, not "${process.env.WR_TEST_BUDGET_S}"`);
  console.log("0 passed, 1 failed");
  process.exit(1);
}
const logDir = join(root, "build", "test", "logs");
let logSeq = 0;

function secondsLeft(): number {
  return Math.floor(budgetS - (Date.now() - runStart) / 1000);
}

/**
 * Runs a command, streaming its output (stdout and stderr merged) as it comes,
 * and returns its exit code and output.
 */
function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutS?: number } = {}) {
  const limit = Math.min(opts.timeoutS ?? 20 * 60, secondsLeft());
  if (limit <= 0) {
    const out = `(${cmd}: not run, the test run's time budget of ${budgetS} s is spent)\n`;
    process.stdout.write(out);
    return { code: 1, out };
  }
  mkdirSync(logDir, { recursive: true });
  const log = join(logDir, `${process.pid}-${++logSeq}.log`);
  writeFileSync(log, "");
  const r = spawnSync(...limitedCommand(limit, cmd, args), {
    cwd: opts.cwd ?? root,
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, ...opts.env, WR_SH_LOG: log },
  });
  // 124: the limit came (the script ended the command); 137: the script
  // itself did not end in time and timeout killed it.
  const code = r.status ?? (r.signal ? 128 + (constants.signals[r.signal] ?? 0) : 1);
  let note = "";
  if (r.error) note += `(${cmd}: ${r.error.message})\n`;
  if (code === 124 || code === 137) note += `(${cmd}: killed after ${limit} s)\n`;
  process.stdout.write(note);
  let out = readFileSync(log, "utf8");
  rmSync(log, { force: true });
  if (out !== "" && !out.endsWith("\n")) out += "\n";
  out += note;
  return { code, out };
}

/** Runs in a network namespace of its own when root, so nothing touches the host's traffic. */
function isolated(cmd: string, args: string[]): [string, string[]] {
  return isRoot ? ["unshare", ["-n", cmd, ...args]] : [cmd, args];
}

/** Like isolated, with the namespace's loopback up (tests that talk to themselves over TCP/UDP). */
function isolatedLo(cmd: string, args: string[]): [string, string[]] {
  return isRoot ? ["unshare", ["-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', cmd, ...args]] : [cmd, args];
}

function sum(...counts: Count[]): Count {
  return counts.reduce((a, c) => ({ passed: a.passed + c.passed, failed: a.failed + c.failed }), { passed: 0, failed: 0 });
}

// The Go package (go/): its end-to-end tests (which need the capture backend
// and root) are built only with the e2e tag, and run once, in go-e2e.
const goPkgDir = join(root, "go");
const goPkgEnv = { ...goEnv, GODEBUG: "cgocheck=1" };

function goPkgTest(extra: string[]): Count {
  const [cmd, args] = isolatedLo("go", ["test", "-count=1", "-v", "-timeout", "600s", ...extra, "./..."]);
  const r = sh(cmd, args, { cwd: goPkgDir, env: goPkgEnv });
  return gotest(r.out, r.code);
}

/** "PASS name" / "FAIL name: why" lines, as the C# self-test prints them. */
function passLines(out: string, code: number): Count {
  const passed = (out.match(/^PASS /gm) ?? []).length;
  const failed = (out.match(/^FAIL /gm) ?? []).length;
  return { passed, failed: failed > 0 || code !== 0 || passed === 0 ? Math.max(failed, 1) : 0 };
}

function one(ok: boolean): Count {
  return ok ? { passed: 1, failed: 0 } : { passed: 0, failed: 1 };
}

function uvu(out: string, code: number): Count {
  const total = Number(/Total:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const passed = Number(/Passed:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const failed = total - passed;
  return { passed, failed: failed > 0 || code !== 0 ? Math.max(failed, 1) : 0 };
}

function ctest(out: string, code: number): Count {
  const m = /(\d+)% tests passed, (\d+) tests? failed out of (\d+)/.exec(out);
  if (!m) return { passed: 0, failed: 1 };
  const failed = Number(m[2]);
  const total = Number(m[3]);
  return { passed: total - failed, failed: failed > 0 || code !== 0 ? Math.max(failed, 1) : 0 };
}

function gotest(out: string, code: number): Count {
  const passed = (out.match(/^\s*--- PASS:/gm) ?? []).length;
  const failed = (out.match(/^\s*--- FAIL:/gm) ?? []).length;
  return { passed, failed: failed > 0 || code !== 0 || passed === 0 ? Math.max(failed, 1) : 0 };
}

function pyunit(out: string, code: number): Count {
  const ran = Number(/Ran (\d+) tests?/.exec(out)?.[1] ?? 0);
  const m = /FAILED \((?:failures=(\d+))?(?:, )?(?:errors=(\d+))?/.exec(out);
  const failed = m ? Number(m[1] ?? 0) + Number(m[2] ?? 0) : 0;
  return { passed: ran - failed, failed: failed > 0 || code !== 0 || ran === 0 ? Math.max(failed, 1) : 0 };
}

/** pytest's closing line: "N passed, N failed, N errors ... in S s". */
function pytest(out: string, code: number): Count {
  const summary = [...out.matchAll(/^=+ (.* in [\d.]+s.*) =+$/gm)].at(-1)?.[1] ?? "";
  const n = (what: string) => Number(new RegExp(`(\\d+) ${what}\\b`).exec(summary)?.[1] ?? 0);
  const passed = n("passed");
  const failed = n("failed") + n("errors?");
  return { passed, failed: failed > 0 || code !== 0 || passed === 0 ? Math.max(failed, 1) : 0 };
}

// Wine: the prefix is booted once per run and one wineserver is kept up until
// the run ends, so each test program starts in a fraction of a second and no
// wine service process started on a test's behalf holds that test's output
// open. Bounded: a wine that cannot start fails the wine suites, and says why.
const winePrefix = process.env.WINEPREFIX ?? "/tmp/windows-redirector-wine";
const wineEnv = { ...process.env, WINEPREFIX: winePrefix };
let wineState: "down" | "up" | "broken" = "down";
let wineWatcher: ChildProcess | undefined;

function wineUp(): boolean {
  if (wineState !== "down") return wineState === "up";
  wineState = "broken";
  spawnSync("/usr/lib/wine/wineserver", ["-k"], { env: wineEnv, stdio: "ignore", timeout: 30_000 });
  mkdirSync(winePrefix, { recursive: true });
  process.on("exit", wineDown);
  // Should this runner die without its exit handler (a signal), the server
  // goes with it all the same.
  wineWatcher = spawn("sh", ["-c", 'while kill -0 "$WR_RUNNER" 2>/dev/null; do sleep 2; done; exec /usr/lib/wine/wineserver -k'], {
    env: { ...wineEnv, WR_RUNNER: String(process.pid) },
    detached: true,
    stdio: "ignore",
  });
  wineWatcher.unref();
  const server = spawnSync("/usr/lib/wine/wineserver", ["-p"], { env: wineEnv, stdio: "ignore", timeout: 30_000 });
  if (server.status !== 0) {
    console.log(`wine: wineserver -p failed (${server.error?.message ?? `exit ${server.status}`})`);
    return false;
  }
  const limit = Math.min(300, secondsLeft());
  if (limit <= 0) {
    console.log("wine: not booted, the test run's time budget is spent");
    return false;
  }
  // The boot's output goes to a file: the service processes it starts keep
  // their standard handles for as long as the wineserver lives.
  mkdirSync(logDir, { recursive: true });
  const bootLog = join(logDir, "wineboot.log");
  const fd = openSync(bootLog, "w");
  const boot = spawnSync("timeout", ["-k", "10", String(limit), wine, "wineboot", "-i"], {
    env: wineEnv,
    stdio: ["ignore", fd, fd],
  });
  closeSync(fd);
  const killed = boot.status === 124 || boot.signal === "SIGKILL";
  console.log(`wine: wineboot -i: ${killed ? `killed after ${limit} s` : `exit ${boot.status ?? boot.signal}`}`);
  const ver = boot.status === 0 ? sh(wine, ["cmd", "/c", "ver"], { timeoutS: 60 }) : { code: 1, out: "" };
  if (ver.code !== 0 || !ver.out.includes("Microsoft Windows")) {
    process.stdout.write(readFileSync(bootLog, "utf8"));
    console.log(`wine: the prefix ${winePrefix} did not boot; wine processes now:`);
    sh("sh", ["-c", "ps -eo pid,ppid,etimes,stat,args | grep -i -E 'wine|[.]exe' | grep -v grep"], { timeoutS: 10 });
    return false;
  }
  // Go programs need bcryptprimitives.dll, which wine 8.0 lacks: our
  // stand-in (test/windows/wine_bcryptprimitives.c), in this prefix only.
  const prng = join(winDir, "winetools", "bcryptprimitives.dll");
  if (!existsSync(prng)) {
    console.log(`wine: ${prng} is missing (the Windows build makes it)`);
    return false;
  }
  copyFileSync(prng, join(winePrefix, "drive_c", "windows", "system32", "bcryptprimitives.dll"));
  wineState = "up";
  return true;
}

function wineDown(): void {
  if (wineState === "down") return;
  wineWatcher?.kill(); // it would end a wineserver started after this run
  spawnSync("/usr/lib/wine/wineserver", ["-k"], { env: wineEnv, stdio: "ignore", timeout: 30_000 });
  wineState = "down";
}

const SUITES: Suite[] = [
  {
    name: "typecheck",
    needs: [],
    run: () => one(sh(join(root, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.json"]).code === 0),
  },
  {
    name: "engine",
    needs: ["engine"],
    run: () => {
      const r = sh(join(root, "node_modules", ".bin", "tsx"), ["test/engine/all.ts"]);
      return uvu(r.out, r.code);
    },
  },
  {
    // The built libraries export exactly the header's functions.
    name: "exports",
    needs: ["linux", "windows"],
    run: () => {
      const r = sh(join(root, "node_modules", ".bin", "tsx"), ["test/build.test.ts"]);
      return uvu(r.out, r.code);
    },
  },
  {
    // cmake --install into prefixes outside the tree; test/consumer built
    // against them with find_package and pkg-config, shared and static, and
    // run (Windows: under wine, and with the MSVC .lib through lld-link).
    name: "install",
    needs: ["linux", "windows"],
    run: () => {
      if (!wineUp()) return one(false);
      const r = sh(join(root, "node_modules", ".bin", "tsx"), ["test/install.test.ts"], { env: { WINEPREFIX: winePrefix } });
      return uvu(r.out, r.code);
    },
  },
  {
    // The release bundles: `npm run dist` (build/dist.ts, on the builds just
    // made, into dist/), then each archive unpacked into an empty folder and used as a
    // new user would (test/dist.test.ts): C with find_package and pkg-config,
    // Go, redirect-proxy, C#; Linux natively, Windows under wine.
    name: "dist",
    needs: ["linux", "windows"],
    run: () => {
      const d = sh(join(root, "node_modules", ".bin", "tsx"), ["build/dist.ts", "--no-build"], { timeoutS: 600 });
      if (d.code !== 0 || !wineUp()) return one(false);
      const r = sh(join(root, "node_modules", ".bin", "tsx"), ["test/dist.test.ts"], { env: { WINEPREFIX: winePrefix }, timeoutS: 600 });
      return sum(one(true), uvu(r.out, r.code));
    },
  },
  {
    name: "c-linux",
    needs: ["linux"],
    run: () => {
      const r = sh("ctest", ["--test-dir", "build/linux", "--output-on-failure", "--timeout", "600"]);
      return ctest(r.out, r.code);
    },
  },
  {
    name: "c-windows",
    needs: ["windows"],
    run: () => {
      if (!wineUp()) return one(false);
      const r = sh("ctest", ["--test-dir", "build/windows", "-LE", "windivert", "--output-on-failure", "--timeout", "300"]);
      return ctest(r.out, r.code);
    },
  },
  {
    // The WinDivert backend under wine against the stand-in WinDivert.dll
    // (test/windows): scripted sessions, failures, socket tables, layout.
    name: "windivert",
    needs: ["windows"],
    run: () => {
      if (!wineUp()) return one(false);
      const r = sh("ctest", ["--test-dir", "build/windows", "-L", "windivert", "--output-on-failure", "--timeout", "300"]);
      return ctest(r.out, r.code);
    },
  },
  {
    // The Windows acceptance program (test/acceptance/acceptance.c) under
    // wine, the stand-in WinDivert.dll in live mode: real kernel traffic
    // through a relay, in a network namespace of its own (root).
    name: "acceptance",
    needs: ["linux", "windows"],
    run: () => {
      const r = sh(join(root, "node_modules", ".bin", "tsx"), ["test/acceptance/run_wine.ts"], {
        env: { WINEPREFIX: winePrefix },
        timeoutS: 300,
      });
      const m = /^acceptance: (\d+) passed, (\d+) failed$/m.exec(r.out);
      if (!m) return one(false);
      const failed = Number(m[2]);
      return { passed: Number(m[1]), failed: failed > 0 || r.code !== 0 ? Math.max(failed, 1) : 0 };
    },
  },
  {
    name: "go-linux",
    needs: ["linux"],
    run: () => {
      const [cmd, args] = isolated("go", ["test", "-count=1", "-v", "./..."]);
      const r = sh(cmd, args, { cwd: join(root, "test", "go", "seedabi"), env: goEnv });
      return gotest(r.out, r.code);
    },
  },
  {
    name: "go-windows",
    needs: ["windows"],
    run: () => {
      const exe = join(winDir, "seedabi.test.exe");
      const b = sh("go", ["test", "-c", "-o", exe, "."], { cwd: join(root, "test", "go", "seedabi"), env: winGoEnv });
      if (b.code !== 0 || !wineUp()) return one(false);
      const r = sh(wine, [exe, "-test.v"], { cwd: winDir, timeoutS: 300 });
      return gotest(r.out, r.code);
    },
  },
  {
    name: "seed-example",
    needs: ["linux", "windows"],
    run: () => {
      // Our program making the seed README's calls, with the seed's header.
      const dir = join(root, "test", "go", "seedexample");
      const lin = join(root, "build", "linux", "seedexample");
      const exe = join(winDir, "seedexample.exe");
      let passed = 0;
      let failed = 0;
      const expect = (out: string, start: number, stop: number) =>
        out.includes("set_redirector_config=0\nset_redirector_config(null pids)=0\nset_redirector_config=0\n") &&
        out.includes(`start_redirector=${start}\n`) &&
        out.includes(`stop_redirector=${stop}\nget_redirector_status=0\n`);
      if (sh("go", ["build", "-o", lin, "."], { cwd: dir, env: goEnv }).code === 0 && isRoot) {
        const [cmd, args] = isolated(lin, []);
        if (expect(sh(cmd, args).out, 0, 0)) passed++;
        else failed++;
      } else if (isRoot) failed++;
      if (sh("go", ["build", "-o", exe, "."], { cwd: dir, env: winGoEnv }).code === 0 && wineUp()) {
        // No WinDivert.dll beside it: start fails, with the reason.
        if (expect(sh(wine, [exe], { cwd: winDir, timeoutS: 120 }).out, -2, -1)) passed++;
        else failed++;
        // The stand-in WinDivert.dll beside it: starts and stops cleanly.
        const withWd = join(winDir, "seedexample-windivert");
        rmSync(withWd, { recursive: true, force: true });
        mkdirSync(withWd, { recursive: true });
        for (const [from, name] of [
          [exe, "seedexample.exe"],
          [join(winDir, "windows_redirector.dll"), "windows_redirector.dll"],
          [join(winDir, "fakewd", "WinDivert.dll"), "WinDivert.dll"],
        ]) copyFileSync(from, join(withWd, name));
        const env = { WR_FAKE_WINDIVERT_SCRIPT: "", WR_FAKE_WINDIVERT_LOG: "" };
        if (expect(sh(wine, [join(withWd, "seedexample.exe")], { cwd: withWd, env, timeoutS: 120 }).out, 0, 0)) passed++;
        else failed++;
      } else failed += 2;
      return { passed, failed };
    },
  },
  {
    name: "python",
    needs: ["linux"],
    run: () => {
      const [cmd, args] = isolated("python3", ["-m", "unittest", "-v", "test_seed_abi"]);
      const r = sh(cmd, args, { cwd: join(root, "test", "python") });
      return pyunit(r.out, r.code);
    },
  },
  {
    name: "go-pkg",
    needs: ["linux"],
    run: () => {
      // gofmt and go vet clean, then the tests with GODEBUG=cgocheck=1.
      const fmt = sh("gofmt", ["-l", "."], { cwd: goPkgDir });
      const vet = sh("go", ["vet", "-tags", "e2e", "./..."], { cwd: goPkgDir, env: goEnv });
      return sum(one(fmt.code === 0 && fmt.out.trim() === ""), one(vet.code === 0), goPkgTest([]));
    },
  },
  {
    name: "go-pkg-race",
    needs: ["linux"],
    run: () => goPkgTest(["-race"]),
  },
  {
    // The library and the C tests under AddressSanitizer + UBSan (with
    // LeakSanitizer): any report fails the test it happens in.
    name: "asan",
    needs: ["asan"],
    run: () => {
      const r = sh("ctest", ["--test-dir", paths.asan, "--output-on-failure", "-j2", "--timeout", "900"], {
        env: { UBSAN_OPTIONS: "halt_on_error=1:print_stacktrace=1", ASAN_OPTIONS: "detect_leaks=1:abort_on_error=1" },
      });
      return ctest(r.out, r.code);
    },
  },
  {
    // The concurrency tests under ThreadSanitizer.
    name: "tsan",
    needs: ["tsan"],
    run: () => {
      const r = sh("ctest", ["--test-dir", paths.tsan, "--output-on-failure", "--timeout", "900", "-R",
        "threads|thread_errors|cycles|engine_trap|start_stop|misuse|leak_cycles"], {
        env: { TSAN_OPTIONS: `halt_on_error=1:second_deadlock_stack=1:suppressions=${join(root, "test", "c", "tsan.supp")}` },
      });
      return ctest(r.out, r.code);
    },
  },
  {
    // Coverage-guided fuzzing (libFuzzer) of the packet entry and the config
    // parser, at CI size, and every kept crash reproducer replayed.
    name: "fuzz",
    needs: ["fuzz"],
    run: () => {
      let passed = 0;
      let failed = 0;
      for (const [target, runs] of [["fuzz_packets", 500_000], ["fuzz_config", 50_000]] as const) {
        const r = fuzzRun(target, runs, Math.min(600, secondsLeft()));
        process.stdout.write(r.log);
        if (r.ok) passed++;
        else failed++;
      }
      return { passed, failed };
    },
  },
  {
    name: "e2e-linux",
    needs: ["linux"],
    run: () => {
      // Real traffic through NFQUEUE in network namespaces: needs root.
      if (!isRoot) {
        console.log("e2e-linux needs root (network namespaces, iptables, NFQUEUE)");
        return one(false);
      }
      const r = sh(join(root, "node_modules", ".bin", "tsx"), ["test/e2e/nfqueue.test.ts"]);
      return uvu(r.out, r.code);
    },
  },
  {
    // Real client processes redirected to Go proxies in network namespaces of
    // their own (root).
    name: "go-e2e",
    needs: ["linux"],
    run: () => goPkgTest(["-race", "-tags", "e2e", "-run", "^TestEndToEnd"]),
  },
  {
    // The package without cgo on Windows (CGO_ENABLED=0, built with WINE_GO):
    // go vet, its tests and the example's under wine beside the DLL and the
    // stand-in WinDivert.dll, the library found elsewhere through
    // SetLibraryPath, the example started without the DLL, and the build
    // messages where the package cannot work.
    name: "go-pkg-windows",
    needs: ["windows"],
    run: () => {
      const env = { ...winGoEnv, CGO_ENABLED: "0" };
      const dir = join(winDir, "gopkg"); // the programs, the DLL and the stand-in WinDivert.dll
      const away = join(winDir, "gopkg-away"); // the programs without the DLL
      const old = join(winDir, "gopkg-old", "windows_redirector.dll"); // an older DLL (test/go/olddll)
      for (const d of [dir, away, join(winDir, "gopkg-old")]) {
        rmSync(d, { recursive: true, force: true });
        mkdirSync(d, { recursive: true });
      }
      copyFileSync(join(winDir, "windows_redirector.dll"), join(dir, "windows_redirector.dll"));
      copyFileSync(join(winDir, "fakewd", "WinDivert.dll"), join(dir, "WinDivert.dll"));
      const oldDll = sh("x86_64-w64-mingw32-gcc", ["-shared", "-Wall", "-Werror", "-o", old, "test/go/olddll/windows_redirector.c"]);
      const vet = sh("go", ["vet", "./..."], { cwd: goPkgDir, env });
      let c = sum(one(vet.code === 0), one(oldDll.code === 0));
      const wineEnvFor = { WR_FAKE_WINDIVERT_SCRIPT: "", WR_FAKE_WINDIVERT_LOG: "", WR_TEST_OLD_LIBRARY: `Z:${old}` };
      for (const [pkg, exe] of [[".", "redirector.test.exe"], ["./cmd/redirect-proxy", "redirect-proxy.test.exe"]]) {
        const b = sh("go", ["test", "-c", "-o", join(dir, exe), pkg], { cwd: goPkgDir, env });
        if (b.code !== 0 || !wineUp()) {
          c = sum(c, one(false));
          continue;
        }
        const r = sh(wine, [join(dir, exe), "-test.v"], { cwd: dir, env: wineEnvFor, timeoutS: 300 });
        c = sum(c, gotest(r.out, r.code));
      }
      // From a folder without the DLL: not loaded before its first use, New
      // says where it looked, SetLibraryPath finds it.
      if (existsSync(join(dir, "redirector.test.exe")) && wineState === "up") {
        copyFileSync(join(dir, "redirector.test.exe"), join(away, "redirector.test.exe"));
        const r = sh(wine, [join(away, "redirector.test.exe"), "-test.v", "-test.run", "^TestLoadFromTheCallersPath$"], {
          cwd: away,
          env: { ...wineEnvFor, WR_TEST_LIBRARY_PATH: `Z:${dir}` },
          timeoutS: 120,
        });
        c = sum(c, gotest(r.out, r.code));
      } else c = sum(c, one(false));
      // The example: built without cgo; without the DLL it says so and exits 1.
      const ex = sh("go", ["build", "-o", join(away, "redirect-proxy.exe"), "./cmd/redirect-proxy"], { cwd: goPkgDir, env });
      if (ex.code === 0 && wineState === "up") {
        const r = sh(wine, [join(away, "redirect-proxy.exe"), "--port", "18099", "--process", "curl"], { cwd: away, timeoutS: 120 });
        c = sum(c, one(r.code === 1 && r.out.includes(`redirect-proxy: redirector: New: windows_redirector.dll not found: looked for`) &&
          !r.out.includes("panic")));
      } else c = sum(c, one(false));
      // Where the package cannot work, the build says why.
      const nocgo = sh("go", ["build", "."], { cwd: goPkgDir, env: { ...goEnv, CGO_ENABLED: "0" } });
      const w386 = sh("go", ["build", "."], { cwd: goPkgDir, env: { ...env, GOARCH: "386" } });
      return sum(c, one(nocgo.code !== 0 && nocgo.out.includes("windows-redirector needs cgo on Linux (CGO_ENABLED=1)")),
        one(w386.code !== 0 && w386.out.includes("windows-redirector supports only linux and 64-bit windows")));
    },
  },
  {
    // The Python package (python/): both wheels built as a release builds
    // them (build/wheel.ts); a fresh virtual environment with pytest and mypy
    // from PyPI and the Linux wheel installed; python/tests run with pytest
    // against the installed package (the ABI's codes as exceptions, layouts,
    // the loader, both wheels as files, the Windows loader with the platform
    // faked, and as root a real client redirected to a Python proxy in
    // namespaces); mypy --strict on the installed package and a typed user.
    name: "python-pkg",
    needs: ["linux", "windows"],
    run: () => {
      const w = sh(join(root, "node_modules", ".bin", "tsx"), [join(root, "build", "wheel.ts")], { timeoutS: 900 });
      const wheels = { linux: join(wheelDir, wheelName("linux")), windows: join(wheelDir, wheelName("windows")) };
      if (w.code !== 0 || !existsSync(wheels.linux) || !existsSync(wheels.windows)) return one(false);
      const venv = join(root, "build", "test", "python-pkg");
      const py = join(venv, "bin", "python");
      const tests = join(root, "python", "tests");
      rmSync(venv, { recursive: true, force: true });
      const made = sh(python3, ["-m", "venv", venv]).code === 0 &&
        sh(py, ["-m", "pip", "install", "--disable-pip-version-check", "-r", join(tests, "requirements.txt"),
          wheels.linux], { timeoutS: 600 }).code === 0;
      if (!made) return one(false);
      const mypy = (what: string[]) =>
        one(sh(py, ["-m", "mypy", "--strict", "--cache-dir", join(venv, "mypy-cache"), ...what], { cwd: tests }).code === 0);
      const [cmd, args] = isolatedLo(py, ["-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", tests]);
      const r = sh(cmd, args, {
        cwd: tests,
        env: { WR_WHEEL_LINUX: wheels.linux, WR_WHEEL_WINDOWS: wheels.windows, WINDOWS_REDIRECTOR_LIBRARY: "" },
      });
      return sum(mypy(["-p", "windows_redirector"]), mypy(["typed_user.py"]), pytest(r.out, r.code));
    },
  },
  {
    name: "csharp",
    needs: ["linux"],
    run: () => {
      // Built with mono's mcs; run with mono against build/linux, found through
      // LD_LIBRARY_PATH (the dllmap names libwindows_redirector.so).
      const out = join(root, "build", "test", "csharp");
      const exe = join(out, "WindowsRedirectorSample.exe");
      mkdirSync(out, { recursive: true });
      const b = sh("mcs", ["-out:" + exe, "csharp/WindowsRedirector.cs", "csharp/Sample.cs"]);
      copyFileSync(join(root, "csharp", "WindowsRedirectorSample.exe.config"), exe + ".config");
      const layoutExe = join(out, "abi_layout");
      const l = sh("gcc", ["-Wall", "-Iinclude", "-o", layoutExe, "test/csharp/abi_layout.c"]);
      if (b.code !== 0 || l.code !== 0) return one(false);
      const layout = spawnSync(layoutExe, [], { encoding: "utf8", timeout: 30_000 });
      writeFileSync(join(out, "abi_layout.txt"), layout.stdout ?? "");
      const [cmd, args] = isolatedLo("mono", [exe, "--layout", join(out, "abi_layout.txt")]);
      const r = sh(cmd, args, { env: { LD_LIBRARY_PATH: paths.linux } });
      const self = passLines(r.out, r.code);
      // The sample's proxy mode end to end (test/e2e/csharp.test.ts): real
      // clients relayed with their origin, and a direct connection from
      // another network namespace closed unserved. Needs root.
      if (!isRoot) {
        console.log("csharp: the sample proxy's end-to-end test needs root (network namespaces, iptables, NFQUEUE): not run");
        return self;
      }
      const e = sh(join(root, "node_modules", ".bin", "tsx"), ["test/e2e/csharp.test.ts"], { env: { WR_CSHARP_EXE: exe } });
      return sum(self, uvu(e.out, e.code));
    },
  },
];

function usage(why: string): never {
  console.log(`${why}\nusage: tsx test/run.ts [--only ${SUITES.map((s) => s.name).join(",")}] [--hog N]`);
  console.log("0 passed, 1 failed");
  process.exit(2);
}

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  if (i < 0) return undefined;
  const v = process.argv[i + 1];
  if (v === undefined || v.startsWith("--")) usage(`${name} needs a value`);
  return v;
}

/** N processes that only burn CPU, at normal priority, until this runner exits. */
function startHogs(n: number): void {
  const hogs: ChildProcess[] = [];
  for (let i = 0; i < n; i++) {
    hogs.push(spawn("sh", ["-c", 'while kill -0 "$WR_RUNNER" 2>/dev/null; do i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; done'], {
      env: { ...process.env, WR_RUNNER: String(process.pid) },
      stdio: "ignore",
      detached: true,
    }));
  }
  for (const h of hogs) h.unref();
  process.on("exit", () => hogs.forEach((h) => h.kill("SIGKILL")));
  console.log(`${n} CPU hog${n === 1 ? "" : "s"} running beside the suites`);
}

function main(): void {
  for (const a of process.argv.slice(2)) {
    if (a.startsWith("--") && a !== "--only" && a !== "--hog") usage(`unknown option ${a}`);
  }
  const onlyArg = option("--only");
  const only = onlyArg === undefined ? undefined : new Set(onlyArg.split(","));
  for (const name of only ?? []) {
    if (!SUITES.some((s) => s.name === name)) usage(`no suite is called "${name}"`);
  }
  const hogArg = option("--hog");
  if (hogArg !== undefined) {
    const n = Number(hogArg);
    if (!Number.isInteger(n) || n < 1 || n > 64) usage(`--hog takes a number of processes from 1 to 64, not "${hogArg}"`);
    startHogs(n);
  }
  const chosen = SUITES.filter((s) => !only || only.has(s.name));
  const total: Count = { passed: 0, failed: 0 };
  const lines: string[] = [];
  const built = new Set<Build>();
  try {
    buildDeadline(runStart + budgetS * 1000);
    const t0 = Date.now();
    for (const b of Object.keys(BUILDS) as Build[]) {
      if (chosen.some((s) => s.needs.includes(b))) {
        BUILDS[b]();
        built.add(b);
      }
    }
    lines.push(`${"build".padEnd(14)} ${[...built].join(", ") || "nothing"}  ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    console.log(`build failed: ${(e as Error).message}`);
    console.log("0 passed, 1 failed");
    process.exit(1);
  }
  for (const s of chosen) {
    console.log(`\n=== ${s.name}`);
    const t0 = Date.now();
    let c: Count;
    try {
      c = s.run();
    } catch (e) {
      console.log(`suite ${s.name} crashed: ${(e as Error).stack}`);
      c = { passed: 0, failed: 1 };
    }
    total.passed += c.passed;
    total.failed += c.failed;
    lines.push(`${s.name.padEnd(14)} ${String(c.passed).padStart(5)} passed ${String(c.failed).padStart(4)} failed  ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  wineDown();
  console.log("\n=== summary");
  for (const l of lines) console.log(l);
  console.log(`${"total".padEnd(14)} ${((Date.now() - runStart) / 1000).toFixed(1)} s`);
  console.log(`${total.passed} passed, ${total.failed} failed`);
  process.exit(total.failed === 0 ? 0 : 1);
}

main();
