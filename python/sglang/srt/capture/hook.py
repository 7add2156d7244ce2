"""Installs attention capture into a scheduler (filled in by the capture package)."""
from __future__ import annotations

from typing import Any


def maybe_install_capture(sched: Any) -> None:
    """Capture is wired in only when the server allows it, so other servers pay nothing."""
    args = sched.args
    if not (args.return_attention_tokens or args.attention_capture_default != "off"):
        return
    from sglang.srt.capture.orchestrator import CaptureHook

    sched.capture_hook = CaptureHook(sched)
