"""Build-once loading of sgl_kernel's C++ CPU extensions with torch's JIT extension loader.

The sources' hash is part of the module name, so a changed source always gets its own
build (torch's own staleness check missed a rebuild when the same name was built
elsewhere). Builds land in torch's extension cache (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``) and take about a minute the first time.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
CSRC = Path(__file__).with_name("csrc")
# torch serialises builds with a lock file; one left by a build that was killed would make
# every later load wait forever. No build takes this long.
_STALE_LOCK_S = 600


class Extension:
    """One C++ extension: built on the first ``get`` (once per process, thread-safe); None
    when it cannot build (no compiler, no headers), after one warning naming ``fallback``."""

    def __init__(self, prefix: str, sources: list[str], cflags: list[str], ldflags: list[str] | None = None,
                 fallback: str = "the torch ops", headers: tuple[str, ...] = ("vec_math.h",)) -> None:
        self.paths = [CSRC / s for s in sources]
        # the headers they include count too: a changed header is a new build
        hashed = self.paths + [CSRC / h for h in headers]
        self.name = prefix + hashlib.sha1(b"".join(p.read_bytes() for p in hashed)).hexdigest()[:12]
        self.cflags, self.ldflags, self.fallback = cflags, ldflags or [], fallback
        self._lock = threading.Lock()
        self._module: Any = None
        self._failed = False

    def get(self) -> Any:
        if self._module is not None:  # built: no lock on the per-layer path
            return self._module
        with self._lock:
            if self._module is None and not self._failed:
                try:
                    from torch.utils.cpp_extension import _get_build_directory, load

                    lock = Path(_get_build_directory(self.name, False)) / "lock"
                    if lock.exists() and time.time() - lock.stat().st_mtime > _STALE_LOCK_S:
                        logger.warning("removing a stale build lock %s", lock)
                        lock.unlink(missing_ok=True)
                    self._module = load(name=self.name, sources=[str(p) for p in self.paths],
                                        extra_cflags=self.cflags, extra_ldflags=self.ldflags, verbose=False)
                except Exception as e:  # the callers keep their torch path
                    self._failed = True
                    logger.warning("%s unavailable (%s); using %s", self.name, e, self.fallback)
        return self._module
