"""``python -m sglang.launch_server``: the OpenAI-compatible HTTP server.

Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 2 for a bad flag, a taken port
or a model that cannot be loaded from the given path, 1 for any other failure.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
from typing import NoReturn, Sequence

from sglang.srt.server_args import ServerArgs

logger = logging.getLogger("sglang.launch_server")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sglang.launch_server",
                description="Serve a model over an OpenAI-compatible HTTP API (SGLang flags).",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ServerArgs.add_cli_args(p)
    return p


def fail(message: str, code: int = 2) -> NoReturn:
    sys.stderr.write(f"python -m sglang.launch_server: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def parse_args(argv: Sequence[str] | None) -> ServerArgs:
    args = ServerArgs.from_cli_args(build_parser().parse_args(argv))
    try:
        args.validate()
    except ValueError as e:
        fail(str(e))
    if args.model_path and (os.sep in args.model_path or args.model_path.startswith(".")
                            or args.model_path.endswith(".gguf")) and not os.path.exists(args.model_path):
        fail(f"--model-path: {args.model_path!r} does not exist (give a model folder or a .gguf file; "
             "omit the flag for the bundled SmolLM2)")
    if args.chat_template and not os.path.isfile(args.chat_template):
        fail(f"--chat-template: {args.chat_template!r} is not a file")
    if args.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
        fail(f"--log-level: unknown level {args.log_level!r}; choose debug, info, warning or error")
    return args


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before loading the model, so a taken port fails in a second, not after minutes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            fail(f"port {port} on {host} is already in use; stop the other server or pass --port")
        if e.errno == errno.EADDRNOTAVAIL or isinstance(e, socket.gaierror):
            fail(f"--host: cannot listen on {host!r}: {e.strerror or e}")
        if e.errno == errno.EACCES:
            fail(f"--port: permission denied to listen on port {port}")
        fail(f"cannot listen on {host}:{port}: {e}")
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def reap_children(timeout: float = 5.0) -> None:
    """Stop every process this server started (scheduler ranks and their helpers)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a transformers/torch dependency
        import multiprocessing

        for p in multiprocessing.active_children():
            p.terminate()
            p.join(timeout)
            if p.is_alive():
                p.kill()
        return
    me = psutil.Process()

    def is_tracker(p: "psutil.Process") -> bool:
        # multiprocessing's resource tracker ignores SIGTERM by design and exits (after
        # cleaning up leaked semaphores) as soon as this process's pipe to it closes.
        try:
            return any("resource_tracker" in part for part in p.cmdline())
        except psutil.Error:
            return False

    kids = [k for k in me.children(recursive=True) if not is_tracker(k)]
    for k in kids:
        try:
            k.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(kids, timeout=timeout)
    for k in alive:
        try:
            k.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="[%(asctime)s %(name)s] %(levelname)s %(message)s")
    sock = bind_socket(args.host, args.port)

    # uvicorn re-raises the signal that stopped it once it has shut down; these handlers
    # turn that into a normal return so the engine and its processes are cleaned up.
    stop: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: stop.append(s))

    from sglang.srt.entrypoints import http_server

    exit_code = [0]

    def on_load_failure(message: str) -> None:
        # The full error (possibly a child's traceback) is in the log above; one line here.
        lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
        summary = lines[-1] if len(lines) > 1 else message
        sys.stderr.write(f"python -m sglang.launch_server: error: model failed to load: {summary}\n")
        exit_code[0] = 2 if message.startswith(("ValueError", "FileNotFoundError")) else 1
        server = http_server.state_holder.get("server")
        if server is not None:
            server.should_exit = True

    try:
        http_server.run_server(args, sock, on_load_failure=on_load_failure)
    finally:
        sock.close()
        reap_children()
    return exit_code[0]


if __name__ == "__main__":
    sys.exit(main())
