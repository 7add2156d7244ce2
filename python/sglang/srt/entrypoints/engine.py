"""The offline API: ``sglang.Engine``, as in SGLang.

    engine = sglang.Engine()                     # bundled SmolLM2 on CPU
    out = engine.generate("The capital of France is", {"temperature": 0, "max_new_tokens": 16})
    out["text"], out["output_ids"], out["meta_info"]["finish_reason"]
    for chunk in engine.generate("Hi", {"max_new_tokens": 32}, stream=True): ...
    engine.shutdown()

It starts the same scheduler process as the server and talks to it through the same
TokenizerManager, so offline and served results are identical. No HTTP stack is imported.
"""
from __future__ import annotations

import asyncio
import atexit
from typing import Any, AsyncIterator, Iterator

from sglang.srt.managers.io_struct import CaptureParams, GenerateReqInput
from sglang.srt.managers.launch import launch_engine_processes
from sglang.srt.server_args import ServerArgs


def _result(item: dict[str, Any]) -> dict[str, Any]:
    return {"text": item["text"], "output_ids": item["output_ids"], "meta_info": item["meta_info"]}


class Engine:
    def __init__(self, model_path: str | None = None, **kwargs: Any) -> None:
        self.server_args = ServerArgs.from_kwargs(model_path=model_path, **kwargs)
        self.tokenizer_manager = launch_engine_processes(self.server_args)
        self.tokenizer = self.tokenizer_manager.tokenizer
        self.model_info = self.tokenizer_manager.model_info
        self.loop = asyncio.new_event_loop()
        atexit.register(self.shutdown)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _requests(prompt: Any, input_ids: Any, sampling_params: Any, **extra: Any) -> tuple[list[GenerateReqInput], bool]:
        if (prompt is None) == (input_ids is None):
            raise ValueError("give exactly one of prompt or input_ids")
        if prompt is not None:
            batch = isinstance(prompt, list)
            items = prompt if batch else [prompt]
            make = lambda x, sp: GenerateReqInput(text=x, sampling_params=sp, **extra)  # noqa: E731
        else:
            batch = bool(input_ids) and isinstance(input_ids[0], list)
            items = input_ids if batch else [input_ids]
            make = lambda x, sp: GenerateReqInput(input_ids=list(x), sampling_params=sp, **extra)  # noqa: E731
        if isinstance(sampling_params, list):
            if len(sampling_params) != len(items):
                raise ValueError("sampling_params: a list must have one entry per prompt")
            sps = sampling_params
        else:
            sps = [dict(sampling_params or {}) for _ in items]
        return [make(x, dict(sp or {})) for x, sp in zip(items, sps)], batch

    async def _collect(self, req: GenerateReqInput) -> dict[str, Any]:
        last: dict[str, Any] = {}
        async for item in self.tokenizer_manager.generate_request(req):
            last = item
        return _result(last)

    # ------------------------------------------------------------------ public API
    def generate(self, prompt: str | list[str] | None = None, sampling_params: dict | list[dict] | None = None,
                 input_ids: list[int] | list[list[int]] | None = None, stream: bool = False,
                 return_logprob: bool = False, top_logprobs_num: int = 0, logprob_start_len: int = -1,
                 token_ids_logprob: list[int] | None = None, custom_logit_processor: str | None = None,
                 capture: CaptureParams | None = None) -> Any:
        reqs, batch = self._requests(prompt, input_ids, sampling_params, return_logprob=return_logprob,
                                     top_logprobs_num=top_logprobs_num, logprob_start_len=logprob_start_len,
                                     token_ids_logprob=token_ids_logprob,
                                     custom_logit_processor=custom_logit_processor, capture=capture)
        if stream:
            if batch:
                raise ValueError("stream=True takes one prompt at a time")
            reqs[0].stream = True
            return self._stream(reqs[0])
        async def run_all() -> list[dict[str, Any]]:
            return await asyncio.gather(*(self._collect(r) for r in reqs))

        results = self.loop.run_until_complete(run_all())
        return results if batch else results[0]

    def _stream(self, req: GenerateReqInput) -> Iterator[dict[str, Any]]:
        agen = self.tokenizer_manager.generate_request(req)
        try:
            while True:
                try:
                    item = self.loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
                yield {**_result(item), "delta": item["delta"], "new_token_ids": item["new_token_ids"]}
        finally:
            self.loop.run_until_complete(agen.aclose())

    async def async_generate(self, prompt: str | None = None, sampling_params: dict | None = None,
                             input_ids: list[int] | None = None, stream: bool = False,
                             **kwargs: Any) -> Any:
        """Coroutine (or async iterator when stream=True) for use inside an event loop."""
        reqs, _ = self._requests(prompt, input_ids, sampling_params, **kwargs)
        req = reqs[0]
        req.stream = stream
        if stream:
            return self._astream(req)
        return await self._collect(req)

    async def _astream(self, req: GenerateReqInput) -> AsyncIterator[dict[str, Any]]:
        async for item in self.tokenizer_manager.generate_request(req):
            yield {**_result(item), "delta": item["delta"], "new_token_ids": item["new_token_ids"]}

    def get_load(self) -> dict[str, Any]:
        return self.loop.run_until_complete(self.tokenizer_manager.get_load())

    def flush_cache(self) -> bool:
        return self.loop.run_until_complete(self.tokenizer_manager.flush_cache())

    def shutdown(self) -> None:
        tm = getattr(self, "tokenizer_manager", None)
        if tm is not None:
            tm.shutdown()
            self.tokenizer_manager = None  # type: ignore[assignment]
        if getattr(self, "loop", None) is not None and not self.loop.is_closed():
            self.loop.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
