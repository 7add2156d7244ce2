"""Start the scheduler process(es) and return a connected TokenizerManager."""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import tempfile
import uuid
from typing import Any

from sglang.srt.managers.tokenizer_manager import TokenizerManager
from sglang.srt.server_args import ServerArgs

logger = logging.getLogger(__name__)


def _ipc_names() -> dict[str, str]:
    base = os.path.join(tempfile.gettempdir(), f"sglang-{uuid.uuid4().hex[:12]}")
    return {"to_scheduler": f"ipc://{base}-sched", "to_tokenizer": f"ipc://{base}-tok"}


def stop_processes(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


def launch_engine_processes(args: ServerArgs) -> TokenizerManager:
    """Validate the arguments, start the scheduler, wait until the model is loaded.

    Raises ValueError with one clear message (bad flag, missing model, unsupported
    architecture, corrupt weights); nothing is left running in that case.
    """
    args.validate()
    if args.tp_size != 1:
        raise ValueError("--tp > 1 is not supported yet by this engine")
    from sglang.srt.model_loader.locate import locate_model
    from sglang.srt.model_loader.tokenizer import load_tokenizer

    from sglang.srt.model_loader.gguf_cache import materialize

    # Fail fast on a bad path, and convert a GGUF once here rather than in two processes.
    files = materialize(locate_model(args.model_path))
    ipc = _ipc_names()
    # OpenMP threads that spin while waiting are catastrophic when another process shares
    # the cores (measured: a 0.4 ms matmul took 10-23 ms): let them sleep instead.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ctx = mp.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    from sglang.srt.managers.scheduler_process import run_scheduler_process

    proc = ctx.Process(target=run_scheduler_process, args=(args, ipc, writer), daemon=True)
    proc.start()
    writer.close()
    try:
        tokenizer = load_tokenizer(files, args.tokenizer_path, args.chat_template)
        while not reader.poll(0.5):
            if not proc.is_alive():
                raise ValueError(f"the scheduler process exited during start-up (code {proc.exitcode})")
        kind, payload = reader.recv()
    except BaseException:
        stop_processes([proc])
        raise
    if kind != "ready":
        stop_processes([proc])
        raise ValueError(payload)
    info = dict(payload)
    info["served_model_name"] = args.served_model_name or info["display_name"]
    tm = TokenizerManager(args, tokenizer, info, ipc)
    tm.scheduler_procs = [proc]
    return tm
