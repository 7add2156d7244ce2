"""The scheduler process(es): own the model and KV cache, talk to the front end over ZMQ.

With ``--tp N`` there is one scheduler process per rank, all running the same Scheduler in
lockstep: rank 0 alone talks to the front end; at every loop iteration it broadcasts the
messages it received (over the tp group's gloo group) and every rank applies them in the
same order, then all ranks run the same step. The schedulers are deterministic and the
logits are all-gathered (byte-identical on every rank), so the ranks build the same
batches and sample the same tokens without further coordination; only rank 0 sends
outputs. Attention capture runs on every rank (so admission decisions stay identical),
but only rank 0's results travel: they cover rank 0's query heads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import faulthandler
import logging
import os
import signal
import traceback
from typing import Any

import zmq

from sglang.srt.managers.io_struct import (
    AbortReq,
    BatchTokenOut,
    FlushCacheReq,
    GetLoadReq,
    ReplayReq,
    ReqOutput,
    TokenizedGenerateReqInput,
)
from sglang.srt.model_executor.cuda_graph_runner import graph_status
from sglang.srt.server_args import ServerArgs

logger = logging.getLogger(__name__)


def model_info(sched: Any) -> dict[str, Any]:
    cfg = sched.cfg
    runner = sched.runner
    return {
        "model_path": runner.source_files.gguf_path if runner.source_files.kind == "gguf" else runner.files.folder,
        "display_name": runner.files.display_name,
        "architecture": cfg.architecture,
        "num_layers": cfg.num_layers,
        # with tp, capture sees rank 0's heads: head ids index them (see docs/gpu.md)
        "num_attention_heads": runner.num_heads,
        "num_attention_heads_total": cfg.num_heads,
        "tp_size": runner.tp_size,
        **graph_status(runner.graph_runner),
        "num_kv_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_size": cfg.hidden_size,
        "vocab_size": cfg.vocab_size,
        "context_length": cfg.context_length,
        "is_moe": cfg.is_moe,
        "num_experts": cfg.num_experts,
        "moe_layers": list(cfg.moe_layers),
        "dtype": str(runner.dtype).replace("torch.", ""),
        "device": str(runner.device),
        "attention_backend": runner.attention_backend_name,
        "max_total_tokens": runner.max_total_tokens,
        "max_running_requests": runner.max_running_requests,
        "eos_token_ids": sorted(sched.eos_ids),
    }


def _apply(sched: Any, msg: Any, send: "FrontEnd | None") -> None:
    """Apply one front-end message; only rank 0 (``send`` set) answers queries."""
    if isinstance(msg, TokenizedGenerateReqInput):
        sched.add_request(msg)
    elif isinstance(msg, AbortReq):
        sched.abort(msg.rid)
    elif isinstance(msg, ReplayReq):
        out = sched.replay(msg)  # every rank: the forward is collective under tensor parallelism
        if send is not None:
            send.send(out)
    elif isinstance(msg, FlushCacheReq):
        ok = sched.flush_cache()  # every rank flushes: the radix trees must stay identical
        if send is not None:
            send.send(ok)
    elif isinstance(msg, GetLoadReq):
        if send is not None:
            send.send(sched.load())


SEND_TIMEOUT_MS = 1000


@dataclass
class FrontEnd:
    """Rank 0's socket to the front end. A PUSH socket blocks while no peer takes its
    messages; with a send timeout the scheduler notices a front end that died and stops
    instead of hanging on as an orphan that holds the model's memory."""

    sock: Any
    parent: int  # the pid of the process that started this scheduler

    def send(self, obj: Any) -> bool:
        """Send, waiting as long as the front end lives; False once it is gone."""
        while True:
            try:
                self.sock.send_pyobj(obj)
                return True
            except zmq.Again:
                if os.getppid() != self.parent:
                    return False


def apply_message(sched: Any, msg: Any, send: "FrontEnd | None") -> None:
    """``_apply`` under a guard: a message that raises fails its own request, not the loop."""
    try:
        _apply(sched, msg, send)
    except Exception:  # noqa: BLE001
        logger.error("could not apply %s:\n%s", type(msg).__name__, traceback.format_exc())
        if isinstance(msg, TokenizedGenerateReqInput):
            sched.reject(msg.rid, len(msg.input_ids), "internal error while adding this request; see the server log",
                         status=500)


def run_scheduler_process(args: ServerArgs, ipc: dict[str, str], pipe: Any, tp_rank: int = 0,
                          dist_init_method: str | None = None) -> None:
    faulthandler.enable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    tag = f"scheduler tp{tp_rank}" if args.tp_size > 1 else "scheduler"
    logging.basicConfig(level=args.log_level.upper(), format=f"[{tag}] %(levelname)s %(message)s")
    parent = os.getppid()
    leader = tp_rank == 0
    try:
        from sglang.srt.distributed import broadcast_objects
        from sglang.srt.managers.scheduler import Scheduler
        from sglang.srt.model_executor.model_runner import ModelRunner
        from sglang.srt.model_loader.tokenizer import load_tokenizer

        if not leader:  # one sidecar stream per server: rank 0's
            args = dataclasses.replace(args, attention_sidecar_url=None)
        runner = ModelRunner(args, tp_rank, dist_init_method)
        tokenizer = load_tokenizer(runner.files, args.tokenizer_path, args.chat_template)
        sched = Scheduler(args, runner, tokenizer)
        from sglang.srt.capture.hook import maybe_install_capture

        maybe_install_capture(sched)
        recv = send = poller = None
        if leader:
            ctx = zmq.Context()
            recv = ctx.socket(zmq.PULL)
            recv.bind(ipc["to_scheduler"])
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
            push.setsockopt(zmq.LINGER, 0)
            push.bind(ipc["to_tokenizer"])
            send = FrontEnd(push, parent)
            poller = zmq.Poller()
            poller.register(recv, zmq.POLLIN)
        pipe.send(("ready", model_info(sched)))
    except Exception as e:  # report the reason to the launcher, which prints one clear line
        pipe.send(("error", f"{e}" if isinstance(e, ValueError) else traceback.format_exc()))
        return
    tp = args.tp_size
    while True:
        msgs: list[Any] = []
        stop = False
        if leader:
            assert poller is not None and recv is not None  # the leader made them above
            timeout = 0 if sched.has_work() else 1000
            while poller.poll(timeout):
                timeout = 0
                msgs.append(recv.recv_pyobj())
            stop = os.getppid() != parent  # the front end died: do not linger as an orphan
        if tp > 1:
            try:
                stop, msgs = broadcast_objects([stop, msgs] if leader else None)
            except Exception:  # rank 0 is gone (its end of the group closed): stop too
                logger.warning("tp group closed; rank %d stops", tp_rank)
                return
            stop = stop or os.getppid() != parent
        if stop:
            return
        for msg in msgs:
            apply_message(sched, msg, send)
        try:
            outs = sched.step() if sched.has_work() else sched.step_idle()
        except Exception:  # a bug must not kill the server: fail the batch's requests, keep serving
            logger.error("scheduler step failed:\n%s", traceback.format_exc())
            outs = sched.fail_all("internal error in the scheduler step; see the server log")
        if outs and leader:
            assert send is not None  # the leader made it above
            if not send.send(BatchTokenOut(outs)):
                logger.warning("the front end is gone; the scheduler stops")
                return


__all__ = ["run_scheduler_process", "ReqOutput"]
