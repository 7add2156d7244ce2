"""The README's offline example runs verbatim as a saved script (`python example.py`),
without an ``if __name__ == "__main__":`` guard: the engine's spawned scheduler must not
re-run the caller's script."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

README = os.path.join(os.path.dirname(__file__), "..", "..", "..", "README.md")


def test_readme_offline_example_runs_as_a_script(tmp_path) -> None:
    with open(README, encoding="utf-8") as f:
        block = re.search(r"## Offline use\n\n```python\n(.*?)```", f.read(), re.S)
    assert block, "README.md has no offline example"
    script = tmp_path / "example.py"
    script.write_text(block.group(1) + 'print("SCRIPT-END")\n', encoding="utf-8")
    assert "__main__" not in block.group(1)  # the point: no guard
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'type': 'length'" in r.stdout and r.stdout.count("SCRIPT-END") == 1, r.stdout
