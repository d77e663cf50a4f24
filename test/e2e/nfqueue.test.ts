// End to end on Linux: real processes, real kernel TCP/UDP through NFQUEUE,
// in network namespaces of our own. The proxy is test/c/wr_testproxy (the C
// ABI, driven by lines on stdin); clients and the "internet" servers are
// wr_testclient and wr_testserver, which check every byte; curl, for the
// process trees, fetches a file from a web server there.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { execFileSync, type ChildProcess } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { root } from "../engine/harness.ts";
import { build, buildIcmp } from "../engine/packets.ts";
import { exited, HOST4, Lines, PEER4, SERVER4, SERVER6, TestNet } from "./netns.ts";

const BIN = join(root, "build", "linux");
const APP = 8080;
const net = TestNet.forThisRun("wre2e");

/** Waits until `n` lines start with `prefix`, then returns them. */
async function linesOf(p: Proxy, prefix: string, n: number, ms = 10_000): Promise<string[]> {
  const deadline = Date.now() + ms;
  while (p.lines(prefix).length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return p.lines(prefix);
}

class Proxy {
  readonly child: ChildProcess;
  readonly out: Lines;

  /** The test proxy; `prefix` runs it under another command (setpriv, env). */
  constructor(prefix: string[] = []) {
    const [cmd, ...args] = [...prefix, join(BIN, "wr_testproxy")];
    this.child = net.start(net.host, cmd, args);
    this.out = new Lines(this.child);
  }

  /** Sends a command and waits for its "ok"/"err" answer. */
  async cmd(line: string): Promise<string> {
    const from = this.out.count();
    this.child.stdin!.write(line + "\n");
    return this.out.next((l) => l === "ok" || ["err ", "stats ", "diag "].some((p) => l.startsWith(p)), 10_000, from);
  }

  async up(config: object): Promise<void> {
    assert.is(await this.cmd(`port ${APP}`), "ok");
    assert.is(await this.cmd(`config ${JSON.stringify(config)}`), "ok");
    const r = await this.cmd("start");
    assert.is(r, "ok", r);
  }

  async stats(): Promise<Record<string, number>> {
    const line = await this.cmd("stats");
    return Object.fromEntries(line.split(" ").slice(1).map((kv) => kv.split("=")).map(([k, v]) => [k, Number(v)]));
  }

  async quit(): Promise<void> {
    this.child.stdin!.write("quit\n");
    await exited(this.child);
  }

  async kill(): Promise<void> {
    this.child.kill("SIGKILL");
    await exited(this.child);
  }

  lines(prefix: string): string[] {
    return this.out.all().filter((l) => l.startsWith(prefix));
  }

  /** The close line of `pid`'s redirected TCP connection, checked to name the program's `path` and `dst`. */
  async closed(pid: number, path: string, dst: string): Promise<string> {
    const line = await this.out.next((l) => l.startsWith(`close tcp pid=${pid} `));
    assert.ok(line.includes(` path=${path} `) && line.includes(` dir=out dst=${dst} `), line);
    return line;
  }

  /** After 300 ms for stragglers: no connection has reached the proxy since its line `seen`. */
  async noneOpenedSince(seen: number): Promise<void> {
    await new Promise((res) => setTimeout(res, 300));
    assert.is(this.out.all().slice(seen).filter((l) => l.startsWith("open")).length, 0, this.out.all().join("\n"));
  }

  /** Runs a command in the host namespace that must succeed without the proxy; returns its output. */
  async direct(cmd: string, args: string[]): Promise<string> {
    const seen = this.out.count();
    const r = await net.run(net.host, cmd, args);
    assert.is(r.status, 0, r.stdout + r.stderr);
    await this.noneOpenedSince(seen);
    return r.stdout;
  }
}

/** Runs a client to the end; returns its output. */
async function client(ns: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  const r = await net.run(ns, join(BIN, "wr_testclient"), args, { timeout: 60_000 });
  return { ok: r.status === 0, out: r.stdout + r.stderr };
}

/** A client started with --wait: its PID is known before it connects. */
async function waitingClient(args: string[]): Promise<{ pid: number; go: () => Promise<{ ok: boolean; out: string }> }> {
  const c = net.start(net.host, join(BIN, "wr_testclient"), ["--wait", ...args]);
  const lines = new Lines(c);
  const pid = Number((await lines.next((l) => l.startsWith("pid "))).slice(4));
  return {
    pid,
    go: async () => {
      c.stdin!.write("go\n");
      const { code } = await exited(c);
      return { ok: code === 0, out: lines.all().join("\n") };
    },
  };
}

async function rules(): Promise<string> {
  let out = "";
  for (const t of ["iptables-save", "ip6tables-save"]) out += (await net.run(net.host, t, [])).stdout;
  return out;
}

const server = net.start(net.net, join(BIN, "wr_testserver"), [SERVER4, "80", SERVER6, "80"]);
const serverReady = new Lines(server).next((l) => l === "ready");

// A web server in "the internet" for curl: one file in a directory of its
// own (removed at exit, as the launchers copied there are).
const HTTP = 8000;
const BODY = "a file served in the test network";
const work = mkdtempSync(join(tmpdir(), "wr-e2e-"));
process.on("exit", () => rmSync(work, { recursive: true, force: true }));
mkdirSync(join(work, "www"));
writeFileSync(join(work, "www", "hello"), BODY + "\n");
const web = net.start(net.net, "python3", ["-u", "-m", "http.server", "--bind", SERVER4, "--directory", join(work, "www"), String(HTTP)]);
const webReady = new Lines(web).next((l) => l.startsWith("Serving HTTP"), 20_000);
// Its request log (a line on stderr per request) is drained: a pipe left
// full (some 800 requests, in a loop of the cases) would block the server.
web.stderr!.resume();

/** curl, as /proc/<pid>/exe names it, and a shell command that fetches the file with it. */
const CURL = realpathSync(execFileSync("sh", ["-c", "command -v curl"], { encoding: "utf8" }).trim());
const fetchCmd = `${CURL} -sS --fail --noproxy ${SERVER4} --max-time 20 http://${SERVER4}:${HTTP}/hello 2>&1`;

/**
 * A shell's lines that run curl in the background and say "TAG <its pid>", then "TAG rc <its status>".
 * late: curl is exec()ed by a fork of the shell 0.6 s after the fork (see LATE).
 */
const fetchAs = (tag: string, late = false) =>
  `${late ? `(sleep 0.6; exec ${fetchCmd})` : fetchCmd} & echo "${tag} $!"; wait $!; echo "${tag} rc $?"`;

/**
 * The variants of a tree case where a process exec()s its program 0.6 s
 * after its fork: the library, listing processes every 250 ms while a tree
 * is configured, reads the fork first (still the shell, decided as one),
 * then meets it, or a child it starts, after the exec().
 */
const LATE = " (exec() 0.6 s after the fork: the fork is listed first)";

/** The PID of the curl that fetchAs(tag) started, once it has fetched the file. */
async function fetchedBy(lines: Lines, tag: string): Promise<number> {
  const pid = Number((await lines.next((l) => l.startsWith(`${tag} `))).slice(tag.length + 1));
  assert.is(await lines.next((l) => l.startsWith(`${tag} rc `)), `${tag} rc 0`, lines.all().join("\n"));
  return pid;
}

/**
 * A copy of the shell under a name of its own ("<tag>-<test network>"): a
 * launcher that a tree's name pattern matches by its path (the path is
 * /proc/<pid>/exe, so a script would be named by its interpreter). Each case
 * has its own tag: a launcher a failed case left running keeps its file busy.
 */
function launcher(tag: string): { name: string; path: string } {
  const name = `${tag}-${net.name}`;
  const path = join(work, name);
  copyFileSync(realpathSync("/bin/sh"), path);
  chmodSync(path, 0o755);
  return { name, path };
}

const cases = suite("nfqueue end to end");

cases.before(async () => {
  await serverReady;
  await webReady;
});

// Each case has a time limit well above what it takes on a loaded 2-core
// machine (a few seconds at most; the run prints each case's time); past it,
// the case fails naming what it was waiting for.
const LIMIT_MS = 30_000;

function e2e(name: string, fn: () => Promise<void>, limitMs = LIMIT_MS): void {
  cases(name, async () => {
    const t0 = Date.now();
    try {
      await net.limited(name, limitMs, fn);
    } finally {
      console.log(`  (${((Date.now() - t0) / 1000).toFixed(1)} s of ${limitMs / 1000} s: ${name})`);
    }
  });
}

async function byPid(proxy: Proxy, proto: "tcp" | "udp", server: string, bytes: number) {
  const c = await waitingClient([proto, server, "80", String(bytes)]);
  assert.is(await proxy.cmd(`config ${JSON.stringify({ intercept_pids: [c.pid] })}`), "ok");
  const r = await c.go();
  assert.ok(r.ok, r.out);
  return c.pid;
}

e2e("TCP by PID, 50 MB each way byte for byte, IPv4 and IPv6: the proxy learns PID, path and destination", async () => {
  const proxy = new Proxy();
  try {
    await proxy.up({});
    for (const [server, shown] of [[SERVER4, `${SERVER4}:80`], [SERVER6, `[${SERVER6}]:80`]]) {
      const pid = await byPid(proxy, "tcp", server, 50_000_000);
      const line = await proxy.out.next((l) => l.startsWith(`close tcp pid=${pid} `));
      assert.ok(line.includes(`path=${join(BIN, "wr_testclient")}`), line);
      assert.ok(line.includes(`dir=out dst=${shown}`), line);
      assert.ok(line.includes("up=50000000 down=50000000"), line);
    }
  } finally {
    await proxy.quit();
  }
}, 60_000);

e2e("TCP and UDP by process name; a client not intercepted goes direct and the proxy sees nothing", async () => {
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    for (const [proto, server] of [["tcp", SERVER4], ["tcp", SERVER6], ["udp", SERVER4], ["udp", SERVER6]]) {
      const r = await client(net.host, [proto, server, "80", "1000"]);
      assert.ok(r.ok, r.out);
    }
    assert.is((await linesOf(proxy, "close tcp", 2)).length, 2);
    const udp = await linesOf(proxy, "udp ", 2);
    assert.is(udp.length, 2, proxy.out.all().join("\n"));
    assert.ok(udp[0].includes(`dst=${SERVER4}:80`) && udp[0].includes("answer=1000"), udp[0]);
    assert.ok(udp[1].includes(`dst=[${SERVER6}]:80`), udp[1]);
    // Now a policy that names another program: the client is left alone.
    assert.is(await proxy.cmd(`config ${JSON.stringify({ intercept: "some-other-program" })}`), "ok");
    const seen = proxy.out.count();
    const r = await client(net.host, ["tcp", SERVER4, "80", "1000"]);
    assert.ok(r.ok, r.out);
    assert.is(proxy.out.all().slice(seen).filter((l) => l.startsWith("open")).length, 0);
    assert.is(proxy.lines("miss").length, 0, "no connection reached the proxy without an origin");
  } finally {
    await proxy.quit();
  }
});

e2e("a reader waiting in redirector_next_event is woken by each event, and by stop", async () => {
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    // The events thread waits 60 s per call: only wake-ups bring these in time.
    assert.is(await proxy.cmd("events"), "ok");
    const r = await client(net.host, ["tcp", SERVER4, "80", "1000"]);
    assert.ok(r.ok, r.out);
    const opened = await proxy.out.next((l) => l.startsWith("event opened tcp "), 10_000);
    assert.ok(opened.includes(`dst=${SERVER4}:80`), opened);
    const closed = await proxy.out.next((l) => l.startsWith("event closed tcp "), 10_000);
    assert.ok(closed.includes(`dst=${SERVER4}:80`) && closed.includes("up=1000 down=1000"), closed);
    assert.is(await proxy.cmd("stop"), "ok");
    assert.is(await proxy.out.next((l) => l.startsWith("events end "), 10_000), "events end -102");
  } finally {
    await proxy.quit();
  }
});

e2e("a process seen before it exec()s into an intercepted program is intercepted after the exec", async () => {
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    // A shell that becomes wr_testclient when told to...
    const sh = net.start(net.host, "sh", ["-c", `read go; exec ${join(BIN, "wr_testclient")} tcp ${SERVER4} 80 1000`]);
    const lines = new Lines(sh);
    // ...after another program's connection has made the library list /proc
    // and see the shell as a shell.
    const other = await net.run(net.host, "python3", ["-c",
      `import socket; socket.create_connection(("${SERVER4}", 80)).close()`]);
    assert.is(other.status, 0, other.stderr);
    sh.stdin!.write("go\n");
    const { code } = await exited(sh);
    assert.is(code, 0, lines.all().join("\n"));
    const line = await proxy.out.next((l) => l.startsWith(`close tcp pid=${sh.pid} `));
    assert.ok(line.includes(`path=${join(BIN, "wr_testclient")}`), line);
  } finally {
    await proxy.quit();
  }
});

e2e("a process tree: a shell's child (curl) and a grandchild that connects after the shell has exited are redirected; " +
  "the same programs outside the tree are not", async () => {
  const proxy = new Proxy();
  const client = join(BIN, "wr_testclient");
  try {
    await proxy.up({});
    // The shell starts a sub-shell that waits for the shell to exit and then
    // starts a client (a grandchild, its parent re-parented by then), and
    // curl (a child) while the sub-shell exists.
    const script = `read go; S=$$
( while kill -0 $S 2>/dev/null; do sleep 0.05; done
  ${client} tcp ${SERVER4} 80 1000 & echo "g $!"; wait $! && echo "g ok" ) &
${fetchAs("c")}
exit 0`;
    const sh = net.start(net.host, "sh", ["-c", script]);
    const lines = new Lines(sh);
    assert.is(await proxy.cmd(`config ${JSON.stringify({ intercept: `tree:${sh.pid}` })}`), "ok");
    sh.stdin!.write("go\n");
    const child = await fetchedBy(lines, "c");
    assert.ok(lines.all().includes(BODY), lines.all().join("\n"));
    assert.is((await exited(sh)).code, 0);
    const grandchild = Number((await lines.next((l) => l.startsWith("g "))).slice(2));
    assert.is(await lines.next((l) => l.startsWith("g ok")), "g ok", lines.all().join("\n"));
    await proxy.closed(child, CURL, `${SERVER4}:${HTTP}`);
    const line = await proxy.closed(grandchild, client, `${SERVER4}:80`);
    assert.ok(line.includes("up=1000 down=1000"), line);
    // The same programs outside the tree go direct.
    assert.is(await proxy.direct("sh", ["-c", fetchCmd]), BODY + "\n");
    await proxy.direct(client, ["tcp", SERVER4, "80", "1000"]);
  } finally {
    await proxy.quit();
  }
});

for (const late of [false, true]) {
  e2e("a process tree by name pattern: curl started by a launcher the pattern matches is redirected with its own PID " +
    "and path; curl started by another shell is not" + (late ? LATE : ""), async () => {
    const proxy = new Proxy();
    const { name, path } = launcher(late ? "wrlate" : "wrlaunch");
    try {
      // The pattern names the launcher before it runs. Late, the fork that
      // becomes curl is listed as the launcher (the tree's root) first: the
      // origin still names curl.
      await proxy.up({ intercept: `tree:${name}` });
      const sh = net.start(net.host, path, ["-c", fetchAs("c", late)]);
      const lines = new Lines(sh);
      const child = await fetchedBy(lines, "c");
      assert.ok(lines.all().includes(BODY), lines.all().join("\n"));
      assert.is((await exited(sh)).code, 0);
      await proxy.closed(child, CURL, `${SERVER4}:${HTTP}`);
      // The same curl started by a shell of another name goes direct.
      assert.is(await proxy.direct("sh", ["-c", fetchCmd]), BODY + "\n");
    } finally {
      await proxy.quit();
    }
  });
}

for (const late of [false, true]) {
  e2e("a subtree left out of a tree ('tree:<pid>,!tree:<pattern>'): curl under the inner launcher goes direct, " +
    "its sibling curl is redirected" + (late ? LATE : ""), async () => {
    const proxy = new Proxy();
    const inner = launcher(late ? "wrinlate" : "wrinner");
    try {
      await proxy.up({});
      // The shell starts the inner launcher, which starts curl; then a curl of
      // its own. Late, the fork that becomes the inner launcher is listed as a
      // shell in the tree first: the curl the launcher starts is left out still.
      const run = `${inner.path} -c '${fetchAs("i")}'`;
      const script = `read go
${late ? `(sleep 0.6; exec ${run})` : run}
${fetchAs("s")}`;
      const sh = net.start(net.host, "sh", ["-c", script]);
      const lines = new Lines(sh);
      assert.is(await proxy.cmd(`config ${JSON.stringify({ intercept: `tree:${sh.pid},!tree:${inner.name}` })}`), "ok");
      sh.stdin!.write("go\n");
      const left = await fetchedBy(lines, "i");
      const sibling = await fetchedBy(lines, "s");
      assert.is(lines.all().filter((l) => l === BODY).length, 2, lines.all().join("\n"));
      assert.is((await exited(sh)).code, 0);
      await proxy.closed(sibling, CURL, `${SERVER4}:${HTTP}`);
      await new Promise((res) => setTimeout(res, 300));
      // The curl in the left-out subtree (it ran first) reached the proxy not at all.
      const opens = proxy.lines("open");
      assert.is(opens.length, 1, proxy.out.all().join("\n"));
      assert.ok(opens[0].startsWith(`open tcp pid=${sibling} `), `${opens[0]} (left out: ${left})`);
    } finally {
      await proxy.quit();
    }
  });
}

e2e("a process tree's root PID reused on purpose by an unrelated process (in a PID namespace) is not intercepted", async () => {
  // The proxy in a PID namespace of its own (its init), where the next PID
  // can be chosen (ns_last_pid); the clients enter it with nsenter.
  const proxy = new Proxy(["unshare", "--pid", "--fork", "--mount-proc"]);
  const client = join(BIN, "wr_testclient");
  try {
    await proxy.up({});
    const outer = proxy.child.pid!;
    const inner = Number(readFileSync(`/proc/${outer}/task/${outer}/children`, "utf8").trim().split(/\s+/)[0]);
    const inNs = (script: string) => net.start(net.host, "nsenter", ["--target", String(inner), "--pid", "--mount", "sh", "-c", script]);
    // The tree's root: a shell that starts a client when told, then exits.
    const root = inNs(`echo "pid $$"; read go; ${client} tcp ${SERVER4} 80 1000 & echo "c $!"; wait $!; read go`);
    const rootLines = new Lines(root);
    const rootPid = Number((await rootLines.next((l) => l.startsWith("pid "))).slice(4));
    assert.is(await proxy.cmd(`config ${JSON.stringify({ intercept: `tree:${rootPid}` })}`), "ok");
    root.stdin!.write("go\n");
    const child = Number((await rootLines.next((l) => l.startsWith("c "))).slice(2));
    await proxy.closed(child, client, `${SERVER4}:80`);
    root.stdin!.write("go\n");
    assert.is((await exited(root)).code, 0);
    // Its PID taken by an unrelated client, created after the configuration
    // (well after: Linux gives start times in 10 ms clock ticks).
    await new Promise((res) => setTimeout(res, 200));
    const seen = proxy.out.count();
    const reuse = inNs(`echo ${rootPid - 1} > /proc/sys/kernel/ns_last_pid; ${client} tcp ${SERVER4} 80 1000 & ` +
      `echo "u $!"; grep NSpid /proc/$!/status; wait $!; echo "rc $?"`);
    const reuseLines = new Lines(reuse);
    const reused = Number((await reuseLines.next((l) => l.startsWith("u "))).slice(2));
    assert.is(reused, rootPid, "the unrelated client got the root's PID");
    assert.is(await reuseLines.next((l) => l.startsWith("rc ")), "rc 0", reuseLines.all().join("\n"));
    await proxy.noneOpenedSince(seen);
  } finally {
    await proxy.quit();
  }
});

e2e("waiting for the exit of a child that has already exited returns at once", async () => {
  const c = net.start(net.host, "true", []);
  while (c.exitCode === null) await new Promise((r) => setTimeout(r, 10));
  // Only now does the wait begin: it must not depend on an event that has passed.
  const t0 = Date.now();
  assert.is((await exited(c)).code, 0);
  assert.ok(Date.now() - t0 < 100);
}, 5_000);

e2e("a case past its limit fails at the limit, says what it waited for, and its processes are ended", async () => {
  let child: ReturnType<typeof net.start> | undefined;
  const t0 = Date.now();
  const err = await net.limited("a hung case", 500, async () => {
    child = net.start(net.host, "sleep", ["600"]);
    await exited(child);
  }).then(() => undefined, (e: Error) => e);
  assert.ok(err, "the hung case failed");
  assert.ok(Date.now() - t0 < 3_000, `failed after ${Date.now() - t0} ms`);
  assert.match(err!.message, /"a hung case" was still running after its limit of 0.5 s/);
  assert.match(err!.message, /the exit of ip netns exec \S+ sleep 600/);
  const { signal } = await exited(child!);
  assert.is(signal, "SIGKILL", "the case's process was killed");
}, 10_000);

e2e("inbound: a connection to an intercepted listener reaches the proxy, which learns the listener's port", async () => {
  const proxy = new Proxy();
  const listener = net.start(net.host, join(BIN, "wr_testserver"), [HOST4, "9000"]);
  try {
    await new Lines(listener).next((l) => l === "ready");
    // ip netns exec execs the command: the child's PID is the listener's.
    await proxy.up({ intercept_pids: [listener.pid], directions: ["inbound"] });
    const r = await client(net.net, ["tcp", HOST4, "9000", "100000"]);
    assert.ok(r.ok, r.out);
    const line = await proxy.out.next((l) => l.startsWith("close tcp"));
    assert.ok(line.includes(`dir=in dst=${HOST4}:9000`), line);
    assert.ok(line.includes(`client=${PEER4}:`), line);
    assert.ok(line.includes("up=100000 down=100000"), line);
  } finally {
    await proxy.quit();
    listener.kill("SIGKILL");
  }
});

/** A counter of the host namespace's /proc/net/netstat or /proc/net/snmp ("TcpExt", "OutOfWindowIcmps"). */
async function kernelCounter(file: "netstat" | "snmp", group: string, name: string): Promise<number> {
  const lines = (await net.run(net.host, "cat", [`/proc/net/${file}`])).stdout.split("\n").filter((l) => l.startsWith(group + ":"));
  const names = lines[0].split(/\s+/);
  return Number(lines[1].split(/\s+/)[names.indexOf(name)]);
}

e2e("inbound: a router's \"fragmentation needed\" about the proxy's segment reaches the proxy's socket", async () => {
  // The remote connects to the intercepted listener and pauses half way;
  // a router (a raw socket in the other namespace) says a segment the
  // proxy sent, as the network saw it (from the listener's port), was too
  // big. Conntrack relates the error to the connection, so it is queued;
  // translated, the kernel finds the proxy's socket (it counts the quoted
  // sequence number as out of its window) instead of no socket at all.
  const proxy = new Proxy();
  const listener = net.start(net.host, join(BIN, "wr_testserver"), [HOST4, "9000"]);
  try {
    await new Lines(listener).next((l) => l === "ready");
    await proxy.up({ intercept_pids: [listener.pid], directions: ["inbound"] });
    const c = net.start(net.net, join(BIN, "wr_testclient"), ["--pause", "3000", "tcp", HOST4, "9000", "200000"]);
    const out = new Lines(c);
    await out.next((l) => l === "half");
    const open = await proxy.out.next((l) => l.startsWith("open tcp") && l.includes("dir=in"));
    const port = Number(/client=[\d.]+:(\d+)/.exec(open)![1]);
    const segment = build({ proto: "tcp", src: { addr: HOST4, port: 9000 }, dst: { addr: PEER4, port }, flags: "PA",
      seq: 1, payload: new Uint8Array(1448) });
    const error = buildIcmp({ src: SERVER4, dst: HOST4, type: 3, code: 4, rest: 1280, body: segment.slice(0, 548) });
    const [outOfWindow, inErrors, rewritten] = [await kernelCounter("netstat", "TcpExt", "OutOfWindowIcmps"),
      await kernelCounter("snmp", "Icmp", "InErrors"), (await proxy.stats()).rewritten];
    const send = "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW); " +
      "s.sendto(bytes.fromhex(sys.argv[1]),(sys.argv[2],0))";
    const r = await net.run(net.net, "python3", ["-c", send, Buffer.from(error).toString("hex"), HOST4]);
    assert.is(r.status, 0, r.stderr);
    const deadline = Date.now() + 5000;
    while (await kernelCounter("netstat", "TcpExt", "OutOfWindowIcmps") === outOfWindow && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.is(await kernelCounter("netstat", "TcpExt", "OutOfWindowIcmps"), outOfWindow + 1, "the proxy's socket got the error");
    assert.is(await kernelCounter("snmp", "Icmp", "InErrors"), inErrors, "no error without a socket");
    assert.ok((await proxy.stats()).rewritten > rewritten, "the engine translated it");
    const { code } = await exited(c);
    assert.is(code, 0, out.all().join("\n"));
  } finally {
    await proxy.quit();
    listener.kill("SIGKILL");
  }
});

e2e("UDP, the proxy not listening: this host's port unreachable, translated, tells the client at once", async () => {
  // The client's datagram goes to the app port, where nothing listens; the
  // kernel's error quotes the rewritten datagram and must reach the client
  // as an error about its own (IPv4 and IPv6). (Before the floods below:
  // their echoed datagrams leave conntrack entries to SERVER4:80 on most
  // source ports, and a datagram on such a port starts no NEW connection.)
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    assert.is(await proxy.cmd("port 8097"), "ok");
    for (const server of [SERVER4, SERVER6]) {
      const t0 = Date.now();
      const r = await client(net.host, ["udp", server, "80", "100"]);
      const ms = Date.now() - t0;
      assert.not.ok(r.ok, `${server}: ${r.out}`);
      assert.ok(r.out.includes("fail answer Connection refused"), `${server}: ${r.out}`);
      assert.ok(ms < 3000, `${server}: refused after ${ms} ms`);
    }
  } finally {
    await proxy.quit();
  }
});

e2e("with '--ctstate INVALID -j DROP' in OUTPUT and INPUT everything still works", async () => {
  for (const t of ["iptables", "ip6tables"]) {
    for (const chain of ["OUTPUT", "INPUT"]) await net.run(net.host, t, ["-A", chain, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
  }
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    for (const [proto, server, bytes] of [["tcp", SERVER4, "5000000"], ["tcp", SERVER6, "5000000"], ["udp", SERVER4, "1200"], ["udp", SERVER6, "1200"]]) {
      const r = await client(net.host, [proto, server, "80", bytes]);
      assert.ok(r.ok, `${proto} ${server}: ${r.out}`);
    }
    assert.is((await linesOf(proxy, "close tcp", 2)).length, 2);
    assert.is((await linesOf(proxy, "udp ", 2)).length, 2);
  } finally {
    await proxy.quit();
    for (const t of ["iptables", "ip6tables"]) {
      for (const chain of ["OUTPUT", "INPUT"]) await net.run(net.host, t, ["-D", chain, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
    }
  }
});

e2e("a config change while a connection is open: it survives; new connections follow the new config", async () => {
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    const c = net.start(net.host, join(BIN, "wr_testclient"), ["--pause", "1500", "tcp", SERVER4, "80", "2000000"]);
    const lines = new Lines(c);
    await lines.next((l) => l === "half");
    assert.is(await proxy.cmd(`config ${JSON.stringify({ intercept: "nothing-matches" })}`), "ok");
    const r = await client(net.host, ["tcp", SERVER4, "80", "1000"]);
    assert.ok(r.ok, r.out);
    const { code } = await exited(c);
    assert.is(code, 0, lines.all().join("\n"));
    const closes = await linesOf(proxy, "close tcp", 1);
    await new Promise((r) => setTimeout(r, 200));
    assert.is(proxy.lines("close tcp").length, 1, "only the connection opened before the change went through the proxy");
    assert.ok(closes[0].includes("up=2000000 down=2000000"), closes[0]);
  } finally {
    await proxy.quit();
  }
});

e2e("a proxy that excludes its upstream sockets spares them the queue: one owner look-up per connection", async () => {
  for (const [exclude, queries] of [[false, 2], [true, 1]] as const) {
    const proxy = new Proxy();
    try {
      await proxy.up({ intercept: "wr_testclient" });
      if (exclude) assert.is(await proxy.cmd("exclude"), "ok");
      const r = await client(net.host, ["tcp", SERVER4, "80", "1000"]);
      assert.ok(r.ok, r.out);
      await linesOf(proxy, "close tcp", 1);
      const st = await proxy.stats();
      assert.is(st.queries, queries, `exclude=${exclude}: ${st.queries} owner look-ups`);
      assert.is(st.redirected, 1);
    } finally {
      await proxy.quit();
    }
  }
});

e2e("200 concurrent intercepted connections complete correctly", async () => {
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    const r = await client(net.host, ["tcp", SERVER4, "80", "100000", "200"]);
    assert.ok(r.ok, r.out);
    assert.is(r.out.split("\n").filter((l) => l === "ok 100000").length, 200);
    const st = await proxy.stats();
    assert.is(st.redirected, 200);
  } finally {
    await proxy.quit();
  }
});

e2e("stop: traffic flows directly again and no rule of ours is left", async () => {
  const proxy = new Proxy();
  await proxy.up({ intercept: "wr_testclient" });
  assert.ok((await rules()).includes("wredir7870-"), "rules while running");
  assert.is(await proxy.cmd("stop"), "ok");
  const after = await rules();
  assert.not.ok(after.includes("wredir"), after);
  const seen = proxy.out.count();
  const r = await client(net.host, ["tcp", SERVER4, "80", "100000"]);
  assert.ok(r.ok, r.out);
  assert.is(proxy.out.all().slice(seen).length, 0, "nothing reached the proxy");
  await proxy.quit();
});

e2e("the host killed with SIGKILL: new connections flow directly; the next start removes the stale rules", async () => {
  const proxy = new Proxy();
  await proxy.up({ intercept: "wr_testclient" });
  await proxy.kill();
  assert.ok((await rules()).includes("wredir7870-"), "the rules outlive the process");
  const t0 = Date.now();
  const r = await client(net.host, ["tcp", SERVER4, "80", "100000"]);
  assert.ok(r.ok, r.out);
  assert.ok(Date.now() - t0 < 1000, "direct at once (queue bypass)");
  const next = new Proxy();
  try {
    await next.up({ intercept: "wr_testclient" });
    const jumps = (await rules()).split("\n").filter((l) => l.includes("-j wredir7870-out"));
    assert.is(jumps.length, 2, "one jump per family, not two:\n" + jumps.join("\n"));
    const c = await client(net.host, ["tcp", SERVER4, "80", "1000"]);
    assert.ok(c.ok, c.out);
    assert.is((await linesOf(next, "close tcp", 1)).length, 1);
  } finally {
    await next.quit();
  }
  assert.not.ok((await rules()).includes("wredir"));
});

e2e("the engine trapping on purpose: packets pass, the engine is rebuilt, the restart is counted", async () => {
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    assert.is(await proxy.cmd("fault 2"), "ok");
    // The next batch traps: it passes as it is (this connection may go direct or be retried).
    await client(net.host, ["tcp", SERVER4, "80", "1000"]);
    const st = await proxy.stats();
    assert.is(st.restarts, 1);
    const r = await client(net.host, ["tcp", SERVER4, "80", "1000"]);
    assert.ok(r.ok, r.out);
    const again = await proxy.out.next((l) => l.startsWith("close tcp"), 5000);
    assert.ok(again.includes(`dst=${SERVER4}:80`), "redirected again after the rebuild");
  } finally {
    await proxy.quit();
  }
});

e2e("start failures say why: not root, iptables missing, the queue taken by another program", async () => {
  const cases: Array<[string[], string]> = [
    [["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], "run as root (or with CAP_NET_ADMIN)"],
    [["env", "PATH=/nonexistent"], "iptables not found"],
  ];
  for (const [prefix, why] of cases) {
    const p = new Proxy(prefix);
    try {
      assert.is(await p.cmd(`port ${APP}`), "ok");
      const r = await p.cmd("start");
      assert.ok(r.startsWith("err -2 ") && r.includes(why), `${prefix[0]}: ${r}`);
      assert.not.ok((await rules()).includes("wredir"), "nothing left behind");
    } finally {
      await p.quit();
    }
  }
  const first = new Proxy();
  const second = new Proxy();
  try {
    await first.up({ intercept: "wr_testclient" });
    assert.is(await second.cmd(`port ${APP + 1}`), "ok");
    const r = await second.cmd("start");
    assert.ok(r.startsWith("err -2 ") && r.includes("in use by another program"), r);
    assert.is(await second.cmd("queue 7871"), "ok");
    assert.is(await second.cmd("start"), "ok", "another queue number works");
    assert.is(await second.cmd("stop"), "ok");
    const c = await client(net.host, ["tcp", SERVER4, "80", "1000"]);
    assert.ok(c.ok, c.out);
    assert.is((await linesOf(first, "close tcp", 1)).length, 1, "the first one still redirects");
  } finally {
    await second.quit();
    await first.quit();
  }
});

// ---------------------------------------------------------------------------
// Hardening: floods, faults, loops. Sizes grow under npm run soak (WR_SOAK).

const FLOOD = process.env.WR_SOAK ? 1_000_000 : 100_000;

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

e2e(`floods of ${FLOOD} SYNs and ${FLOOD} UDP datagrams: memory stays flat, an intercepted connection still works`, async () => {
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    // Warm up the library's tables and the relay once.
    const w = await client(net.host, ["tcp", SERVER4, "80", "1000"]);
    assert.ok(w.ok, w.out);
    const rss0 = rssKiB(proxy.child.pid!);
    const t0 = Date.now();
    const floods = [
      net.run(net.host, join(BIN, "wr_flood"), ["syn", HOST4, SERVER4, "80", String(FLOOD)], { timeout: 600_000 }),
      net.run(net.host, join(BIN, "wr_flood"), ["udp", HOST4, SERVER4, "80", String(FLOOD)], { timeout: 600_000 }),
    ];
    // While the floods run: an intercepted connection still goes through.
    await new Promise((r) => setTimeout(r, 200));
    const during = await client(net.host, ["tcp", SERVER4, "80", "100000"]);
    const [syn, udp] = await Promise.all(floods);
    const seconds = (Date.now() - t0) / 1000;
    assert.ok(during.ok, during.out);
    assert.ok(syn.stdout.includes(`sent ${FLOOD}`), syn.stdout + syn.stderr);
    assert.ok(udp.stdout.includes(`sent ${FLOOD}`), udp.stdout + udp.stderr);
    const st = await proxy.stats();
    const rss1 = rssKiB(proxy.child.pid!);
    assert.ok(st.packets >= FLOOD, `the library saw the floods (${st.packets} packets)`);
    assert.ok(rss1 - rss0 < 16 * 1024, `memory grew by ${rss1 - rss0} KiB`);
    // (Their last packets may wait behind the flood's backlog in the queue.)
    const closes = await linesOf(proxy, "close tcp", 2, 60_000);
    assert.ok(closes.length === 2, `both intercepted connections relayed:\n${proxy.out.all().join("\n")}\n` +
      JSON.stringify(st));
    console.log(`figure flood-packets ${2 * FLOOD}\nfigure flood-seconds ${seconds.toFixed(1)}\n` +
      `figure flood-rss-growth-kib ${rss1 - rss0}`);
  } finally {
    await proxy.quit();
  }
}, (FLOOD / 100_000) * 120_000);

e2e("the proxy not listening: the client gets a prompt refusal, not a hang", async () => {
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    // Redirect to a port nothing listens on.
    assert.is(await proxy.cmd("port 8097"), "ok");
    const t0 = Date.now();
    const r = await client(net.host, ["tcp", SERVER4, "80", "1000"]);
    const ms = Date.now() - t0;
    assert.not.ok(r.ok);
    assert.ok(r.out.includes("Connection refused"), r.out);
    assert.ok(ms < 2000, `refused after ${ms} ms`);
    // Counted as refused (a RST from the app port), never as unanswered.
    await new Promise((res) => setTimeout(res, 1200));
    const st = await proxy.stats();
    assert.equal([st.syn_refused, st.syn_unanswered], [1, 0], JSON.stringify(st));
    const diag = await proxy.cmd("diag");
    assert.ok(diag.includes("redirected_syn_refused 1: app port 8097 answered redirected connections with a RST. " +
      "Likely: the proxy not listening on the app port in that family"), diag);
    assert.not.ok(diag.includes("redirected_syn_unanswered"), diag);
  } finally {
    await proxy.quit();
  }
});

e2e("a firewall dropping redirected SYNs to the app port: counted once as unanswered, and the diagnostics say so", async () => {
  const drop = ["INPUT", "-p", "tcp", "--dport", String(APP), "-j", "DROP"];
  await net.run(net.host, "iptables", ["-A", ...drop]);
  const proxy = new Proxy();
  let c: ReturnType<typeof net.start> | undefined;
  try {
    await proxy.up({ intercept: "wr_testclient" });
    c = net.start(net.host, join(BIN, "wr_testclient"), ["tcp", SERVER4, "80", "1000"]);
    // Waits (well within the case's limit, so a failure leaves no rule
    // behind for the next case) until the stats say `done`.
    const until = async (done: (st: Record<string, number>) => boolean) => {
      let st = await proxy.stats();
      for (const end = Date.now() + 10_000; !done(st) && Date.now() < end; st = await proxy.stats()) {
        await new Promise((res) => setTimeout(res, 100));
      }
      return st;
    };
    let st = await until((s) => s.syn_unanswered > 0);
    // The client's retransmissions go to the proxy too, and count no more.
    const rewritten = st.rewritten;
    st = await until((s) => s.rewritten > rewritten);
    assert.ok(st.rewritten > rewritten, "a retransmission was redirected");
    assert.equal([st.syn_unanswered, st.syn_refused, st.redirected], [1, 0, 1], JSON.stringify(st));
    const diag = await proxy.cmd("diag");
    assert.ok(diag.includes(`redirected_syn_unanswered 1: redirected connections got no answer from app port ${APP} ` +
      "within 1 s. Likely: a firewall rule (iptables, nftables: INPUT) dropping packets to the app port"), diag);
  } finally {
    if (c) {
      c.kill("SIGKILL");
      await exited(c);
    }
    await proxy.quit();
    await net.run(net.host, "iptables", ["-D", ...drop]);
  }
});

e2e("the proxy closing mid-stream: the client learns it at once", async () => {
  const proxy = new Proxy();
  try {
    await proxy.up({ intercept: "wr_testclient" });
    assert.is(await proxy.cmd("cut 100000"), "ok");
    const t0 = Date.now();
    const r = await client(net.host, ["tcp", SERVER4, "80", "5000000"]);
    const ms = Date.now() - t0;
    assert.not.ok(r.ok);
    assert.ok(/closed early|Connection reset/.test(r.out), r.out);
    assert.ok(ms < 5000, `noticed after ${ms} ms: ${r.out}`);
  } finally {
    await proxy.quit();
  }
});

e2e("no loops: with everything intercepted, or the proxy itself named, its own connections go out directly", async () => {
  for (const config of [{ intercept: "!nothing" }, { intercept: "wr_testproxy,wr_testclient" }]) {
    const proxy = new Proxy();
    try {
      await proxy.up(config);
      // Name the proxy's own PID too.
      const own = { ...config, intercept_pids: [proxy.child.pid] };
      assert.is(await proxy.cmd(`config ${JSON.stringify(own)}`), "ok");
      const r = await client(net.host, ["tcp", SERVER4, "80", "100000"]);
      assert.ok(r.ok, `${JSON.stringify(config)}: ${r.out}`);
      await new Promise((res) => setTimeout(res, 300));
      const opened = proxy.lines("open tcp");
      assert.is(opened.length, 1, `exactly the client's connection reached the proxy:\n${opened.join("\n")}`);
      assert.ok(opened[0].includes("wr_testclient"), opened[0]);
    } finally {
      await proxy.quit();
    }
  }
});

cases.after(() => {
  net.destroy();
});

cases.run();
