"""A real ``python -m sglang.launch_server`` (bundled SmolLM2 on CPU) for the e2e tests."""
from __future__ import annotations

import os
import signal
from typing import Iterator

import pytest
from e2e_server import ATTN_KEY, API_KEY, RunningServer, start_server


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    srv = start_server([
        "--served-model-name", "smol", "--api-key", API_KEY, "--reasoning-parser", "qwen3",
        "--return-attention-tokens", "--attention-api-key", ATTN_KEY, "--attention-max-concurrent-capture", "1",
        "--attention-tokens-top-k", "4", "--max-running-requests", "40",
    ])
    yield srv
    if srv.proc.poll() is None:
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
