// The Python package's wheels, one per platform, each carrying the native
// library beside the module (python/pyproject.toml, python/hatch_build.py):
//
//   build/dist/windows_redirector-<version>-py3-none-linux_x86_64.whl   libwindows_redirector.so (build/linux)
//   build/dist/windows_redirector-<version>-py3-none-win_amd64.whl      windows_redirector.dll (build/windows, mingw-w64)
//
//   tsx build/wheel.ts        builds both libraries if needed, then the wheels; prints their paths
//
// The build backend (hatchling, pinned in python/pyproject.toml) comes from
// PyPI into a virtual environment of the build's own, build/pyvenv, made once
// with Debian's python3 (build/setup.sh installs python3 and python3-venv).
// The version is package.json's.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildLinux, buildWindows, paths, root, version } from "./build.ts";

/** Debian's python3 (build/setup.sh installs it), else the first python3 on PATH. */
export const python3 = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

/** Where the wheels are built (the release bundles copy them from here). */
export const wheelDir = join(root, "build", "dist");
const venv = join(root, "build", "pyvenv");
const venvPython = join(venv, "bin", "python");

/** Each wheel's platform tag and the library it carries. */
export const WHEEL_PLATFORMS = {
  linux: { tag: "linux_x86_64", library: join(paths.linux, "libwindows_redirector.so") },
  windows: { tag: "win_amd64", library: join(paths.windows, "windows_redirector.dll") },
} as const;

/** The wheel's file name (the distribution windows-redirector, normalised as wheels spell it). */
export function wheelName(platform: keyof typeof WHEEL_PLATFORMS): string {
  return `windows_redirector-${version}-py3-none-${WHEEL_PLATFORMS[platform].tag}.whl`;
}

/** The build backend python/pyproject.toml pins (build-system.requires). */
function backendRequirements(): string[] {
  const toml = readFileSync(join(root, "python", "pyproject.toml"), "utf8");
  const m = /^requires\s*=\s*\[([^\]]*)\]/m.exec(toml);
  if (!m) throw new Error("python/pyproject.toml: no build-system requires");
  return [...m[1].matchAll(/"([^"]+)"/g)].map((r) => r[1]);
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: root, stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, ...env } });
    p.on("error", reject);
    p.on("exit", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(" ")}: ${signal ?? `exit code ${code}`}`)));
  });
}

/** build/pyvenv with the pinned backend; made again when the pins change. */
async function backendVenv(): Promise<void> {
  const reqs = backendRequirements();
  const stamp = join(venv, "wr-requirements.txt");
  const want = reqs.join("\n") + "\n";
  if (existsSync(stamp) && readFileSync(stamp, "utf8") === want) return;
  rmSync(venv, { recursive: true, force: true });
  console.log(`wheel: a virtual environment for the build backend (${reqs.join(", ")}) in ${venv}`);
  await run(python3, ["-m", "venv", venv]);
  await run(venvPython, ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", ...reqs]);
  writeFileSync(stamp, want);
}

async function buildWheel(platform: keyof typeof WHEEL_PLATFORMS): Promise<string> {
  const { tag, library } = WHEEL_PLATFORMS[platform];
  const out = mkdtempSync(join(wheelDir, ".wheel-"));
  try {
    await run(venvPython, ["-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-build-isolation",
      "--no-deps", "--no-cache-dir", "--wheel-dir", out, join(root, "python")],
    { WR_WHEEL_LIBRARY: library, WR_WHEEL_PLATFORM: tag });
    const made = readdirSync(out);
    const name = wheelName(platform);
    if (made.length !== 1 || made[0] !== name) throw new Error(`wheel: expected ${name}, pip made ${made.join(", ") || "nothing"}`);
    // This platform's wheels of other versions go: build/dist holds the current ones.
    for (const old of readdirSync(wheelDir)) {
      if (old.startsWith("windows_redirector-") && old.endsWith(`-py3-none-${tag}.whl`)) rmSync(join(wheelDir, old));
    }
    renameSync(join(out, name), join(wheelDir, name));
    return join(wheelDir, name);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/**
 * Builds the Linux and Windows libraries (when not current) and both wheels;
 * returns the wheels' paths, under build/dist/.
 */
export async function buildWheels(): Promise<{ linux: string; windows: string }> {
  buildLinux();
  buildWindows();
  mkdirSync(wheelDir, { recursive: true });
  await backendVenv();
  return { linux: await buildWheel("linux"), windows: await buildWheel("windows") };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  buildWheels().then((w) => {
    console.log(`linux: ${w.linux}\nwindows: ${w.windows}`);
  }, (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
