// The engine/host binary contract, written once: the records the engine (as/)
// and its host (shim/host.c, and the tests' harness) exchange through the
// engine's linear memory, and the order of the engine's counters.
//
// From this table build/build.ts generates, into build/gen (never committed):
//   contract.ts  AssemblyScript: one @unmanaged class per record whose
//                accessors are plain loads and stores at these offsets, the
//                counters as a const enum, and CONTRACT_HASH
//   contract.h   C: one struct per record with a _Static_assert on every
//                offset and size, the counters as an X-macro over the
//                redirector_stats members, and WR_CONTRACT_HASH
// and test/engine/records.ts decodes and encodes records from it directly.
// The engine reports CONTRACT_HASH from eng_abi(); the host refuses an engine
// built from another table.
//
// Offsets follow from the field order: every field is placed at the next
// multiple of its alignment (its size; 1 for byte arrays), so padding shows
// up as `pad` fields. All numbers are little-endian (Wasm memory).

export type FieldType = "u8" | "u16" | "u32" | "u64" | "addr" | "pad1";

export interface Field {
  readonly name: string; // snake_case; the C member name
  readonly type: FieldType;
  readonly doc: string;
}

export interface RecordSpec {
  readonly doc: string;
  readonly fields: readonly Field[];
  /** A variable-length tail (UTF-8 path) follows the fixed part. */
  readonly tail?: string;
}

const f = <N extends string, T extends FieldType>(name: N, type: T, doc = "") => ({ name, type, doc }) as const;

// Packet records: one per packet in the batch (META) and per released held
// packet (REL). The verdict word is verdict | out-flags << 8.
const packetFields = (data: string) => [
  f("cookie_lo", "u32", "the caller's packet handle, low half"),
  f("cookie_hi", "u32", "high half"),
  f("data", "u32", data),
  f("len", "u32", "packet length"),
  f("flags", "u32", "in-flags: 1 outbound, 2 loopback, 4 transport checksum not ready"),
  f("if_idx", "u32", "interface index"),
  f("sub_if_idx", "u32", "sub-interface index"),
  f("verdict", "u32", "out: verdict (0 pass, 1 rewritten, 2 drop, 3 held) | out-flags << 8 (1 outbound, 2 checksums valid)"),
] as const;

// A flow's ends after four bytes of kind, protocol and family (query, owner).
const flowEnds = [
  f("pad0", "pad1"),
  f("local", "addr", "this host's end (IPv4 in the first 4 bytes)"),
  f("remote", "addr"),
  f("local_port", "u16"),
  f("remote_port", "u16"),
] as const;

export const RECORDS = {
  meta: {
    doc: "A packet of the batch (eng_batch_meta), written by the host; the engine writes the verdict.",
    fields: packetFields("offset of the packet in the batch data area"),
  },
  rel: {
    doc: "A released held packet (eng_released_ptr), written by the engine.",
    fields: packetFields("address of the packet bytes in engine memory (valid until the next take)"),
  },
  query: {
    doc: "A pending flow whose owner the host should find (eng_queries_ptr).",
    fields: [
      f("proto", "u8", "6 TCP, 17 UDP"),
      f("family", "u8", "4 or 6"),
      f("direction", "u8", "0 outbound, 1 inbound (local is a listener's end)"),
      ...flowEnds,
    ],
  },
  owner: {
    doc: "An owner fact, written by the host into the I/O buffer (eng_owner). Bind and listen: local as the socket " +
      "was bound (a wildcard too), remote zero. Close with a remote end: a connection ended (one a listener " +
      "accepted names the listener's port); with none: the socket bound to local was released.",
    tail: "path",
    fields: [
      f("kind", "u8", "1 connect, 2 accept, 3 bind, 4 listen, 5 close, 6 unknown"),
      f("proto", "u8", "6 or 17"),
      f("family", "u8", "4 or 6"),
      ...flowEnds,
      f("pid", "u32"),
      f("path_len", "u32", "bytes of the UTF-8 path after the record"),
      f("ancestors", "u32", "ancestor records after the path (at the next multiple of 8): the owner itself, then its " +
        "parent at its creation, and so on as far as the host sees; 0: no ancestry known"),
    ],
  },
  ancestor: {
    doc: "One process of an ancestry (after an owner record's path, or in the I/O buffer for " +
      "eng_would_intercept_tree), the process itself first, then its parent as it was when the process was created, " +
      "and so on. Each record is followed by its path; the next record starts at the next multiple of 8.",
    tail: "path",
    fields: [
      f("pid", "u32"),
      f("path_len", "u32", "bytes of the UTF-8 executable path after the record (0: not known)"),
      f("ctime", "u64", "creation time in the OS's own units (Linux: /proc/<pid>/stat starttime; Windows: FILETIME); " +
        "with the PID, the process's identity"),
      f("age_ms", "u64", "how long before this record was written the process was created, ms; all ones: not known"),
    ],
  },
  exclusion: {
    doc: "An excluded socket's local end, written by the host into the I/O buffer (eng_exclude).",
    fields: [
      f("proto", "u8", "6 or 17"),
      f("family", "u8", "4 or 6"),
      f("dual_stack", "u8", "1: an IPv6 socket on [::] that carries IPv4 too"),
      f("pad0", "pad1"),
      f("local", "addr", "its address (IPv4 in the first 4 bytes); all zero: any address of the family"),
      f("local_port", "u16"),
    ],
  },
  lookup: {
    doc: "A lookup question, written by the host into the I/O buffer (eng_lookup).",
    fields: [
      f("proto", "u32"),
      f("peer_family", "u32", "4 or 6"),
      f("peer", "addr", "the proxy's peer (IPv4-mapped IPv6 allowed)"),
      f("peer_port", "u32"),
      f("local_family", "u32", "4 or 6: a dual-stack socket's may differ from the peer's"),
      f("local", "addr", "the proxy's end (IPv4-mapped IPv6 allowed); all zero: any"),
      f("local_port", "u32"),
    ],
  },
  origin: {
    doc: "Where a redirected connection was going: a lookup answer or an event, written by the engine into the I/O buffer.",
    tail: "path",
    fields: [
      f("type", "u32", "0 lookup, 1 opened, 2 closed"),
      f("proto", "u32", "6 or 17"),
      f("family", "u32", "4 or 6"),
      f("direction", "u32", "0 outbound, 1 inbound"),
      f("pid", "u32"),
      f("flow_id", "u32"),
      f("dst", "addr", "original destination"),
      f("dst_port", "u32"),
      f("client", "addr"),
      f("client_port", "u32"),
      f("peer", "addr", "the proxy's peer"),
      f("peer_port", "u32"),
      f("app_port", "u32"),
      f("bytes_up", "u64"),
      f("bytes_down", "u64"),
      f("time", "u32", "milliseconds"),
      f("path_len", "u32", "bytes of the UTF-8 path after the record"),
    ],
  },
  scope: {
    doc: "The capture scope (eng_capture_scope), written by the engine into the I/O buffer: what a backend must capture for the configuration in force and the flows alive. Lists follow it, in this order: app_ports, remote_ports and local_ports scope_ports records, then remote_nets and local_nets scope_net records.",
    fields: [
      f("flags", "u32", "scope_flag bits"),
      f("app_ports", "u32", "scope_ports records (lo == hi) that follow: the app ports"),
      f("remote_ports", "u32", "scope_ports records of the remote side"),
      f("local_ports", "u32", "scope_ports records of the local side"),
      f("remote_nets", "u32", "scope_net records of the remote side"),
      f("local_nets", "u32", "scope_net records of the local side"),
    ],
  },
  scope_ports: {
    doc: "A port range of the capture scope, low to high, both included.",
    fields: [f("lo", "u16"), f("hi", "u16")],
  },
  scope_net: {
    doc: "A network of the capture scope.",
    fields: [
      f("family", "u8", "4 or 6"),
      f("prefix", "u8", "prefix length: 0-32 or 0-128"),
      f("pad0", "pad1"),
      f("pad1", "pad1"),
      f("addr", "addr", "the network's address (IPv4 in the first 4 bytes), host bits zero"),
    ],
  },
} as const satisfies Record<string, RecordSpec>;

export type RecordName = keyof typeof RECORDS;

/**
 * The engine's counters (u64 each, at eng_stats_ptr), in order. The names are
 * the members of redirector_stats in include/windows_redirector.h.
 */
export const STATS = [
  ["packets", "packets seen"],
  ["rewritten", "packets rewritten (redirected, and ICMP errors about them translated)"],
  ["passed", "packets passed unchanged"],
  ["held", "packets held while an owner was unknown"],
  ["dropped", "packets dropped (hold limits)"],
  ["malformed", "truncated or malformed, passed unchanged"],
  ["fragments", "IP fragments, passed unchanged"],
  ["flows_active", "gauge: entries in the flow table"],
  ["flows_redirected", "flows redirected to the app port"],
  ["flows_passed", "flows decided not to intercept"],
  ["flows_expired", "entries removed by idle timeout or close"],
  ["table_full", "new flows passed because the table was full"],
  ["evictions", "unestablished entries evicted for new ones"],
  ["hold_timeouts", "owners never known: passed after the hold timeout"],
  ["owner_facts", "owner facts received"],
  ["owner_queries", "owner queries handed to the host"],
  ["events_lost", "events dropped because the queue was full"],
  ["nat_conflicts", "flows passed because no proxy-side port was free"],
  ["bypassed", "packets of bypassed classes (loopback, ...)"],
  ["lookups", "lookups answered"],
  ["lookup_misses", "lookups with no match"],
  ["redirected_syn_unanswered", "redirected TCP connections whose SYN the proxy did not answer within 1 s"],
  ["redirected_syn_refused", "redirected TCP connections whose SYN the proxy answered with a RST within 1 s"],
] as const;

export type StatName = (typeof STATS)[number][0];

/**
 * Named values that cross the boundary, by group: the AssemblyScript const
 * enum each becomes, the prefix of the host's macros (shim/host.h) that
 * must carry the same values, and the members (snake_case) with their values.
 * A verdict word is verdict | out_flag << 8.
 */
export const ENUMS = {
  in_flag: { as: "InFlag", c: "WR_PKT_", doc: "Meta/Rel flags, from the capture layer", members: { outbound: 1, loopback: 2, csum_partial: 4 } },
  verdict: { as: "Verdict", c: "WR_V_", doc: "the verdict word's low byte", members: { pass: 0, modified: 1, drop: 2, held: 3 } },
  out_flag: { as: "OutFlag", c: "WR_OUT_", doc: "the verdict word's second byte", members: { outbound: 1, csum_valid: 2 } },
  owner_kind: {
    as: "OwnerKind", c: "WR_OWNER_", doc: "Owner.kind",
    members: { connect: 1, accept: 2, bind: 3, listen: 4, close: 5, unknown: 6 },
  },
  protocols: {
    as: "Protocols", c: "WR_PROTOS_", doc: "eng_protocols(): the protocols the configuration intercepts",
    members: { tcp: 1, udp: 2 },
  },
  scope_flag: {
    as: "ScopeFlag", c: "WR_SCOPE_",
    doc: "Scope.flags: the protocols; loopback traffic too; every packet of those protocols (nothing narrower holds); each side on (a port and network of that end of a flow captures it, whichever way a packet goes), and with any port or any network",
    members: {
      tcp: 1, udp: 2, loopback: 4, all: 8,
      remote: 16, remote_any_port: 32, remote_any_net: 64,
      local: 128, local_any_port: 256, local_any_net: 512,
    },
  },
} as const;

/** Numbers both sides rely on. */
export const CONSTANTS = {
  /** Room after an origin record for its path: the host sizes the I/O buffer for it before a lookup. */
  origin_path_room: 1024,
  /** The most entries of each capture scope list (longer ones become "any"; app ports: "all"). */
  scope_ports_max: 128,
  scope_nets_max: 64,
  scope_app_ports_max: 8,
  /** The most ancestor records the engine reads for one process (more are ignored). */
  ancestry_max: 32,
} as const;

export const TYPE_SIZE: Record<FieldType, number> = { u8: 1, u16: 2, u32: 4, u64: 8, addr: 16, pad1: 1 };
const TYPE_ALIGN: Record<FieldType, number> = { u8: 1, u16: 2, u32: 4, u64: 8, addr: 1, pad1: 1 };

export interface PlacedField extends Field {
  readonly offset: number;
  readonly size: number;
}

export interface Layout {
  readonly name: string;
  readonly size: number;
  readonly fields: readonly PlacedField[];
  readonly byName: Readonly<Record<string, PlacedField>>;
}

/** Offsets and size of a record (size rounded up to the largest alignment). */
export function layout(name: RecordName): Layout {
  const spec: RecordSpec = RECORDS[name];
  let off = 0;
  let maxAlign = 1;
  const fields: PlacedField[] = [];
  for (const fd of spec.fields) {
    const a = TYPE_ALIGN[fd.type];
    maxAlign = Math.max(maxAlign, a);
    off = Math.ceil(off / a) * a;
    fields.push({ ...fd, offset: off, size: TYPE_SIZE[fd.type] });
    off += TYPE_SIZE[fd.type];
  }
  const size = Math.ceil(off / maxAlign) * maxAlign;
  return { name, size, fields, byName: Object.fromEntries(fields.map((x) => [x.name, x])) };
}

export const RECORD_NAMES = Object.keys(RECORDS) as RecordName[];

/** FNV-1a (32 bits) of the placed table: the engine/host interface version. */
export function contractHash(): number {
  const text = JSON.stringify({
    records: RECORD_NAMES.map((n) => {
      const l = layout(n);
      return [n, l.size, l.fields.map((x) => [x.name, x.type, x.offset])];
    }),
    stats: STATS.map((s) => s[0]),
    constants: CONSTANTS,
    enums: ENUMS,
  });
  let h = 0x811c9dc5;
  for (const b of Buffer.from(text, "utf8")) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** snake_case -> camelCase (AssemblyScript accessors, TypeScript keys). */
export function camel(s: string): string {
  return s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

const pascal = (s: string) => camel(s).replace(/^./, (c) => c.toUpperCase());

function comment(lines: string[], prefix: string): string {
  return lines.map((l) => `${prefix}${l}`.trimEnd()).join("\n");
}

const AS_TYPE: Record<FieldType, string> = { u8: "u8", u16: "u16", u32: "u32", u64: "u64", addr: "usize", pad1: "" };

/** build/gen/contract.ts: the AssemblyScript side. */
export function generateAssemblyScript(): string {
  const out: string[] = [
    "// Generated by build/build.ts from build/contract.ts. Do not edit.",
    "",
    `export const CONTRACT_HASH: u32 = 0x${contractHash().toString(16).padStart(8, "0")};`,
    "",
  ];
  for (const n of RECORD_NAMES) {
    const l = layout(n);
    const cls = pascal(n);
    out.push(comment([RECORDS[n].doc], "// "));
    out.push(`export const ${n.toUpperCase()}_SIZE: u32 = ${l.size};`);
    out.push("@unmanaged", `export class ${cls} {`);
    for (const x of l.fields) {
      if (x.type === "pad1") continue;
      const name = camel(x.name);
      if (x.doc) out.push(`  /** ${x.doc} */`);
      if (x.type === "addr") {
        out.push(`  @inline get ${name}(): usize { return changetype<usize>(this) + ${x.offset}; }`);
        continue;
      }
      const t = AS_TYPE[x.type];
      out.push(`  @inline get ${name}(): ${t} { return load<${t}>(changetype<usize>(this), ${x.offset}); }`);
      out.push(`  @inline set ${name}(v: ${t}) { store<${t}>(changetype<usize>(this), v, ${x.offset}); }`);
    }
    if ("tail" in RECORDS[n]) {
      out.push(`  /** The ${RECORDS[n].tail} after the record. */`);
      out.push(`  @inline get ${RECORDS[n].tail}(): usize { return changetype<usize>(this) + ${l.size}; }`);
    }
    out.push("}", "");
  }
  for (const [k, v] of Object.entries(CONSTANTS)) out.push(`export const ${k.toUpperCase()}: u32 = ${v};`);
  out.push("");
  for (const e of Object.values(ENUMS)) {
    out.push(`/** ${e.doc} */`, `export const enum ${e.as} {`);
    for (const [m, v] of Object.entries(e.members)) out.push(`  ${pascal(m)} = ${v},`);
    out.push("}", "");
  }
  out.push("// The counters, in order (u64 each).", "export const enum Stat {");
  STATS.forEach(([name, doc], i) => out.push(`  ${camel(name)} = ${i}, // ${doc}`));
  out.push("}", `export const STATS_COUNT: u32 = ${STATS.length};`, "");
  return out.join("\n");
}

const C_TYPE: Record<FieldType, string> = {
  u8: "uint8_t", u16: "uint16_t", u32: "uint32_t", u64: "uint64_t", addr: "uint8_t", pad1: "uint8_t",
};

/** build/gen/contract.h: the C side (the engine host). */
export function generateC(): string {
  const out: string[] = [
    "/* Generated by build/build.ts from build/contract.ts. Do not edit. */",
    "#ifndef WR_CONTRACT_H",
    "#define WR_CONTRACT_H",
    "",
    "#include <stddef.h>",
    "#include <stdint.h>",
    "",
    `#define WR_CONTRACT_HASH 0x${contractHash().toString(16).padStart(8, "0")}u`,
    "",
  ];
  for (const n of RECORD_NAMES) {
    const l = layout(n);
    const t = `wr_rec_${n}`;
    out.push(`/* ${RECORDS[n].doc} */`, "typedef struct {");
    for (const x of l.fields) {
      const arr = x.type === "addr" ? "[16]" : "";
      out.push(`  ${C_TYPE[x.type]} ${x.name}${arr};${x.doc ? ` /* ${x.doc} */` : ""}`);
    }
    out.push(`} ${t};`);
    out.push(`#define WR_REC_${n.toUpperCase()}_SIZE ${l.size}u`);
    out.push(`_Static_assert(sizeof(${t}) == ${l.size}, "${n}: size");`);
    for (const x of l.fields) {
      out.push(`_Static_assert(offsetof(${t}, ${x.name}) == ${x.offset}, "${n}.${x.name}: offset");`);
      out.push(`_Static_assert(sizeof(((${t} *)0)->${x.name}) == ${x.size}, "${n}.${x.name}: size");`);
    }
    out.push("");
  }
  for (const [k, v] of Object.entries(CONSTANTS)) out.push(`#define WR_${k.toUpperCase()} ${v}u`);
  out.push(
    "",
    "/* The host's names for the contract's values (shim/host.h) must carry the",
    " * table's values: expanded once where both headers are included. */",
    "#define WR_CONTRACT_CHECK_HOST_NAMES \\",
  );
  const checks = Object.entries(ENUMS).flatMap(([g, e]) =>
    Object.entries(e.members).map(([m, v]) => `_Static_assert(${e.c}${m.toUpperCase()} == ${v}, "${g}.${m}")`));
  checks.forEach((c, i) => out.push(`  ${c}${i + 1 < checks.length ? "; \\" : ""}`));
  out.push(
    "",
    "/* The counters in order: X(member of redirector_stats), and each one's",
    " * index (WR_STAT_<MEMBER>) in what wr_engine_stats copies. */",
    "#define WR_STATS_COUNT " + STATS.length + "u",
    ...STATS.map(([name], i) => `#define WR_STAT_${name.toUpperCase()} ${i}u`),
    "#define WR_STATS_FOREACH(X) \\",
    ...STATS.map(([name], i) => `  X(${name})${i + 1 < STATS.length ? " \\" : ""}`),
    "",
    "#endif",
    "",
  );
  return out.join("\n");
}
