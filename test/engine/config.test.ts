// The configuration parser: accepted shapes, every rejection with its field
// named, UTF-8 rules, and the policy a config puts in force.
import { test } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { Engine } from "./harness.ts";

const ok = (e: Engine, json: string | Uint8Array) => {
  const r = e.config(json);
  assert.is(r.rc, 0, `accepted: ${typeof json === "string" ? json : "(bytes)"}: ${r.error}`);
};

const bad = (e: Engine, json: string | Uint8Array, rc: number, mention: string) => {
  const r = e.config(json);
  assert.is(r.rc, rc, `rc for ${typeof json === "string" ? json : "(bytes)"}: ${r.error}`);
  assert.ok(r.error.includes(mention), `error "${r.error}" should mention "${mention}"`);
};

test("the seed's config shape is accepted and applied", () => {
  const e = new Engine();
  ok(e, `{"intercept_pids": [1234, 5678], "description": "Intercept processes 1234 and 5678"}`);
  assert.ok(e.wouldIntercept(1234));
  assert.ok(e.wouldIntercept(5678));
  assert.not.ok(e.wouldIntercept(1235));
});

test("Go's encoding of a nil slice (null) means no PIDs", () => {
  const e = new Engine();
  ok(e, `{"intercept_pids":null,"description":""}`);
  assert.not.ok(e.wouldIntercept(1));
});

test("eng_protocols: the protocols the configuration in force intercepts (the host's start check)", () => {
  const e = new Engine();
  assert.is(e.x.eng_protocols(), 3, "both by default");
  ok(e, `{"protocols":["tcp"]}`);
  assert.is(e.x.eng_protocols(), 1);
  ok(e, `{"protocols":["udp"]}`);
  assert.is(e.x.eng_protocols(), 2);
  bad(e, `{"protocols":["tcp","sctp"]}`, -2, "protocols[1]");
  assert.is(e.x.eng_protocols(), 2, "a rejected config changes nothing");
});

test("each accepted config bumps the generation; a rejected one does not", () => {
  const e = new Engine();
  const g0 = e.x.eng_config_generation();
  ok(e, "{}");
  assert.is(e.x.eng_config_generation(), g0 + 1);
  bad(e, "{", -2, "end of input");
  assert.is(e.x.eng_config_generation(), g0 + 1);
});

test("a rejected config leaves the old one in force", () => {
  const e = new Engine();
  ok(e, `{"intercept_pids":[7]}`);
  bad(e, `{"intercept_pids":[8],"ports":[70000]}`, -2, "ports[0]");
  assert.ok(e.wouldIntercept(7));
  assert.not.ok(e.wouldIntercept(8));
});

const rejections: Array<[string, string]> = [
  [``, "empty"],
  [`null`, "got null"],
  [`{"intercept_pids":{}}`, "intercept_pids: expected an array of process IDs, got an object"],
  [`{"intercept_pids":[1,"2"]}`, "intercept_pids[1]"],
  [`{"intercept_pids":[0.5]}`, "got 0.5"],
  [`{"intercept_pids":[1,]}`, "expected a value"],
  [`{"intercept_pids":[1] "x":1}`, "expected ',' or '}'"],
  [`{"description":[]}`, "description: expected a string, got an array"],
  [`{"intercept":5}`, "intercept: expected a comma-separated string"],
  [`{"intercept":["ok",""]}`, "intercept[1]: empty entry"],
  [`{"intercept":"!  "}`, "'!' must be followed"],
  [`{"protocols":["tcp","sctp"]}`, "protocols[1]"],
  [`{"protocols":"tcp,,udp"}`, "protocols"],
  [`{"directions":["sideways"]}`, "directions[0]"],
  [`{"ports":["80-"]}`, "ports[0]"],
  [`{"ports":[65536]}`, "ports[0]"],
  [`{"exclude_ports":[-5]}`, "exclude_ports[0]"],
  [`{"destinations":["1.2.3/8"]}`, "not an IPv4 address"],
  [`{"destinations":["01.2.3.4"]}`, "not an IPv4 address"],
  [`{"destinations":["1.2.3.4/"]}`, "bad prefix length"],
  [`{"destinations":["1:2:3:4:5:6:7:8:9"]}`, "not an IPv6 address"],
  [`{"destinations":[":1"]}`, "not an IPv6 address"],
  [`{"destinations":["1:"]}`, "not an IPv6 address"],
  [`{"exclude_destinations":["::1/200"]}`, "prefix length too long"],
  [`{"bypass":"loopback"}`, "bypass: expected an array"],
  [`{"max_flows":1048577}`, "max_flows"],
  [`{"hold_timeout_ms":60001}`, "hold_timeout_ms"],
  [`{"max_held_packets":-1}`, "max_held_packets"],
  [`{"tcp_idle_timeout_ms":999}`, "tcp_idle_timeout_ms"],
  [`{"udp_idle_timeout_ms":"1000"}`, "udp_idle_timeout_ms"],
  [`{"description":"a","description":"b"}`, "description: given more than once"],
  [`{"a":"\\q"}`, "invalid escape"],
  [`{"a":"\\u12G4"}`, "four hex digits"],
  [`{"a":"tab\there"}`, "control character"],
  [`{"a":-}`, "a number"],
  [`{"a":1.}`, "decimal point"],
  [`{"a":1e}`, "exponent"],
  [`{} x`, "unexpected text after"],
];

test("every rejection names what was wrong", () => {
  const e = new Engine();
  for (const [json, mention] of rejections) bad(e, json, -2, mention);
});

test("syntax errors give line and column", () => {
  const e = new Engine();
  bad(e, `{\n  "intercept_pids": [1,\n  2,,\n]}`, -2, "line 3, column 5");
});

test("text that is not UTF-8 is -3, not -2", () => {
  const e = new Engine();
  for (const bytes of [[0xff], [0xc0, 0xaf], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]]) {
    const json = Buffer.concat([Buffer.from(`{"description":"`), Buffer.from(bytes), Buffer.from(`"}`)]);
    bad(e, json, -3, "UTF-8");
  }
  bad(e, `{"d":"\\ud800"}`, -3, "surrogate");
  bad(e, `{"d":"\\udfff\\ud800"}`, -3, "surrogate");
  ok(e, `{"d":"\\ud83d\\ude00 ☃ é"}`);
});

test("addresses in every RFC 4291 text form", () => {
  const e = new Engine();
  for (const a of ["::", "::1", "1::", "fd00::/8", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8",
    "::ffff:192.0.2.1", "64:ff9b::192.0.2.33/96", "FE80::1/10", "0.0.0.0/0", "255.255.255.255"]) {
    ok(e, JSON.stringify({ destinations: [a] }));
  }
  for (const a of ["1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", "::ffff:1.2.3", "1.2.3.4.5", "1.2.3.256", "g::", ""]) {
    bad(e, JSON.stringify({ destinations: [a] }), -2, "destinations[0]");
  }
});

test("deep nesting is refused without exhausting the stack", () => {
  const e = new Engine();
  bad(e, `{"a":${"[".repeat(5000)}${"]".repeat(5000)}}`, -2, "nesting deeper than 1024");
  ok(e, `{"a":${"[".repeat(1000)}${"]".repeat(1000)}}`);
});

test("property: any JSON value under an unknown key is accepted", () => {
  const e = new Engine();
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => {
      const r = e.config(JSON.stringify({ extra: v, intercept_pids: [3] }));
      return r.rc === 0 && e.wouldIntercept(3);
    }),
    { numRuns: 300 },
  );
});

test("property: intercept_pids round-trips any list of u32", () => {
  const e = new Engine();
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 50 }), (pids) => {
      if (e.config(JSON.stringify({ intercept_pids: pids })).rc !== 0) return false;
      return pids.every((p) => p === 0 || p === 1000 || e.wouldIntercept(p));
    }),
    { numRuns: 200 },
  );
});

test("property: truncations and byte flips never trap and give only documented codes", () => {
  const e = new Engine();
  const base = Buffer.from(JSON.stringify({
    intercept_pids: [1, 2], description: "é\u2603", intercept: "curl,!5", ports: [80, "1-9"],
    destinations: ["198.18.0.0/15", "fd00::/8"], bypass: ["dhcp"], max_flows: 4096,
  }));
  fc.assert(
    fc.property(fc.nat(base.length), fc.array(fc.tuple(fc.nat(base.length - 1), fc.nat(255)), { maxLength: 4 }),
      (cut, flips) => {
        const b = Buffer.from(base.subarray(0, cut));
        for (const [i, v] of flips) if (i < b.length) b[i] = v;
        const r = e.config(b);
        return r.rc === 0 || r.rc === -2 || r.rc === -3;
      }),
    { numRuns: 2000 },
  );
});

test("an armed fault traps the next config call, as a Wasm trap", () => {
  const e = new Engine();
  e.x.eng_arm_fault(1);
  assert.throws(() => e.config("{}"), (err: unknown) => err instanceof WebAssembly.RuntimeError);
});

test.run();
