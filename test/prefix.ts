// What the install and dist tests share: running commands, reading what a
// program links, and building and judging test/consumer's programs (C and
// Go) against an installed prefix or an unpacked release bundle.
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { root } from "../build/build.ts"; // also puts the official Go first on PATH
import { goCacheKey, version } from "../build/dist.ts";

export { version };
export const consumerSrc = join(root, "test", "consumer");
export const wine = join(root, "build", "wine-run.sh");

// What a `cmake --install` prefix holds (a Release build).
const CMAKE_FILES = [
  "lib/cmake/windows_redirector/windows_redirectorConfig.cmake",
  "lib/cmake/windows_redirector/windows_redirectorConfigVersion.cmake",
  "lib/cmake/windows_redirector/windows_redirectorStaticTargets-release.cmake",
  "lib/cmake/windows_redirector/windows_redirectorStaticTargets.cmake",
  "lib/cmake/windows_redirector/windows_redirectorTargets-release.cmake",
  "lib/cmake/windows_redirector/windows_redirectorTargets.cmake",
  "lib/pkgconfig/windows_redirector-static.pc",
  "lib/pkgconfig/windows_redirector.pc",
];
export const PREFIX_LAYOUT = {
  linux: ["include/windows_redirector.h", "lib/libwindows_redirector.a", "lib/libwindows_redirector.so", ...CMAKE_FILES].sort(),
  windows: [
    "bin/windows_redirector.dll", "include/windows_redirector.h", "lib/libwindows_redirector.a",
    "lib/libwindows_redirector.dll.a", "lib/windows_redirector.def", "lib/windows_redirector.lib", ...CMAKE_FILES,
  ].sort(),
};

export interface Run {
  code: number;
  out: string;
}

export function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Run {
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd ?? root,
    env: { ...process.env, ...opts.env },
    encoding: "utf8",
    timeout: 300_000,
  });
  const out = (r.stdout ?? "") + (r.stderr ?? "") + (r.error ? `(${r.error.message})\n` : "");
  return { code: r.status ?? 1, out };
}

/** Runs a command that must succeed; its output. */
export function must(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  const r = run(cmd, args, opts);
  assert.ok(r.code === 0, `${cmd} ${args.join(" ")}: exit ${r.code}\n${r.out}`);
  return r.out;
}

/** Every file (and symlink) under dir, relative, sorted. */
export function files(dir: string, under = ""): string[] {
  const found: string[] = [];
  for (const e of readdirSync(join(dir, under), { withFileTypes: true })) {
    const rel = under ? `${under}/${e.name}` : e.name;
    if (e.isDirectory()) found.push(...files(dir, rel));
    else found.push(rel);
  }
  return found.sort();
}

export function elfDynamic(file: string): { needed: string[]; paths: string[] } {
  const out = must("readelf", ["-d", file]);
  return {
    needed: [...out.matchAll(/\(NEEDED\)\s+Shared library: \[(.+?)\]/g)].map((m) => m[1]),
    paths: [...out.matchAll(/\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[(.*?)\]/g)].flatMap((m) => m[1].split(":")),
  };
}

/** The DLLs a Windows program or library imports, in lower case. */
export function peImports(file: string): string[] {
  return [...must("x86_64-w64-mingw32-objdump", ["-p", file]).matchAll(/DLL Name: (\S+)/g)].map((m) => m[1].toLowerCase());
}

/** test/consumer's C program ran, and all its checks passed against the library of this version. */
export function consumerPassed(exe: string, r: Run): void {
  r.out = r.out.replace(/\r\n/g, "\n"); // the C library's text mode under wine
  const m = /^consumer: (\d+) checks, (\d+) failed$/m.exec(r.out);
  const ok = (r.out.match(/^ok {3}/gm) ?? []).length;
  assert.ok(r.code === 0 && m !== null && m[2] === "0" && Number(m[1]) === ok && ok >= 13, `${exe}: exit ${r.code}\n${r.out}`);
  assert.ok(r.out.includes(`version ${version}\n`), `${exe} reports another version than package.json's ${version}:\n${r.out}`);
}

/**
 * test/consumer/go (a module of the user's) built in dir against the Go
 * package's source in pkgDir, as a user's go.mod would name it; the program.
 * Linux: cgo, the library found by pkg-config in pcDir alone. Windows:
 * CGO_ENABLED=0 (the DLL is loaded at run time).
 */
export function buildGoConsumer(dir: string, pkgDir: string, target: "linux" | "windows", pcDir?: string): string {
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(consumerSrc, "go", "main.go"), join(dir, "main.go"));
  writeFileSync(join(dir, "go.mod"), [
    "module example.com/consumer", "", "go 1.22", "",
    "require windows-redirector/go/redirector v0.0.0", "",
    `replace windows-redirector/go/redirector => ${pkgDir}`, "",
  ].join("\n"));
  const exe = join(dir, target === "windows" ? "consumer-go.exe" : "consumer-go");
  must("go", ["build", "-o", exe, "."], {
    cwd: dir,
    env: {
      GOPROXY: "off", GOFLAGS: "-mod=mod", GOTOOLCHAIN: "local", GOOS: target, GOARCH: "amd64",
      CGO_ENABLED: target === "linux" ? "1" : "0",
      // This prefix's .pc files only: not the build tree's (build.ts puts
      // build/linux in PKG_CONFIG_PATH for the checkout's own programs).
      PKG_CONFIG_PATH: pcDir ?? "",
      CGO_CPPFLAGS: goCacheKey(pcDir),
    },
  });
  return exe;
}

/** test/consumer/go's program ran, and all its checks passed (with -version, this version's). */
export function goConsumerPassed(exe: string, r: Run, min = 8): void {
  r.out = r.out.replace(/\r\n/g, "\n");
  const m = /^consumer-go: (\d+) checks, (\d+) failed$/m.exec(r.out);
  const ok = (r.out.match(/^ok {3}/gm) ?? []).length;
  assert.ok(r.code === 0 && m !== null && m[2] === "0" && Number(m[1]) === ok && ok >= min, `${exe}: exit ${r.code}\n${r.out}`);
}
