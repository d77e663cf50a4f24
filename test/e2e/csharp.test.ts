// The C# sample's proxy mode end to end on Linux (suite csharp, root): mono
// runs `WindowsRedirectorSample.exe proxy PORT PID...` against build/linux in
// the test network's host namespace; intercepted wr_testclient processes
// there reach the "internet" server through it, and a direct connection to
// its port from the other namespace ("another machine") is closed unserved.
//
//   WR_CSHARP_EXE=build/test/csharp/WindowsRedirectorSample.exe tsx test/e2e/csharp.test.ts
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { join } from "node:path";
import { root } from "../engine/harness.ts";
import { HOST4, HOST6, Lines, PEER4, PEER6, SERVER4, SERVER6, TestNet } from "./netns.ts";

const BIN = join(root, "build", "linux");
const EXE = process.env.WR_CSHARP_EXE ?? join(root, "build", "test", "csharp", "WindowsRedirectorSample.exe");
const APP = 8080;
const net = TestNet.forThisRun("wrcs");

const server = net.start(net.net, join(BIN, "wr_testserver"), [SERVER4, "80", SERVER6, "80"]);
const serverReady = new Lines(server).next((l) => l === "ready");

/** A client started with --wait: its PID is known before it connects. */
async function waitingClient(args: string[]) {
  const c = net.start(net.host, join(BIN, "wr_testclient"), ["--wait", ...args]);
  const lines = new Lines(c);
  const pid = Number((await lines.next((l) => l.startsWith("pid "))).slice(4));
  return { pid, go: () => c.stdin!.write("go\n"), done: () => lines.next((l) => /^(ok|fail) /.test(l), 30_000) };
}

const cases = suite("C# sample proxy end to end");

cases("intercepted clients are relayed with their origin; direct connections from another namespace are closed unserved",
  async () => {
    await serverReady;
    await net.limited("the C# sample proxy", 90_000, async () => {
      const clients = [await waitingClient(["tcp", SERVER4, "80", "100000"]),
        await waitingClient(["tcp", SERVER6, "80", "100000"])];
      const proxy = net.start(net.host, "mono", [EXE, "proxy", String(APP), ...clients.map((c) => String(c.pid))],
        { env: { ...process.env, LD_LIBRARY_PATH: BIN } });
      const out = new Lines(proxy);
      let err = "";
      proxy.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
      await out.next((l) => l.startsWith("redirecting PIDs"), 30_000).catch((e: Error) => {
        throw new Error(`${e.message}\nstderr:\n${err}`);
      });

      // Intercepted by PID: relayed byte for byte, and the sample saw each
      // client's PID, program and original destination.
      for (const [c, dest] of [[clients[0], `${SERVER4}:80`], [clients[1], `[${SERVER6}]:80`]] as const) {
        c.go();
        const r = await c.done();
        assert.is(r, "ok 100000", `client ${c.pid} to ${dest}: ${r}\nproxy:\n${out.all().join("\n")}\n${err}`);
        const line = await out.next((l) => l.includes(`PID ${c.pid} (`), 5000);
        assert.ok(line.includes(`(${join(BIN, "wr_testclient")}) -> ${dest}`), line);
      }

      // Direct connections from "another machine" to the app port, IPv4 and
      // IPv6: accepted by the socket, then closed with nothing sent back and
      // nothing relayed.
      for (const [host, peer] of [[HOST4, PEER4], [HOST6, PEER6]]) {
        const r = await net.run(net.net, join(BIN, "wr_testclient"), ["tcp", host, String(APP), "1000"], { timeout: 30_000 });
        assert.ok(r.status !== 0 && /^fail closed early got=0 of 1000 /m.test(r.stdout),
          `a direct connection to ${host} was not closed unserved: ${r.stdout}${r.stderr}`);
        const line = await out.next((l) => l.includes(`${peer}]:`) && l.includes("connected to the port directly (not redirected): closed"), 5000);
        assert.ok(line, line);
      }
      const relayed = out.all().filter((l) => / PID \d+ \(/.test(l));
      assert.is(relayed.length, 2, `only the intercepted clients were relayed:\n${relayed.join("\n")}`);
      proxy.kill("SIGKILL");
    });
  });

cases.after(() => {
  net.destroy();
});

cases.run();
