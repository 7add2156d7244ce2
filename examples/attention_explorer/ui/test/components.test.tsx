// @vitest-environment jsdom
// Component tests: the chat tokens, link overlay and Token Lens rendered from a replayed
// fixture session, driven by DOM events as a user would.
import { act, cleanup, fireEvent, render, screen, within } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { useState } from "react";
import type { Focus, ViewOptions } from "../src/components/focus";
import { RunTokens } from "../src/components/RunTokens";
import { TokenLens } from "../src/components/TokenLens";
import type { TraceSession } from "../src/trace/session";
import { loadFixture, replay } from "./helpers";

afterEach(cleanup);

// Each hover comes from a pointer that moved (RunTokens ignores mouseovers from a still pointer).
let px = 0;
const hover = (el: Element) => act(() => void fireEvent.mouseOver(el, { clientX: ++px, clientY: 5 }));

function Harness({ session, runId, initialOpts }: { session: TraceSession; runId: string; initialOpts?: ViewOptions }) {
  const [hover, setHover] = useState<Focus | null>(null);
  const [pinned, setPinned] = useState<Focus | null>(null);
  const opts = initialOpts ?? { layer: null, excludeSinks: false };
  return (
    <>
      <RunTokens session={session} run={session.run(runId)} version={session.version} hover={hover} pinned={pinned} opts={opts} onHover={setHover} onPin={setPinned} />
      <TokenLens session={session} focus={pinned ?? hover} pinned={!!pinned} opts={opts} caps={null} onClose={() => setPinned(null)} onJump={setPinned} />
    </>
  );
}

describe("chat tokens and Token Lens", () => {
  it("renders prompt (masked) and output tokens, think block and timeline", () => {
    const { session, runId } = replay(loadFixture("chat_raw_think.json"));
    const { container } = render(<Harness session={session} runId={runId} />);
    expect(container.querySelectorAll(".tokens.output .tok")).toHaveLength(6);
    expect(container.querySelectorAll(".tokens.prompt .tok.masked")).toHaveLength(3);
    expect(container.querySelectorAll(".think-block .tok")).toHaveLength(3);
    expect(container.querySelectorAll(".timeline .seg")).toHaveLength(2);
    // sinks of the last layer (29) are marked: position 0 and 4
    expect([...container.querySelectorAll(".tok.sink")].map((e) => e.getAttribute("data-pos"))).toEqual(["0", "4"]);
  });

  it("hovering a token draws its links and opens the lens with true p and scores", () => {
    const { session, runId } = replay(loadFixture("chat_raw_think.json"));
    const { container } = render(<Harness session={session} runId={runId} />);
    const tok = container.querySelector('.tok[data-pos="10"]')!;
    hover(tok);
    const svg = container.querySelector("svg.link-overlay")!;
    // layer 29 links of step 4: positions 0, 4, 9, 5 (none is the token itself)
    expect(svg.getAttribute("data-link-count")).toBe("4");
    expect([...svg.querySelectorAll("path")].map((p) => p.getAttribute("data-to"))).toEqual(["0", "4", "9", "5"]);
    const lens = screen.getByTestId("token-lens");
    expect(lens.className).toContain("open");
    const l29 = lens.querySelector('[data-layer="29"]') as HTMLElement;
    const cells = within(l29).getAllByRole("row").slice(1).map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent));
    expect(cells.map((c) => c[0])).toEqual(["0", "4", "9", "5"]);
    expect(cells.map((c) => c[2])).toEqual(["45.0%", "25.0%", "15.0%", "5.0%"]);
    expect(cells.map((c) => c[3])).toEqual(["50.0%", "27.8%", "16.7%", "5.6%"]);
  });

  it("excluding sinks hides them and renormalizes", () => {
    const { session, runId } = replay(loadFixture("chat_raw_think.json"));
    const { container } = render(<Harness session={session} runId={runId} initialOpts={{ layer: 29, excludeSinks: true }} />);
    hover(container.querySelector('.tok[data-pos="10"]')!);
    const l29 = screen.getByTestId("token-lens").querySelector('[data-layer="29"]') as HTMLElement;
    const cells = within(l29).getAllByRole("row").slice(1).map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent));
    expect(cells.map((c) => c[0])).toEqual(["9", "5"]);
    expect(cells.map((c) => c[3])).toEqual(["75.0%", "25.0%"]);
  });

  it("click pins; the Signal and MoE tabs show zone, histogram and experts", () => {
    const { session, runId } = replay(loadFixture("chat_sketch_moe.json"));
    const { container } = render(<Harness session={session} runId={runId} />);
    act(() => void fireEvent.click(container.querySelector('.tok[data-pos="5"]')!));
    const lens = screen.getByTestId("token-lens");
    expect(within(lens).getByText("pinned")).toBeTruthy();
    act(() => void fireEvent.click(lens.querySelector('[data-tab="signal"]')!));
    expect(lens.querySelector(".signal")!.getAttribute("data-zone")).toBe("syntax_floor");
    expect(lens.querySelectorAll("svg.hist rect")).toHaveLength(16);
    act(() => void fireEvent.click(lens.querySelector('[data-tab="moe"]')!));
    const rows = [...lens.querySelectorAll('[data-layer="3"] tbody tr')].map((r) => r.textContent);
    expect(rows).toEqual(["#570.0%", "#230.0%"]);
  });

  it("a mouseover from a pointer that did not move (re-wrap under it) keeps the hover", () => {
    const { session, runId } = replay(loadFixture("chat_raw_think.json"));
    const { container } = render(<Harness session={session} runId={runId} />);
    hover(container.querySelector('.tok[data-pos="10"]')!);
    act(() => void fireEvent.mouseOver(container.querySelector('.tok[data-pos="7"]')!, { clientX: px, clientY: 5 }));
    expect(container.querySelector(".tok.focus")!.getAttribute("data-pos")).toBe("10");
  });

  it("the think block collapses from its header", () => {
    const { session, runId } = replay(loadFixture("chat_raw_think.json"));
    const { container } = render(<Harness session={session} runId={runId} />);
    act(() => void fireEvent.click(container.querySelector(".think-head")!));
    expect(container.querySelectorAll(".think-block .tok")).toHaveLength(0);
    expect(container.querySelectorAll(".tokens.output .tok")).toHaveLength(3);
  });
});
