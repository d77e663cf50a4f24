// The built libraries export exactly the functions the header declares, and
// the DLL depends on Windows system DLLs only.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { root } from "./engine/harness.ts";
import { declared, header } from "./header.ts";

const so = join(root, "build", "linux", "libwindows_redirector.so");
const dll = join(root, "build", "windows", "windows_redirector.dll");

test("the header declares the six seed functions with their exact prototypes", () => {
  for (const proto of [
    "int32_t start_redirector(void);",
    "int32_t stop_redirector(void);",
    "int32_t set_redirector_config(const char *json);",
    "int32_t get_redirector_status(void);",
    "void initialize_global_config(void);",
    "void update_app_port(uint16_t port);",
  ]) {
    assert.ok(header.includes("WINDOWS_REDIRECTOR_API " + proto), proto);
  }
  assert.ok(declared.length >= 6);
});

test("the .so exports exactly the header's functions", () => {
  const out = execFileSync("nm", ["-D", "--defined-only", so], { encoding: "utf8" });
  const exported = out.split("\n").filter((l) => / [TtWw] /.test(l)).map((l) => l.trim().split(/\s+/)[2]).sort();
  assert.equal(exported, declared);
});

test("the .dll exports exactly the header's functions", () => {
  const out = execFileSync("x86_64-w64-mingw32-objdump", ["-p", dll], { encoding: "utf8" });
  const table = out.slice(out.indexOf("[Ordinal/Name Pointer] Table"));
  const exported = [...table.matchAll(/^\s+\[\s*\d+\]\s+(\w+)$/gm)].map((m) => m[1]).sort();
  assert.equal(exported, declared);
});

test("the .dll imports only Windows system DLLs", () => {
  const out = execFileSync("x86_64-w64-mingw32-objdump", ["-p", dll], { encoding: "utf8" });
  const imports = [...out.matchAll(/DLL Name: (\S+)/g)].map((m) => m[1].toLowerCase());
  const system = new Set(["kernel32.dll", "msvcrt.dll", "advapi32.dll", "ws2_32.dll", "ntdll.dll"]);
  assert.ok(imports.length > 0);
  for (const d of imports) assert.ok(system.has(d), `unexpected DLL dependency ${d}`);
});

test("the .so needs nothing beyond libc", () => {
  const out = execFileSync("readelf", ["-d", so], { encoding: "utf8" });
  const needed = [...out.matchAll(/\(NEEDED\)\s+Shared library: \[(.+?)\]/g)].map((m) => m[1]);
  for (const n of needed) assert.ok(/^(libc|libm|libpthread|ld-linux|libnetfilter_queue|libmnl|libnfnetlink)[.-]/.test(n), n);
});

test("static libraries and the import library exist", () => {
  for (const p of [
    join(root, "build", "linux", "libwindows_redirector.a"),
    join(root, "build", "windows", "libwindows_redirector.a"),
    join(root, "build", "windows", "libwindows_redirector.dll.a"),
  ]) assert.ok(existsSync(p), p);
});

test("the library has no signal handler code from the wasm2c runtime", () => {
  const out = execFileSync("nm", [so], { encoding: "utf8" });
  assert.not.ok(/\bsigaction\b|\bsigaltstack\b/.test(out), "sigaction/sigaltstack linked in");
});

test.run();
