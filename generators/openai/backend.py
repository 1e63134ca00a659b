"""A client for OpenAI-compatible chat completion servers: vLLM, SGLang, TGI, hosted APIs.

One HTTP request per GenerationRequest (its `n` samples in that one request). The engine's lists are
fanned out with `asyncio.gather`, so any `batch_size` works; the number of requests actually on the
wire is set by an adaptive (AIMD) limiter: +1 after each window of successes, up to
`max_concurrency`; halved on 429, 503, 504 or a timeout, down to 1.

Errors, by kind:
- transient (429, 500, 502, 503, 504, connection errors, timeouts): retried with exponential backoff
  and jitter (tenacity), honouring `Retry-After`. When the retries run out, `generate` raises: the
  server as a whole is failing, the engine stops the run, and a rerun resumes it.
- about one request (400 context too long or bad schema, 404, 413, 422, ...): that request's answer
  is `Generation.failed("<status>: <server message>")`; the other requests and the run go on.
- 401/403: the key is wrong for every request, so `generate` raises.

The HTTP client lives on an event loop in a thread of its own: `load()` and `close()` are plain
calls, the connection pool survives across the factory's `asyncio.run`s, and `generate` can be awaited
from any loop. API keys are read from an environment variable, sent only in the Authorization
header, and scrubbed from every message this module makes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import difflib
import email.utils
import io
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from mmsynth.generators.revision import record_revision
from mmsynth.generators.types import Generation, GenerationRequest, Output
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import ImagePart, TextPart

log = logging.getLogger(__name__)

_OVERLOAD = {429, 503, 504}  # the server says "slower": retried, and the limiter halves
_TRANSIENT = _OVERLOAD | {500, 502}
_AUTH = {401, 403}
_RETRY_AFTER_MAX_S = 300.0
_IMAGE_CACHE = 256  # encoded data URLs kept (tasks of one seed share its image)


class ServerError(RuntimeError):
    """The server as a whole is failing (unreachable, wrong model, retries exhausted, key refused)."""


class LaunchOptions(BaseModel):
    """`launch:` - mmsynth starts and stops the vLLM servers itself (see generators/openai/launch.py)."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(
        default=1, ge=1, description="How many servers to start; requests go to the least busy."
    )
    python: str = Field(
        default=".venv-vllm/bin/python",
        description=(
            "Python of the vLLM environment (what `.ci/setup-vllm-env` builds). A relative path is "
            "relative to the current working directory, not to the recipe."
        ),
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Extra `vllm.entrypoints.openai.api_server` flags, e.g. `{max-model-len: 4096, "
            "enforce-eager: true, limit-mm-per-prompt: {image: 1}}`. true is a bare flag; dicts and "
            "lists are passed as JSON. --model, --host, --port and --served-model-name are set by mmsynth."
        ),
    )
    startup_timeout_s: float = Field(
        default=600, gt=0, description="Seconds each server may take to answer /health before the run fails."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables for the servers (e.g. `VLLM_CPU_KVCACHE_SPACE: '4'`, `CUDA_VISIBLE_DEVICES`).",
    )
    ports: list[int] | None = Field(
        default=None, description="One port per replica on 127.0.0.1; null picks free ports."
    )
    log_dir: str | None = Field(
        default=None,
        description="Folder for the servers' logs (`replica-<i>.log`); null: a new folder under the system temp dir.",
    )


class OpenAIOptions(BaseModel):
    """The recipe's `options:` for `backend: vllm-server`."""

    # hide_input_in_errors: a refused value (a URL with a password in it) is never echoed back.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str | list[str] | None = Field(
        default=None,
        description=(
            "Base URL of the server, ending in /v1 (e.g. `http://127.0.0.1:8000/v1`), or a list of URLs "
            "of replicas serving the same model. Exactly one of base_url and launch is required."
        ),
    )
    served_model_name: str | None = Field(
        default=None,
        description="The model name the server knows (`model` in each request); default: the model path.",
    )
    api_key_env: str | None = Field(
        default=None,
        description=(
            "Name of the environment variable that holds the API key (sent as a Bearer token). Default: "
            "OPENAI_API_KEY when it is set, else no key. The key itself never goes in a recipe or a log."
        ),
    )
    max_concurrency: int = Field(
        default=64, ge=1, description="Most requests in flight at once, over all replicas (the AIMD cap)."
    )
    initial_concurrency: int = Field(
        default=8, ge=1, description="Requests in flight at the start; grows by one per window of successes."
    )
    timeout_s: float = Field(
        default=600,
        gt=0,
        description="Seconds one HTTP request may take; a timeout is retried and halves concurrency.",
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a transient error (429, 5xx, connection, timeout) before the run stops.",
    )
    backoff_initial_s: float = Field(
        default=0.5,
        ge=0,
        description="First retry delay; doubles each retry (plus jitter) up to backoff_max_s.",
    )
    backoff_max_s: float = Field(
        default=30, ge=0, description="Longest retry delay, unless Retry-After asks for more."
    )
    image_max_side: int | None = Field(
        default=None,
        ge=1,
        description="Downscale images so the longer side is at most this many pixels before sending; null: send as they are.",
    )
    image_format: Literal["png", "jpeg"] | None = Field(
        default=None,
        description="Re-encode every image as png or jpeg; null keeps the original bytes (a resized image becomes png).",
    )
    json_repair_attempts: int = Field(
        default=1,
        ge=0,
        le=5,
        description=(
            "For structured tasks: when an output is not JSON or breaks the schema, ask again with the error "
            "as a new user turn, at most this many times per output (0: never)."
        ),
    )
    launch: LaunchOptions | None = Field(
        default=None, description="Start vLLM servers for this model instead of using base_url."
    )

    @model_validator(mode="after")
    def _one_source(self) -> OpenAIOptions:
        if (self.base_url is None) == (self.launch is None):
            raise ValueError("set exactly one of base_url (a running server) and launch (mmsynth starts one)")
        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url or [])
        if isinstance(self.base_url, list) and not urls:
            raise ValueError("base_url is an empty list")
        for u in urls:
            url = httpx.URL(u)
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError("base_url must be an http(s) URL such as http://127.0.0.1:8000/v1")
            if url.userinfo:
                raise ValueError(
                    "base_url must not hold credentials; put the key in an environment variable "
                    "and name that variable in api_key_env"
                )
        return self


@dataclass
class _Replica:
    url: str  # base URL, .../v1, no trailing slash
    in_flight: int = 0
    down_until: float = 0.0  # monotonic time; a replica whose connection failed rests until then
    down: bool = False  # managed replicas: down until restart_dead() brings them back

    @property
    def root(self) -> str:
        return self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url


class AIMDLimiter:
    """An async concurrency limit that adapts: additive increase, multiplicative decrease.

    `acquire()` waits for a free slot and returns the current epoch. `release(epoch, outcome)`:
    "ok" counts a success (after `limit` successes the limit grows by one, up to `cap`); "overload"
    halves the limit (min 1), once per epoch, so a burst of 429s from requests sent together halves
    it once, not once each; anything else just frees the slot.
    """

    def __init__(self, initial: int, cap: int) -> None:
        self.cap = cap
        self.limit = max(1, min(initial, cap))
        self.in_flight = 0
        self.epoch = 0
        self._successes = 0
        self._waiters: list[asyncio.Future] = []

    async def acquire(self) -> int:
        while self.in_flight >= self.limit:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                if fut.cancelled():
                    self._wake()
        self.in_flight += 1
        return self.epoch

    def release(self, epoch: int, outcome: str) -> None:
        self.in_flight -= 1
        if outcome == "ok":
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.cap:
                self.limit += 1
                self._successes = 0
        elif outcome == "overload" and epoch == self.epoch:
            self.limit = max(1, self.limit // 2)
            self.epoch += 1
            self._successes = 0
            log.info("server overloaded: concurrency halved to %d", self.limit)
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_flight
        for fut in list(self._waiters):
            if free <= 0:
                break
            if not fut.done():
                fut.set_result(None)
                free -= 1


class _Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Rejected(Exception):
    """The server refused this one request (4xx other than 401/403/429): its answer is a failure."""


class OpenAIBackend:
    """Chat completions over HTTP from an OpenAI-compatible server (registry name "vllm-server").

    model: what the user named (kept for lineage). path: the model folder or Hub id; the default
    served model name. revision: recorded in every cache key (a content hash for local folders).
    batch_size: the engine's list size; any value works, requests are sent one by one concurrently.
    device, dtype: ignored (the server decides). options: see `OpenAIBackend.Options`.
    transport: an httpx transport for tests (httpx.MockTransport); never from a recipe.
    pool: a started `ServerPool` behind `base_url`, shared with the caller: when a replica's connection
    fails the backend calls its `restart_dead()`; the caller stops it. (With `launch`, the backend
    makes its own pool and stops it in `close()`.)
    """

    name = "vllm-server"
    Options = OpenAIOptions

    def __init__(
        self,
        model: str,
        path: str | None = None,
        revision: str | None = None,
        batch_size: int = 1,
        device: str = "auto",
        dtype: str = "auto",
        *,
        transport: httpx.AsyncBaseTransport | None = None,
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
        # The engine sends this many lists at once; enough requests queue at the limiter to fill it.
        self.max_concurrency = max(2, math.ceil(2 * self.options.max_concurrency / batch_size))
        self._transport = transport
        self._api_key: str | None = None
        self._pool = pool  # a ServerPool: restarted when a replica dies
        self._owns_pool = False  # True when load() launched it (close() stops it)
        self._replicas: list[_Replica] = []
        self._rr = 0
        self._limiter: AIMDLimiter | None = None
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._restart_task: asyncio.Task | None = None
        self._restart_error: BaseException | None = None
        self._images: OrderedDict[tuple[str, Any, Any], str] = OrderedDict()
        self._validators: dict[str, Any] = {}
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
            urls = self._start_servers() if self.options.launch else self._given_urls()
            self._start_loop()
            try:
                self._call(self._open(urls))
            except BaseException:
                self._shutdown()
                raise
            self._loaded = True

    def close(self) -> None:
        """Close the connections and stop managed servers (a later `generate` loads again)."""
        with self._state_lock:
            self._shutdown()

    def __repr__(self) -> str:
        where = [r.url for r in self._replicas] or self._configured_urls()
        return f"OpenAIBackend(model={self.model!r}, served={self.served_model_name!r}, urls={where!r})"

    # -- generation -------------------------------------------------------------------------------

    async def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """One Generation per request, in order. Raises ServerError when the server as a whole fails."""
        if not self._loaded:
            await asyncio.to_thread(self.load)
        fut = asyncio.run_coroutine_threadsafe(self._generate_all(requests), self._loop)
        return await asyncio.wrap_future(fut)

    def generate_sync(self, requests: list[GenerationRequest]) -> list[Generation]:
        """The blocking form of `generate`, for scripts (not from inside a running event loop's thread)."""
        self.load()
        return self._call(self._generate_all(requests))

    @property
    def concurrency(self) -> int:
        """The limiter's current limit (requests in flight it allows now)."""
        return self._limiter.limit if self._limiter else self.options.initial_concurrency

    # -- internals: loop and servers --------------------------------------------------------------

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"mmsynth-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _shutdown(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._aclose())
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=10)
            if not loop.is_running():
                loop.close()
        self._loaded = False
        self._loop = self._thread = None
        self._client = None
        self._limiter = None
        self._restart_task = None
        self._restart_error = None
        if self._owns_pool and self._pool is not None:
            pool, self._pool, self._owns_pool = self._pool, None, False
            pool.stop()

    async def _aclose(self) -> None:
        # Requests still running here (their callers were cancelled, or never awaited) end now.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _configured_urls(self) -> list[str]:
        b = self.options.base_url
        urls = [b] if isinstance(b, str) else list(b or [])
        return [u.rstrip("/") for u in urls]

    def _given_urls(self) -> list[str]:
        return self._configured_urls()

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
        """`text` with the API key (and any URL credentials) removed: every message we make goes through here."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)

    async def _open(self, urls: list[str]) -> None:
        opts = self.options
        timeout = httpx.Timeout(opts.timeout_s, connect=min(opts.timeout_s, 10.0))
        limits = httpx.Limits(
            max_connections=opts.max_concurrency, max_keepalive_connections=opts.max_concurrency
        )
        # Proxies from the environment apply to remote servers, never to ones on this machine.
        local = all(httpx.URL(u).host in ("127.0.0.1", "localhost", "::1") for u in urls)
        self._client = httpx.AsyncClient(
            timeout=timeout, limits=limits, transport=self._transport, trust_env=not local
        )
        self._limiter = AIMDLimiter(opts.initial_concurrency, opts.max_concurrency)
        self._replicas = [_Replica(u) for u in urls]
        for r in self._replicas:
            await self._check_replica(r)

    async def _check_replica(self, r: _Replica) -> None:
        """GET /health (404 tolerated: not every server has it) and GET /v1/models (must list the model)."""
        try:
            health = await self._client.get(f"{r.root}/health", timeout=10.0)
            models = await self._client.get(f"{r.url}/models", headers=self._headers(), timeout=10.0)
        except httpx.HTTPError as e:
            raise ServerError(
                self._scrub(f"cannot reach the server at {r.url}: {type(e).__name__}: {e}. Is it running?")
            ) from None
        if health.status_code >= 500:
            raise ServerError(
                self._scrub(f"{r.root}/health answered {health.status_code}: {_message(health)}")
            )
        if models.status_code != 200:
            raise ServerError(
                self._scrub(f"{r.url}/models answered {models.status_code}: {_message(models)}")
                + (" (is api_key_env set to the right variable?)" if models.status_code in _AUTH else "")
            )
        try:
            data = models.json()["data"]
            served = {m["id"]: m for m in data}
        except (ValueError, KeyError, TypeError):
            raise ServerError(f"{r.url}/models did not answer an OpenAI model list") from None
        name = self.served_model_name
        if name not in served:
            same = [m for m in served if _same_folder(m, self.path)]
            if len(same) == 1:
                name = self.served_model_name = same[0]
            else:
                close = difflib.get_close_matches(name, list(served), n=1, cutoff=0.3)
                hint = f" Did you mean {close[0]!r}? Set options.served_model_name." if close else ""
                raise ServerError(
                    f"the server at {r.url} does not serve model {name!r}; it serves: "
                    f"{', '.join(map(repr, served)) or 'nothing'}.{hint}"
                )
        self.server_models = list(served)
        max_len = served[name].get("max_model_len")
        if isinstance(max_len, int):
            self.context_length = max_len

    # -- internals: requests ----------------------------------------------------------------------

    async def _generate_all(self, requests: list[GenerationRequest]) -> list[Generation]:
        results = await asyncio.gather(*(self._one(r) for r in requests), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return list(results)

    async def _one(self, req: GenerationRequest) -> Generation:
        self.stats["requests"] += 1
        try:
            body = await self._body(req)
        except ValueError as e:  # an undecodable image: this request's problem
            self.stats["failed"] += 1
            return Generation.failed(self._scrub(str(e)))
        try:
            data, replica, attempts = await self._post(body)
        except _Rejected as e:
            self.stats["failed"] += 1
            return Generation.failed(self._scrub(str(e)))
        gen = self._parse(data, replica, attempts)
        if req.output_schema is not None and self.options.json_repair_attempts > 0 and gen.outputs:
            gen = await self._repair(req, body, gen)
        return gen

    async def _body(self, req: GenerationRequest) -> dict[str, Any]:
        sp = req.sampling
        messages = []
        for m in req.prompt.messages:
            if not m.images:
                messages.append({"role": m.role, "content": m.text})
                continue
            parts = []
            for p in m.parts:
                if isinstance(p, TextPart):
                    if p.text:
                        parts.append({"type": "text", "text": p.text})
                elif isinstance(p, ImagePart):
                    url = await self._image_url(p.image)
                    parts.append({"type": "image_url", "image_url": {"url": url}})
            messages.append({"role": m.role, "content": parts})
        body: dict[str, Any] = {
            "model": self.served_model_name,
            "messages": messages,
            "n": sp.n,
            "temperature": sp.temperature,
            "top_p": sp.top_p,
            "max_tokens": sp.max_tokens,
        }
        if sp.seed is not None:
            body["seed"] = sp.seed
        if sp.stop:
            body["stop"] = list(sp.stop)
        schema = req.output_schema
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": _schema_name(req), "schema": schema, "strict": True},
            }
        return body

    async def _image_url(self, img: ImageRef) -> str:
        key = (img.sha256, self.options.image_max_side, self.options.image_format)
        url = self._images.get(key)
        if url is None:
            url = await asyncio.to_thread(
                encode_image, img, self.options.image_max_side, self.options.image_format
            )
            self._images[key] = url
            while len(self._images) > _IMAGE_CACHE:
                self._images.popitem(last=False)
        else:
            self._images.move_to_end(key)
        return url

    async def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any], _Replica, int]:
        """POST /chat/completions with retries; (json, replica, attempts). _Rejected for a refused request."""
        opts = self.options

        def wait(state) -> float:
            exc = state.outcome.exception()
            if isinstance(exc, _Transient) and exc.retry_after is not None:
                return min(exc.retry_after, _RETRY_AFTER_MAX_S)
            # exponential backoff with jitter: initial * 2^(n-1), capped, plus up to `initial` at random
            delay = min(opts.backoff_max_s, opts.backoff_initial_s * 2 ** (state.attempt_number - 1))
            return delay + random.uniform(0, opts.backoff_initial_s)

        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Transient),
                stop=stop_after_attempt(opts.max_retries + 1),
                wait=wait,
                before_sleep=self._before_sleep,
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    data, replica = await self._attempt(body)
            return data, replica, attempts
        except _Transient as e:
            raise ServerError(
                self._scrub(f"{self.name} ({self.served_model_name}): gave up after {attempts} attempts: {e}")
            ) from None

    def _before_sleep(self, state) -> None:
        self.stats["retries"] += 1
        exc = state.outcome.exception()
        log.debug("retrying in %.2fs: %s", state.upcoming_sleep, self._scrub(str(exc)))

    async def _attempt(self, body: dict[str, Any]) -> tuple[dict[str, Any], _Replica]:
        epoch = await self._limiter.acquire()
        outcome = "neutral"
        replica: _Replica | None = None
        connection_failed = None
        try:
            replica = await self._pick_replica()  # after the slot: the least busy one at sending time
            replica.in_flight += 1
            self.stats["attempts"] += 1
            try:
                resp = await self._client.post(
                    f"{replica.url}/chat/completions", json=body, headers=self._headers()
                )
            except httpx.TimeoutException as e:
                outcome = "overload"
                raise _Transient(f"timeout from {replica.url} ({type(e).__name__})") from None
            except httpx.TransportError as e:
                connection_failed = _Transient(f"connection to {replica.url} failed: {type(e).__name__}: {e}")
            else:
                status = resp.status_code
                if status == 200:
                    try:
                        data = resp.json()
                        data["choices"]  # a 200 without choices is a broken server
                    except (ValueError, KeyError, TypeError):
                        raise _Transient(
                            f"{replica.url} answered 200 with no choices: {resp.text[:200]!r}"
                        ) from None
                    outcome = "ok"
                    return data, replica
                msg = f"{status}: {_message(resp)}"
                if status in _OVERLOAD:
                    outcome = "overload"
                    self.stats["overloads"] += 1
                if status in _TRANSIENT:
                    raise _Transient(f"{replica.url} answered {msg}", _retry_after(resp))
                if status in _AUTH:
                    raise ServerError(self._scrub(f"{replica.url} refused the request: {msg}"))
                raise _Rejected(msg)
        finally:
            if replica is not None:
                replica.in_flight -= 1
            self._limiter.release(epoch, outcome)
        # The slot is free again; a dead replica is restarted (managed) or rested (given URLs).
        await self._replica_failed(replica)
        raise connection_failed

    async def _pick_replica(self) -> _Replica:
        """The up replica with the fewest requests in flight; waits for a restart when none is up."""
        while True:
            if self._restart_error is not None:
                raise ServerError(f"a vLLM server died and could not be restarted: {self._restart_error}")
            now = time.monotonic()
            up = [r for r in self._replicas if not r.down and r.down_until <= now]
            if up:
                self._rr += 1
                n = len(up)
                return min((up[(self._rr + i) % n] for i in range(n)), key=lambda r: r.in_flight)
            if self._restart_task is not None and not self._restart_task.done():
                await asyncio.wait([self._restart_task])
                continue
            if self._pool is not None:  # all down, no restart running: try one
                self._restart_task = asyncio.create_task(self._restart())
                continue
            return min(self._replicas, key=lambda r: r.down_until)  # unmanaged: try the one resting longest

    async def _replica_failed(self, replica: _Replica) -> None:
        if self._pool is None:
            replica.down_until = time.monotonic() + min(5.0, max(self.options.backoff_max_s, 0.1))
            return
        replica.down = True
        if self._restart_task is None or self._restart_task.done():
            self._restart_task = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        try:
            restarted = await asyncio.to_thread(self._pool.restart_dead)
        except Exception as e:
            self._restart_error = e
            return
        if restarted:
            log.warning("restarted vLLM replica(s) %s", restarted)
        # Replicas marked down whose process lives (a connection blip) are tried again.
        for r in self._replicas:
            r.down = False

    def _parse(self, data: dict[str, Any], replica: _Replica, attempts: int) -> Generation:
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        outputs = tuple(Output(_content(c), c.get("finish_reason") or "stop") for c in choices)
        usage = data.get("usage") or {}
        extra = {"server_model": data.get("model"), "replica": self._scrub(replica.url), "attempts": attempts}
        return Generation(
            outputs=outputs,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            extra=extra,
        )

    async def _repair(self, req: GenerationRequest, body: dict[str, Any], gen: Generation) -> Generation:
        """Re-ask for outputs that are not valid JSON for the schema, at most json_repair_attempts times each."""
        check = self._schema_checker(req.output_schema)
        outputs = list(gen.outputs)
        prompt_tokens, completion_tokens, repairs = gen.prompt_tokens, gen.completion_tokens, 0
        for round_ in range(self.options.json_repair_attempts):
            bad = [(i, err) for i, o in enumerate(outputs) if (err := check(o.text))]
            if not bad:
                break
            answers = await asyncio.gather(
                *(self._repair_one(body, outputs[i].text, err, round_ * len(outputs) + i) for i, err in bad)
            )
            for (i, _), answer in zip(bad, answers, strict=True):
                repairs += 1
                if answer is None:
                    continue
                out, pt, ct = answer
                outputs[i] = out
                prompt_tokens += pt
                completion_tokens += ct
        self.stats["json_repairs"] += repairs
        extra = {**gen.extra, "json_repairs": repairs} if repairs else gen.extra
        return Generation(tuple(outputs), prompt_tokens, completion_tokens, None, extra)

    async def _repair_one(self, body: dict[str, Any], text: str, error: str, k: int):
        follow_up = (
            f"Your answer is not valid: {error}. Reply again with only the JSON value, "
            "complete and matching the schema, and nothing else."
        )
        again = {
            **body,
            "n": 1,
            "messages": [
                *body["messages"],
                {"role": "assistant", "content": text},
                {"role": "user", "content": follow_up},
            ],
        }
        if body.get("seed") is not None:
            again["seed"] = (body["seed"] + 1 + k) % (2**31)
        try:
            data, _, _ = await self._post(again)
        except _Rejected as e:  # e.g. the longer conversation no longer fits: keep the first answer
            log.debug("json repair refused: %s", self._scrub(str(e)))
            return None
        choices = data.get("choices") or []
        if not choices:
            return None
        usage = data.get("usage") or {}
        c = choices[0]
        return (
            Output(_content(c), c.get("finish_reason") or "stop"),
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
        )

    def _schema_checker(self, schema: dict[str, Any]):
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            import jsonschema

            cls = jsonschema.validators.validator_for(schema)
            validator = self._validators[key] = cls(schema)

        def check(text: str) -> str | None:
            value, err = _loads(text)
            if err:
                return f"it is not JSON ({err})"
            errors = sorted(validator.iter_errors(value), key=lambda e: e.path)
            if errors:
                e = errors[0]
                where = "/".join(map(str, e.absolute_path)) or "the top level"
                return f"it breaks the schema at {where}: {e.message}"
            return None

        return check


def encode_image(img: ImageRef, max_side: int | None, fmt: str | None) -> str:
    """A data URL for `img` under the resize policy; ValueError (naming the image) when it cannot be decoded.

    max_side: downscale (keeping the aspect ratio) so the longer side is at most this; None keeps the
    size. fmt: "png" or "jpeg" re-encodes; None keeps the original bytes when the size is kept, and
    writes PNG when the image was resized.
    """
    if max_side is None and fmt is None:
        data, mime = img.data, img.mime
    else:
        pil = img.to_pil()
        w, h = pil.size
        resized = max(w, h) > (max_side or max(w, h))
        if resized:
            scale = max_side / max(w, h)
            from PIL import Image

            pil = pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        if not resized and fmt is None:
            data, mime = img.data, img.mime
        else:
            out = fmt or "png"
            buf = io.BytesIO()
            if out == "jpeg":
                pil.save(buf, format="JPEG", quality=90)
            else:
                pil.save(buf, format="PNG")
            data, mime = buf.getvalue(), f"image/{out}"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _content(choice: dict[str, Any]) -> str:
    msg = choice.get("message") or {}
    content = msg.get("content")
    if isinstance(content, list):  # some servers answer in parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _loads(text: str) -> tuple[Any, str | None]:
    s = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", s, flags=re.S)
    if fence:
        s = fence.group(1)
    if not s:
        return None, "empty output"
    try:
        return json.loads(s), None
    except ValueError as e:
        return None, str(e)


def _message(resp: httpx.Response) -> str:
    """The server's error message: OpenAI/vLLM `{"error": {"message"}}`, TGI `{"error": "..."}`,
    FastAPI `{"detail"}`, else the start of the body."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for k in ("error", "message", "detail"):
            if data.get(k):
                v = data[k]
                return v if isinstance(v, str) else json.dumps(v)[:500]
    return json.dumps(data)[:500]


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def _schema_name(req: GenerationRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "_", req.prompt.template_id or "output")[:64]
    return name or "output"


def _same_folder(a: str, b: str) -> bool:
    try:
        pa, pb = Path(a).expanduser(), Path(b).expanduser()
        return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()
    except OSError:
        return False


__all__ = ["AIMDLimiter", "LaunchOptions", "OpenAIBackend", "OpenAIOptions", "ServerError", "encode_image"]
