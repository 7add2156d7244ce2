"""Fixtures for the attention sidecar tests: one real discovery run shared by the session."""
from __future__ import annotations

import os

import pytest

from sglang.test.sidecar_service import shared_discovery

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DISCOVERY_SCRIPT = os.path.join(REPO, "examples", "attention_explorer", "discovery", "run_discovery.py")


@pytest.fixture(scope="session")
def discovery_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return shared_discovery(str(tmp_path_factory.getbasetemp()), DISCOVERY_SCRIPT)
