"""Capture's CPU workspace is flat in the context length, measured exactly.

The measurement is bench_capture's own (torch profiler memory events: every allocation and
free through torch's CPU allocator during the call, peak of their running sum, minus the
result), so the numbers are the same on every run and the bounds can be tight.
"""
from __future__ import annotations

import torch

from sgl_kernel.bench_capture import capture_workspace, profiled_workspace

MiB = 1 << 20
LENS = (1024, 16384, 1 << 20)
# 4 query heads on one KV head x 64 dims, so the 1M-key cache is 256 MiB and the call ~10 s
# (the workspace is per tile: a 256-key K tile is 64 KiB). Before the fix the table slice
# alone grew 4 bytes per key: 4 MiB more at 1M keys than at 16k.
SHAPE = dict(heads=4, kv_heads=1, head_dim=64, top_k=10, chunk_size=2048, impl="torch")


def test_profiled_workspace_counts_a_transient_and_not_the_result():
    def holds_transient():
        x = torch.ones(1 << 20)  # 4 MiB, live during the call, freed before it returns
        return x[:8].sum().reshape(1)

    res, workspace, peak = profiled_workspace(holds_transient)
    assert peak >= 4 * MiB and 4 * MiB <= workspace < 4 * MiB + 4096, (workspace, peak)
    assert profiled_workspace(holds_transient)[1:] == (workspace, peak)  # deterministic
    res, workspace, peak = profiled_workspace(lambda: torch.zeros(1 << 18))  # only a result
    assert workspace == 0 and peak == 1 << 20, (workspace, peak)


def test_decode_capture_workspace_does_not_grow_with_the_context():
    ws = {}
    for n in LENS:
        res, ws[n], _ = capture_workspace(n, **SHAPE)
        assert int(res.n_keys[0]) == n and 0 < float(res.mass_captured[0]) <= 1
    spread = max(ws.values()) - min(ws.values())
    assert spread < MiB, ws
    # Streaming lengths (64x more keys apart): nothing that costs even a byte per key.
    assert abs(ws[LENS[2]] - ws[LENS[1]]) < LENS[2] - LENS[1], ws
    # A few tiles' worth (about 90 KiB here).
    assert 0 < max(ws.values()) < MiB // 4, ws
    # Deterministic: the same call measures the same bytes.
    assert capture_workspace(LENS[1], **SHAPE)[1] == ws[LENS[1]]
