"""A client for OpenAI-compatible chat completion servers: vLLM, SGLang, TGI, hosted APIs.

One HTTP request per GenerationRequest (its `n` samples in that one request). The engine's lists are
fanned out with `asyncio.gather`, so any `batch_size` works; the number of requests on the wire is
set by a limiter per replica (limiter.py): slow start from `initial_concurrency`, then AIMD, up to
`max_concurrency`.

Errors, by kind:
- transient (429, 500, 502, 503, 504, connection errors, timeouts): retried with exponential backoff
  and jitter (tenacity), honouring `Retry-After`. When the retries run out, `generate` raises: the
  server as a whole is failing, the engine stops the run, and a rerun resumes it.
- about one request (400 context too long or bad schema, 404, 413, 422, ...): that request's answer
  is `Generation.failed("<status>: <server message>")`; the other requests and the run go on.
- 401/403: the key is wrong for every request, so `generate` raises.

HTTP goes through transport.py (aiohttp). `generate` runs on the caller's event loop, with
connections of that loop (no thread hop per request: at thousands of requests a second the hop and
the GIL hand-offs cost more than the HTTP); `load()` and `generate_sync` use an event loop in a thread
of the backend (loop.py), so they stay plain calls. API keys are read from an environment variable, sent only in the Authorization header, and scrubbed
from every message this module makes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from mmsynth.generators.openai.chat import chat_body, to_generation
from mmsynth.generators.openai.errors import (
    AUTH,
    OVERLOAD,
    RETRY_AFTER_MAX_S,
    TRANSIENT,
    Rejected,
    ServerError,
    Transient,
    retry_after,
    scrub,
    server_message,
)
from mmsynth.generators.openai.images import ImageURLs, encode_image
from mmsynth.generators.openai.limiter import AIMDLimiter
from mmsynth.generators.openai.loop import LoopThread, cancel_others
from mmsynth.generators.openai.options import LaunchOptions, OpenAIOptions
from mmsynth.generators.openai.repair import SchemaChecks, repair
from mmsynth.generators.openai.replicas import Replica, Replicas
from mmsynth.generators.openai.startup import check_server
from mmsynth.generators.openai.transport import Transport, TransportFailure, TransportTimeout
from mmsynth.generators.revision import record_revision
from mmsynth.generators.types import Generation, GenerationRequest

log = logging.getLogger(__name__)

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class OpenAIBackend:
    """Chat completions over HTTP from an OpenAI-compatible server (registry name "vllm-server").

    model: what the user named (kept for lineage). path: the model folder or Hub id; the default
    served model name. revision: recorded in every cache key (a content hash for local folders).
    batch_size: the engine's list size; any value works, requests are sent one by one concurrently.
    device, dtype: ignored (the server decides). options: see `OpenAIBackend.Options`.
    pool: a started `ServerPool` behind `base_url`, shared with the caller: when a replica's connection
    fails the backend calls its `restart_dead()`; the caller stops it. (With `launch`, the backend
    makes its own pool and stops it in `close()`.)
    """

    name = "vllm-server"
    Options = OpenAIOptions
    # The server keeps a prefix cache (vLLM, SGLang) and answers each request on its own: the engine
    # sends requests grouped by image and prefix (factory/engine/order.py).
    prefix_cache = True

    def __init__(
        self,
        model: str,
        path: str | None = None,
        revision: str | None = None,
        batch_size: int = 1,
        device: str = "auto",
        dtype: str = "auto",
        *,
        pool: Any = None,
        **options: Any,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.options = self.Options.model_validate(options)
        self.model = model
        self.path = str(path or model)
        self.batch_size = batch_size
        self.revision = record_revision(self.path, revision)
        self.served_model_name = self.options.served_model_name or self.path
        replicas = self.options.launch.replicas if self.options.launch else len(self.options.urls())
        # The engine sends this many lists at once; enough requests queue at the limiters to fill them.
        self.max_concurrency = max(2, math.ceil(2 * self.options.max_concurrency * replicas / batch_size))
        self._api_key: str | None = None
        self._pool = pool  # a ServerPool: restarted when a replica dies
        self._owns_pool = False  # True when load() launched it (close() stops it)
        self._urls: list[str] = []
        self._home: _Client | None = None  # on the backend's own thread: load() and generate_sync
        self._here: _Client | None = None  # on the loop that last called generate()
        self._here_loop: asyncio.AbstractEventLoop | None = None
        self._here_closer: Any = None  # the async generator that closes `_here` when its loop ends
        self._replicas: Replicas | None = None  # the last client's, for `concurrency` and the tests
        self._thread: LoopThread | None = None
        self._images = ImageURLs(self.options.image_max_side, self.options.image_format)
        self._public_urls: dict[str, str] = {}
        self._checks = SchemaChecks()
        self._state_lock = threading.Lock()
        self._loaded = False
        self.server_models: list[str] = []  # what /v1/models listed at load()
        self.context_length: int | None = None  # vLLM's max_model_len, when the server says
        self.stats = {
            "requests": 0,
            "attempts": 0,
            "retries": 0,
            "overloads": 0,
            "failed": 0,
            "json_repairs": 0,
        }

    # -- lifecycle --------------------------------------------------------------------------------

    def load(self) -> None:
        """Start managed servers (launch) or find the given ones, then check them; idempotent.

        Raises ServerError naming the URL when a server is unreachable, unhealthy, or does not serve
        `served_model_name` (with the names it does serve), or LaunchError when a managed server does
        not start. Nothing is left running when it raises.
        """
        with self._state_lock:
            if self._loaded:
                return
            self._api_key = self._read_api_key()
            self._public_urls = {}  # scrubbed with this key
            urls = self._start_servers() if self.options.launch else self.options.urls()
            self._urls = urls
            self._thread = LoopThread(f"mmsynth-{self.name}")
            try:
                self._home = self._thread.call(self._open(urls))
            except BaseException:
                self._shutdown()
                raise
            self._loaded = True

    def close(self) -> None:
        """Close the connections and stop managed servers (a later `generate` loads again)."""
        with self._state_lock:
            self._shutdown()

    def __repr__(self) -> str:
        where = [r.url for r in self._replicas.all] if self._replicas else self.options.urls()
        return f"OpenAIBackend(model={self.model!r}, served={self.served_model_name!r}, urls={where!r})"

    # -- generation -------------------------------------------------------------------------------

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """One Generation per request, in order. Raises ServerError when the server as a whole fails."""
        if not self._loaded:
            await asyncio.to_thread(self.load)
        loop = asyncio.get_running_loop()
        if self._here is None or self._here_loop is not loop:
            await self._connect_here(loop)
        return await self._generate_all(self._here, requests)

    def generate_sync(self, requests: list[GenerationRequest]) -> list[Generation]:
        """The blocking form of `generate`, for scripts (not from inside a running event loop's thread)."""
        self.load()
        self._replicas = self._home.replicas
        return self._thread.call(self._generate_all(self._home, requests))

    @property
    def concurrency(self) -> int:
        """The limiters' current limits, summed over the replicas (requests in flight allowed now)."""
        return self._replicas.concurrency if self._replicas else self.options.initial_concurrency

    @property
    def in_flight(self) -> int:
        """Requests on the wire now, summed over the replicas (what `concurrency` bounds)."""
        return sum(r.in_flight for r in self._replicas.all) if self._replicas else 0

    # -- internals: servers and connections -------------------------------------------------------

    def _shutdown(self) -> None:
        thread = self._thread
        if thread is not None:
            try:
                thread.call(self._aclose())
            except Exception as e:  # closing must not fail the caller's cleanup
                log.debug("closing the connections failed: %s", self._scrub(str(e)))
            thread.stop()
        self._loaded = False
        self._thread = None
        self._home = self._here = self._here_loop = self._here_closer = None  # `_here` closes with its loop
        self._replicas = None
        if self._owns_pool and self._pool is not None:
            pool, self._pool, self._owns_pool = self._pool, None, False
            pool.stop()

    async def _aclose(self) -> None:
        await cancel_others()  # requests whose callers were cancelled, or never awaited, end now
        if self._home is not None:
            await self._home.close()

    def _start_servers(self) -> list[str]:
        from mmsynth.generators.openai.launch import ServerPool

        lo = self.options.launch
        assert lo is not None
        python = Path(lo.python).expanduser()
        if not python.is_absolute():
            python = Path.cwd() / python
        if not python.exists():
            raise ServerError(
                f"launch.python: no Python at {python}; build the vLLM environment with "
                "`bash .ci/setup-vllm-env`, or point launch.python at one"
            )
        self._pool = ServerPool(
            self.path,
            replicas=lo.replicas,
            python=python,
            engine_args=lo.engine_args,
            served_model_name=self.options.served_model_name,
            ports=lo.ports,
            env=lo.env,
            startup_timeout_s=lo.startup_timeout_s,
            log_dir=lo.log_dir,
        )
        self._owns_pool = True
        return self._pool.start()  # stops what it started when it raises

    def _read_api_key(self) -> str | None:
        var = self.options.api_key_env
        if var is None:
            return os.environ.get("OPENAI_API_KEY") or None
        key = os.environ.get(var)
        if not key:
            raise ServerError(f"api_key_env: the environment variable {var} is not set")
        return key

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _scrub(self, text: str) -> str:
        return scrub(text, self._api_key)

    def _public_url(self, url: str) -> str:
        """`url` scrubbed, as each Generation records it: scrubbed once per replica, not per request."""
        public = self._public_urls.get(url)
        if public is None:
            public = self._public_urls[url] = self._scrub(url)
        return public

    def _client(self, urls: list[str]) -> _Client:
        """Connections and limiters bound to the running loop."""
        opts = self.options
        # Proxies from the environment apply to remote servers, never to ones on this machine.
        local = all(urlsplit(u).hostname in _LOCAL_HOSTS for u in urls)
        transport = Transport(opts.timeout_s, opts.max_concurrency * len(urls), trust_env=not local)
        transport.open()
        rest_s = min(5.0, max(opts.backoff_max_s, 0.1))
        replicas = Replicas(urls, opts.initial_concurrency, opts.max_concurrency, self._pool, rest_s)
        self._replicas = replicas
        return _Client(transport, replicas)

    async def _connect_here(self, loop: asyncio.AbstractEventLoop) -> None:
        # Set before the first await: the other callers on this loop use the same client.
        self._here, self._here_loop = self._client(self._urls), loop
        # asyncio.run finalizes the async generators of its loop before closing it, so the
        # connections of a loop close on that loop, however the caller's run ends.
        self._here_closer = _close_at_loop_end(self._here)
        await self._here_closer.__anext__()

    async def _open(self, urls: list[str]) -> _Client:
        client = self._client(urls)
        try:
            for r in client.replicas.all:
                info = await check_server(
                    client.transport, r.url, self._headers(), self.served_model_name, self.path
                )
                self.served_model_name = info.served_model_name
                self.server_models = info.models
                self.context_length = info.context_length or self.context_length
        except BaseException as e:
            await client.close()
            if isinstance(e, ServerError):
                raise ServerError(self._scrub(str(e))) from None
            raise
        return client

    # -- internals: requests ----------------------------------------------------------------------

    async def _generate_all(self, client: _Client, requests: list[GenerationRequest]) -> list[Generation]:
        if len(requests) == 1:  # the common batch_size 1: no task to make
            return [await self._one(client, requests[0])]
        results = await asyncio.gather(*(self._one(client, r) for r in requests), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return list(results)

    async def _one(self, client: _Client, req: GenerationRequest) -> Generation:
        self.stats["requests"] += 1
        try:
            body = await chat_body(req, self.served_model_name, self._images.url)
        except ValueError as e:  # an undecodable image: this request's problem
            self.stats["failed"] += 1
            return Generation.failed(self._scrub(str(e)))
        try:
            data, replica, attempts = await self._post(client, body)
        except Rejected as e:
            self.stats["failed"] += 1
            return Generation.failed(self._scrub(str(e)))
        gen = to_generation(data, self._public_url(replica.url), attempts)
        schema = req.output_schema
        if schema is not None and self.options.json_repair_attempts > 0 and gen.outputs:

            async def post(again: dict[str, Any]) -> dict[str, Any]:
                return (await self._post(client, again))[0]

            gen, repairs = await repair(
                gen, schema, body, self.options.json_repair_attempts, self._checks, post, self._scrub
            )
            self.stats["json_repairs"] += repairs
        return gen

    async def _post(self, client: _Client, body: dict[str, Any]) -> tuple[dict[str, Any], Replica, int]:
        """POST /chat/completions with retries; (json, replica, attempts). Rejected for a refused request."""
        try:  # the first attempt outside tenacity: its set-up costs as much as the request itself
            data, replica = await self._attempt(client, body)
            return data, replica, 1
        except Transient as e:
            first = e
        if self.options.max_retries == 0:
            raise ServerError(self._scrub(f"gave up after 1 attempts: {first}")) from None
        delay = self._delay(first, 1)
        self._note_retry(first, delay)
        await asyncio.sleep(delay)
        attempts = 1
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(Transient),
                stop=stop_after_attempt(self.options.max_retries),
                wait=lambda state: self._delay(state.outcome.exception(), state.attempt_number + 1),
                before_sleep=lambda state: self._note_retry(state.outcome.exception(), state.upcoming_sleep),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    data, replica = await self._attempt(client, body)
            return data, replica, attempts
        except Transient as e:
            raise ServerError(self._scrub(f"gave up after {attempts} attempts: {e}")) from None

    def _delay(self, exc: BaseException | None, attempt: int) -> float:
        """The wait after failed attempt number `attempt`: Retry-After, else exponential backoff with jitter."""
        opts = self.options
        if isinstance(exc, Transient) and exc.retry_after is not None:
            delay = min(exc.retry_after, RETRY_AFTER_MAX_S)
        else:  # initial * 2^(n-1), capped, plus up to `initial` at random
            delay = min(opts.backoff_max_s, opts.backoff_initial_s * 2 ** (attempt - 1))
            delay += random.uniform(0, opts.backoff_initial_s)
        return delay

    def _note_retry(self, exc: BaseException | None, delay: float) -> None:
        self.stats["retries"] += 1
        log.debug("retrying in %.2fs: %s", delay, self._scrub(str(exc)))

    async def _attempt(self, client: _Client, body: dict[str, Any]) -> tuple[dict[str, Any], Replica]:
        replicas = client.replicas
        replica, epoch = await replicas.acquire()  # the least busy one at sending time
        outcome = "neutral"
        self.stats["attempts"] += 1
        try:
            try:
                reply = await client.transport.post_json(replica.chat_url, body, self._headers())
            except TransportTimeout as e:
                outcome = "overload"
                raise Transient(f"timeout from {replica.url} ({e})") from None
            except TransportFailure as e:
                # Rested or marked down before the slot is freed, so no waiter is handed this replica.
                replicas.failed(replica)
                failure = e
            else:
                status = reply.status
                if status == 200:
                    try:
                        data = reply.json()
                        data["choices"]  # a 200 without choices is a broken server
                    except (ValueError, KeyError, TypeError):
                        raise Transient(
                            f"{replica.url} answered 200 with no choices: {reply.text[:200]!r}"
                        ) from None
                    outcome = "ok"
                    return data, replica
                msg = f"{status}: {server_message(reply)}"
                if status in OVERLOAD:
                    outcome = "overload"
                    self.stats["overloads"] += 1
                if status in TRANSIENT:
                    raise Transient(f"{replica.url} answered {msg}", retry_after(reply))
                if status in AUTH:
                    raise ServerError(self._scrub(f"{replica.url} refused the request: {msg}"))
                raise Rejected(msg)
        finally:
            replicas.release(replica, epoch, outcome)
        # A dead replica is being restarted (managed) or rests (given URLs); the retry goes elsewhere.
        raise Transient(f"connection to {replica.url} failed: {failure}")


@dataclass
class _Client:
    """The connections and limiters of one event loop."""

    transport: Transport
    replicas: Replicas

    async def close(self) -> None:
        await self.replicas.close()
        await self.transport.close()


async def _close_at_loop_end(client: _Client) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await client.close()


__all__ = ["AIMDLimiter", "LaunchOptions", "OpenAIBackend", "OpenAIOptions", "ServerError", "encode_image"]
