// Saved sessions in the browser's IndexedDB: the trace as JSONL (the same text Export writes,
// so loading one goes through importTrace) plus its fingerprint digest and step fingerprints
// for the Manifold and Compare views. Three object stores so that listing reads only the
// small metadata records.
import { type Digest, sessionDigest, stepPoints } from "../analysis/digest";
import { exportTrace } from "../trace/jsonl";
import type { TraceSession } from "../trace/session";
import { type Zone, ZONES } from "../zones/zones";

export const DB_NAME = "attention-explorer";
const DB_VERSION = 1;
const META = "sessions";
const TRACES = "traces";
const POINTS = "points";
/** Step fingerprints kept per saved session (evenly subsampled beyond this). */
export const MAX_SAVED_POINTS = 4096;

export interface SavedMeta {
  id: string;
  name: string;
  savedAt: string;
  model: string;
  traceId: string;
  bytes: number;
  digest: Digest;
}

export interface SavedPoints {
  id: string;
  /** n x 20 fingerprints, row-major. */
  fps: Float32Array;
  /** Zone index (ZONES order) of each step. */
  zones: Uint8Array;
  /** Fingerprint version of each step (absent on sessions saved before versions were read: all 1). */
  versions?: Uint8Array;
  /** Each step's own server sink_mass (NaN: none; absent on older saves). */
  sinkMasses?: Float32Array;
}

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((res, rej) => {
    r.onsuccess = () => res(r.result);
    r.onerror = () => rej(r.error ?? new Error("IndexedDB request failed"));
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((res, rej) => {
    tx.oncomplete = () => res();
    tx.onerror = () => rej(tx.error ?? new Error("IndexedDB transaction failed"));
    tx.onabort = () => rej(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

let dbPromise: Promise<IDBDatabase> | null = null;
export function openDb(): Promise<IDBDatabase> {
  if (typeof indexedDB === "undefined") return Promise.reject(new Error("this browser has no IndexedDB: sessions cannot be saved"));
  dbPromise ??= new Promise((res, rej) => {
    const r = indexedDB.open(DB_NAME, DB_VERSION);
    r.onupgradeneeded = () => {
      const db = r.result;
      for (const s of [META, TRACES, POINTS]) if (!db.objectStoreNames.contains(s)) db.createObjectStore(s, { keyPath: "id" });
    };
    r.onsuccess = () => res(r.result);
    r.onerror = () => {
      dbPromise = null;
      rej(r.error ?? new Error("cannot open IndexedDB"));
    };
  });
  return dbPromise;
}

/** A default name: the first user message, shortened. */
export function defaultName(session: TraceSession): string {
  const first = session.messages.find((m) => m.role === "user")?.content.trim().replace(/\s+/g, " ") ?? "";
  return first ? (first.length > 48 ? `${first.slice(0, 47)}…` : first) : `Session ${new Date().toLocaleString()}`;
}

export function pointsOf(session: TraceSession, id: string): SavedPoints {
  let pts = stepPoints(session);
  if (pts.length > MAX_SAVED_POINTS) {
    const stride = pts.length / MAX_SAVED_POINTS;
    pts = Array.from({ length: MAX_SAVED_POINTS }, (_, i) => pts[Math.floor(i * stride)]);
  }
  const fps = new Float32Array(pts.length * 20);
  const zones = new Uint8Array(pts.length);
  const versions = new Uint8Array(pts.length);
  const sinkMasses = new Float32Array(pts.length);
  pts.forEach((p, i) => {
    fps.set(p.fingerprint, i * 20);
    zones[i] = ZONES.indexOf(p.zone);
    versions[i] = p.version;
    sinkMasses[i] = p.sinkMass ?? NaN;
  });
  return { id, fps, zones, versions, sinkMasses };
}

/**
 * Save a session. With `replace` (the saved copy of the same trace), that record is updated in place
 * (same id and name) instead of adding a second copy.
 */
export async function saveSession(session: TraceSession, name?: string, replace?: SavedMeta): Promise<SavedMeta> {
  const jsonl = exportTrace(session);
  const id = replace?.id ?? `saved-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  name ??= replace?.name;
  const meta: SavedMeta = {
    id,
    name: (name ?? "").trim() || defaultName(session),
    savedAt: new Date().toISOString(),
    model: session.model,
    traceId: session.traceId,
    bytes: jsonl.length,
    digest: sessionDigest(session),
  };
  const db = await openDb();
  const tx = db.transaction([META, TRACES, POINTS], "readwrite");
  tx.objectStore(META).put(meta);
  tx.objectStore(TRACES).put({ id, jsonl });
  tx.objectStore(POINTS).put(pointsOf(session, id));
  await done(tx);
  return meta;
}

/** Newest first. */
export async function listSaved(): Promise<SavedMeta[]> {
  const db = await openDb();
  const all = await req(db.transaction(META).objectStore(META).getAll() as IDBRequest<SavedMeta[]>);
  return all.sort((a, b) => b.savedAt.localeCompare(a.savedAt));
}

export async function loadTrace(id: string): Promise<string> {
  const db = await openDb();
  const rec = await req(db.transaction(TRACES).objectStore(TRACES).get(id) as IDBRequest<{ jsonl: string } | undefined>);
  if (!rec) throw new Error(`saved session ${id} not found`);
  return rec.jsonl;
}

export async function loadPoints(ids: string[]): Promise<SavedPoints[]> {
  const db = await openDb();
  const store = db.transaction(POINTS).objectStore(POINTS);
  const out = await Promise.all(ids.map((id) => req(store.get(id) as IDBRequest<SavedPoints | undefined>)));
  return out.filter((x): x is SavedPoints => !!x);
}

export async function renameSaved(id: string, name: string): Promise<void> {
  const clean = name.trim();
  if (!clean) throw new Error("a saved session needs a name");
  const db = await openDb();
  const tx = db.transaction(META, "readwrite");
  const store = tx.objectStore(META);
  const meta = await req(store.get(id) as IDBRequest<SavedMeta | undefined>);
  if (!meta) throw new Error(`saved session ${id} not found`);
  store.put({ ...meta, name: clean });
  await done(tx);
}

export async function deleteSaved(id: string): Promise<void> {
  const db = await openDb();
  const tx = db.transaction([META, TRACES, POINTS], "readwrite");
  for (const s of [META, TRACES, POINTS]) tx.objectStore(s).delete(id);
  await done(tx);
}

export function zoneAt(i: number): Zone {
  return ZONES[i] ?? "diffuse";
}
