"""The backend's only door to HTTP: one aiohttp session, replies as plain data, two kinds of failure.

Everything above this module (retries, limits, replicas, repair) sees `Reply`, `TransportTimeout`
and `TransportFailure`, so the client logic is the same whatever carries the bytes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

# One encoder for every body: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


class TransportTimeout(Exception):
    """The request took longer than its timeout."""


class TransportFailure(Exception):
    """No answer: the connection was refused, reset or dropped."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, read in full. `headers` is case-insensitive."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON; ValueError when it is not."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Transport:
    """A connection pool to the servers, bound to one event loop.

    timeout_s: for a whole request (connecting: at most 10 s of it). connections: most open at once.
    trust_env: use proxy variables from the environment (never for servers on this machine).
    """

    def __init__(self, timeout_s: float, connections: int, trust_env: bool) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 10.0))
        self.connections = connections
        self.trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        """Make the session; call it on the loop that will use it (aiohttp binds it to the running loop)."""
        connector = aiohttp.TCPConnector(limit=self.connections, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self.timeout, trust_env=self.trust_env
        )

    async def get(
        self, url: str, headers: Mapping[str, str] | None = None, timeout_s: float | None = None
    ) -> Reply:
        return await self._request("GET", url, None, headers, timeout_s)

    async def post_json(self, url: str, body: Any, headers: Mapping[str, str] | None = None) -> Reply:
        data = _ENCODER.encode(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        return await self._request("POST", url, data, headers, None)

    async def _request(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: Mapping[str, str] | None,
        timeout_s: float | None,
    ) -> Reply:
        if self._session is None:
            raise RuntimeError("Transport.open() was not called")
        timeout = self.timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._session.request(method, url, data=data, headers=headers, timeout=timeout) as r:
                body = await r.read()
                return Reply(r.status, r.reason or "", r.headers, body)
        except asyncio.TimeoutError as e:  # aiohttp's timeouts are asyncio.TimeoutError subclasses
            raise TransportTimeout(type(e).__name__) from None
        except (aiohttp.ClientError, OSError) as e:
            raise TransportFailure(f"{type(e).__name__}: {e}") from None

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
