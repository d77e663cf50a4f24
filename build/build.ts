// The build: build/contract.ts -> build/gen/contract.{ts,h}; AssemblyScript
// -> build/engine.wasm -> wasm2c -> build/gen -> CMake for Linux
// (build/linux) and Windows (build/windows, mingw-w64).
//
//   tsx build/build.ts [--engine-only] [--linux-only] [--hardening]
//
// --hardening builds the Linux variants the hardening suites use:
// build/linux-asan (AddressSanitizer + UBSan), build/linux-tsan
// (ThreadSanitizer) and build/linux-fuzz (clang, libFuzzer targets).
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { generateAssemblyScript, generateC } from "./contract.ts";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");
/** The project's version: package.json's, the one source (CMake and the wheels read it there too). */
export const version = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version;
export const paths = {
  wasm: join(root, "build", "engine.wasm"),
  wireWasm: join(root, "build", "wire.wasm"),
  gen: join(root, "build", "gen"),
  linux: join(root, "build", "linux"),
  windows: join(root, "build", "windows"),
  asan: join(root, "build", "linux-asan"),
  tsan: join(root, "build", "linux-tsan"),
  fuzz: join(root, "build", "linux-fuzz"),
};

// The official Go toolchain (/usr/local/go) before any other on PATH, for
// every command the build, the tests and the demo run (build/setup.sh checks
// its version).
const GOROOT_BIN = "/usr/local/go/bin";
if (existsSync(join(GOROOT_BIN, "go")) && !(process.env.PATH ?? "").split(":").includes(GOROOT_BIN)) {
  process.env.PATH = `${GOROOT_BIN}:${process.env.PATH ?? ""}`;
}

// The Go package (go/) finds the library through pkg-config. For this
// checkout's build tree that is build/linux/windows_redirector-uninstalled.pc,
// which buildLinux writes (pkg-config prefers an -uninstalled .pc in its
// path): every command the build, the tests and the demo run sees it.
if (!(process.env.PKG_CONFIG_PATH ?? "").split(":").includes(paths.linux)) {
  process.env.PKG_CONFIG_PATH = [paths.linux, process.env.PKG_CONFIG_PATH].filter(Boolean).join(":");
}

// The compiled engine's memory: grows on demand up to 2 GiB (32768 pages).
const ASC_FLAGS = [
  "--optimizeLevel", "3", "--shrinkLevel", "0", "--noAssert",
  "--runtime", "incremental",
  "--use", "abort=as/index/engineAbort",
  "--initialMemory", "32", "--maximumMemory", "32768",
];

// The wire test module: the engine's optimisation, no engine abort handler.
const WIRE_ASC_FLAGS = ["--optimizeLevel", "3", "--shrinkLevel", "0", "--runtime", "stub"];

const WASM2C_RUNTIME = "/usr/share/wabt/wasm2c";
const WASM_RT_H = "/usr/include/wasm-rt.h";

// Set by the test runner: a step still running then is ended (and fails).
let deadline: number | undefined;

/** Builds started from now on must be done by `at` (Date.now() milliseconds). */
export function buildDeadline(at: number): void {
  deadline = at;
}

/**
 * The command line that runs cmd for at most `seconds`: at the limit (or on
 * Ctrl-C) build/limited.sh ends it and everything it started.
 */
export function limitedCommand(seconds: number, cmd: string, args: string[]): [string, string[]] {
  return ["timeout", ["--foreground", "-k", "10", String(seconds), "bash", join(root, "build", "limited.sh"), cmd, ...args]];
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): void {
  const seconds = deadline === undefined ? 0 : Math.ceil((deadline - Date.now()) / 1000);
  if (deadline !== undefined && seconds <= 0) throw new Error(`${cmd}: no time left for it`);
  const [c, a] = deadline === undefined ? [cmd, args] : limitedCommand(seconds, cmd, args);
  execFileSync(c, a, { cwd: root, stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, ...env } });
}

function newest(dir: string): number {
  let t = 0;
  for (const f of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, f.name);
    t = Math.max(t, f.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

function mtime(p: string): number {
  return existsSync(p) ? statSync(p).mtimeMs : 0;
}

/** Writes a file only when its text changes (keeps mtimes for the rebuild checks). */
function writeIfChanged(p: string, text: string): void {
  if (!existsSync(p) || readFileSync(p, "utf8") !== text) writeFileSync(p, text);
}

/** The engine/host contract's generated sides (build/contract.ts). */
export function generateContract(): void {
  mkdirSync(paths.gen, { recursive: true });
  writeIfChanged(join(paths.gen, "contract.ts"), generateAssemblyScript());
  writeIfChanged(join(paths.gen, "contract.h"), generateC());
}

/** as/ -> build/engine.wasm -> build/gen/engine_wasm.{c,h} (+ runtime copy). */
export function buildEngine(): void {
  generateContract();
  const inputs = [newest(join(root, "as")), mtime(join(root, "build", "build.ts")), mtime(join(paths.gen, "contract.ts"))];
  if (mtime(paths.wasm) < Math.max(...inputs)) {
    run(join(root, "node_modules", ".bin", "asc"), ["as/index.ts", "-o", paths.wasm, ...ASC_FLAGS]);
  }
  // The wire/ views and the parser on their own, for test/engine/wire.test.ts.
  const wireEntry = join(root, "test", "engine", "as", "wire.ts");
  if (mtime(paths.wireWasm) < Math.max(...inputs, mtime(wireEntry))) {
    run(join(root, "node_modules", ".bin", "asc"), [wireEntry, "-o", paths.wireWasm, ...WIRE_ASC_FLAGS]);
  }
  const genC = join(paths.gen, "engine_wasm.c");
  if (mtime(genC) < mtime(paths.wasm)) {
    run("wasm2c", [paths.wasm, "-n", "engine", "-o", genC]);
  }
  // The runtime must come from the same wabt as wasm2c; mingw cannot search
  // /usr/include, so the headers are copied beside the generated code.
  for (const [src, name] of [
    [join(WASM2C_RUNTIME, "wasm-rt-impl.c"), "wasm-rt-impl.c"],
    [join(WASM2C_RUNTIME, "wasm-rt-impl.h"), "wasm-rt-impl.h"],
    [WASM_RT_H, "wasm-rt.h"],
  ] as const) {
    const dst = join(paths.gen, name);
    if (!existsSync(dst) || readFileSync(dst, "utf8") !== readFileSync(src, "utf8")) copyFileSync(src, dst);
  }
}

function cmake(buildDir: string, extra: string[], env: NodeJS.ProcessEnv = {}): void {
  mkdirSync(buildDir, { recursive: true });
  run("cmake", ["-S", root, "-B", buildDir, "-DCMAKE_BUILD_TYPE=Release", ...extra, "-Wno-dev"], env);
  run("cmake", ["--build", buildDir, "--parallel", "2"], env);
}

export function buildLinux(): void {
  buildEngine();
  cmake(paths.linux, []);
  writeUninstalledPc();
}

/**
 * build/linux/windows_redirector-uninstalled.pc: the library of the build
 * tree (with an rpath to it) and the checkout's header, for programs built
 * against this checkout (go/ with PKG_CONFIG_PATH=build/linux). Written by
 * the build, never committed: it holds this checkout's absolute path.
 */
function writeUninstalledPc(): void {
  writeIfChanged(join(paths.linux, "windows_redirector-uninstalled.pc"), [
    "# This checkout's build tree (tsx build/build.ts writes it).",
    `libdir=${paths.linux}`,
    `includedir=${join(root, "include")}`,
    "",
    "Name: windows_redirector",
    "Description: redirects chosen processes' TCP/UDP traffic to a local proxy port (build tree)",
    `Version: ${version}`,
    "Libs: -L${libdir} -lwindows_redirector -Wl,-rpath,${libdir}",
    "Cflags: -I${includedir}",
    "",
  ].join("\n"));
}

/** AddressSanitizer + UBSan build of the library and the C tests (Linux). */
export function buildAsan(): void {
  buildEngine();
  cmake(paths.asan, ["-DWR_SANITIZE=address,undefined"]);
}

/** ThreadSanitizer build (Linux). */
export function buildTsan(): void {
  buildEngine();
  cmake(paths.tsan, ["-DWR_SANITIZE=thread"]);
}

/** The libFuzzer targets (clang, Linux). */
export function buildFuzz(): void {
  buildEngine();
  cmake(paths.fuzz, ["-DWR_FUZZ=ON"], { CC: "clang" });
}

/** The sanitizer and fuzzing builds (Linux). */
export function buildHardening(): void {
  buildAsan();
  buildTsan();
  buildFuzz();
}

export function buildWindows(): void {
  buildEngine();
  cmake(paths.windows, [`-DCMAKE_TOOLCHAIN_FILE=${join(root, "build", "mingw-w64.cmake")}`]);
}

export function buildAll(): void {
  buildLinux();
  buildWindows();
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = new Set(process.argv.slice(2));
  if (args.has("--engine-only")) buildEngine();
  else if (args.has("--linux-only")) buildLinux();
  else if (args.has("--hardening")) buildHardening();
  else buildAll();
  writeFileSync(join(root, "build", ".built"), new Date().toISOString() + "\n");
}
