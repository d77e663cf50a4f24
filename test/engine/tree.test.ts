// Process trees ("tree:" entries, intercept_trees): the configuration's
// syntax and errors, and the semantics, as tables over ancestries the host
// hands the engine (the process itself first, then its parent as it was at
// the process's creation, and so on).
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { Engine, PacketEngine, V_HELD, V_MODIFIED, V_PASS, O_BIND, O_CONNECT, ancestry, type Proc } from "./harness.ts";
import { build } from "./packets.ts";
import { decode, encode } from "./records.ts";

const SELF = 1000;
const CONFIG_AT = 100_000; // the engine clock (ms) when the configuration is set

// A small process tree, created long before the configuration (age 50 s)
// unless said otherwise:
//   init 1 -> agent 10 (/opt/agent) -> sh 20 (/bin/sh) -> curl 30, sh 40 -> curl 50
//                                   -> other 60 (/usr/bin/curl)
const p = (pid: number, path: string, ctime = pid * 7, age = 50_000): Proc => ({ pid, ctime, age, path });
const INIT = p(1, "/sbin/init");
const AGENT = p(10, "/opt/agent");
const SH = p(20, "/bin/sh");
const CURL = p(30, "/usr/bin/curl");
const SUB = p(40, "/bin/sh");
const GRAND = p(50, "/usr/bin/curl");
const OTHER = p(60, "/usr/bin/curl");

const chains: Record<string, Proc[]> = {
  init: [INIT],
  agent: [AGENT, INIT],
  sh: [SH, AGENT, INIT],
  curl: [CURL, SH, AGENT, INIT],
  sub: [SUB, SH, AGENT, INIT],
  grand: [GRAND, SUB, SH, AGENT, INIT],
  other: [OTHER, AGENT, INIT],
};

function configured(json: object, now = CONFIG_AT): Engine {
  const e = new Engine(SELF);
  const r = e.config(JSON.stringify(json), now);
  if (r.rc !== 0) throw new Error(r.error);
  return e;
}

const spec = suite("process trees: the spec, as a table");

// [intercept, intercept_trees, processes intercepted (the others are not)]
const table: Array<[string | Array<string | number>, number[], string[]]> = [
  // A PID's tree: itself and every descendant, not its parent or siblings' trees.
  ["tree:20", [], ["sh", "curl", "sub", "grand"]],
  [["tree:20"], [], ["sh", "curl", "sub", "grand"]],
  ["", [20], ["sh", "curl", "sub", "grand"]],
  ["TREE:20", [], ["sh", "curl", "sub", "grand"]],
  ["tree: 20", [], ["sh", "curl", "sub", "grand"]],
  // A plain PID is that process only.
  ["20", [], ["sh"]],
  // A pattern's tree: every process under any process that matches.
  ["tree:agent", [], ["agent", "sh", "curl", "sub", "grand", "other"]],
  ["tree:/bin/sh", [], ["sh", "curl", "sub", "grand"]],
  // A plain pattern: every curl, in the tree or not.
  ["curl", [], ["curl", "grand", "other"]],
  // The tree AND the pattern: curl processes under sh 20 only.
  ["tree:20,!sh", [], ["curl", "grand"]],
  // Subtree exclude inside an included subtree.
  ["tree:10,!tree:40", [], ["agent", "sh", "curl", "other"]],
  ["tree:agent,!tree:20", [], ["agent", "other"]],
  // Entry order: a later include takes back what an earlier exclude left out.
  ["tree:10,!tree:20,50", [], ["agent", "other", "grand"]],
  ["tree:10,!tree:20,tree:40", [], ["agent", "other", "sub", "grand"]],
  // ... and an exclude after an include takes out what it names.
  ["tree:40,!tree:10", [], []],
  ["!tree:20", [], ["init", "agent", "other"]],
  // intercept_trees are includes after the spec's entries.
  ["!tree:10", [40], ["init", "sub", "grand"]],
];

spec("each spec against every process of the tree", () => {
  for (const [intercept, trees, want] of table) {
    const e = configured({ intercept, intercept_trees: trees });
    for (const [name, chain] of Object.entries(chains)) {
      assert.is(e.wouldInterceptTree(chain, CONFIG_AT + 10), want.includes(name),
        `${JSON.stringify(intercept)} + ${JSON.stringify(trees)}: ${name}`);
    }
  }
});

spec("a process whose parent exited keeps its membership, and so do the processes it starts later", () => {
  const e = configured({ intercept: "tree:20" });
  // The sub-shell is seen while sh 20 lives...
  assert.ok(e.wouldInterceptTree(chains.sub, CONFIG_AT + 10));
  // ...then sh exits: the sub-shell is re-parented to init, and a curl it
  // starts afterwards lists init as its grandparent.
  const late = p(70, "/usr/bin/curl", 70 * 7, 0);
  assert.ok(e.wouldInterceptTree([late, SUB, INIT], CONFIG_AT + 5000), "grandchild after the root exited");
  assert.ok(e.wouldInterceptTree([SUB, INIT], CONFIG_AT + 5000), "the re-parented sub-shell itself");
  // An orphan the engine never saw with its first parent is not in the tree.
  const stranger = p(80, "/bin/sh");
  assert.not.ok(e.wouldInterceptTree([p(81, "/usr/bin/curl", 81 * 7, 0), stranger, INIT], CONFIG_AT + 5000));
});

spec("membership is decided once per identity: the parent first listed is the one kept", () => {
  const e = configured({ intercept: "tree:20" });
  assert.ok(e.wouldInterceptTree(chains.curl, CONFIG_AT + 10));
  // The same identity listed later with another parent (re-parented).
  assert.ok(e.wouldInterceptTree([CURL, INIT], CONFIG_AT + 20));
  // Not in the tree at first: a later listing under a member does not move it.
  const outside = p(90, "/usr/bin/wget");
  assert.not.ok(e.wouldInterceptTree([outside, INIT], CONFIG_AT + 30));
  assert.not.ok(e.wouldInterceptTree([outside, SH, AGENT, INIT], CONFIG_AT + 40));
});

spec("a reused PID is not a member: another creation time is another process", () => {
  const e = configured({ intercept: "tree:20" });
  assert.ok(e.wouldInterceptTree(chains.sub, CONFIG_AT + 10));
  // PID 40 reused by an unrelated process (another creation time) whose
  // parent is init: not the member sub-shell.
  const reused = p(40, "/bin/sh", 999_999, 0);
  assert.not.ok(e.wouldInterceptTree([reused, INIT], CONFIG_AT + 6000), "the reused PID");
  assert.not.ok(e.wouldInterceptTree([p(91, "/usr/bin/curl", 91 * 7, 0), reused, INIT], CONFIG_AT + 6000),
    "a child of the reused PID");
  // The old identity keeps its answer.
  assert.ok(e.wouldInterceptTree([SUB, INIT], CONFIG_AT + 6000));
});

spec("a tree's root PID names the process that had it when the configuration was set", () => {
  const e = configured({ intercept: "tree:20" });
  // sh 20 exits before the engine ever sees it; PID 20 goes to a process
  // created after the configuration (age 1 s, 5 s after it): not the root.
  const reused = p(20, "/usr/bin/python3", 123_456, 1000);
  assert.not.ok(e.wouldInterceptTree([reused, INIT], CONFIG_AT + 5000), "the reused root PID");
  assert.not.ok(e.wouldInterceptTree([p(92, "/usr/bin/curl", 92 * 7, 0), reused, INIT], CONFIG_AT + 5000),
    "its child");
  // Created before the configuration (age 6 s, 5 s after it): the root.
  const root = p(20, "/bin/sh", 654_321, 6000);
  assert.ok(e.wouldInterceptTree([p(93, "/usr/bin/curl", 93 * 7, 0), root, INIT], CONFIG_AT + 5000));
  // An age not known: not taken for the root.
  const unknown = p(20, "/bin/sh", 111, -1);
  assert.not.ok(e.wouldInterceptTree([unknown, INIT], CONFIG_AT + 5000));
  // A plain PID entry keeps its meaning: whichever process has the PID.
  const plain = configured({ intercept: "20", intercept_pids: [21] });
  assert.ok(plain.wouldInterceptTree([reused, INIT], CONFIG_AT + 5000));
  assert.ok(plain.wouldInterceptTree([p(21, "/x", 5, 0), INIT], CONFIG_AT + 5000));
});

spec("host clock readings arriving out of order do not push the engine's clock ahead", () => {
  // Two host threads read the clock (a 16 ms tick) before they take the
  // engine's lock: their readings may arrive out of order. Counting each
  // step back as none must not count the next step forward twice, or the
  // clock runs ahead and a root created before the configuration looks
  // created after it.
  const e = configured({ intercept: "tree:20" });
  let t = CONFIG_AT;
  for (let i = 0; i < 100; i++) {
    e.wouldInterceptTree([p(500 + i, "/usr/bin/x"), INIT], t + 16);
    e.wouldInterceptTree([p(700 + i, "/usr/bin/x"), INIT], t);
    t += 16;
  }
  const now = t + 16;
  // sh 20, created 5 ms before the configuration, first seen now.
  assert.ok(e.wouldInterceptTree([p(20, "/bin/sh", 1234, now - (CONFIG_AT - 5)), INIT], now), "the root");
  // And one created 5 ms after it is still not the root.
  const f = configured({ intercept: "tree:20" });
  assert.not.ok(f.wouldInterceptTree([p(20, "/bin/sh", 1234, now - (CONFIG_AT + 5)), INIT], now), "a later PID 20");
});

spec("a process that exec()s another program is decided again as that program; its earlier children keep theirs", () => {
  // Linux: same PID and start time (the identity), another executable. Seen
  // first as the shell it was forked as, then as curl.
  const forked = p(77, "/bin/sh", 777, 10);
  const execed = { ...forked, path: "/usr/bin/curl" };
  const e = configured({ intercept: "tree:curl" });
  assert.not.ok(e.wouldInterceptTree([forked, INIT], CONFIG_AT + 10), "before exec: not curl");
  const early = p(78, "/usr/bin/x", 778, 5); // started by the shell, before the exec
  assert.not.ok(e.wouldInterceptTree([early, forked, INIT], CONFIG_AT + 15));
  assert.ok(e.wouldInterceptTree([execed, INIT], CONFIG_AT + 20), "after exec: curl, the tree's root");
  assert.ok(e.wouldInterceptTree([p(79, "/usr/bin/x", 779, 1), execed, INIT], CONFIG_AT + 30), "a child curl starts");
  assert.not.ok(e.wouldInterceptTree([early, forked, INIT], CONFIG_AT + 40), "the shell's child keeps its answer");
  // The same for an exclusion: "!tree:curl" takes out the exec()ed curl.
  const x = configured({ intercept: "tree:1,!tree:curl" });
  assert.ok(x.wouldInterceptTree([forked, INIT], CONFIG_AT + 10));
  assert.not.ok(x.wouldInterceptTree([execed, INIT], CONFIG_AT + 20), "curl is excluded");
  // An owner fact with the new path decides its connection the same way.
  const f = PacketEngine.started({ intercept: "tree:curl" }, { self: SELF, appPort: 8080, now: CONFIG_AT });
  assert.not.ok(f.wouldInterceptTree([forked, INIT], CONFIG_AT + 10));
  const C = { addr: "10.0.0.2", port: 40001 };
  const D = { addr: "198.18.0.10", port: 80 };
  assert.is(f.process([{ data: build({ proto: "tcp", src: C, dst: D, flags: "S" }), outbound: true }], CONFIG_AT + 20)[0]
    .verdict, V_HELD);
  f.owner(O_CONNECT, "tcp", C, D, execed.pid, execed.path, CONFIG_AT + 20, [execed, INIT]);
  assert.is(f.released()[0].verdict, V_MODIFIED, "curl's connection");
});

spec("a parent that exec()ed another program since it was decided is decided again for the children it starts", () => {
  // Linux: the host may list a process between its fork and its exec()
  // (a shell about to run a launcher): it is decided as the shell; its
  // child, started by the launcher, comes with the launcher's path for it.
  const forked = p(90, "/bin/sh", 900, 10); // forked by sh 20
  const launcher = { ...forked, path: "/opt/wrinner" };
  const early = p(91, "/usr/bin/x", 910, 8); // started by the shell, before the exec
  const curl = p(92, "/usr/bin/curl", 920, 1); // started by the launcher
  // A subtree left out by the launcher's pattern.
  const x = configured({ intercept: "tree:20,!tree:wrinner" });
  assert.ok(x.wouldInterceptTree([forked, SH, AGENT, INIT], CONFIG_AT + 10), "the fork: a shell in 20's tree");
  assert.ok(x.wouldInterceptTree([early, forked, SH, AGENT, INIT], CONFIG_AT + 15), "the shell's child");
  assert.not.ok(x.wouldInterceptTree([curl, launcher, SH, AGENT, INIT], CONFIG_AT + 20), "the launcher's child is left out");
  assert.not.ok(x.wouldInterceptTree([launcher, SH, AGENT, INIT], CONFIG_AT + 30), "the launcher itself");
  assert.ok(x.wouldInterceptTree([early, launcher, SH, AGENT, INIT], CONFIG_AT + 40), "the shell's child keeps its answer");
  assert.not.ok(x.wouldInterceptTree([p(93, "/usr/bin/curl", 930, 1), launcher, SH, AGENT, INIT], CONFIG_AT + 50),
    "a later child of the launcher");
  // A tree the launcher's pattern roots, the fork seen outside it first.
  const y = configured({ intercept: "tree:wrinner" });
  assert.not.ok(y.wouldInterceptTree([forked, SH, AGENT, INIT], CONFIG_AT + 10), "the fork: not the launcher yet");
  assert.not.ok(y.wouldInterceptTree([early, forked, SH, AGENT, INIT], CONFIG_AT + 15), "the shell's child");
  assert.ok(y.wouldInterceptTree([curl, launcher, SH, AGENT, INIT], CONFIG_AT + 20), "the launcher's child is in its tree");
  assert.not.ok(y.wouldInterceptTree([early, launcher, SH, AGENT, INIT], CONFIG_AT + 30), "the shell's child keeps its answer");
  // A grandparent that exec()ed: the child's parent is decided again from it.
  const z = configured({ intercept: "tree:20,!tree:wrinner" });
  const mid = p(94, "/bin/sh", 940, 1); // started by the launcher, never seen before
  assert.ok(z.wouldInterceptTree([forked, SH, AGENT, INIT], CONFIG_AT + 10));
  assert.not.ok(z.wouldInterceptTree([curl, mid, launcher, SH, AGENT, INIT], CONFIG_AT + 20), "under the launcher, two deep");
  // The same through an owner fact: the launcher's curl's connection goes direct.
  const f = PacketEngine.started({ intercept: "tree:20,!tree:wrinner" }, { self: SELF, appPort: 8080, now: CONFIG_AT });
  assert.ok(f.wouldInterceptTree([forked, SH, AGENT, INIT], CONFIG_AT + 10));
  const C = { addr: "10.0.0.2", port: 40011 };
  const D = { addr: "198.18.0.10", port: 80 };
  assert.is(f.process([{ data: build({ proto: "tcp", src: C, dst: D, flags: "S" }), outbound: true }], CONFIG_AT + 20)[0]
    .verdict, V_HELD);
  f.owner(O_CONNECT, "tcp", C, D, curl.pid, curl.path!, CONFIG_AT + 20, [curl, launcher, SH, AGENT, INIT]);
  assert.is(f.released()[0].verdict, V_PASS, "the launcher's curl");
});

spec("a new configuration decides again, from the parents remembered", () => {
  const e = configured({ intercept: "tree:20" });
  assert.ok(e.wouldInterceptTree(chains.sub, CONFIG_AT + 10));
  assert.is(e.config(JSON.stringify({ intercept: "tree:20,!tree:40" }), CONFIG_AT + 100).rc, 0);
  // sh 20 gone, the sub-shell re-parented: its remembered parent is a member, it is excluded.
  assert.not.ok(e.wouldInterceptTree([SUB, INIT], CONFIG_AT + 200));
  assert.not.ok(e.wouldInterceptTree([CURL, INIT], CONFIG_AT + 200), "curl 30 was never seen: an orphan now");
  assert.ok(e.wouldInterceptTree([p(31, "/usr/bin/curl"), SH, AGENT, INIT], CONFIG_AT + 200), "a child of sh 20");
});

spec("no ancestry (redirector_would_intercept, a backend without one): a process is in the trees it roots", () => {
  const e = configured({ intercept: "tree:20,tree:agent" });
  assert.ok(e.wouldIntercept(20, "/bin/sh"));
  assert.ok(e.wouldIntercept(11, "/opt/agent"));
  assert.not.ok(e.wouldIntercept(30, "/usr/bin/curl"));
});

const syntax = suite("process trees: syntax and errors");

syntax("ambiguous and malformed entries are refused, naming the entry", () => {
  const e = new Engine(SELF);
  const bad: Array<[unknown, RegExp]> = [
    [{ intercept: "tree:" }, /^intercept\[0\]: "tree:": "tree:" must be followed by a PID or a process pattern$/],
    [{ intercept: "curl, tree:  " }, /^intercept\[1\]: "tree:": "tree:" must be followed/],
    [{ intercept: "tree:!20" }, /^intercept\[0\]: "tree:!20": ambiguous: '!' goes before "tree:"/],
    [{ intercept: ["x", "tree:tree:sh"] }, /^intercept\[1\]: "tree:tree:sh": ambiguous: "tree:" given twice$/],
    [{ intercept: "tree :20" }, /^intercept\[0\]: "tree :20": ambiguous: write "tree:" with no space before its ':'$/],
    [{ intercept: "!tree:" }, /^intercept\[0\]: "tree:": "tree:" must be followed/],
    [{ intercept_trees: ["20"] }, /^intercept_trees\[0\]: expected a process ID/],
    [{ intercept_trees: [-1] }, /^intercept_trees\[0\]: expected a process ID/],
    [{ intercept_trees: 20 }, /^intercept_trees: expected an array of process IDs/],
    [{ intercept: Array.from({ length: 33 }, (_, i) => `tree:${i + 1}`) },
      /^intercept\[32\]: more than 32 process trees/],
    [{ intercept: Array.from({ length: 30 }, (_, i) => `tree:${i + 1}`), intercept_trees: [1, 2, 3] },
      /^intercept_trees\[2\]: more than 32 process trees/],
  ];
  for (const [json, want] of bad) {
    const r = e.config(JSON.stringify(json));
    assert.is(r.rc, -2, JSON.stringify(json));
    assert.match(r.error, want, JSON.stringify(json));
  }
  // Not trees: "tree" inside a pattern, or without its ':'.
  assert.is(configured({ intercept: "!tree" }).config(JSON.stringify({ intercept: "!tree,x" })).rc, 0);
  const ok = configured({ intercept: "subtree:x,treehouse" });
  assert.ok(ok.wouldInterceptTree([p(5, "/opt/treehouse")], CONFIG_AT));
  assert.ok(ok.wouldInterceptTree([p(6, "/opt/subtree:x")], CONFIG_AT));
  assert.is(configured({ intercept: Array.from({ length: 32 }, (_, i) => `tree:${i + 1}`) }).config("{}").rc, 0);
});

syntax("an ancestry whose record claims a path past the buffer ends there (no trap)", () => {
  const e = configured({ intercept: "tree:20" });
  const chain = [SUB, SH, AGENT, INIT];
  const data = ancestry(chain);
  // SH's record follows SUB's (record and path, padded); its path_len near 2^32.
  const view = new DataView(data.buffer, data.byteOffset);
  const at = ancestry([SUB]).length;
  encode("ancestor", view, at, { ...decode("ancestor", view, at), pathLen: 0xfffffff0 });
  e.io(data);
  assert.is(e.x.eng_would_intercept_tree(chain.length, data.length, CONFIG_AT + 10), 0, "SH's record is not read");
  assert.ok(e.wouldInterceptTree(chains.curl, CONFIG_AT + 20), "the engine goes on");
});

const flows = suite("process trees: connections");

flows("an owner fact's ancestry decides its connection; the origin names the process itself", () => {
  const e = PacketEngine.started({ intercept: "tree:20" }, { self: SELF, appPort: 8080, now: CONFIG_AT });
  const C = { addr: "10.0.0.2", port: 40000 };
  const D = { addr: "198.18.0.10", port: 80 };
  const syn = (port: number) => e.process([{ data: build({ proto: "tcp", src: { ...C, port }, dst: D, flags: "S" }), outbound: true }],
    CONFIG_AT + 10)[0];
  assert.is(syn(40001).verdict, V_HELD);
  e.owner(O_CONNECT, "tcp", { ...C, port: 40001 }, D, GRAND.pid, GRAND.path!, CONFIG_AT + 10, chains.grand);
  assert.is(e.released()[0].verdict, V_MODIFIED, "a grandchild of sh 20");
  const o = e.lookup("tcp", { addr: D.addr, port: 40001 }, { addr: C.addr, port: 8080 });
  assert.is(o?.pid, GRAND.pid);
  assert.is(o?.path, GRAND.path);
  assert.is(syn(40002).verdict, V_HELD);
  e.owner(O_CONNECT, "tcp", { ...C, port: 40002 }, D, OTHER.pid, OTHER.path!, CONFIG_AT + 10, chains.other);
  assert.is(e.released()[0].verdict, V_PASS, "curl outside the tree");
  // The same PID as the grandchild, another process (reused PID): passed.
  assert.is(syn(40003).verdict, V_HELD);
  const reused = p(50, "/usr/bin/curl", 777_777, 0);
  e.owner(O_CONNECT, "tcp", { ...C, port: 40003 }, D, 50, reused.path!, CONFIG_AT + 9000, [reused, INIT]);
  assert.is(e.released()[0].verdict, V_PASS, "PID 50 reused");
  // An owner fact without ancestry (a backend that gives none): only the tree's root itself.
  assert.is(syn(40004).verdict, V_HELD);
  e.owner(O_CONNECT, "tcp", { ...C, port: 40004 }, D, 30, "/usr/bin/curl", CONFIG_AT + 9000);
  assert.is(e.released()[0].verdict, V_PASS, "no ancestry, not the root");
  assert.is(syn(40005).verdict, V_HELD);
  e.owner(O_CONNECT, "tcp", { ...C, port: 40005 }, D, 20, "/bin/sh", CONFIG_AT + 9000);
  assert.is(e.released()[0].verdict, V_MODIFIED, "no ancestry, the root itself");
});

const changes = suite("process trees: configuration changes");

changes("a tree in both configurations keeps its members, even ones whose pattern root has exited (config set again)", () => {
  const e = configured({ intercept: "tree:agent" });
  assert.ok(e.wouldInterceptTree(chains.sh, CONFIG_AT + 10), "sh, while the agent lives");
  // The agent exits, sh is re-parented to init; the same configuration is set again.
  assert.is(e.config(JSON.stringify({ intercept: "tree:agent" }), CONFIG_AT + 100).rc, 0);
  assert.ok(e.wouldInterceptTree([SH, INIT], CONFIG_AT + 200), "the re-parented sh stays in the tree");
  assert.ok(e.wouldInterceptTree([p(71, "/usr/bin/curl", 71 * 7, 0), SH, INIT], CONFIG_AT + 300), "and a child it starts");
  // Another configuration naming the same tree (another case, an exclusion, other entries).
  assert.is(e.config(JSON.stringify({ intercept: ["!curl", "!tree:AGENT"] }), CONFIG_AT + 400).rc, 0);
  assert.not.ok(e.wouldInterceptTree([SH, INIT], CONFIG_AT + 500), "sh: in the tree, excluded");
  assert.ok(e.wouldInterceptTree([p(72, "/bin/x", 72 * 7, 0), INIT], CONFIG_AT + 500), "outside it");
});

changes("a tree the new configuration drops takes its members with it; one it adds is decided again", () => {
  const PY = p(15, "/usr/bin/python3");
  const PYC = p(16, "/bin/x");
  const e = configured({ intercept: ["tree:python", "tree:agent"] });
  assert.ok(e.wouldInterceptTree([PYC, PY, INIT], CONFIG_AT + 10));
  assert.ok(e.wouldInterceptTree(chains.sh, CONFIG_AT + 10));
  // Both roots exit. The python tree goes; the agent's moves to another bit.
  assert.is(e.config(JSON.stringify({ intercept: ["tree:agent", "curl"] }), CONFIG_AT + 100).rc, 0);
  assert.not.ok(e.wouldInterceptTree([PYC, INIT], CONFIG_AT + 200), "python's child: its tree is gone");
  assert.ok(e.wouldInterceptTree([SH, INIT], CONFIG_AT + 200), "sh: still in the agent's tree");
  // The python tree again: a new tree, decided from the parents remembered,
  // and the exited python's path is not known any more.
  assert.is(e.config(JSON.stringify({ intercept: ["tree:python", "tree:agent"] }), CONFIG_AT + 300).rc, 0);
  assert.not.ok(e.wouldInterceptTree([PYC, INIT], CONFIG_AT + 400), "python's child: not known to be in the new tree");
  assert.ok(e.wouldInterceptTree([SH, INIT], CONFIG_AT + 400), "sh: still in the agent's tree");
  // A live process seen with its path is decided for a new tree as before.
  assert.is(e.config(JSON.stringify({ intercept: ["tree:/bin/sh"] }), CONFIG_AT + 500).rc, 0);
  assert.ok(e.wouldInterceptTree([p(73, "/bin/y", 73 * 7, 0), SH, INIT], CONFIG_AT + 600), "a child of sh");
  assert.not.ok(e.wouldInterceptTree([PYC, INIT], CONFIG_AT + 600));
});

changes("a process that exec()s another program after a configuration change leaves the pattern tree it rooted", () => {
  const forked = p(77, "/usr/bin/curl", 777, 10);
  const e = configured({ intercept: "tree:curl" });
  assert.ok(e.wouldInterceptTree([forked, INIT], CONFIG_AT + 10));
  assert.is(e.config(JSON.stringify({ intercept: "tree:curl", udp_idle_timeout_ms: 5000 }), CONFIG_AT + 100).rc, 0);
  assert.not.ok(e.wouldInterceptTree([{ ...forked, path: "/usr/bin/wget" }, INIT], CONFIG_AT + 200), "now wget");
});

// The lineage table's slot of an identity, as lineage.ts hashes it (CAPACITY 16384).
function hashId(pid: number, ctime: number): number {
  let h = (Math.imul(pid, 0x9e3779b1) ^ Math.imul(ctime >>> 0, 0x85ebca6b) ^ Math.floor(ctime / 2 ** 32)) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  return h & 16383;
}
/** A creation time from `from` on that puts (pid, ctime) in slot h. */
function ctimeFor(pid: number, h: number, from: number): number {
  for (let c = from; ; c++) if (hashId(pid, c) === h) return c;
}

/** A connection from 10.0.0.2:port, held until its owner fact (owner, with `chain` if given) decides it. */
function connectAs(e: PacketEngine, port: number, owner: Proc, now: number, chain: Proc[] = []): number {
  const src = { addr: "10.0.0.2", port };
  const dst = { addr: "198.18.0.10", port: 80 };
  assert.is(e.process([{ data: build({ proto: "tcp", src, dst, flags: "S" }), outbound: true }], now)[0].verdict, V_HELD);
  e.owner(O_CONNECT, "tcp", src, dst, owner.pid, owner.path!, now, chain);
  return e.released()[0].verdict;
}

/** The verdict on a datagram from 10.0.0.2:from to port. */
function datagram(e: PacketEngine, from: number, port: number, now: number): number {
  const src = { addr: "10.0.0.2", port: from };
  return e.process([{ data: build({ proto: "udp", src, dst: { addr: "198.18.0.10", port }, payload: "q" }), outbound: true }],
    now)[0].verdict;
}

flows("an owner fact without ancestry is not the process the PID had before, even with the same path", () => {
  const e = PacketEngine.started({ intercept: "tree:agent" }, { self: SELF, appPort: 8080, now: CONFIG_AT });
  assert.is(connectAs(e, 41001, CURL, CONFIG_AT + 10, chains.curl), V_MODIFIED, "curl 30 in the agent's tree");
  // PID 30 again with the same path, no ancestry: maybe another process.
  assert.is(connectAs(e, 41002, CURL, CONFIG_AT + 20), V_PASS, "decided as a process with no ancestry (not a root)");
});

flows("a UDP socket bound before a configuration change is decided with its owner's tree membership", () => {
  const e = PacketEngine.started({ intercept: "tree:agent" }, { self: SELF, appPort: 8080, now: CONFIG_AT });
  const C = { addr: "10.0.0.2", port: 42000 };
  const dgram = (port: number, now: number) => datagram(e, C.port, port, now);
  e.owner(O_BIND, "udp", C, null, CURL.pid, CURL.path!, CONFIG_AT + 10, chains.curl);
  assert.is(dgram(53, CONFIG_AT + 20), V_MODIFIED, "curl's datagram");
  // Only a timeout changes; the agent lives. A new flow from the socket is
  // decided from its remembered owner, whose path the engine has but whose
  // ancestors' it has not.
  assert.is(e.config(JSON.stringify({ intercept: "tree:agent", udp_idle_timeout_ms: 30000 }), CONFIG_AT + 100).rc, 0);
  assert.is(dgram(54, CONFIG_AT + 200), V_MODIFIED, "curl's datagram after the change");
});

flows("a process's identity whose lineage slot went to another process (same PID) is not read as that one", () => {
  const e = PacketEngine.started({ intercept: "tree:10" }, { self: SELF, appPort: 8080, now: CONFIG_AT });
  // A: PID 300, a child of init (not in agent 10's tree), binds a UDP socket.
  const others = [INIT, AGENT, SH, CURL].map((q) => hashId(q.pid, q.ctime));
  let h = 0;
  let cA = 1;
  do {
    cA = ctimeFor(300, hashId(300, cA + 1), cA + 1);
    h = hashId(300, cA);
  } while (others.some((o) => ((o - h) & 16383) < 64 || ((h - o) & 16383) < 64));
  const A = p(300, "/usr/bin/curl", cA);
  const C = { addr: "10.0.0.2", port: 43000 };
  const dgram = (port: number, now: number) => datagram(e, C.port, port, now);
  e.owner(O_BIND, "udp", C, null, A.pid, A.path!, CONFIG_AT + 10, [A, INIT]);
  assert.is(dgram(53, CONFIG_AT + 20), V_PASS, "A is not in the tree");
  // 31 others fill A's probe run of the table, then B (PID 300 again,
  // another creation time, a child of the agent) takes the oldest slot, A's.
  let t = CONFIG_AT + 100;
  for (let i = 0; i < 31; i++) {
    const pid = 2000 + i;
    e.wouldInterceptTree([p(pid, "/bin/f", ctimeFor(pid, h, 1))], t++);
  }
  const B = p(300, "/usr/bin/curl", ctimeFor(300, h, cA + 1));
  assert.ok(e.wouldInterceptTree([B, AGENT, INIT], t++), "B is in the tree");
  // A new configuration: A's socket's next flow is decided again.
  assert.is(e.config(JSON.stringify({ intercept: "tree:10", udp_idle_timeout_ms: 30000 }), t++).rc, 0);
  assert.is(dgram(54, t++), V_PASS, "A's datagram is not decided as B's");
});

spec.run();
syntax.run();
flows.run();
changes.run();
