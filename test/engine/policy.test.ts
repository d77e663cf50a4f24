// The intercept policy (mitmproxy intercept_conf semantics), as a table.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { Engine } from "./harness.ts";

const SELF = 1000;

// [spec, pid, path, expected]
const table: Array<[string | Array<string | number>, number, string, boolean]> = [
  ["", 10, "/usr/bin/curl", false],
  ["curl", 10, "/usr/bin/curl", true],
  ["curl", 10, "/usr/bin/wget", false],
  ["CURL", 10, "/usr/bin/Curl", true],
  ["!curl", 10, "/usr/bin/curl", false],
  ["!curl", 10, "/usr/bin/wget", true],
  ["!curl,10", 10, "/usr/bin/curl", true],
  ["10,!curl", 10, "/usr/bin/curl", false],
  ["10", 10, "", true],
  ["10", 11, "", false],
  ["!10", 11, "", true],
  ["!10", 10, "", false],
  [" curl , wget ", 10, "/usr/bin/wget", true],
  ["*.exe", 10, "C:\\Program Files\\App\\app.exe", true],
  ["*.exe", 10, "C:\\Program Files\\App\\app.exe.bak", false],
  ["app?.exe", 10, "C:\\x\\app1.exe", true],
  ["app?.exe", 10, "C:\\x\\app12.exe", false],
  ["c:\\program files\\*", 10, "C:\\Program Files\\App\\app.exe", true],
  ["*", 10, "/anything", true],
  ["*", 10, "", false],
  ["**a**", 10, "/x/bab", true],
  ["*", SELF, "/me", false],
  ["!nothing", SELF, "/me", false],
  ["!nothing", 4, "System", false],
  ["!nothing", 0, "", false],
  [[1234, "!1234"], 1234, "", false],
  [["!x", 5], 7, "/y", true],
  [["4294967295"], 4294967295, "", true],
  [["99999999999"], 1, "99999999999", true], // too big for a PID: a pattern
];

test("spec table", () => {
  const e = new Engine(SELF, [4]); // as the Windows backend gives it
  for (const [spec, pid, path, want] of table) {
    const r = e.config(JSON.stringify({ intercept: spec }));
    assert.is(r.rc, 0, `${JSON.stringify(spec)}: ${r.error}`);
    assert.is(e.wouldIntercept(pid, path), want, `${JSON.stringify(spec)} pid ${pid} path ${path}`);
  }
});

test("the OS's never-intercept PIDs come from the host: without them PID 4 is a process like any other", () => {
  const linux = new Engine(SELF);
  assert.is(linux.config(JSON.stringify({ intercept_pids: [4, 7] })).rc, 0);
  assert.ok(linux.wouldIntercept(4));
  const windows = new Engine(SELF, [4, 9]);
  assert.is(windows.config(JSON.stringify({ intercept_pids: [4, 7, 9] })).rc, 0);
  assert.not.ok(windows.wouldIntercept(4, "System"));
  assert.not.ok(windows.wouldIntercept(9));
  assert.ok(windows.wouldIntercept(7));
  assert.throws(() => new Engine(SELF, [11, 12, 13, 14, 15, 16, 17, 18, 19]), /list full at PID 19/);
});

test("intercept_pids adds to the spec, and the spec cannot exclude them", () => {
  const e = new Engine(SELF);
  assert.is(e.config(JSON.stringify({ intercept: "!5", intercept_pids: [5] })).rc, 0);
  assert.ok(e.wouldIntercept(5));
  assert.ok(e.wouldIntercept(6));
});

test("the host's own PID is never intercepted, even when named", () => {
  const e = new Engine(SELF);
  assert.is(e.config(JSON.stringify({ intercept: [SELF], intercept_pids: [SELF] })).rc, 0);
  assert.not.ok(e.wouldIntercept(SELF, "/proxy"));
});

test("UTF-8 paths match byte for byte; ASCII letters case-insensitively", () => {
  const e = new Engine(SELF);
  assert.is(e.config(JSON.stringify({ intercept: "Größe" })).rc, 0);
  assert.ok(e.wouldIntercept(10, "/opt/GRößE/bin/x"));
  assert.not.ok(e.wouldIntercept(10, "/opt/GROSSE/bin/x"));
});

test.run();
