"""Pushing a `PublishPlan` to a Hub dataset repository: batched commits, resumable, with retries.

The Hub limits commits per repository (about 128 an hour) and answers big uploads with 429 and 5xx
now and then. So: files already in the repository with the same content are skipped (an interrupted
push resumes where it stopped), data goes in commits of many files each, commits are spaced to stay
under an hourly budget, and every call is retried with exponential backoff on 429, 5xx and dropped
connections. The token is never handled here: huggingface_hub reads it (HF_TOKEN, the login cache).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mmsynth.factory.dataset.shards import file_sha256
from mmsynth.factory.publish.plan import PublishPlan, RepoOp
from mmsynth.prompts.errors import MmsynthError

T = TypeVar("T")
RETRY_STATUS = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class PushSettings:
    max_files_per_commit: int = 50
    max_bytes_per_commit: int = 5 * 1000**3
    commits_per_hour: int = 60  # half the Hub's per-repository budget, leaving room for retries and others
    attempts: int = 8
    base_delay: float = 2.0
    max_delay: float = 300.0


@dataclass(frozen=True)
class RemoteFile:
    """What the Hub says about one file: its size and content id (LFS sha256 or git blob sha1)."""

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None


@dataclass
class PushResult:
    url: str
    commits: int
    uploaded: list[str]
    skipped: list[str]


class PublishAborted(MmsynthError):
    """The Hub refused something that retrying cannot fix (auth, permissions, a bad request)."""

    exit_code = 1


# --- retries ----------------------------------------------------------------------------------------


def status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def is_retryable(exc: BaseException) -> bool:
    """429, 5xx and request timeouts; dropped connections and transport timeouts (httpx or otherwise)."""
    status = status_of(exc)
    if status is not None:
        return status in RETRY_STATUS
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"ConnectionError", "TimeoutError", "TransportError", "TimeoutException"})


def retry_delay(exc: BaseException, attempt: int, settings: PushSettings) -> float:
    """Exponential backoff (base * 2**attempt, capped); a numeric Retry-After from the server wins."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    after = headers.get("retry-after") or headers.get("Retry-After")
    if after is not None:
        try:
            return min(float(after), settings.max_delay)
        except ValueError:
            pass
    return min(settings.base_delay * 2**attempt, settings.max_delay)


def with_retries(
    fn: Callable[[], T],
    what: str,
    settings: PushSettings,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> T:
    """Call `fn`, retrying retryable failures up to `settings.attempts` times in all."""
    for attempt in range(settings.attempts):
        try:
            return fn()
        except Exception as e:
            if not is_retryable(e) or attempt == settings.attempts - 1:
                raise
            delay = retry_delay(e, attempt, settings)
            (log or _stderr)(
                f"[mmsynth] {what}: {_describe(e)}; retrying in {delay:.0f} s "
                f"(attempt {attempt + 2} of {settings.attempts})"
            )
            sleep(delay)
    raise AssertionError("unreachable")


def _describe(e: BaseException) -> str:
    status = status_of(e)
    return f"HTTP {status}" if status is not None else type(e).__name__


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


class CommitPacer:
    """At most `per_hour` commits in any sliding hour: waits before a commit that would exceed it."""

    def __init__(self, per_hour: int, clock: Callable[[], float] = time.monotonic, sleep=time.sleep):
        self.per_hour, self.clock, self.sleep = per_hour, clock, sleep
        self.times: deque[float] = deque()

    def wait(self) -> float:
        now = self.clock()
        while self.times and now - self.times[0] >= 3600:
            self.times.popleft()
        waited = 0.0
        if len(self.times) >= self.per_hour:
            waited = 3600 - (now - self.times[0])
            self.sleep(waited)
            self.times.popleft()
        self.times.append(self.clock())
        return waited


# --- what to upload ---------------------------------------------------------------------------------


def remote_files(api: Any, repo_id: str, revision: str | None) -> dict[str, RemoteFile]:
    """Every file in the repository at `revision`, by path."""
    out = {}
    for f in api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="dataset"):
        if not hasattr(f, "size"):  # a folder
            continue
        lfs = getattr(f, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        if sha is None and isinstance(lfs, dict):
            sha = lfs.get("sha256")
        out[f.path] = RemoteFile(f.path, f.size, sha256=sha, git_sha1=getattr(f, "blob_id", None))
    return out


def already_there(op: RepoOp, remote: RemoteFile | None) -> bool:
    """Same size and same content id: an LFS file by its sha256, a plain git file by its blob sha1."""
    if remote is None or remote.size != op.size:
        return False
    if remote.sha256 is not None:
        return remote.sha256 == op.sha256
    return remote.git_sha1 is not None and remote.git_sha1 == op.git_sha1


def batch_ops(ops: Iterable[RepoOp], max_files: int, max_bytes: int) -> list[list[RepoOp]]:
    """Consecutive batches of at most `max_files` files and `max_bytes` bytes (a bigger file goes alone).

    README.md always goes in the last batch on its own terms: it is last in a plan's order.
    """
    batches: list[list[RepoOp]] = []
    cur: list[RepoOp] = []
    size = 0
    for op in ops:
        if cur and (len(cur) >= max_files or size + op.size > max_bytes):
            batches.append(cur)
            cur, size = [], 0
        cur.append(op)
        size += op.size
    if cur:
        batches.append(cur)
    return batches


# --- the push ---------------------------------------------------------------------------------------


def push_plan(
    plan: PublishPlan,
    repo_id: str,
    *,
    private: bool = True,
    revision: str | None = None,
    message: str | None = None,
    api: Any = None,
    settings: PushSettings = PushSettings(),
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> PushResult:
    """Create the repository if needed and commit the plan's files that are not there yet.

    `api` is an `HfApi`-like object (tests pass a fake); by default `HfApi()`, which finds the token
    itself. Raises PublishAborted for errors retrying cannot fix.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import tqdm

    api = api if api is not None else HfApi()
    log = log or _stderr
    call = lambda fn, what: with_retries(fn, what, settings, sleep, log)  # noqa: E731
    try:
        url = call(
            lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
            "create_repo",
        )
        info = call(lambda: api.repo_info(repo_id, repo_type="dataset"), "repo_info")
        if getattr(info, "private", private) != private:
            log(
                f"[mmsynth] note: {repo_id} already exists and is "
                f"{'private' if info.private else 'public'}; its visibility is left as it is"
            )
        if revision:
            call(
                lambda: api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True),
                "create_branch",
            )
        remote = call(lambda: remote_files(api, repo_id, revision), "list files")
        ops = plan.ordered()
        todo = [op for op in ops if not already_there(op, remote.get(op.path_in_repo))]
        todo_paths = {op.path_in_repo for op in todo}
        skipped = [op.path_in_repo for op in ops if op.path_in_repo not in todo_paths]
        if skipped:
            log(f"[mmsynth] {len(skipped)} file(s) already in {repo_id} with the same content: skipped")
        check_unchanged(todo)
        batches = batch_ops(todo, settings.max_files_per_commit, settings.max_bytes_per_commit)
        pacer = CommitPacer(settings.commits_per_hour, sleep=sleep)
        bar = tqdm(
            total=sum(op.size for op in todo),
            unit="B",
            unit_scale=True,
            desc="publishing",
            disable=not progress,
        )
        uploaded: list[str] = []
        commits = 0
        with bar:
            for i, batch in enumerate(batches):
                title = message or f"Publish {plan.name} with mmsynth"
                title = title if len(batches) == 1 else f"{title} ({i + 1}/{len(batches)})"
                commit = _batch_committer(api, repo_id, revision, batch, title, remote, pacer)
                commits += 1 if call(commit, f"commit {i + 1}/{len(batches)}") else 0
                uploaded += [op.path_in_repo for op in batch]
                bar.update(sum(op.size for op in batch))
    except Exception as e:
        if status_of(e) is not None and not is_retryable(e):
            raise PublishAborted(f"the Hub refused the request: {_clean(e)}") from None
        raise
    return PushResult(str(url), commits, uploaded, skipped)


def check_unchanged(ops: Iterable[RepoOp]) -> None:
    """Refuse to upload a staged file whose bytes are not those the plan hashed (and the card lists)."""
    for op in ops:
        if op.source is not None and file_sha256(Path(op.source)) != op.sha256:
            raise PublishAborted(
                f"{op.source} changed after the publish plan was made (sha256 differs); nothing more was "
                "uploaded. Make the plan again (rerun mmsynth publish)."
            )


def _batch_committer(
    api: Any, repo_id: str, revision: str | None, batch: list[RepoOp], title: str, known, pacer: CommitPacer
) -> Callable[[], int]:
    """One commit of `batch`, safe to retry; returns how many files it committed (0: all were there already)."""
    from huggingface_hub import CommitOperationAdd

    tried = False

    def commit() -> int:
        nonlocal tried
        # A commit whose answer was lost may have landed: on a retry, look before sending it twice.
        retry, tried = tried, True
        now = remote_files(api, repo_id, revision) if retry else known
        left = [op for op in batch if not already_there(op, now.get(op.path_in_repo))]
        if not left and retry:
            return len(batch)  # the earlier attempt landed
        if left:
            pacer.wait()
            api.create_commit(
                repo_id,
                [
                    CommitOperationAdd(op.path_in_repo, op.source if op.source is not None else op.data)
                    for op in left
                ],
                commit_message=title,
                repo_type="dataset",
                revision=revision,
            )
        return len(left)

    return commit


def _clean(e: BaseException) -> str:
    """The first line of the Hub's message (it names the repository and the cause, never the token)."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
