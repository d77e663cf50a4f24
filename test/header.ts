// What include/windows_redirector.h declares, for the tests that hold the
// built and installed libraries to it.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { root } from "./engine/harness.ts";

export const header = readFileSync(join(root, "include", "windows_redirector.h"), "utf8");

/** The names of the functions the header declares (its WINDOWS_REDIRECTOR_API lines), sorted. */
export const declared = [...header.matchAll(/^WINDOWS_REDIRECTOR_API\s+[\w\s*]+?\b(\w+)\s*\(/gm)].map((m) => m[1]).sort();
