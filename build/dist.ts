// `npm run dist`: the release bundles, from one command,
//
//   dist/windows-redirector-<version>-windows-x64.zip
//   dist/windows-redirector-<version>-linux-x64.tar.gz
//
// each one folder, windows-redirector-<version>-<platform>-x64/, holding
//   bin/, include/, lib/   the build's `cmake --install` prefix: the header, the
//                          shared and static libraries (Windows: the DLL, the
//                          mingw and MSVC import libraries, the .def), the CMake
//                          package and the pkg-config files
//   bin/redirect-proxy     the Go example proxy (Windows: redirect-proxy.exe,
//                          built with CGO_ENABLED=0 and found beside the DLL;
//                          Linux: cgo, with RUNPATH $ORIGIN/../lib)
//   go/                    the Go package's source (a module of its own)
//   csharp/                the C# P/Invoke source and its sample
//   README.md              what is here, how to use it, where WinDivert comes from
//
//   tsx build/dist.ts [--no-build]
//
// The version is package.json's (the CMake build reads it from there too).
// --no-build takes build/linux and build/windows as they are (the test
// runner has just built them).
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildLinux, buildWindows, paths, root, version } from "./build.ts";
import { buildWheels } from "./wheel.ts";

const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { license: string };
export { version };
export const distDir = join(root, "dist");

export type Platform = "linux" | "windows";
export const PLATFORMS: Platform[] = ["linux", "windows"];

/** The bundle's folder name (the one top-level entry of its archive). */
export function bundleName(p: Platform): string {
  return `windows-redirector-${version}-${p}-x64`;
}

export function archivePath(p: Platform): string {
  return join(distDir, bundleName(p) + (p === "windows" ? ".zip" : ".tar.gz"));
}

/** A file a bundle carries besides the build and the sources, and the README's words on it. */
export interface Extra {
  /** Where it goes, relative to the bundle's folder. */
  to: string;
  from: string;
  /** A section of the bundle's README (Markdown, from a "## " heading). */
  readme: string;
}

/**
 * What the bundles carry besides the library, the proxy and the Go and C#
 * sources (the one place for more): the platform's Python wheel.
 */
async function extras(): Promise<Record<Platform, Extra[]>> {
  const wheels = await buildWheels();
  const wheel = (p: Platform): Extra => ({
    to: `python/${basename(wheels[p])}`,
    from: wheels[p],
    readme: [
      "## Python",
      "",
      `\`python/${basename(wheels[p])}\` is the Python package (3.10+, typed), the library inside it:`,
      "",
      "```sh",
      p === "windows"
        ? "python -m venv .venv && .venv\\Scripts\\activate"
        : "python3 -m venv .venv && . .venv/bin/activate",
      `pip install python/${basename(wheels[p])}`,
      "```",
      "",
      p === "windows"
        ? "Then `import windows_redirector`; WinDivert 2.2's files go where the section above says, or name their folder with `windows_redirector.set_windivert_path(folder)`."
        : "Then `import windows_redirector`; the library links the system's libnetfilter_queue and libmnl (`apt install libnetfilter-queue1 libmnl0`).",
    ].join("\n"),
  });
  return { linux: [wheel("linux")], windows: [wheel("windows")] };
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): void {
  execFileSync(cmd, args, { cwd: opts.cwd ?? root, stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, ...opts.env } });
}

/**
 * Go's build cache keys a cgo package on its sources and the CGO_* flags, not
 * on what pkg-config answered: a package built against one prefix would be
 * reused, with that prefix's -L (or the build tree's rpath), for another. A
 * define naming the .pc folder (unused by any source) keeps them apart.
 */
export function goCacheKey(pcDir: string | undefined): string {
  return pcDir === undefined ? "" : `-DWR_PKG_CONFIG_DIR=${pcDir}`;
}

// Where the bundles are laid out: one fixed folder, so repeated runs reuse
// Go's cache (the Linux proxy's cgo build carries goCacheKey of it).
const stage = join(root, "build", "dist-stage");

// The Go builds: the machine's Go, the module cache only (build/setup.sh
// fills it), no path of this machine in the binaries.
const GO_ENV = { GOPROXY: "off", GOFLAGS: "-mod=mod", GOTOOLCHAIN: "local" };
const GO_BUILD = ["build", "-trimpath", "-buildvcs=false"];

/** go/ without its tests: the package and the example, as a module of their own. */
function copyGoSource(to: string): void {
  cpSync(join(root, "go"), to, {
    recursive: true,
    filter: (src) => !src.endsWith("_test.go") && basename(src) !== "testdata",
  });
}

function copyCSharp(to: string): void {
  mkdirSync(to, { recursive: true });
  for (const f of ["WindowsRedirector.cs", "Sample.cs", "WindowsRedirectorSample.exe.config", "README.md"]) {
    cpSync(join(root, "csharp", f), join(to, f));
  }
}

/** The bundle's folder, complete, in stage. */
function layOut(p: Platform, stage: string, extra: Extra[]): string {
  const dir = join(stage, bundleName(p));
  run("cmake", ["--install", p === "linux" ? paths.linux : paths.windows, "--prefix", dir]);
  const proxy = join(dir, "bin", p === "windows" ? "redirect-proxy.exe" : "redirect-proxy");
  if (p === "windows") {
    run("go", [...GO_BUILD, "-o", proxy, "./cmd/redirect-proxy"], {
      cwd: join(root, "go"),
      env: { ...GO_ENV, CGO_ENABLED: "0", GOOS: "windows", GOARCH: "amd64" },
    });
  } else {
    // cgo against the prefix just installed (its .pc alone, not the build
    // tree's), finding the library in the bundle's lib/ wherever it is.
    run("go", [...GO_BUILD, "-ldflags=-r $ORIGIN/../lib", "-o", proxy, "./cmd/redirect-proxy"], {
      cwd: join(root, "go"),
      env: {
        ...GO_ENV, CGO_ENABLED: "1", GOOS: "linux", GOARCH: "amd64",
        PKG_CONFIG_PATH: join(dir, "lib", "pkgconfig"), CGO_CPPFLAGS: goCacheKey(join(dir, "lib", "pkgconfig")),
      },
    });
  }
  copyGoSource(join(dir, "go"));
  copyCSharp(join(dir, "csharp"));
  for (const e of extra) {
    mkdirSync(join(dir, e.to, ".."), { recursive: true });
    cpSync(e.from, join(dir, e.to));
  }
  writeFileSync(join(dir, "README.md"), readme(p, extra));
  return dir;
}

function archive(p: Platform, stage: string): string {
  const out = archivePath(p);
  const partial = `${out}.partial`;
  rmSync(partial, { force: true });
  if (p === "windows") {
    run("zip", ["-q", "-r", "-X", partial, bundleName(p)], { cwd: stage });
  } else {
    run("tar", ["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "-czf", partial, "-C", stage, bundleName(p)]);
  }
  renameSync(partial, out);
  return out;
}

/** Builds both bundles into dist/; their paths. */
export async function makeDist(opts: { build?: boolean } = {}): Promise<Record<Platform, string>> {
  if (opts.build !== false) {
    buildLinux();
    buildWindows();
  }
  const more = await extras();
  mkdirSync(distDir, { recursive: true });
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  try {
    const made = {} as Record<Platform, string>;
    for (const p of PLATFORMS) {
      layOut(p, stage, more[p]);
      made[p] = archive(p, stage);
    }
    return made;
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

function readme(p: Platform, extra: Extra[]): string {
  const win = p === "windows";
  const name = bundleName(p);
  const lines: string[] = [
    `# windows-redirector ${version} for ${win ? "Windows x64" : "Linux x64"}`,
    "",
    "Sends the TCP and UDP traffic of the processes you choose to a port of your own program, and",
    "tells that program, for each connection, where it was really going: a library with a C ABI,",
    win
      ? "`windows_redirector.dll`, capturing with WinDivert, and the ways to use it from C, Go and C#."
      : "`libwindows_redirector.so`, capturing with NFQUEUE, and the ways to use it from C, Go and C#.",
    "",
    "## What is here",
    "",
    "| path | what |",
    "| --- | --- |",
    "| `include/windows_redirector.h` | the API, documented in full |",
    ...(win
      ? [
        "| `bin/windows_redirector.dll` | the library (imports only KERNEL32 and msvcrt) |",
        "| `lib/windows_redirector.lib`, `lib/windows_redirector.def` | MSVC's import library and the module definition |",
        "| `lib/libwindows_redirector.dll.a` | mingw-w64's import library |",
        "| `lib/libwindows_redirector.a` | the static library (for mingw-w64 toolchains) |",
      ]
      : [
        "| `lib/libwindows_redirector.so` | the library |",
        "| `lib/libwindows_redirector.a` | the static library |",
      ]),
    "| `lib/cmake/windows_redirector/` | the CMake package: `find_package(windows_redirector CONFIG)` |",
    "| `lib/pkgconfig/` | `windows_redirector.pc` (shared) and `windows_redirector-static.pc` |",
    win
      ? "| `bin/redirect-proxy.exe` | a transparent proxy built on the Go package (no cgo): finds the DLL beside it |"
      : "| `bin/redirect-proxy` | a transparent proxy built on the Go package: finds the library in `../lib` |",
    "| `go/` | the Go package's source (`windows-redirector/go/redirector`) and the proxy's |",
    "| `csharp/` | `WindowsRedirector.cs` (P/Invoke) and a sample |",
    ...extra.map((e) => `| \`${e.to}\` | see "${/^## (.*)$/m.exec(e.readme)?.[1] ?? e.to}" below |`),
    "",
    "Nothing in it names where it was built: unpack it anywhere. `<bundle>` below is the unpacked",
    `\`${name}\` folder.`,
    "",
  ];
  if (win) {
    lines.push(
      "## WinDivert: not included",
      "",
      "The library captures with WinDivert 2.2, which is **not in this bundle**. Download",
      "WinDivert 2.2 (2.2.x; tested against 2.2.2) from its author, https://reqrypt.org/windivert.html:",
      "the `x64` folder of `WinDivert-2.2.x-A.zip` holds `WinDivert.dll` and `WinDivert64.sys`, the",
      "signed kernel driver. Put both beside `windows_redirector.dll` (or beside your program, or in a",
      "folder you name with `redirector_set_windivert_path`, `--windivert` for redirect-proxy). A",
      "WinDivert older than 2.2 is refused at start. WinDivert is licensed LGPL-3.0 or GPL-2.0 by its",
      "author.",
      "",
      "At run time: Windows 10 or 11 x64, Administrator rights, and an inbound Windows Defender",
      "Firewall rule for your app port (the proxy listens on the wildcard address), e.g. in an",
      "administrator's PowerShell:",
      "",
      "```powershell",
      'New-NetFirewallRule -DisplayName "windows-redirector app port" -Direction Inbound -Action Allow -Protocol TCP -LocalPort 8080',
      "```",
      "",
      "## redirect-proxy",
      "",
      "```bat",
      "rem beside bin\\windows_redirector.dll, with WinDivert.dll and WinDivert64.sys copied there, as Administrator:",
      "bin\\redirect-proxy.exe --port 8080 --process curl.exe",
      "```",
      "",
    );
  } else {
    lines.push(
      "## At run time",
      "",
      "Root (or CAP_NET_ADMIN), iptables (legacy or nft), a kernel with NFQUEUE, conntrack and the",
      "mark/connmark extensions, and `libnetfilter-queue1` and `libmnl0` (Debian's names). To build",
      "against the static library: `libnetfilter-queue-dev`, `libmnl-dev` and `pkg-config`.",
      "",
      "## redirect-proxy",
      "",
      "```sh",
      "sudo <bundle>/bin/redirect-proxy --port 8080 --process curl",
      "```",
      "",
    );
  }
  lines.push(
    "## From C: CMake",
    "",
    "```cmake",
    `find_package(windows_redirector ${version.split(".").slice(0, 2).join(".")} CONFIG REQUIRED)`,
    "target_link_libraries(app PRIVATE windows_redirector::windows_redirector)            # shared",
    "# or: target_link_libraries(app PRIVATE windows_redirector::windows_redirector_static)",
    "```",
    "",
    "Configure with `-DCMAKE_PREFIX_PATH=<bundle>`. The static target brings its own link",
    `dependencies (${win ? "libgcc_eh, for mingw-w64" : "threads, libnetfilter_queue and libmnl, found with pkg-config"}).`,
    "",
    "## From C: pkg-config",
    "",
    "```sh",
    ...(win
      ? [
        "export PKG_CONFIG_LIBDIR=<bundle>/lib/pkgconfig",
        "x86_64-w64-mingw32-gcc app.c $(pkg-config --cflags --libs windows_redirector)                 # shared",
        "x86_64-w64-mingw32-gcc app.c $(pkg-config --cflags --static --libs windows_redirector-static) # static",
      ]
      : [
        "export PKG_CONFIG_PATH=<bundle>/lib/pkgconfig",
        "cc app.c $(pkg-config --cflags --libs windows_redirector)                  # shared",
        "cc app.c $(pkg-config --cflags --static --libs windows_redirector-static)  # static",
      ]),
    "```",
    "",
    win
      ? "Ship `windows_redirector.dll` beside your program. MSVC: link `lib/windows_redirector.lib`."
      : "Neither adds an rpath: put `<bundle>/lib` where the loader looks (`LD_LIBRARY_PATH`, `ldconfig`), or set your own.",
    "",
    "## From Go",
    "",
    "The module `windows-redirector/go/redirector` is in `go/`. In your module:",
    "",
    "```sh",
    "go mod edit -require=windows-redirector/go/redirector@v0.0.0 -replace=windows-redirector/go/redirector=<bundle>/go",
    "go mod tidy",
    "```",
    "",
    ...(win
      ? [
        "Then `CGO_ENABLED=0 GOOS=windows go build`: on Windows the package loads",
        "`windows_redirector.dll` at run time, without cgo, from the program's folder (or where",
        "`redirector.SetLibraryPath` says). Ship the DLL (and WinDivert's two files) beside your program.",
      ]
      : [
        "Then build with cgo (`CGO_ENABLED=1`, a C compiler) and `PKG_CONFIG_PATH=<bundle>/lib/pkgconfig`;",
        "run with the library where the loader finds it (`LD_LIBRARY_PATH=<bundle>/lib`), or link with",
        "`-ldflags='-r $ORIGIN/../lib'` and ship the `.so` in `../lib` as `bin/redirect-proxy` does.",
      ]),
    "",
    "## From C#",
    "",
    "Add `csharp/WindowsRedirector.cs` to your project (P/Invoke on `windows_redirector`, no other",
    win
      ? "dependency) and ship `bin/windows_redirector.dll` beside your program."
      : "dependency). Mono finds `libwindows_redirector.so` beside the program or through `LD_LIBRARY_PATH`\n(`csharp/WindowsRedirectorSample.exe.config` maps the name); .NET does the same with the library beside the program.",
    "",
  );
  for (const e of extra) lines.push(e.readme.trimEnd(), "");
  lines.push(
    "## More",
    "",
    "The header documents every function, its codes and its threads; `go/README.md` and",
    "`csharp/README.md` the bindings. The source repository's README.md has the rest: how it",
    "works, the configuration's fields, what is tested and how.",
    "",
    `License: ${pkg.license}.`,
    "",
  );
  return lines.join("\n");
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  for (const a of args) {
    if (a !== "--no-build") {
      console.log(`usage: tsx build/dist.ts [--no-build]`);
      process.exit(2);
    }
  }
  const made = await makeDist({ build: !args.includes("--no-build") });
  for (const p of PLATFORMS) console.log(`dist: ${made[p]}`);
}
