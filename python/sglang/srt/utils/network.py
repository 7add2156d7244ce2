"""Small network helpers with no heavy imports (usable by the sidecar, tests and benches)."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A local TCP port that was free a moment ago (another process may still take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
