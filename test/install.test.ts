// `cmake --install` of build/linux and build/windows into prefixes outside
// the tree (installed elsewhere, then moved: nothing may name where it was
// built or installed), and test/consumer built against each prefix as a
// user would: find_package (the shared library; the static one, alone and
// inside a shared library of the user's) and pkg-config (`--libs`, and
// `--static --libs`), each program run (Windows ones under wine). On Windows
// the MSVC-format import library is linked by lld-link into a program that
// has no C library, which runs too. test/consumer/go, a Go program of the
// user's, is built against each prefix too (Linux: cgo and pkg-config;
// Windows: CGO_ENABLED=0, the DLL beside it) and run. Needs build/linux and
// build/windows.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { copyFileSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { root } from "./engine/harness.ts";
import { declared } from "./header.ts";
import {
  buildGoConsumer, consumerPassed, consumerSrc, elfDynamic, files, goConsumerPassed, must, peImports, PREFIX_LAYOUT, run, type Run, version, wine,
} from "./prefix.ts";

const tmp = mkdtempSync(join(tmpdir(), "wr-install-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
// Installed here first, then moved to the prefix the consumers use.
const stage = join(tmp, "stage");

interface Platform {
  name: string;
  build: string;
  prefix: string;
  layout: string[];
  cc: string;
  cmakeArgs: string[];
  exe: string;
  /** The shared library as a program names it (NEEDED, DLL Name). */
  sharedLib: string;
  plugin: string;
  /** pkg-config's environment: this prefix's .pc files (and, on Linux, the system's). */
  pcEnv: NodeJS.ProcessEnv;
  /** Runs a program in its own directory. */
  start(exe: string, env?: NodeJS.ProcessEnv): Run;
  /** The libraries a program or library loads. */
  imports(file: string): string[];
}

const linux: Platform = {
  name: "Linux",
  build: join(root, "build", "linux"),
  prefix: join(tmp, "linux"),
  layout: PREFIX_LAYOUT.linux,
  cc: "gcc",
  cmakeArgs: [],
  exe: "",
  sharedLib: "libwindows_redirector.so",
  plugin: "libconsumer_plugin.so",
  pcEnv: { PKG_CONFIG_PATH: join(tmp, "linux", "lib", "pkgconfig") },
  start: (exe, env) => run(exe, [], { cwd: dirname(exe), env }),
  imports: (file) => elfDynamic(file).needed,
};

const windows: Platform = {
  name: "Windows",
  build: join(root, "build", "windows"),
  prefix: join(tmp, "windows"),
  layout: PREFIX_LAYOUT.windows,
  cc: "x86_64-w64-mingw32-gcc",
  cmakeArgs: [`-DCMAKE_TOOLCHAIN_FILE=${join(root, "build", "mingw-w64.cmake")}`],
  exe: ".exe",
  sharedLib: "windows_redirector.dll",
  plugin: "libconsumer_plugin.dll",
  // Only this prefix's .pc files: the build machine's are not for Windows.
  pcEnv: { PKG_CONFIG_LIBDIR: join(tmp, "windows", "lib", "pkgconfig"), PKG_CONFIG_PATH: "" },
  start: (exe, env) => run(wine, [exe], { cwd: dirname(exe), env }),
  imports: peImports,
};

/** The program's checks all passed, against the library of this version. */
function passes(p: Platform, exe: string, env?: NodeJS.ProcessEnv): void {
  consumerPassed(exe, p.start(exe, env));
}

/** On Linux: no RPATH or RUNPATH names the checkout (`none`: there is none at all). */
function noPathIntoCheckout(p: Platform, file: string, none = false): void {
  if (p !== linux) return;
  const { paths } = elfDynamic(file);
  if (none) assert.equal(paths, [], `${file} has RPATH/RUNPATH ${paths.join(":")}`);
  for (const d of paths) assert.not.ok(d.startsWith(root), `${file} has RPATH/RUNPATH into the checkout: ${d}`);
}

/** test/consumer configured and built against p's prefix; its build directory. */
function cmakeConsumer(p: Platform, name: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): string {
  const dir = join(tmp, "consumers", `${p.name}-${name}`);
  must("cmake", ["-S", consumerSrc, "-B", dir, ...p.cmakeArgs, `-DCMAKE_PREFIX_PATH=${p.prefix}`,
    `-DWR_CONSUMER_VERSION=${version}`, ...extra], { env });
  must("cmake", ["--build", dir], { env });
  return dir;
}

function pkgConfig(p: Platform, args: string[]): string[] {
  return must("pkg-config", args, { env: p.pcEnv }).trim().split(/\s+/).filter((a) => a !== "");
}

/** Compiles test/consumer's sources with pkg-config's flags; the output file. */
function ccConsumer(p: Platform, out: string, sources: string[], pc: string[], extra: string[] = []): string {
  mkdirSync(dirname(out), { recursive: true });
  const ver = pkgConfig(p, ["--modversion", "windows_redirector"]).join(" ");
  assert.is(ver, version, "the .pc file's Version");
  must(p.cc, ["-Wall", "-Wextra", "-Werror", "-o", out, `-DWR_EXPECT_VERSION="${ver}"`, ...extra,
    ...sources.map((s) => join(consumerSrc, s)), ...pkgConfig(p, ["--cflags", "windows_redirector"]), ...pc]);
  return out;
}

for (const p of [linux, windows]) {
  test(`${p.name}: cmake --install lays out the prefix`, () => {
    must("cmake", ["--install", p.build, "--prefix", join(stage, basename(p.prefix))]);
    renameSync(join(stage, basename(p.prefix)), p.prefix);
    assert.equal(files(p.prefix), p.layout);
  });

  test(`${p.name}: nothing installed names the checkout or where it was installed`, () => {
    for (const f of files(p.prefix)) {
      if (lstatSync(join(p.prefix, f)).isSymbolicLink()) continue;
      const bytes = readFileSync(join(p.prefix, f));
      for (const path of [root, stage]) assert.not.ok(bytes.includes(path), `${f} names ${path}`);
    }
    if (p === linux) noPathIntoCheckout(p, join(p.prefix, "lib", "libwindows_redirector.so"), true);
  });

  test(`${p.name}: find_package, the shared library`, () => {
    const dir = cmakeConsumer(p, "shared");
    const exe = join(dir, `consumer${p.exe}`);
    assert.ok(p.imports(exe).includes(p.sharedLib), `${exe} does not load ${p.sharedLib}`);
    noPathIntoCheckout(p, exe);
    // On Windows the consumer's build copied the DLL beside it
    // ($<TARGET_RUNTIME_DLLS>, from the imported target's location).
    passes(p, exe);
  });

  test(`${p.name}: find_package, the static library, alone and inside a shared library`, () => {
    const dir = cmakeConsumer(p, "static", ["-DWR_CONSUMER_STATIC=ON"]);
    const exe = join(dir, `consumer${p.exe}`);
    const viaPlugin = join(dir, `consumer_via_plugin${p.exe}`);
    const plugin = join(dir, p.plugin);
    for (const f of [exe, plugin]) {
      const imports = p.imports(f);
      assert.not.ok(imports.includes(p.sharedLib), `${f} loads ${p.sharedLib}`);
      // libgcc_eh in the link interface: emutls linked in, not from libgcc_s.
      assert.not.ok(imports.includes("libgcc_s_seh-1.dll"), `${f} needs libgcc_s_seh-1.dll`);
      noPathIntoCheckout(p, f);
    }
    passes(p, exe);
    passes(p, viaPlugin);
  });

  test(`${p.name}: pkg-config --libs, the shared library`, () => {
    const dir = join(tmp, "pc", `${p.name}-shared`);
    const exe = ccConsumer(p, join(dir, `consumer${p.exe}`), ["main.c", "checks.c"],
      pkgConfig(p, ["--libs", "windows_redirector"]));
    assert.ok(p.imports(exe).includes(p.sharedLib), `${exe} does not load ${p.sharedLib}`);
    noPathIntoCheckout(p, exe, true);
    if (p === windows) {
      copyFileSync(join(p.prefix, "bin", p.sharedLib), join(dir, p.sharedLib));
      passes(p, exe);
    } else {
      passes(p, exe, { LD_LIBRARY_PATH: join(p.prefix, "lib") });
    }
  });

  test(`${p.name}: pkg-config --static --libs windows_redirector-static, alone and inside a shared library`, () => {
    const dir = join(tmp, "pc", `${p.name}-static`);
    const libs = pkgConfig(p, ["--static", "--libs", "windows_redirector-static"]);
    const exe = ccConsumer(p, join(dir, `consumer${p.exe}`), ["main.c", "checks.c"], libs);
    const plugin = ccConsumer(p, join(dir, p.plugin), ["checks.c"], libs, ["-shared", "-fPIC", "-DWR_CONSUMER_PLUGIN"]);
    const viaPlugin = join(dir, `consumer_via_plugin${p.exe}`);
    must(p.cc, ["-o", viaPlugin, join(consumerSrc, "main.c"), `-L${dir}`, "-lconsumer_plugin",
      ...(p === linux ? ["-Wl,-rpath,$ORIGIN"] : [])]);
    for (const f of [exe, plugin]) {
      const imports = p.imports(f);
      assert.not.ok(imports.includes(p.sharedLib), `${f} loads ${p.sharedLib}`);
      assert.not.ok(imports.includes("libgcc_s_seh-1.dll"), `${f} needs libgcc_s_seh-1.dll`);
      noPathIntoCheckout(p, f, true);
    }
    passes(p, exe);
    passes(p, viaPlugin);
  });
}

test("Linux: a Go program (cgo) finds the installed library through pkg-config; no rpath, the loader finds it", () => {
  const exe = buildGoConsumer(join(tmp, "go", "Linux"), join(root, "go"), "linux", join(linux.prefix, "lib", "pkgconfig"));
  assert.ok(linux.imports(exe).includes(linux.sharedLib), `${exe} does not load ${linux.sharedLib}`);
  noPathIntoCheckout(linux, exe, true);
  const env = { LD_LIBRARY_PATH: join(linux.prefix, "lib") };
  assert.match(must("ldd", [exe], { env }), `${linux.sharedLib} => ${join(linux.prefix, "lib", linux.sharedLib)}`);
  goConsumerPassed(exe, run(exe, ["-version", version], { env }));
});

test("Windows: a Go program (CGO_ENABLED=0) runs under wine with the installed DLL beside it", () => {
  const dir = join(tmp, "go", "Windows");
  const exe = buildGoConsumer(dir, join(root, "go"), "windows");
  copyFileSync(join(windows.prefix, "bin", windows.sharedLib), join(dir, windows.sharedLib));
  goConsumerPassed(exe, run(wine, [exe, "-version", version], { cwd: dir }));
});

test("Linux: find_package refuses another major version; without libnetfilter_queue's module only the static library is refused, saying why", () => {
  const major = Number(version.split(".")[0]);
  const r = run("cmake", ["-S", consumerSrc, "-B", join(tmp, "consumers", "Linux-other-version"),
    `-DCMAKE_PREFIX_PATH=${linux.prefix}`, `-DWR_CONSUMER_VERSION=${major + 1}.0`]);
  assert.ok(r.code !== 0 && r.out.includes(`requested version "${major + 1}.0"`) && r.out.includes(`version: ${version}`), r.out);
  // No pkg-config modules at all: the shared library needs none.
  const bare = { PKG_CONFIG_LIBDIR: join(tmp, "no-modules"), PKG_CONFIG_PATH: "" };
  passes(linux, join(cmakeConsumer(linux, "shared-no-modules", [], bare), "consumer"));
  const s = run("cmake", ["-S", consumerSrc, "-B", join(tmp, "consumers", "Linux-static-no-modules"),
    `-DCMAKE_PREFIX_PATH=${linux.prefix}`, "-DWR_CONSUMER_STATIC=ON"], { env: bare });
  const why = "the static library needs threads and the pkg-config modules libnetfilter_queue libmnl";
  assert.ok(s.code !== 0 && s.out.replace(/\s+/g, " ").includes(why), s.out);
});

test("Windows: -static with pkg-config --static --libs windows_redirector (its Libs.private)", () => {
  const exe = ccConsumer(windows, join(tmp, "pc", "Windows-all-static", "consumer.exe"), ["main.c", "checks.c"],
    ["-static", ...pkgConfig(windows, ["--static", "--libs", "windows_redirector"])]);
  assert.equal(windows.imports(exe).sort(), ["kernel32.dll", "msvcrt.dll"]);
  passes(windows, exe);
});

test("Windows: the .def lists exactly the header's functions; the .lib imports each from windows_redirector.dll", () => {
  const def = readFileSync(join(windows.prefix, "lib", "windows_redirector.def"), "utf8");
  assert.equal([...def.matchAll(/^\s+(\w+) @\d+\s*$/gm)].map((m) => m[1]).sort(), declared);
  const nm = must("llvm-nm", [join(windows.prefix, "lib", "windows_redirector.lib")]);
  const members = new Set([...nm.matchAll(/^(\S+):$/gm)].map((m) => m[1]));
  assert.equal([...members], ["windows_redirector.dll"]);
  for (const f of declared) {
    for (const sym of [f, `__imp_${f}`]) assert.ok(new RegExp(`^[0-9a-f]+ T ${sym}$`, "m").test(nm), `${sym} in the .lib`);
  }
});

test("Windows: lld-link links a program against windows_redirector.lib (clang, x86_64-pc-windows-msvc, no C library); it runs", () => {
  const dir = join(tmp, "msvc");
  mkdirSync(dir, { recursive: true });
  // There is no Windows SDK here: KERNEL32's import library, in the same
  // format, for the three functions the program calls.
  writeFileSync(join(dir, "kernel32.def"), "LIBRARY kernel32.dll\nEXPORTS\nGetStdHandle\nWriteFile\nExitProcess\n");
  must("llvm-dlltool", ["-m", "i386:x86-64", "-d", join(dir, "kernel32.def"), "-l", join(dir, "kernel32.lib")]);
  must("clang", ["--target=x86_64-pc-windows-msvc", "-ffreestanding", "-O2", "-Wall", "-Werror", "-c",
    "-DWR_CONSUMER_NO_CRT", `-DWR_EXPECT_VERSION="${version}"`, `-I${join(windows.prefix, "include")}`,
    join(consumerSrc, "checks.c"), "-o", join(dir, "checks.obj")]);
  const exe = join(dir, "consumer.exe");
  must("lld-link", ["/nologo", "/nodefaultlib", "/entry:wr_consumer_start", "/subsystem:console",
    join(dir, "checks.obj"), join(windows.prefix, "lib", "windows_redirector.lib"), join(dir, "kernel32.lib"), `/out:${exe}`]);
  assert.equal(windows.imports(exe).sort(), ["kernel32.dll", "windows_redirector.dll"]);
  copyFileSync(join(windows.prefix, "bin", "windows_redirector.dll"), join(dir, "windows_redirector.dll"));
  passes(windows, exe);
});

test.run();
