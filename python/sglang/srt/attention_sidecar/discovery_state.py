"""The artifact set the service classifies against, with atomic reload and auto-reload.

A reload builds a complete new :class:`ArtifactSet` off to the side and swaps the reference
only when every check passed, so a broken or partial folder leaves the old set serving.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sglang.srt.attention_sidecar.artifacts import ArtifactError, ArtifactSet, load_artifact_set, manifest_fingerprint

log = logging.getLogger("attention_sidecar.discovery")


class DiscoveryState:
    def __init__(self, directory: str | None, auto_reload_interval: float = 0.0):
        self.directory = directory
        self.auto_reload_interval = auto_reload_interval
        self.current: ArtifactSet | None = None
        self.last_error: str | None = None
        self.last_attempt_at: float | None = None
        self.reloads = 0
        self.reload_failures = 0
        self._lock = threading.Lock()  # one reload at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reload(self) -> ArtifactSet:
        """Load the folder; on success swap it in, otherwise keep the old set and raise."""
        if not self.directory:
            raise ArtifactError("the service was started without --discovery-dir")
        with self._lock:
            self.last_attempt_at = time.time()
            try:
                new = load_artifact_set(self.directory)
            except ArtifactError as e:
                self.reload_failures += 1
                self.last_error = str(e)
                raise
            self.current = new  # a single reference assignment: readers see old or new, never a mix
            self.reloads += 1
            self.last_error = None
            log.info("loaded discovery run %s from %s", new.run_id, self.directory)
            return new

    def try_reload(self) -> None:
        try:
            self.reload()
        except ArtifactError as e:
            log.warning("discovery artifacts not loaded: %s", e)

    def start_auto_reload(self) -> None:
        if self.directory and self.auto_reload_interval > 0:
            self._thread = threading.Thread(target=self._auto, name="auto-reload", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _auto(self) -> None:
        while not self._stop.wait(self.auto_reload_interval):
            fp = manifest_fingerprint(self.directory or "")
            cur = self.current.manifest.get("_sha256") if self.current else None
            if fp is not None and fp != cur:
                self.try_reload()

    def status(self) -> dict[str, Any]:
        cur = self.current
        return {
            "loaded": cur is not None,
            "directory": self.directory,
            "current": cur.status() if cur else None,
            "last_error": self.last_error,
            "last_attempt_at": self.last_attempt_at,
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "auto_reload_interval": self.auto_reload_interval,
        }
