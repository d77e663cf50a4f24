// Every uvu suite of the engine, in one process: uvu prints one summary for
// all of them. They need build/engine.wasm only.
import "./config.test.ts";
import "./policy.test.ts";
import "./tree.test.ts";
import "./scope.test.ts";
import "./contract.test.ts";
import "./wire.test.ts";
import "./redirect.test.ts";
import "./exclude.test.ts";
import "./listeners.test.ts";
import "./icmp.test.ts";
import "./properties.test.ts";
import "./fuzz.test.ts";
