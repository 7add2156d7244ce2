// @vitest-environment jsdom
// The dashboard's focus state (state/useFocus.ts): hover, last hover, pin and the one reset.
import { act, cleanup, renderHook } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import type { Focus } from "../src/components/focus";
import { focusReducer, lensFocusOf, NO_FOCUS, useFocus } from "../src/state/useFocus";

afterEach(cleanup);

const a: Focus = { runId: "r1", position: 3 };
const b: Focus = { runId: "r1", position: 7 };

describe("focusReducer", () => {
  it("hover sets the hovered token and remembers it as the last hover", () => {
    const s = focusReducer(NO_FOCUS, { type: "hover", focus: a });
    expect(s).toEqual({ hover: a, lastHover: a, pinned: null });
    expect(lensFocusOf(s)).toBe(a);
  });
  it("hover null keeps the last hovered token for the lens", () => {
    const s = focusReducer(focusReducer(NO_FOCUS, { type: "hover", focus: a }), { type: "hover", focus: null });
    expect(s).toEqual({ hover: null, lastHover: a, pinned: null });
    expect(lensFocusOf(s)).toBe(a);
  });
  it("the lens shows the pin first, then the hover, then the last hover", () => {
    expect(lensFocusOf({ hover: a, lastHover: a, pinned: b })).toBe(b);
    expect(lensFocusOf({ hover: a, lastHover: b, pinned: null })).toBe(a);
    expect(lensFocusOf({ hover: null, lastHover: b, pinned: null })).toBe(b);
    expect(lensFocusOf(NO_FOCUS)).toBeNull();
  });
  it("pin sets and clears the pinned token without touching the hover", () => {
    const hovered = focusReducer(NO_FOCUS, { type: "hover", focus: a });
    const pinned = focusReducer(hovered, { type: "pin", focus: b });
    expect(pinned).toEqual({ hover: a, lastHover: a, pinned: b });
    expect(focusReducer(pinned, { type: "pin", focus: null })).toEqual({ hover: a, lastHover: a, pinned: null });
  });
  it("reset clears hover, last hover and pin", () => {
    const s = focusReducer(focusReducer(NO_FOCUS, { type: "hover", focus: a }), { type: "pin", focus: b });
    expect(focusReducer(s, { type: "reset" })).toEqual(NO_FOCUS);
  });
  it("returns the same state when nothing changes (no re-render)", () => {
    const s = focusReducer(NO_FOCUS, { type: "hover", focus: a });
    expect(focusReducer(s, { type: "hover", focus: a })).toBe(s);
    expect(focusReducer(s, { type: "pin", focus: null })).toBe(s);
    expect(focusReducer(NO_FOCUS, { type: "hover", focus: null })).toBe(NO_FOCUS);
    expect(focusReducer(NO_FOCUS, { type: "reset" })).toBe(NO_FOCUS);
  });
});

describe("useFocus", () => {
  it("drives hover, pin, lens focus and reset, with stable setters", () => {
    const { result } = renderHook(() => useFocus());
    const first = result.current;
    expect(first.hover).toBeNull();
    expect(first.pinned).toBeNull();
    expect(first.lensFocus).toBeNull();

    act(() => result.current.setHover(a));
    expect(result.current.hover).toBe(a);
    expect(result.current.lensFocus).toBe(a);

    act(() => result.current.setHover(null));
    expect(result.current.hover).toBeNull();
    expect(result.current.lensFocus).toBe(a); // the last hover stays readable

    act(() => result.current.setPinned(b));
    expect(result.current.pinned).toBe(b);
    expect(result.current.lensFocus).toBe(b);

    act(() => result.current.resetFocus());
    expect(result.current.hover).toBeNull();
    expect(result.current.pinned).toBeNull();
    expect(result.current.lensFocus).toBeNull();

    expect(result.current.setHover).toBe(first.setHover);
    expect(result.current.setPinned).toBe(first.setPinned);
    expect(result.current.resetFocus).toBe(first.resetFocus);
  });
});
