// Every uvu suite of the engine and the build, in one process: uvu prints one
// summary for all of them.
import "./config.test.ts";
import "./policy.test.ts";
import "./contract.test.ts";
import "./wire.test.ts";
import "./redirect.test.ts";
import "./properties.test.ts";
import "./fuzz.test.ts";
import "../build.test.ts";
