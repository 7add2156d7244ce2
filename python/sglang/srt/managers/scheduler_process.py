"""The scheduler process: owns the model and KV cache, talks to the front end over ZMQ."""
from __future__ import annotations

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
    ReqOutput,
    TokenizedGenerateReqInput,
)
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
        "num_attention_heads": cfg.num_heads,
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


def run_scheduler_process(args: ServerArgs, ipc: dict[str, str], pipe: Any) -> None:
    faulthandler.enable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    logging.basicConfig(level=args.log_level.upper(), format="[scheduler] %(levelname)s %(message)s")
    parent = os.getppid()
    try:
        from sglang.srt.managers.scheduler import Scheduler
        from sglang.srt.model_executor.model_runner import ModelRunner
        from sglang.srt.model_loader.tokenizer import load_tokenizer

        runner = ModelRunner(args)
        tokenizer = load_tokenizer(runner.files, args.tokenizer_path, args.chat_template)
        sched = Scheduler(args, runner, tokenizer)
        from sglang.srt.capture.hook import maybe_install_capture

        maybe_install_capture(sched)
        ctx = zmq.Context()
        recv = ctx.socket(zmq.PULL)
        recv.bind(ipc["to_scheduler"])
        send = ctx.socket(zmq.PUSH)
        send.bind(ipc["to_tokenizer"])
        pipe.send(("ready", model_info(sched)))
    except Exception as e:  # report the reason to the launcher, which prints one clear line
        pipe.send(("error", f"{e}" if isinstance(e, ValueError) else traceback.format_exc()))
        return
    poller = zmq.Poller()
    poller.register(recv, zmq.POLLIN)
    while True:
        timeout = 0 if sched.has_work() else 1000
        while poller.poll(timeout):
            timeout = 0
            msg = recv.recv_pyobj()
            if isinstance(msg, TokenizedGenerateReqInput):
                sched.add_request(msg)
            elif isinstance(msg, AbortReq):
                sched.abort(msg.rid)
            elif isinstance(msg, FlushCacheReq):
                send.send_pyobj(sched.flush_cache())
            elif isinstance(msg, GetLoadReq):
                send.send_pyobj(sched.load())
        if os.getppid() != parent:  # the front end died: do not linger as an orphan
            return
        try:
            outs = sched.step() if sched.has_work() else sched.step_idle()
        except Exception:  # a bug must not kill the server: fail the batch's requests, keep serving
            logger.error("scheduler step failed:\n%s", traceback.format_exc())
            outs = sched.fail_all("internal error in the scheduler step; see the server log")
        if outs:
            send.send_pyobj(BatchTokenOut(outs))


__all__ = ["run_scheduler_process", "ReqOutput"]
