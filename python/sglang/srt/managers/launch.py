"""Start the scheduler process(es) and return a connected TokenizerManager."""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import uuid
from typing import Any, Iterator

from sglang.srt.managers.tokenizer_manager import TokenizerManager
from sglang.srt.server_args import ServerArgs

logger = logging.getLogger(__name__)


def _ipc_names() -> dict[str, str]:
    base = os.path.join(tempfile.gettempdir(), f"sglang-{uuid.uuid4().hex[:12]}")
    return {"to_scheduler": f"ipc://{base}-sched", "to_tokenizer": f"ipc://{base}-tok"}


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While scheduler processes are spawned, hide the caller's main module from
    multiprocessing: a spawned child otherwise re-runs the script that created the Engine
    (and, without an ``if __name__ == "__main__":`` guard, tries to start an engine of its
    own, so the parent died with a bare EOFError). The scheduler needs nothing from it:
    its target and arguments all come from sglang."""
    main = sys.modules.get("__main__")
    saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__")
                             if main is not None and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
        yield
    finally:
        if main is not None:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


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
    """Validate the arguments, start the scheduler(s), wait until the model is loaded.

    With ``--tp N`` one scheduler process per rank is started (they join one
    torch.distributed group: NCCL on GPUs, gloo on CPU); rank 0 talks to the front end.
    Raises ValueError with one clear message (bad flag, missing model, unsupported
    architecture, corrupt weights, heads not divisible by tp); nothing is left running
    in that case.
    """
    args.validate()
    from sglang.srt.model_loader.locate import locate_model
    from sglang.srt.model_loader.tokenizer import load_tokenizer

    from sglang.srt.model_loader.gguf_cache import materialize

    # Fail fast on a bad path, and convert a GGUF once here rather than in every process.
    files = materialize(locate_model(args.model_path))
    ipc = _ipc_names()
    # OpenMP threads that spin while waiting are catastrophic when another process shares
    # the cores (measured: a 0.4 ms matmul took 10-23 ms): let them sleep instead. On a
    # machine of its own, GOMP_SPINCOUNT=20000 (a bounded spin) speeds up batch-1 decode
    # ~1.5x; under contention it halved it (docs/performance.md), so it stays opt-in.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ctx = mp.get_context("spawn")
    from sglang.srt.distributed import free_port
    from sglang.srt.managers.scheduler_process import run_scheduler_process

    dist_init = f"tcp://127.0.0.1:{free_port()}" if args.tp_size > 1 else None
    procs, readers = [], []
    for rank in range(args.tp_size):
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=run_scheduler_process, args=(args, ipc, writer, rank, dist_init), daemon=True)
        with _main_module_hidden():
            proc.start()
        writer.close()
        procs.append(proc)
        readers.append(reader)
    info: dict[str, Any] = {}
    try:
        tokenizer = load_tokenizer(files, args.tokenizer_path, args.chat_template)
        pending = set(range(args.tp_size))
        while pending:
            # Any rank's error first: a failed rank leaves the others blocked waiting for it.
            for rank in sorted(pending):
                if readers[rank].poll(0.2 / len(pending)):
                    kind, payload = readers[rank].recv()
                    if kind != "ready":
                        raise ValueError(payload if args.tp_size == 1 else f"tp rank {rank}: {payload}")
                    if rank == 0:
                        info = dict(payload)
                    pending.discard(rank)
                elif not procs[rank].is_alive() and not readers[rank].poll(0):
                    raise ValueError(f"the scheduler process exited during start-up (code {procs[rank].exitcode})")
    except BaseException:
        stop_processes(procs)
        raise
    info["served_model_name"] = args.served_model_name or info["display_name"]
    tm = TokenizerManager(args, tokenizer, info, ipc)
    tm.scheduler_procs = procs
    return tm
