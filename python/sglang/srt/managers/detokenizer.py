"""Incremental detokenization that never emits half a UTF-8 character.

Byte-level BPE tokens can split a character across tokens; decoding such a prefix gives
U+FFFD. We decode a window that starts a few tokens back (so merges across the boundary
come out right) and only emit text once it no longer ends in a replacement character.
"""
from __future__ import annotations

from typing import Any


class IncrementalDecoder:
    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True,
                 spaces_between_special_tokens: bool = True) -> None:
        self.tok = tokenizer
        self.kw = {"skip_special_tokens": skip_special_tokens}
        if not spaces_between_special_tokens:
            self.kw["spaces_between_special_tokens"] = False
        self.ids: list[int] = []
        self.surr = 0  # start of the decode window
        self.read = 0  # tokens whose text has been emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, **self.kw)

    def push(self, new_ids: list[int], final: bool = False) -> str:
        """Add tokens; return the newly complete text."""
        self.ids.extend(new_ids)
        prefix = self._decode(self.ids[self.surr : self.read])
        full = self._decode(self.ids[self.surr :])
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            self.surr, self.read = self.read, len(self.ids)
            return full[len(prefix) :]
        return ""
