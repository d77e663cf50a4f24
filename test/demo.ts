// `npm run demo`: shows the library's life cycle on Linux (in a network
// namespace of its own when root) and the same calls as a Windows program
// under wine, where start fails because WinDivert is absent.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { root } from "../build/build.ts";

const isRoot = process.getuid?.() === 0;
const lin = join(root, "build", "linux", "demo_lifecycle");
console.log("--- Linux ---");
const r = isRoot ? spawnSync("unshare", ["-n", lin], { stdio: "inherit" }) : spawnSync(lin, [], { stdio: "inherit" });
console.log("\n--- Windows (wine, no WinDivert installed) ---");
const w = spawnSync(join(root, "build", "wine-run.sh"), [join(root, "build", "windows", "demo_lifecycle.exe")], {
  stdio: "inherit",
  cwd: join(root, "build", "windows"),
});
process.exit(r.status === 0 && w.status === 0 ? 0 : 1);
