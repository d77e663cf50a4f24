// The release bundles (`npm run dist`, build/dist.ts) as a new user takes
// them: each archive unpacked into an empty folder and used from there, with
// nothing of this checkout but the user's own programs (test/consumer):
//   - the layout, the README (WinDivert: where it comes from, not included),
//     nothing naming the checkout, no rpath into it;
//   - a C program built with CMake's find_package and with pkg-config against
//     the unpacked prefix, and run (Windows: cross-built with mingw-w64, run
//     under wine);
//   - a Go program on the bundle's Go package (Linux: cgo, the bundle's .pc,
//     the library found through LD_LIBRARY_PATH; Windows: CGO_ENABLED=0, run
//     under wine beside the bundle's DLL and the stand-in WinDivert.dll, where
//     it starts and stops);
//   - the bundled redirect-proxy (Linux: straight from bin/; Windows: under
//     wine, refusing to start without WinDivert, then started against the
//     stand-in and stopped with Ctrl-C);
//   - the C# source built with mono's mcs (Linux: run, through the bundled
//     dllmap);
//   - the Python wheel (Linux: pip-installed into a fresh virtual environment,
//     imported, its own library loaded; Windows: a win_amd64 wheel carrying
//     the bundle's DLL byte for byte).
// Needs dist/ (the suite runs build/dist.ts first), build/windows/fakewd and a
// booted wine prefix (WINEPREFIX).
import { test } from "uvu";
import * as assert from "uvu/assert";
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { root } from "../build/build.ts";
import { python3, wheelName } from "../build/wheel.ts";
import { archivePath, bundleName, type Platform, version } from "../build/dist.ts";
import {
  buildGoConsumer, consumerPassed, consumerSrc, elfDynamic, files, goConsumerPassed, must, PREFIX_LAYOUT, run, wine,
} from "./prefix.ts";

const tmp = mkdtempSync(join(tmpdir(), "wr-dist-test-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
const standIn = join(root, "build", "windows", "fakewd", "WinDivert.dll");
// The stand-in WinDivert.dll, unscripted: opens succeed, nothing is captured.
const standInEnv = { WR_FAKE_WINDIVERT_SCRIPT: "", WR_FAKE_WINDIVERT_LOG: "" };

/** Each bundle's folder, once unpacked. */
const unpacked = new Map<Platform, string>();

function bundle(p: Platform): string {
  const dir = unpacked.get(p);
  assert.ok(dir !== undefined, `the ${p} bundle was not unpacked`);
  return dir;
}

/** The bundle's own files besides its prefix (go/ and python/ are looked at apart). */
function ownFiles(p: Platform): string[] {
  return [
    "README.md", p === "windows" ? "bin/redirect-proxy.exe" : "bin/redirect-proxy",
    "csharp/README.md", "csharp/Sample.cs", "csharp/WindowsRedirector.cs", "csharp/WindowsRedirectorSample.exe.config",
  ];
}

for (const p of ["linux", "windows"] as const) {
  const P = p === "linux" ? "Linux" : "Windows";

  test(`${P}: the archive unpacks into an empty folder as one folder, ${bundleName(p)}`, () => {
    const into = join(tmp, p);
    mkdirSync(into);
    if (p === "windows") must("unzip", ["-q", archivePath(p), "-d", into]);
    else must("tar", ["-xzf", archivePath(p), "-C", into]);
    assert.equal(readdirSync(into), [bundleName(p)]);
    unpacked.set(p, join(into, bundleName(p)));
  });

  test(`${P}: the prefix, redirect-proxy, the C# source, the Go package's source (no tests), a README; no WinDivert`, () => {
    const all = files(bundle(p));
    assert.equal(all.filter((f) => !f.startsWith("go/") && !f.startsWith("python/")),
      [...PREFIX_LAYOUT[p], ...ownFiles(p)].sort());
    const go = all.filter((f) => f.startsWith("go/"));
    for (const f of ["go/go.mod", "go/go.sum", "go/README.md", "go/redirector.go", "go/capi.go", "go/capi_windows.go",
      "go/cmd/redirect-proxy/main.go"]) assert.ok(go.includes(f), `${f} missing`);
    assert.equal(go.filter((f) => f.endsWith("_test.go")), []);
    assert.equal(all.filter((f) => /windivert/i.test(basename(f))), [], "a WinDivert file is in the bundle");
    const readme = readFileSync(join(bundle(p), "README.md"), "utf8");
    assert.ok(readme.startsWith(`# windows-redirector ${version} for ${P} x64\n`), readme.slice(0, 80));
    if (p === "windows") {
      for (const s of ["https://reqrypt.org/windivert.html", "**not in this bundle**", "WinDivert64.sys", "WinDivert 2.2", "signed"]) {
        assert.ok(readme.includes(s), `the README does not say ${s}`);
      }
    }
  });

  test(`${P}: nothing in it names the checkout`, () => {
    for (const f of files(bundle(p))) {
      assert.not.ok(readFileSync(join(bundle(p), f)).includes(root), `${f} names ${root}`);
    }
    if (p === "linux") {
      assert.equal(elfDynamic(join(bundle(p), "lib", "libwindows_redirector.so")).paths, []);
      assert.equal(elfDynamic(join(bundle(p), "bin", "redirect-proxy")).paths, ["$ORIGIN/../lib"]);
    }
  });
}

/** Runs a program of the bundle's or the user's: natively, or under wine in its own folder. */
function start(p: Platform, exe: string, args: string[] = [], env: NodeJS.ProcessEnv = {}) {
  const dir = join(exe, "..");
  return p === "windows" ? run(wine, [exe, ...args], { cwd: dir, env }) : run(exe, args, { cwd: dir, env });
}

const linuxPc = () => ({ PKG_CONFIG_PATH: join(bundle("linux"), "lib", "pkgconfig") });
const windowsPc = () => ({ PKG_CONFIG_LIBDIR: join(bundle("windows"), "lib", "pkgconfig"), PKG_CONFIG_PATH: "" });

test("Linux: a C program with find_package(windows_redirector) runs", () => {
  const dir = join(tmp, "c", "linux-cmake");
  must("cmake", ["-S", consumerSrc, "-B", dir, `-DCMAKE_PREFIX_PATH=${bundle("linux")}`, `-DWR_CONSUMER_VERSION=${version}`]);
  must("cmake", ["--build", dir]);
  consumerPassed(join(dir, "consumer"), start("linux", join(dir, "consumer")));
});

test("Linux: a C program with pkg-config (the static library) runs", () => {
  const dir = join(tmp, "c", "linux-pc");
  mkdirSync(dir, { recursive: true });
  const flags = must("pkg-config", ["--cflags", "--static", "--libs", "windows_redirector-static"], { env: linuxPc() });
  const exe = join(dir, "consumer");
  must("gcc", ["-Wall", "-Werror", "-o", exe, `-DWR_EXPECT_VERSION="${version}"`, join(consumerSrc, "main.c"),
    join(consumerSrc, "checks.c"), ...flags.trim().split(/\s+/)]);
  assert.not.ok(elfDynamic(exe).needed.includes("libwindows_redirector.so"));
  consumerPassed(exe, start("linux", exe));
});

test("Windows: a C program with find_package(windows_redirector), cross-built with mingw-w64, runs under wine", () => {
  const dir = join(tmp, "c", "windows-cmake");
  must("cmake", ["-S", consumerSrc, "-B", dir, `-DCMAKE_TOOLCHAIN_FILE=${join(root, "build", "mingw-w64.cmake")}`,
    `-DCMAKE_PREFIX_PATH=${bundle("windows")}`, `-DWR_CONSUMER_VERSION=${version}`]);
  must("cmake", ["--build", dir]); // copies the bundle's DLL beside the program
  consumerPassed(join(dir, "consumer.exe"), start("windows", join(dir, "consumer.exe")));
});

test("Windows: a C program with pkg-config, the bundle's DLL beside it, runs under wine", () => {
  const dir = join(tmp, "c", "windows-pc");
  mkdirSync(dir, { recursive: true });
  const flags = must("pkg-config", ["--cflags", "--libs", "windows_redirector"], { env: windowsPc() });
  const exe = join(dir, "consumer.exe");
  must("x86_64-w64-mingw32-gcc", ["-Wall", "-Werror", "-o", exe, `-DWR_EXPECT_VERSION="${version}"`,
    join(consumerSrc, "main.c"), join(consumerSrc, "checks.c"), ...flags.trim().split(/\s+/)]);
  copyFileSync(join(bundle("windows"), "bin", "windows_redirector.dll"), join(dir, "windows_redirector.dll"));
  consumerPassed(exe, start("windows", exe));
});

test("Linux: a Go program on the bundle's package: cgo, the bundle's .pc, the library through LD_LIBRARY_PATH", () => {
  const b = bundle("linux");
  const exe = buildGoConsumer(join(tmp, "go", "linux"), join(b, "go"), "linux", join(b, "lib", "pkgconfig"));
  assert.equal(elfDynamic(exe).paths, [], "the Go program has an RPATH/RUNPATH");
  const without = start("linux", exe, ["-version", version], { LD_LIBRARY_PATH: "" });
  assert.ok(without.code !== 0 && without.out.includes("libwindows_redirector.so"), without.out);
  const env = { LD_LIBRARY_PATH: join(b, "lib") };
  assert.match(must("ldd", [exe], { env }), `libwindows_redirector.so => ${join(b, "lib", "libwindows_redirector.so")}`);
  goConsumerPassed(exe, start("linux", exe, ["-version", version], env));
});

test("Windows: a Go program on the bundle's package, CGO_ENABLED=0: says where it looked without the DLL; beside it, starts and stops", () => {
  const away = join(tmp, "go", "windows-away");
  const exe = buildGoConsumer(away, join(bundle("windows"), "go"), "windows");
  const without = start("windows", exe, ["-version", version]);
  assert.ok(without.code === 1 && without.out.includes("windows_redirector.dll not found"), without.out);
  const dir = join(tmp, "go", "windows");
  mkdirSync(dir, { recursive: true });
  copyFileSync(exe, join(dir, "consumer-go.exe"));
  copyFileSync(join(bundle("windows"), "bin", "windows_redirector.dll"), join(dir, "windows_redirector.dll"));
  copyFileSync(standIn, join(dir, "WinDivert.dll"));
  goConsumerPassed(exe, start("windows", join(dir, "consumer-go.exe"), ["-version", version, "-start"], standInEnv), 10);
});

test("Linux: bin/redirect-proxy runs from the bundle (its library from ../lib)", () => {
  const exe = join(bundle("linux"), "bin", "redirect-proxy");
  const env = { LD_LIBRARY_PATH: "" };
  assert.match(must("ldd", [exe], { env }), `libwindows_redirector.so => ${bundle("linux")}/bin/../lib/libwindows_redirector.so`);
  const help = start("linux", exe, ["--help"], env);
  assert.ok(help.code === 0 && help.out.includes("Usage: redirect-proxy --port PORT"), help.out);
  const bad = start("linux", exe, ["--port", "8080"], env);
  assert.ok(bad.code === 2 && bad.out.includes("name what to intercept"), bad.out);
});

// The proxy is started with TCP only: Go 1.24 and newer set the
// SIO_UDP_NETRESET ioctl on every UDP socket, which wine 8.0 lacks (real
// Windows has it).
const proxyArgs = ["--port", "18234", "--process", "curl", "--protocols", "tcp"];

test("Windows: bin/redirect-proxy.exe under wine: --help; without WinDivert.dll it says what is missing", () => {
  const exe = join(bundle("windows"), "bin", "redirect-proxy.exe");
  const help = start("windows", exe, ["--help"]);
  assert.ok(help.code === 0 && help.out.includes("Usage: redirect-proxy --port PORT"), help.out);
  const r = start("windows", exe, proxyArgs);
  assert.ok(r.code === 1 && r.out.includes("WinDivert.dll and WinDivert64.sys beside the program") && !r.out.includes("panic"), r.out);
});

test("Windows: bin/redirect-proxy.exe with WinDivert.dll beside it (the stand-in) starts, and stops on Ctrl-C with its summary", async () => {
  const bin = join(bundle("windows"), "bin");
  copyFileSync(standIn, join(bin, "WinDivert.dll"));
  const child = spawn(wine, [join(bin, "redirect-proxy.exe"), ...proxyArgs], {
    cwd: bin,
    env: { ...process.env, ...standInEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const started = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 60_000);
    const seen = (d: Buffer) => {
      out += d.toString();
      if (out.includes("Ctrl-C stops.")) {
        clearTimeout(timer);
        resolve(true);
      }
    };
    child.stdout.on("data", seen);
    child.stderr.on("data", seen);
    void exited.then(() => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  const ok = await started;
  child.kill("SIGINT"); // wine turns it into the console's Ctrl-C
  const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const code = await exited;
  clearTimeout(killer);
  out = out.replace(/\r\n/g, "\n");
  assert.ok(ok && out.includes(`redirect-proxy ${version}: port 18234, intercepting curl (TCP). Ctrl-C stops.`), out);
  assert.ok(code === 0 && out.includes("\nsummary: 0 TCP connections") && out.includes("\nlibrary: "), `exit ${code}\n${out}`);
});

test("C#: the bundles' sources build with mcs; on Linux a program on WindowsRedirector.cs runs through the bundled dllmap", () => {
  for (const p of ["linux", "windows"] as const) {
    const cs = join(bundle(p), "csharp");
    const dir = join(tmp, "csharp", p);
    mkdirSync(dir, { recursive: true });
    must("mcs", [`-out:${join(dir, "WindowsRedirectorSample.exe")}`, join(cs, "WindowsRedirector.cs"), join(cs, "Sample.cs")]);
    must("mcs", [`-out:${join(dir, "Version.exe")}`, join(cs, "WindowsRedirector.cs"), join(consumerSrc, "csharp", "Version.cs")]);
  }
  const dir = join(tmp, "csharp", "linux");
  copyFileSync(join(bundle("linux"), "csharp", "WindowsRedirectorSample.exe.config"), join(dir, "Version.exe.config"));
  const r = run("mono", [join(dir, "Version.exe")], { cwd: dir, env: { LD_LIBRARY_PATH: join(bundle("linux"), "lib") } });
  assert.ok(r.code === 0 && r.out === `version ${version}\n`, r.out);
});

test("Python: the Linux wheel installs into a fresh venv and loads its own library; the Windows wheel carries the bundle's DLL", () => {
  const venv = join(tmp, "venv");
  must(python3, ["-m", "venv", venv]);
  const py = join(venv, "bin", "python");
  must(py, ["-m", "pip", "install", "--no-index", "--quiet", join(bundle("linux"), "python", wheelName("linux"))]);
  const r = run(py, ["-c", "import windows_redirector as wr; print(wr.library_path()); print(wr.version())"], { cwd: tmp });
  const [lib, ver] = r.out.trim().split("\n");
  assert.ok(r.code === 0 && lib?.startsWith(venv + "/") && lib.endsWith("/libwindows_redirector.so"), r.out);
  assert.equal(ver, version);
  const check = [
    "import sys, zipfile",
    "z = zipfile.ZipFile(sys.argv[1])",
    "assert z.read('windows_redirector/windows_redirector.dll') == open(sys.argv[2], 'rb').read(), 'DLL differs'",
    "assert 'Tag: py3-none-win_amd64' in z.read(next(n for n in z.namelist() if n.endswith('.dist-info/WHEEL'))).decode()",
  ].join("\n");
  const w = run(python3, ["-c", check, join(bundle("windows"), "python", wheelName("windows")),
    join(bundle("windows"), "bin", "windows_redirector.dll")]);
  assert.ok(w.code === 0, w.out);
});

test.run();
