"""Installs attention capture into a scheduler (filled in by the capture package)."""
from __future__ import annotations

from typing import Any


def maybe_install_capture(sched: Any) -> None:
    """Capture is wired in only when the server allows it, so other servers pay nothing."""
    if not sched.args.capture_enabled:
        return
    from sglang.srt.capture.orchestrator import CaptureHook

    sched.capture_hook = CaptureHook(sched)
