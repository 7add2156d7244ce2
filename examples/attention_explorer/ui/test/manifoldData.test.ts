// The Manifold's data hook, its pure parts (manifold/useManifoldData.ts): which saved sessions a
// scope reads, how a scope's groups merge in draw order, the session's step group, the note.
import { describe, expect, it } from "vitest";
import { digestOf, stepPoints } from "../src/analysis/digest";
import type { DiscoveryPoints } from "../src/api/sidecar";
import { type Group, groupFromSteps, KIND, type Scope, syntheticGroup } from "../src/manifold/build";
import { discoveryNoteOf, savedIdsOf, type ScopeSources, scopeGroups, sessionStepsGroup } from "../src/manifold/useManifoldData";
import type { SavedMeta, SavedPoints } from "../src/storage/savedSessions";
import { FINGERPRINT_DIM, ZONES } from "../src/zones/zones";
import { loadFixture, replay } from "./helpers";

const fps = syntheticGroup(3, 5);
const group = (label: string, kind: Group["kind"] = KIND.step): Group => ({ ...groupFromSteps(fps.fps, fps.zones, { label }), kind });
const meta = (id: string): SavedMeta => ({ id, name: `saved ${id}`, digest: digestOf([Array.from(fps.fps.subarray(0, FINGERPRINT_DIM))]) }) as unknown as SavedMeta;
const points = (id: string): SavedPoints => ({ id, fps: fps.fps, zones: fps.zones });

function sources(extra: Partial<ScopeSources> = {}): ScopeSources {
  const saved = ["a", "b"].map(meta);
  return {
    session: group("session"),
    saved,
    savedPoints: saved.map((m) => points(m.id)),
    discovery: group("discovery", KIND.discovery),
    centroids: group("discovery clusters", KIND.centroid),
    synthetic: null,
    ...extra,
  };
}
const labels = (gs: Group[]) => gs.map((g) => g.owner.label);

describe("savedIdsOf", () => {
  const saved = ["1", "2", "3", "4", "5", "6", "7"].map(meta);
  it("recent reads the 5 most recent saved sessions, all reads every one, the others none", () => {
    expect(savedIdsOf("recent", saved)).toEqual(["1", "2", "3", "4", "5"]);
    expect(savedIdsOf("all", saved)).toEqual(["1", "2", "3", "4", "5", "6", "7"]);
    expect(savedIdsOf("session", saved)).toBeNull();
    expect(savedIdsOf("saved", saved)).toBeNull();
    expect(savedIdsOf("recent", [])).toEqual([]);
  });
});

describe("scopeGroups (draw order: first drawn underneath)", () => {
  it("session: the session's steps only", () => {
    expect(labels(scopeGroups("session", sources()))).toEqual(["session"]);
    expect(scopeGroups("session", sources({ session: null }))).toEqual([]);
  });
  it("recent: the live steps, then the saved sessions' steps", () => {
    const gs = scopeGroups("recent", sources());
    expect(labels(gs)).toEqual(["session", "saved a", "saved b"]);
    expect(gs.slice(1).map((g) => g.owner.savedId)).toEqual(["a", "b"]);
    expect(gs.every((g) => g.kind === KIND.step)).toBe(true);
  });
  it("saved: one mean point per saved session, no steps, discovery or clusters", () => {
    const gs = scopeGroups("saved", sources());
    expect(labels(gs)).toEqual(["saved a", "saved b"]);
    expect(gs.every((g) => g.kind === KIND.session && g.fps.length === FINGERPRINT_DIM)).toBe(true);
  });
  it("all: discovery points, saved steps, live steps, then the clusters on top", () => {
    expect(labels(scopeGroups("all", sources()))).toEqual(["discovery", "saved a", "saved b", "session", "discovery clusters"]);
    expect(labels(scopeGroups("all", sources({ discovery: null, centroids: null, session: null })))).toEqual(["saved a", "saved b"]);
  });
  it("saved points of sessions no longer in the list are dropped", () => {
    expect(labels(scopeGroups("all", sources({ savedPoints: [points("a"), points("gone")], discovery: null, centroids: null })))).toEqual(["saved a", "session"]);
  });
  it("synthetic points come first in every scope", () => {
    const synthetic = syntheticGroup(10);
    for (const scope of ["session", "recent", "saved", "all"] as Scope[]) {
      const gs = scopeGroups(scope, sources({ synthetic }));
      expect(gs[0]).toBe(synthetic);
      expect(gs.filter((g) => g.kind === KIND.synthetic)).toHaveLength(1);
    }
  });
});

describe("sessionStepsGroup", () => {
  it("one point per decode step with its fingerprint, zone and step", () => {
    const { session } = replay(loadFixture("chat_fingerprint.json"));
    const pts = stepPoints(session);
    expect(pts.length).toBeGreaterThan(0);
    const g = sessionStepsGroup(session, "Live session")!;
    expect(g.kind).toBe(KIND.step);
    expect(g.owner).toEqual({ label: "Live session", sinkMass: null }); // the fixture sends no sink_mass
    expect(g.fps.length).toBe(pts.length * FINGERPRINT_DIM);
    expect(Array.from(g.fps.subarray(0, FINGERPRINT_DIM))).toEqual(Array.from(new Float32Array(pts[0].fingerprint)));
    expect(Array.from(g.zones)).toEqual(pts.map((p) => ZONES.indexOf(p.zone)));
    expect(Array.from(g.steps!)).toEqual(pts.map((p) => p.step));
  });
  it("null for a session without steps", async () => {
    const { TraceSession } = await import("../src/trace/session");
    expect(sessionStepsGroup(new TraceSession(), "x")).toBeNull();
  });
});

describe("discoveryNoteOf", () => {
  const pts = (count: number, total: number) => ({ count, total }) as DiscoveryPoints;
  it("says which part is shown when the run has more points than were sent", () => {
    expect(discoveryNoteOf(pts(100000, 250000))).toBe(`first ${(100000).toLocaleString()} of ${(250000).toLocaleString()} discovery points`);
    expect(discoveryNoteOf(pts(5, 5))).toBeNull();
  });
});
