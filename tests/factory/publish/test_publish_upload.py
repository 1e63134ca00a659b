"""The push path up to the network: what is committed, in which batches, what is skipped on resume,
what is retried, and that the token goes to the Hub and nowhere else. A fake HfApi stands in for the
Hub, and for the token a fake Hub server behind the real HfApi; the real push is the `network` test
at the end."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import pytest
from huggingface_hub.errors import HfHubHTTPError

from mmsynth.factory.publish.plan import PublishPlan, RepoOp
from mmsynth.factory.publish.upload import (
    CommitPacer,
    PublishAborted,
    PushSettings,
    batch_ops,
    push_plan,
    retry_delay,
    with_retries,
)

TOKEN = "hf_TESTtokenThatMustNeverLeak0123456789"


@dataclass
class _Response:
    status_code: int
    headers: dict
    request: object = None


def http_error(status: int, headers: dict | None = None) -> HfHubHTTPError:
    return HfHubHTTPError(f"{status} from the fake hub", response=_Response(status, headers or {}))


@dataclass
class _Lfs:
    sha256: str
    size: int


@dataclass
class _File:
    path: str
    size: int
    blob_id: str
    lfs: _Lfs | None


class FakeHub:
    """An HfApi-like object keeping files in memory. `fail` maps a method name to errors raised by its
    next calls; `land_then_fail` makes the next commit apply and then report a 504 (a lost answer)."""

    def __init__(self, files: dict[str, bytes] | None = None, private: bool = True):
        self.files = dict(files or {})
        self.commits: list[tuple[str, list[str]]] = []
        self.calls: list[str] = []
        self.fail: dict[str, list[Exception]] = {}
        self.land_then_fail = False
        self.private = private
        self.created: dict | None = None

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if self.fail.get(name):
            raise self.fail[name].pop(0)

    def create_repo(self, repo_id, *, repo_type, private, exist_ok):
        self._maybe_fail("create_repo")
        self.created = {"repo_id": repo_id, "repo_type": repo_type, "private": private, "exist_ok": exist_ok}
        return f"fake://datasets/{repo_id}"

    def repo_info(self, repo_id, *, repo_type):
        self._maybe_fail("repo_info")
        return type("Info", (), {"private": self.private})()

    def create_branch(self, repo_id, *, branch, repo_type, exist_ok):
        self._maybe_fail("create_branch")

    def list_repo_tree(self, repo_id, *, recursive, revision, repo_type):
        self._maybe_fail("list_repo_tree")
        out = []
        for path, data in self.files.items():
            blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
            lfs = _Lfs(hashlib.sha256(data).hexdigest(), len(data)) if path.endswith(".parquet") else None
            out.append(_File(path, len(data), blob, lfs))
        return out

    def create_commit(self, repo_id, operations, *, commit_message, repo_type, revision):
        self._maybe_fail("create_commit")
        ops = list(operations)
        for op in ops:
            src = op.path_or_fileobj
            self.files[op.path_in_repo] = Path(src).read_bytes() if isinstance(src, (str, Path)) else src
        self.commits.append((commit_message, [op.path_in_repo for op in ops]))
        if self.land_then_fail:
            self.land_then_fail = False
            raise http_error(504)


def make_plan(tmp_path: Path, n_shards: int = 5) -> PublishPlan:
    ops = []
    for i in range(n_shards):
        f = tmp_path / f"train-{i}.parquet"
        f.write_bytes(os.urandom(1000 + i))
        ops.append(RepoOp.from_file(f"data/captions/train-{i:05d}-of-{n_shards:05d}.parquet", f))
    ops.append(RepoOp.from_bytes("README.md", b"---\ntags: [mmsynth]\n---\n# card\n"))
    ops.append(RepoOp.from_bytes("recipe.yaml", b"name: t\n"))
    return PublishPlan(tmp_path, "t", ops, [], {}, "card")


FAST = PushSettings(max_files_per_commit=2, base_delay=1.0, max_delay=60.0, attempts=4)


def push(plan, hub, sleeps=None, **kw):
    return push_plan(
        plan,
        "me/data",
        api=hub,
        settings=kw.pop("settings", FAST),
        sleep=(sleeps if sleeps is not None else []).append,
        progress=False,
        **kw,
    )


def test_push_creates_a_private_repo_and_commits_data_first_and_the_card_last(tmp_path):
    plan, hub = make_plan(tmp_path), FakeHub()
    result = push(plan, hub)
    assert hub.created == {"repo_id": "me/data", "repo_type": "dataset", "private": True, "exist_ok": True}
    assert {p: hub.files[p] for p in hub.files} == {op.path_in_repo: op.read() for op in plan.ops}
    assert all(len(files) <= 2 for _, files in hub.commits)
    assert hub.commits[-1][1][-1] == "README.md"
    assert all("README.md" not in files for _, files in hub.commits[:-1])
    assert hub.commits[0][1][0].startswith("data/")
    assert result.commits == len(hub.commits) == 4 and not result.skipped
    assert hub.commits[0][0] == "Publish t with mmsynth (1/4)"


def test_public_flag_and_custom_message_reach_the_hub(tmp_path):
    hub = FakeHub()
    push(make_plan(tmp_path, 1), hub, private=False, message="v2", settings=PushSettings())
    assert hub.created["private"] is False
    assert [m for m, _ in hub.commits] == ["v2"]


def test_interrupted_push_resumes_and_skips_what_is_there(tmp_path):
    plan = make_plan(tmp_path)
    ops = {op.path_in_repo: op.read() for op in plan.ops}
    shards = sorted(p for p in ops if p.startswith("data/"))
    # Two shards made it before the interruption; a third is there with other bytes (an older publish).
    remote = {shards[0]: ops[shards[0]], shards[1]: ops[shards[1]], shards[2]: b"x" * len(ops[shards[2]])}
    hub = FakeHub(remote)
    result = push(plan, hub)
    sent = [p for _, files in hub.commits for p in files]
    assert shards[0] not in sent and shards[1] not in sent
    assert shards[2] in sent  # same size, different sha256: must be replaced
    assert set(result.skipped) == {shards[0], shards[1]}
    assert hub.files == ops
    # A rerun after success sends nothing at all.
    again = push(plan, hub)
    assert again.commits == 0 and len(again.skipped) == len(plan.ops)


def test_small_text_files_are_compared_by_git_blob_id(tmp_path):
    plan = make_plan(tmp_path, 1)
    card = next(op for op in plan.ops if op.path_in_repo == "README.md")
    hub = FakeHub({"README.md": card.read(), "recipe.yaml": b"name: u\n"})  # same size, other text
    push(plan, hub)
    sent = [p for _, files in hub.commits for p in files]
    assert "README.md" not in sent and "recipe.yaml" in sent


def test_429_and_5xx_are_retried_with_backoff(tmp_path):
    plan, hub, sleeps = make_plan(tmp_path, 1), FakeHub(), []
    hub.fail = {
        "create_repo": [http_error(503)],
        "create_commit": [http_error(429), http_error(429, {"Retry-After": "7"}), http_error(502)],
    }
    push(plan, hub, sleeps, settings=PushSettings(base_delay=1.0, attempts=5))
    assert sleeps == [1.0, 1.0, 7.0, 4.0]  # create_repo once; commit: 2**0, Retry-After, 2**2
    assert set(hub.files) == {op.path_in_repo for op in plan.ops}


def test_gives_up_after_the_last_attempt(tmp_path):
    hub = FakeHub()
    hub.fail = {"create_commit": [http_error(500) for _ in range(10)]}
    with pytest.raises(HfHubHTTPError):
        push(make_plan(tmp_path, 1), hub, settings=PushSettings(attempts=3, base_delay=0.5))
    assert hub.calls.count("create_commit") == 3


def test_auth_errors_are_not_retried(tmp_path):
    hub, sleeps = FakeHub(), []
    hub.fail = {"create_repo": [http_error(401)]}
    with pytest.raises(PublishAborted, match="401"):
        push(make_plan(tmp_path, 1), hub, sleeps)
    assert sleeps == [] and hub.calls == ["create_repo"]


def test_a_commit_that_landed_but_lost_its_answer_is_not_sent_twice(tmp_path):
    plan, hub = make_plan(tmp_path, 1), FakeHub()
    hub.land_then_fail = True
    result = push(plan, hub, settings=PushSettings())
    assert len(hub.commits) == 1 and result.commits == 1
    assert set(hub.files) == {op.path_in_repo for op in plan.ops}


def test_connection_drops_are_retried_but_value_errors_are_not():
    settings, sleeps = PushSettings(base_delay=1.0), []
    seq = [ConnectionError("reset"), TimeoutError("slow")]

    def flaky():
        if seq:
            raise seq.pop(0)
        return "ok"

    assert with_retries(flaky, "x", settings, sleeps.append, log=lambda m: None) == "ok"
    assert sleeps == [1.0, 2.0]
    with pytest.raises(ValueError):
        with_retries(lambda: (_ for _ in ()).throw(ValueError("bad")), "x", settings, sleeps.append)


def test_backoff_is_capped():
    s = PushSettings(base_delay=2.0, max_delay=30.0)
    assert [retry_delay(http_error(503), a, s) for a in range(6)] == [2, 4, 8, 16, 30, 30]
    assert retry_delay(http_error(429, {"retry-after": "3600"}), 0, s) == 30


def test_batches_respect_file_count_and_bytes(tmp_path):
    ops = [RepoOp.from_bytes(f"f{i}", b"x" * n) for i, n in enumerate([10, 10, 10, 50, 10, 10])]
    batches = batch_ops(ops, max_files=3, max_bytes=30)
    assert [[op.path_in_repo for op in b] for b in batches] == [["f0", "f1", "f2"], ["f3"], ["f4", "f5"]]


def test_pacer_keeps_commits_within_the_hourly_budget():
    now, sleeps = [0.0], []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    pacer = CommitPacer(2, clock=lambda: now[0], sleep=sleep)
    pacer.wait()
    now[0] += 10
    pacer.wait()
    now[0] += 10
    pacer.wait()  # the third in an hour waits until the first is an hour old
    assert sleeps == [3580.0]
    now[0] += 3600
    pacer.wait()
    assert len(sleeps) == 1


class _HubHandler(BaseHTTPRequestHandler):
    """Just enough of the Hub's HTTP API for `push_plan` on the real `HfApi`: create the repo, its info,
    an empty file tree, preupload (every file inline, 'regular') and the commit. The first commit gets a
    429 and the first create a 500, so the retry messages are printed too. Every request is recorded."""

    requests: ClassVar[list[dict]] = []
    fail_next: ClassVar[dict[str, int]] = {}

    def log_message(self, *args):  # the server's own access log is not the code under test
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        self.requests.append(
            {"method": self.command, "path": path, "auth": self.headers.get("Authorization"), "body": body}
        )
        kind = next((k for k in ("create", "preupload", "commit", "tree") if f"/{k}" in path), "info")
        if self.fail_next.get(kind):
            self.fail_next[kind] -= 1
            return self._answer(429 if kind == "commit" else 500, {"error": f"fake hub: {kind} busy"})
        if kind == "create":
            return self._answer(200, {"url": f"{self.server.url}/datasets/me/data"})
        if kind == "tree":
            return self._answer(200, [])
        if kind == "preupload":
            files = json.loads(body)["files"]
            return self._answer(
                200,
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                    ]
                },
            )
        if kind == "commit":
            return self._answer(
                200,
                {
                    "commitUrl": f"{self.server.url}/datasets/me/data/commit/{'0' * 40}",
                    "commitOid": "0" * 40,
                    "pullRequestUrl": None,
                },
            )
        return self._answer(200, {"id": "me/data", "private": True, "sha": "0" * 40})

    do_GET = do_POST = _handle


@pytest.fixture
def local_hub(monkeypatch):
    """The fake Hub on 127.0.0.1, made the endpoint of every `HfApi`, with online mode for this test."""
    import huggingface_hub.constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    server.url = f"http://127.0.0.1:{server.server_port}"
    _HubHandler.requests = []
    _HubHandler.fail_next = {"create": 1, "commit": 1}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield _HubHandler
    server.shutdown()
    server.server_close()


def test_the_token_reaches_the_hub_and_appears_nowhere_else(tmp_path, monkeypatch, capfd, local_hub):
    # The token comes only from the environment, as for a user: push_plan builds the real HfApi itself.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    plan = make_plan(tmp_path, 2)
    push_plan(plan, "me/data", settings=FAST, sleep=lambda s: None, progress=True)
    commits = [r for r in local_hub.requests if r["path"].endswith("/commit/main")]
    assert len(commits) == 3  # two batches of two files, one retried after its 429
    # On every request; a failure names the requests that went without it (one full-suite run saw one).
    missing = [
        (r["method"], r["path"], r["auth"]) for r in local_hub.requests if r["auth"] != f"Bearer {TOKEN}"
    ]
    assert not missing and local_hub.requests, f"requests without the token: {missing}"
    assert all(TOKEN.encode() not in r["body"] for r in local_hub.requests)  # not in any payload
    out = capfd.readouterr()
    assert "429" in out.err and "500" in out.err  # the retry messages were printed, without it
    assert TOKEN not in out.out + out.err
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


@pytest.mark.network
def test_real_push_to_the_hub(tmp_path, monkeypatch):
    """Needs MMSYNTH_NETWORK_TESTS=1, a token with write access and MMSYNTH_TEST_REPO=OWNER/NAME (private)."""
    repo = os.environ.get("MMSYNTH_TEST_REPO")
    if not repo:
        pytest.skip("set MMSYNTH_TEST_REPO=OWNER/NAME to a scratch dataset repository")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import DatasetCard, HfApi

    plan = make_plan(tmp_path, 2)
    first = push_plan(plan, repo, private=True, progress=False)
    again = push_plan(plan, repo, private=True, progress=False)
    assert again.commits == 0 and len(again.skipped) == len(plan.ops)
    files = set(HfApi().list_repo_files(repo, repo_type="dataset"))
    assert {op.path_in_repo for op in plan.ops} <= files and first.url
    DatasetCard.load(repo, repo_type="dataset")
