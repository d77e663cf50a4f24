// `npm run demo`: the library redirecting a real program's traffic.
//
// Two network namespaces stand in for "this machine" and "the internet" (an
// HTTP server on 198.19.0.10 and fd00:198:19::10). On this machine the Go
// example proxy (go/cmd/redirect-proxy) intercepts every `curl`: curl's
// connections go to the proxy, which asks the library where they were
// going, connects there, relays, and prints what it saw. A Python client is
// not intercepted and goes direct. Everything is removed at the end.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { root } from "../build/build.ts";
import { exited, Lines, SERVER4, SERVER6, TestNet } from "./e2e/netns.ts";

const PORT = 8080;

function say(s = ""): void {
  process.stdout.write(s + "\n");
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    say("The demo needs root: it creates network namespaces and NFQUEUE rules (run it as root).");
    return 1;
  }
  const proxyBin = join(root, "build", "linux", "redirect-proxy");
  execFileSync("go", ["build", "-o", proxyBin, "./cmd/redirect-proxy"], {
    cwd: join(root, "go"),
    env: { ...process.env, GOPROXY: "off", GOFLAGS: "-mod=mod", CGO_ENABLED: "1" },
    stdio: "inherit",
  });
  const www = mkdtempSync(join(tmpdir(), "wrdemo-www-"));
  writeFileSync(join(www, "hello.txt"), "hello from the internet\n");

  TestNet.removeStale("wrdemo");
  const net = new TestNet("wrdemo").create();
  const cleanup = () => {
    net.destroy();
    rmSync(www, { recursive: true, force: true });
  };
  process.on("SIGINT", () => {
    cleanup();
    process.exit(1);
  });
  try {
    say("windows-redirector demo on Linux (NFQUEUE): two network namespaces");
    say(`  ${net.host}: this machine, where the proxy and the clients run`);
    say(`  ${net.net}: "the internet", an HTTP server on ${SERVER4} and [${SERVER6}] port 80`);
    say();
    for (const addr of [SERVER4, SERVER6]) {
      const s = net.start(net.net, "python3", ["-m", "http.server", "80", "--bind", addr, "--directory", www]);
      s.stdout!.resume();
      s.stderr!.resume();
    }
    const proxy = net.start(net.host, proxyBin, ["--port", String(PORT), "--process", "curl"]);
    const out = new Lines(proxy);
    proxy.stderr!.setEncoding("utf8");
    let errText = "";
    proxy.stderr!.on("data", (d: string) => (errText += d));
    say(`$ redirect-proxy --port ${PORT} --process curl      (the Go example, on this machine)`);
    try {
      say("  " + (await out.next((l) => l.includes("Ctrl-C"), 15_000)));
    } catch {
      say(`the proxy did not start:\n${errText}`);
      return 1;
    }
    // Wait for the HTTP servers, asking from their own namespace (nothing is
    // intercepted there).
    for (const url of [`http://${SERVER4}/`, `http://[${SERVER6}]/`]) {
      for (let i = 0; i < 50; i++) {
        if ((await net.run(net.net, "curl", ["-s", "-g", "-o", "/dev/null", "--noproxy", "*", url])).status === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const clients: Array<[string, string, string[]]> = [
      ["curl (intercepted)", "curl", ["-s", "--noproxy", "*", `http://${SERVER4}/hello.txt`]],
      ["curl over IPv6 (intercepted)", "curl", ["-s", "-g", "--noproxy", "*", `http://[${SERVER6}]/hello.txt`]],
      ["python3 (not intercepted)", "python3", ["-c",
        `import urllib.request as u; print(u.urlopen("http://${SERVER4}/hello.txt").read().decode(), end="")`]],
    ];
    say();
    let ok = true;
    for (const [what, cmd, args] of clients) {
      const r = await net.run(net.host, cmd, args, { timeout: 20_000 });
      const answer = r.stdout.trim();
      say(`$ ${cmd} ${args[args.length - 1].startsWith("import") ? "-c <urllib GET>" : args[args.length - 1]}`);
      say(`  ${what}: ${r.status === 0 ? JSON.stringify(answer) : "FAILED " + r.stderr.trim()}`);
      ok &&= r.status === 0 && answer === "hello from the internet";
    }
    // The proxy prints a line per connection when it closes; then stop it.
    await new Promise((r) => setTimeout(r, 500));
    proxy.kill("SIGINT");
    await exited(proxy);
    say();
    say("What the proxy saw (one line per connection: time, protocol, process (PID), original destination, bytes):");
    for (const l of out.all().slice(1)) say("  " + l);
    const seen = out.all().filter((l) => / TCP .*curl \(\d+\)/.test(l));
    const direct = out.all().filter((l) => l.includes("python3"));
    ok &&= seen.length === 2 && direct.length === 0;
    say();
    say(ok
      ? "Both curl connections went through the proxy, which learned their original destinations; python3 went direct."
      : "The demo did not go as expected (see above).");
    return ok ? 0 : 1;
  } finally {
    say("Removing the namespaces and rules... done.");
    cleanup();
  }
}

main().then((code) => process.exit(code), (e) => {
  console.error(e);
  process.exit(1);
});

