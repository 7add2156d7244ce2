// Which token the dashboard points at: the hovered token, the last hovered one (the lens keeps
// showing it after the pointer leaves, so it can be read) and the pinned (clicked) one. Opening
// another session, starting a new chat, regenerating or closing the lens clears all three.
import { useCallback, useReducer } from "react";
import type { Focus } from "../components/focus";

export interface FocusState {
  hover: Focus | null;
  lastHover: Focus | null;
  pinned: Focus | null;
}

export type FocusAction = { type: "hover"; focus: Focus | null } | { type: "pin"; focus: Focus | null } | { type: "reset" };

export const NO_FOCUS: FocusState = { hover: null, lastHover: null, pinned: null };

/** Returns the same state object when nothing changes, so React skips the render. */
export function focusReducer(s: FocusState, a: FocusAction): FocusState {
  switch (a.type) {
    case "hover": {
      const lastHover = a.focus ?? s.lastHover;
      return s.hover === a.focus && s.lastHover === lastHover ? s : { ...s, hover: a.focus, lastHover };
    }
    case "pin":
      return s.pinned === a.focus ? s : { ...s, pinned: a.focus };
    case "reset":
      return s.hover || s.lastHover || s.pinned ? NO_FOCUS : s;
  }
}

/** What the Token Lens shows: the pinned token, else the hovered one, else the last hovered one. */
export const lensFocusOf = (s: FocusState): Focus | null => s.pinned ?? s.hover ?? s.lastHover;

export interface FocusHandle {
  hover: Focus | null;
  pinned: Focus | null;
  /** The Token Lens's token (lensFocusOf). */
  lensFocus: Focus | null;
  setHover: (f: Focus | null) => void;
  setPinned: (f: Focus | null) => void;
  /** Clear hover, last hover and pin. */
  resetFocus: () => void;
}

/** The focus state with stable setters. */
export function useFocus(): FocusHandle {
  const [s, dispatch] = useReducer(focusReducer, NO_FOCUS);
  const setHover = useCallback((focus: Focus | null) => dispatch({ type: "hover", focus }), []);
  const setPinned = useCallback((focus: Focus | null) => dispatch({ type: "pin", focus }), []);
  const resetFocus = useCallback(() => dispatch({ type: "reset" }), []);
  return { hover: s.hover, pinned: s.pinned, lensFocus: lensFocusOf(s), setHover, setPinned, resetFocus };
}
