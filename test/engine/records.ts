// The tests' side of the engine/host contract: every record the harness
// writes into or reads from engine memory is encoded and decoded here, from
// the table in build/contract.ts (no offsets of its own).
import { camel, layout, RECORDS, STATS, type FieldType, type RecordName } from "../../build/contract.ts";

type Value<T extends FieldType> = T extends "u64" ? bigint : T extends "addr" ? Uint8Array : number;
type Fields<R extends RecordName> = (typeof RECORDS)[R]["fields"][number];
type CamelCase<S extends string> = S extends `${infer H}_${infer C}${infer T}` ? `${H}${Uppercase<C>}${CamelCase<T>}` : S;

/** A decoded record: camelCase keys, u64 as bigint, addresses as 16 bytes. */
export type Rec<R extends RecordName> = {
  [F in Exclude<Fields<R>, { type: "pad1" }> as CamelCase<F["name"]>]: Value<F["type"]>;
};

interface Placed {
  offset: number;
  type: FieldType;
  key: string;
}

// Each record's layout, computed once: the fuzz tests encode millions.
const placed = new Map<RecordName, { size: number; fields: Placed[] }>();

function fieldsOf(name: RecordName): { size: number; fields: Placed[] } {
  let l = placed.get(name);
  if (!l) {
    const t = layout(name);
    l = { size: t.size, fields: t.fields.map((f) => ({ offset: f.offset, type: f.type, key: camel(f.name) })) };
    placed.set(name, l);
  }
  return l;
}

/** The fixed size of a record. */
export function size(name: RecordName): number {
  return fieldsOf(name).size;
}

/** Reads record `name` at byte offset `p` of `mem`. */
export function decode<R extends RecordName>(name: R, mem: DataView, p: number): Rec<R> {
  const out: Record<string, number | bigint | Uint8Array> = {};
  for (const f of fieldsOf(name).fields) {
    const at = p + f.offset;
    const key = f.key;
    switch (f.type) {
      case "u8": out[key] = mem.getUint8(at); break;
      case "u16": out[key] = mem.getUint16(at, true); break;
      case "u32": out[key] = mem.getUint32(at, true); break;
      case "u64": out[key] = mem.getBigUint64(at, true); break;
      case "addr": out[key] = new Uint8Array(mem.buffer, mem.byteOffset + at, 16).slice(); break;
      case "pad1": break;
    }
  }
  return out as Rec<R>;
}

/** Writes record `name` at byte offset `p` of `mem`; fields left out are zero. */
export function encode<R extends RecordName>(name: R, mem: DataView, p: number, rec: Partial<Rec<R>>): void {
  const values = rec as Record<string, number | bigint | Uint8Array | undefined>;
  for (const f of fieldsOf(name).fields) {
    const at = p + f.offset;
    const v = values[f.key];
    switch (f.type) {
      case "u8": mem.setUint8(at, Number(v ?? 0)); break;
      case "u16": mem.setUint16(at, Number(v ?? 0), true); break;
      case "u32": mem.setUint32(at, Number(v ?? 0), true); break;
      case "u64": mem.setBigUint64(at, typeof v === "bigint" ? v : BigInt(Number(v ?? 0)), true); break;
      case "addr": {
        const bytes = new Uint8Array(mem.buffer, mem.byteOffset + at, 16);
        bytes.fill(0);
        if (v instanceof Uint8Array) bytes.set(v.subarray(0, 16));
        break;
      }
      case "pad1": mem.setUint8(at, 0); break;
    }
  }
}

/** A record (and an optional tail of bytes after it) as a new byte array. */
export function bytes<R extends RecordName>(name: R, rec: Partial<Rec<R>>, tail?: Uint8Array): Uint8Array {
  const out = new Uint8Array(size(name) + (tail?.length ?? 0));
  encode(name, new DataView(out.buffer), 0, rec);
  if (tail) out.set(tail, size(name));
  return out;
}

export type StatKey = CamelCase<(typeof STATS)[number][0]>;
/** The counters' names (camelCase), in the engine's order. */
export const STAT_NAMES: readonly StatKey[] = STATS.map(([name]) => camel(name) as StatKey);
export type Stats = Record<StatKey, number>;

/** Reads the counters block (count u64 at p). */
export function decodeStats(mem: DataView, p: number, count: number): Stats {
  const out = {} as Stats;
  STAT_NAMES.forEach((name, i) => {
    if (i < count) out[name] = Number(mem.getBigUint64(p + i * 8, true));
  });
  return out;
}
