"""Start a real ``python -m sglang.launch_server`` process for the e2e tests."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx
from sglang.srt.utils.network import free_port

API_KEY = "sk-test"
ATTN_KEY = "attn-test"


@dataclass
class RunningServer:
    proc: subprocess.Popen
    port: int
    health_codes: list[int] = field(default_factory=list)  # /health answers seen while starting

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120,
                            headers={"Authorization": f"Bearer {API_KEY}", **headers})


def start_server(flags: list[str], timeout: float = 600) -> RunningServer:
    port = free_port()
    cmd = [sys.executable, "-m", "sglang.launch_server", "--port", str(port), "--log-level", "warning", *flags]
    proc = subprocess.Popen(cmd, start_new_session=True)
    srv = RunningServer(proc, port)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} while starting")
        try:
            code = httpx.get(f"{srv.url}/health", timeout=5).status_code
            srv.health_codes.append(code)
            if code == 200:
                return srv
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError("server did not become healthy")
