"""A real OpenAI-compatible server for the tests: aiohttp.web on 127.0.0.1 in a thread of its own.

`chat(body, request)` answers POST /v1/chat/completions: a function (or coroutine function) taking the
JSON body and the aiohttp request and returning a web.Response. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import threading
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Seen:
    path: str
    port: int
    headers: dict[str, str]  # lower-case names


class ChatServer:
    def __init__(self, chat=None, models=("tiny",), health=200, ports=1):
        self.models = list(models)
        self.health = health
        self.chat = chat or (lambda body, request: ok(body))
        self.bodies: list[dict] = []
        self.requests: list[Seen] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._n_ports = ports
        self.ports: list[int] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}/v1" for p in self.ports]

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        for _ in range(self._n_ports):
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.ports.append(site._server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        port = request.transport.get_extra_info("sockname")[1]
        self.requests.append(Seen(request.path, port, {k.lower(): v for k, v in request.headers.items()}))
        path = request.path
        if path == "/health":
            return web.Response(status=self.health)
        if path.endswith("/models"):
            return web.json_response({"object": "list", "data": [{"id": m} for m in self.models]})
        if path.endswith("/chat/completions"):
            body = json.loads(await request.read())
            self.bodies.append(body)
            answer = self.chat(body, request)
            if inspect.isawaitable(answer):
                answer = await answer
            return answer
        return web.json_response({"error": {"message": f"no route {path}"}}, status=404)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def ok(body, texts=None, finish="stop", usage=(7, 5)) -> web.Response:
    n = body.get("n", 1)
    texts = texts or [f"answer {i}" for i in range(n)]
    choices = [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish}
        for i, t in enumerate(texts)
    ]
    return web.json_response(
        {
            "model": body["model"],
            "choices": choices[::-1],  # out of order on purpose: index decides
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
        }
    )


def error(status: int, message: str, headers=None) -> web.Response:
    return web.json_response({"error": {"message": message, "code": status}}, status=status, headers=headers)


def free_port() -> int:
    """A port nothing listens on (it was free a moment ago): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
