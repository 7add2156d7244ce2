"""launch_server's command line: bad flags and a taken port fail fast with one clear line."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest


def run(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sglang.launch_server", *flags], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("flags,needle", [
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--port", "abc"], "--port: invalid int value"),
    (["--port", "70000"], "--port must be in 1..65535"),
    (["--tp", "0"], "--tp must be at least 1"),
    (["--reasoning-parser", "llama"], "invalid choice: 'llama'"),
    (["--dtype", "int3"], "--dtype: unknown dtype"),
    (["--mem-fraction-static", "1.5"], "--mem-fraction-static must be in (0, 1)"),
    (["--model-path", "/no/such/model.gguf"], "--model-path: '/no/such/model.gguf' does not exist"),
    (["--chat-template", "/no/such/template.jinja"], "--chat-template"),
    (["--log-level", "loud"], "--log-level"),
])
def test_bad_flag_is_one_line_and_exit_2(flags: list[str], needle: str) -> None:
    r = run(*flags)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]


def test_taken_port_is_reported_before_loading() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run("--port", str(port))
    assert r.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr


def test_help_explains_every_core_flag() -> None:
    r = run("--help")
    assert r.returncode == 0
    for flag in ("--model-path", "--tokenizer-path", "--host", "--port", "--dtype", "--context-length",
                 "--mem-fraction-static", "--max-total-tokens", "--max-running-requests", "--chunked-prefill-size",
                 "--tp", "--attention-backend", "--disable-cuda-graph", "--disable-radix-cache", "--reasoning-parser",
                 "--chat-template", "--served-model-name", "--api-key", "--log-level", "--random-seed", "--device"):
        assert flag in r.stdout, flag
