// Dense replay (POST /v1/attention/replay): the exact full attention of a token sequence, as a
// float16 .npy array [layers, heads, T, T]. The .npy (format "npy") is the compact payload: 2 bytes
// per value, no base64. decodeNpy reads it into a Float32Array; f16 -> f32 through a 64k table.
import { errorMessage, trimUrl } from "./client";

export interface ReplayMatrix {
  /** [layers, heads, T, T] */
  shape: number[];
  /** Row-major float32 copy of the float16 values. */
  data: Float32Array;
}

let F16: Float32Array | null = null;
/** float16 bit pattern -> float32 value, for all 65,536 patterns. */
export function f16Table(): Float32Array {
  if (F16) return F16;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const f = h & 0x3ff;
    t[h] = e === 0 ? s * 2 ** -14 * (f / 1024) : e === 31 ? (f ? NaN : s * Infinity) : s * 2 ** (e - 15) * (1 + f / 1024);
  }
  F16 = t;
  return t;
}

/** Float16 little-endian bytes -> Float32Array. */
export function f16ToF32(bytes: Uint8Array): Float32Array {
  const t = f16Table();
  const n = bytes.byteLength >> 1;
  const u16 = bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint16Array(bytes.slice().buffer, 0, n);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = t[u16[i]];
  return out;
}

/** Parse a version 1/2/3 .npy holding a little-endian float16 (or float32) C-order array. */
export function decodeNpy(buf: ArrayBuffer): ReplayMatrix {
  const u8 = new Uint8Array(buf);
  if (u8[0] !== 0x93 || String.fromCharCode(...u8.slice(1, 6)) !== "NUMPY") throw new Error("not a .npy file");
  const major = u8[6];
  const dv = new DataView(buf);
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(u8.slice(start, start + hlen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "";
  if (/'fortran_order':\s*True/.test(header)) throw new Error(".npy in Fortran order is not supported");
  const shape = shapeText.split(",").map((x) => x.trim()).filter(Boolean).map(Number);
  const body = u8.subarray(start + hlen);
  if (descr === "<f2") return { shape, data: f16ToF32(body) };
  if (descr === "<f4") return { shape, data: new Float32Array(body.slice().buffer) };
  throw new Error(`unsupported .npy dtype ${descr}`);
}

/** The base64 JSON form of the same answer (format "base64"). */
export function decodeBase64Replay(j: { shape: number[]; data: string; dtype?: string }): ReplayMatrix {
  const bin = atob(j.data);
  const u8 = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
  return { shape: j.shape, data: f16ToF32(u8) };
}

export interface ReplayRequest {
  inputIds: number[];
  layer: number;
  /** A head id, or "mean" (the mean of all heads). */
  head: number | "mean";
  maskPrefix?: number;
}

/** One layer and one head (or the mean) of the dense replay, as a T x T matrix. */
export async function fetchReplay(server: string, r: ReplayRequest, signal?: AbortSignal, apiKey?: string): Promise<ReplayMatrix> {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const body: Record<string, unknown> = { input_ids: r.inputIds, layers: [r.layer], heads: r.head === "mean" ? "mean" : [r.head], format: "npy" };
  if (r.maskPrefix) body.attention_mask_prefix = r.maskPrefix;
  const res = await fetch(`${trimUrl(server)}/v1/attention/replay`, { method: "POST", headers, body: JSON.stringify(body), signal });
  if (!res.ok) throw new Error(await errorMessage(res));
  return decodeNpy(await res.arrayBuffer());
}

/** Rows i >= j that attend to key j, largest first: "who attends to this token". */
export function attendersOf(m: Float32Array, T: number, key: number, limit = 20): { query: number; p: number }[] {
  const out: { query: number; p: number }[] = [];
  for (let i = key; i < T; i++) out.push({ query: i, p: m[i * T + key] });
  out.sort((a, b) => b.p - a.p);
  return out.slice(0, limit);
}

/** The keys a query row attends to, largest first. */
export function keysOf(m: Float32Array, T: number, query: number, limit = 20): { key: number; p: number }[] {
  const out: { key: number; p: number }[] = [];
  for (let j = 0; j <= query && j < T; j++) out.push({ key: j, p: m[query * T + j] });
  out.sort((a, b) => b.p - a.p);
  return out.slice(0, limit);
}
