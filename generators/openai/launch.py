"""Managed vLLM servers: start N replicas of `python -m vllm.entrypoints.openai.api_server`, watch
them, restart the dead ones, and never leave one behind.

Each server runs in its own session (process group), so a Ctrl-C in mmsynth's terminal does not
reach it: the engine drains the requests in flight first, then `stop()` ends the servers. Three
things make sure they end:

1. `stop()` (idempotent): SIGTERM to each process group, SIGKILL after a grace period, then a sweep
   for any process that still carries the pool's tag in its environment (a descendant that left the
   group). It is also registered with `atexit`.
2. A watchdog process per pool (stdlib Python, its own session) holds the read end of a pipe from
   this process. When this process dies in any way (SIGTERM, SIGKILL, OOM), the pipe reaches EOF and
   the watchdog does what `stop()` does. No signal handler of ours is installed.
3. A replica found dead by `restart_dead()` has its whole group killed before it is started again.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mmsynth.prompts.errors import MmsynthError

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
TAG_VAR = "MMSYNTH_SERVER_TAG"  # set in every server's environment; inherited by its descendants
_RESERVED = {"model", "host", "port", "served-model-name"}


class LaunchError(MmsynthError, RuntimeError):
    """A managed server did not start (exited, or no /health answer in time); says which and why."""


@dataclass
class _Replica:
    index: int
    host: str
    port: int
    log_path: Path
    tag: str
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"


class ServerPool:
    """`replicas` vLLM OpenAI-compatible servers for one model, on `host` (loopback by default).

    model_path: the `--model` argument (a folder or a Hub id). python: the interpreter of the vLLM
    environment (vLLM lives in its own venv, away from mmsynth's pins). engine_args: extra server flags,
    `{"max-model-len": 512, "enforce-eager": True, "limit-mm-per-prompt": {"image": 1}}` becomes
    `--max-model-len 512 --enforce-eager --limit-mm-per-prompt '{"image": 1}'` (underscores in keys
    become dashes; True is a bare flag; False/None leave the flag out; dicts and lists are JSON).
    served_model_name: `--served-model-name` (default: vLLM's, which is model_path). ports: one per
    replica, default free ports. env: added to this process's environment; `TMPDIR`, `VLLM_CACHE_ROOT`
    and `TORCHINDUCTOR_CACHE_DIR` default to folders under `log_dir`, so servers leave no IPC sockets
    or caches in shared places. log_dir: where `replica-<i>.log` files go (default: a new temp folder).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        replicas: int = 1,
        python: str | os.PathLike = sys.executable,
        engine_args: dict[str, Any] | None = None,
        served_model_name: str | None = None,
        host: str = "127.0.0.1",
        ports: list[int] | None = None,
        env: dict[str, str] | None = None,
        startup_timeout_s: float = 600,
        log_dir: str | os.PathLike | None = None,
        stop_grace_s: float = 10,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        if ports is not None and len(ports) != replicas:
            raise ValueError(f"ports has {len(ports)} entries for {replicas} replicas")
        self.model_path = str(model_path)
        self.replicas = replicas
        self.python = str(python)
        self.engine_args = dict(engine_args or {})
        for key in self.engine_args:
            if _flag(key) in _RESERVED:
                raise ValueError(
                    f"engine_args may not set '{key}': the pool sets --model, --host, --port and "
                    "--served-model-name itself (use served_model_name=, host=, ports=)"
                )
        self.served_model_name = served_model_name
        self.host = host
        self.ports = list(ports) if ports is not None else None
        self.env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="mmsynth-vllm-"))
        self.tag = f"mmsynth-{uuid.uuid4().hex[:12]}"
        self._replicas: list[_Replica] = []
        self._lock = threading.RLock()
        self._watchdog: subprocess.Popen | None = None
        self._stopped = False
        self._stop_requested = threading.Event()  # lets stop() cut a start or restart short

    # -- public -----------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """Base URLs (`http://host:port/v1`), one per replica, in replica order."""
        return [r.url for r in self._replicas]

    def pids(self) -> list[int | None]:
        """The server process id of each replica (None before start or after stop)."""
        return [r.proc.pid if r.proc else None for r in self._replicas]

    def log_tail(self, index: int, lines: int = 40) -> str:
        return _tail(self._replicas[index].log_path, lines)

    def command(self, port: int) -> list[str]:
        """The command line one replica runs."""
        cmd = [self.python, "-m", SERVER_MODULE, "--model", self.model_path]
        cmd += ["--host", self.host, "--port", str(port)]
        if self.served_model_name:
            cmd += ["--served-model-name", self.served_model_name]
        for key, value in self.engine_args.items():
            cmd += _cli_args(key, value)
        return cmd

    def start(self) -> list[str]:
        """Start every replica and wait until each answers /health; their base URLs, in order.

        Raises LaunchError (after stopping everything it started) when a replica exits or does not
        answer within startup_timeout_s; the message holds the last lines of that replica's log.
        """
        with self._lock:
            if self._replicas:
                raise RuntimeError("this ServerPool was already started; make a new one")
            self._stopped = False
            self._stop_requested.clear()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            ports = self.ports or _free_ports(self.host, self.replicas)
            self._replicas = [
                _Replica(i, self.host, p, self.log_dir / f"replica-{i}.log", f"{self.tag}-r{i}.")
                for i, p in enumerate(ports)
            ]
            atexit.register(self.stop)
            try:
                for r in self._replicas:
                    self._spawn(r)
                self._wait_ready(self._replicas)
            except BaseException:  # Ctrl-C during start-up included: leave nothing running
                self.stop()
                raise
            return self.urls

    def restart_dead(self) -> list[int]:
        """Start again every replica whose process has exited, on its old port; their indices.

        The dead replica's process group is killed first (children it left behind would hold memory
        or the port). Waits until the restarted replicas answer /health; LaunchError if one does not.
        Thread-safe: concurrent callers wait for one restart instead of starting two.
        """
        with self._lock:
            if self._stopped or not self._replicas:
                return []
            dead = [r for r in self._replicas if r.proc is None or r.proc.poll() is not None]
            for r in dead:
                self._kill_replica(r, grace_s=0)
                _wait_port_free(r.host, r.port, timeout_s=30)
                self._spawn(r)
            if dead:
                self._wait_ready(dead)
            return [r.index for r in dead]

    def stop(self) -> None:
        """Terminate every replica's process group, kill what is left after the grace period; idempotent."""
        self._stop_requested.set()  # a start or restart waiting for /health gives up and releases the lock
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            live = [r for r in self._replicas if r.proc is not None]
            for r in live:
                _signal_group(r.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_grace_s
            for r in live:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            for r in live:
                self._kill_replica(r, grace_s=0)
            _sweep(self.tag + "-r", signal.SIGKILL)
            self._close_watchdog()
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)

    def __enter__(self) -> ServerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerPool({self.model_path!r}, replicas={self.replicas}, urls={self.urls})"

    # -- internals --------------------------------------------------------------------------------

    def _env(self, r: _Replica) -> dict[str, str]:
        env = dict(os.environ)
        scratch = self.log_dir / f"scratch-{r.index}"
        for var, sub in (
            ("TMPDIR", "tmp"),
            ("VLLM_CACHE_ROOT", "cache"),
            ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
        ):
            if var not in self.env:
                (scratch / sub).mkdir(parents=True, exist_ok=True)
                env[var] = str(scratch / sub)
        env.update({k: str(v) for k, v in self.env.items()})
        env.setdefault("PYTHONUNBUFFERED", "1")
        env[TAG_VAR] = r.tag
        return env

    def _spawn(self, r: _Replica) -> None:
        if not Path(self.python).exists() and os.sep in self.python:
            raise LaunchError(f"no Python interpreter at {self.python} (the vLLM environment)")
        if not _port_free(r.host, r.port):
            raise LaunchError(f"replica {r.index}: port {r.port} on {r.host} is already in use")
        cmd = self.command(r.port)
        r.starts += 1
        with open(r.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(
                f"=== mmsynth {stamp}: start #{r.starts} of replica {r.index}: {_shell(cmd)}\n".encode()
            )
            log.flush()
            try:
                # Own session: a Ctrl-C to mmsynth's terminal must not reach the server before it drains.
                r.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env(r),
                    start_new_session=True,
                )
            except OSError as e:
                raise LaunchError(f"replica {r.index}: cannot run {self.python}: {e}") from e
        self._watch(r.proc.pid)

    def _wait_ready(self, replicas: list[_Replica]) -> None:
        pending = list(replicas)
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while pending:
                for r in list(pending):
                    code = r.proc.poll()
                    if code is not None:
                        raise LaunchError(
                            f"vLLM replica {r.index} ({r.url}) exited with code {code} during start-up; "
                            f"last lines of {r.log_path}:\n{_tail(r.log_path, 40)}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{r.root}/health").status_code == 200:
                            pending.remove(r)
                if not pending:
                    return
                if self._stop_requested.is_set():
                    raise LaunchError("the server pool was stopped while replicas were starting")
                if time.monotonic() > deadline:
                    r = pending[0]
                    raise LaunchError(
                        f"vLLM replica {r.index} ({r.url}) did not answer /health within "
                        f"{self.startup_timeout_s:g} s; last lines of {r.log_path}:\n{_tail(r.log_path, 40)}"
                    )
                time.sleep(0.25)

    def _kill_replica(self, r: _Replica, grace_s: float) -> None:
        if r.proc is None:
            return
        _signal_group(r.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            r.proc.wait(timeout=max(grace_s, 5))
        _sweep(r.tag, signal.SIGKILL)
        self._unwatch(r.proc.pid)

    def _watch(self, pgid: int) -> None:
        if self._watchdog is None or self._watchdog.poll() is not None:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, self.tag + "-r", str(self.stop_grace_s)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._tell_watchdog(f"add {pgid}")

    def _unwatch(self, pgid: int) -> None:
        self._tell_watchdog(f"del {pgid}")

    def _tell_watchdog(self, line: str) -> None:
        w = self._watchdog
        if w is None or w.stdin is None:
            return
        with contextlib.suppress(OSError, ValueError):
            w.stdin.write((line + "\n").encode())
            w.stdin.flush()

    def _close_watchdog(self) -> None:
        w, self._watchdog = self._watchdog, None
        if w is None:
            return
        with contextlib.suppress(OSError, ValueError):
            w.stdin.close()  # EOF: it kills whatever is still registered (nothing, by now) and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.wait(timeout=5)


# The watchdog: reads "add PGID"/"del PGID" lines; at EOF (pool stopped, or this process died) it
# terminates the registered groups, waits, kills them, and kills every process tagged with the pool.
_WATCHDOG = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
prefix, grace = sys.argv[1], float(sys.argv[2])
groups = set()
for line in sys.stdin:
    op, _, arg = line.strip().partition(" ")
    if op == "add":
        groups.add(int(arg))
    elif op == "del":
        groups.discard(int(arg))
def alive(g):
    try:
        os.killpg(g, 0)
        return True
    except OSError:
        return False
for g in groups:
    try:
        os.killpg(g, signal.SIGTERM)
    except OSError:
        pass
end = time.monotonic() + grace
while time.monotonic() < end and any(alive(g) for g in groups):
    time.sleep(0.2)
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
needle = ("MMSYNTH_SERVER_TAG=" + prefix).encode()
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = f.read()
            if needle in env:
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
"""


def tagged_pids(tag_prefix: str) -> list[int]:
    """Processes whose environment has MMSYNTH_SERVER_TAG starting with `tag_prefix` (Linux /proc)."""
    needle = f"{TAG_VAR}={tag_prefix}".encode()
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for p in proc.iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            env = (p / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(needle) for item in env.split(b"\0")) and not _is_zombie(p):
            found.append(int(p.name))
    return found


def _is_zombie(p: Path) -> bool:
    try:
        stat = (p / "stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _sweep(tag_prefix: str, sig: int) -> None:
    for pid in tagged_pids(tag_prefix):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _flag(key: str) -> str:
    return key.lstrip("-").replace("_", "-")


def _cli_args(key: str, value: Any) -> list[str]:
    import json

    flag = "--" + _flag(key)
    if value is None or value is False:
        return []
    if value is True:
        return [flag]
    if isinstance(value, (dict, list, tuple)):
        return [flag, json.dumps(value)]
    return [flag, str(value)]


def _shell(cmd: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in cmd)


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(deque(text.splitlines(), maxlen=lines))


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _wait_port_free(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _port_free(host, port) and time.monotonic() < deadline:
        time.sleep(0.2)


def _free_ports(host: str, n: int) -> list[int]:
    """n distinct ports the OS calls free right now (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


__all__ = ["LaunchError", "ServerPool", "tagged_pids"]
