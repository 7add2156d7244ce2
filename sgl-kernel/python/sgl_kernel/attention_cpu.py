"""Paged decode attention on CPU in C++ (built once with torch's JIT extension loader).

Reads each key and value row of a request straight from the paged pool: no padded
gather, so a decode step at batch 32 moves about a third of the bytes that gather + SDPA
move. float32 only; everything else (and a machine without a C++ compiler, or
``SGLANG_CPU_DECODE_ATTENTION=sdpa``) keeps the torch path. The build lands in torch's
extension cache (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``) and
takes about a minute the first time.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)
_SRC = Path(__file__).with_name("csrc") / "decode_attention_cpu.cpp"
# The source's hash is part of the name: a changed source always gets its own build
# (torch's own staleness check missed a rebuild when the same name was built elsewhere).
_NAME = "sgl_kernel_cpu_" + hashlib.sha1(_SRC.read_bytes()).hexdigest()[:12]
_STALE_LOCK_S = 600
_lock = threading.Lock()
_module: Any = None
_failed = False


def _load() -> Any:
    global _module, _failed
    if _module is not None:  # built: no lock on the per-layer path
        return _module
    with _lock:
        if _module is None and not _failed:
            try:
                from torch.utils.cpp_extension import _get_build_directory, load

                # torch serialises builds with a lock file; one left by a build that was
                # killed would make every later load wait forever. No build takes this long.
                lock = Path(_get_build_directory(_NAME, False)) / "lock"
                if lock.exists() and time.time() - lock.stat().st_mtime > _STALE_LOCK_S:
                    logger.warning("removing a stale build lock %s", lock)
                    lock.unlink(missing_ok=True)
                _module = load(name=_NAME, sources=[str(_SRC)],
                               extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"],
                               verbose=False)
            except Exception as e:  # no compiler, no headers: the caller keeps the torch path
                _failed = True
                logger.warning("C++ CPU decode attention unavailable (%s); using gather + SDPA", e)
    return _module


def available() -> bool:
    """True when the C++ kernel is enabled and builds (builds it on the first call)."""
    if os.environ.get("SGLANG_CPU_DECODE_ATTENTION", "cpp") != "cpp":
        return False
    return _load() is not None


def decode_attention(q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, req_to_token: torch.Tensor,
                     req_rows: torch.Tensor, seq_lens: torch.Tensor, scale: float,
                     mask_prefix: torch.Tensor | None = None, per_head: bool = False) -> tuple[torch.Tensor, ...]:
    """(out [B, Hq, D], lse [B, Hq]) of one query per request over keys 0..seq_len-1.

    q [B, Hq, D] float32, k/v_buffer [slots, Hkv, D] float32, req_to_token [R, max_ctx].
    With ``mask_prefix`` [B] the kernel also returns, from the same probabilities, the
    capture statistics of every row over all heads (docs/architecture.md#capture-definitions):
    (out, lse, hist [B, 16], masked_mass [B], entropy [B]); keys at positions < mask_prefix
    count in masked_mass instead of the histogram. ``per_head=True`` returns them per head in
    the decode stats layout instead: (out, lse, stats [B, Hq, 18]) as attention_triton's."""
    mod = _load()
    if mod is None:
        raise RuntimeError("the C++ CPU decode attention could not be built")
    res = mod.decode_attention(q, k_buffer, v_buffer, req_to_token, req_rows, seq_lens, float(scale), mask_prefix)
    if mask_prefix is None:
        return res[0], res[1]
    out, lse, hist, masked, entropy = res
    hq = q.shape[1]
    if per_head:
        # the kernel sums hist and masked mass over each KV group's G heads: every head of a
        # group gets the group's mean, so a mean over heads is exact; entropy is per head
        g = hq // hist.shape[1]
        group = torch.cat([hist, masked[..., None]], -1).div_(g).repeat_interleave(g, dim=1)
        return out, lse, torch.cat([group, entropy[..., None]], -1)
    return out, lse, hist.sum(1) / hq, masked.sum(1) / hq, entropy.sum(1) / hq
