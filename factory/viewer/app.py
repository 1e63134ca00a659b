"""The viewer's web app: one page and the JSON API behind it, over one run folder (or two to compare).

Everything it serves is package files (this folder's templates/ and static/, and the studio's stylesheet
for the shared look), so it works offline. Like the studio it is meant for 127.0.0.1 and refuses
requests whose Host header is not one of `hosts` (DNS rebinding).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi import Query as Param
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mmsynth.factory.viewer.compare import CompareQuery, Pairing, compare_page, summary
from mmsynth.factory.viewer.index import RunIndex, Snapshot
from mmsynth.factory.viewer.queries import (
    CARD_COLUMNS,
    LINEAGE_COLUMNS,
    Query,
    QueryError,
    Selector,
    card,
    children,
    find,
    read_rows,
)
from mmsynth.factory.viewer.queries import page as page_of
from mmsynth.factory.viewer.stats import run_stats

# resolve(): a strict editable install links package files, and StaticFiles refuses links leading outside.
HERE = Path(__file__).resolve().parent
STUDIO_STATIC = HERE.parent / "studio" / "static"
PAGES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


def _run() -> Any:
    """Every endpoint takes ?run=a (the default) or ?run=b; a fresh parameter object per endpoint."""
    return Param("a", alias="run", pattern="^[ab]$")


class RunFolderError(ValueError):
    """A path that is not a run folder (no data/ with shards, no manifest)."""


@dataclass
class Run:
    key: str  # "a" or "b"
    path: Path
    index: RunIndex
    selector: Selector = field(default_factory=Selector)

    def describe(self, snap: Snapshot) -> dict[str, Any]:
        manifest = self.path / "manifest.json"
        lineage = json.loads(manifest.read_text()).get("lineage", {}) if manifest.exists() else {}
        return {
            "key": self.key,
            "name": lineage.get("recipe") or self.path.name,
            "path": str(self.path),
            "complete": manifest.exists(),
            "shards": len(snap.shards),
            "records": snap.table.num_rows,
            "tasks": sorted({s.task for s in snap.shards}),
            "validators": snap.validators,
            "lineage": lineage,
        }


def open_run(key: str, path: str | Path) -> Run:
    p = Path(path).expanduser().resolve()
    if not (p / "data").is_dir() and not (p / ".mmsynth").is_dir():
        raise RunFolderError(f"{p} is not an mmsynth run folder (no data/ and no .mmsynth/)")
    return Run(key, p, RunIndex(p))


def create_app(
    runs: Sequence[str | Path], hosts: Sequence[str] = ("127.0.0.1", "localhost"), base: str = ""
) -> FastAPI:
    """The viewer over one run (or two: run "a" and run "b"). `base`: the path it is mounted at inside
    another app (the studio serves it at /view), so that the page asks for its files and API there."""
    if not 1 <= len(runs) <= 2:
        raise RunFolderError("the viewer shows one run, or two to compare")
    by_key = {k: open_run(k, p) for k, p in zip("ab", runs, strict=False)}
    pairing = Pairing()
    app = FastAPI(title="mmsynth view", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runs = by_key  # the command indexes them before it serves (a first page then needs no wait)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))
    app.mount("/static/studio", StaticFiles(directory=STUDIO_STATIC), name="studio-static")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(FileNotFoundError)
    async def _shard_gone(request: Request, exc: FileNotFoundError) -> JSONResponse:
        # A rerun (--fresh, or a resume dropping an unfinished chunk) removed a shard between look and read.
        return JSONResponse(
            {"error": f"the run changed while reading it ({exc.filename}); reload"}, status_code=409
        )

    def run(key: str) -> Run:
        if key not in by_key:
            raise HTTPException(404, f"no run {key!r}: this viewer has {', '.join(by_key)}")
        return by_key[key]

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return PAGES.get_template("index.html").render(runs=[r.path for r in by_key.values()], base=base)

    @app.get("/api/runs")
    def runs_() -> list[dict[str, Any]]:
        return [r.describe(r.index.snapshot()) for r in by_key.values()]

    @app.get("/api/facets")
    def facets(run_key: str = _run(), task: str | None = None) -> dict[str, Any]:
        """What the filters can choose from (tasks, validators, reject reasons with counts)."""
        r = run(run_key)
        stats = run_stats(r.index.snapshot(), r.path, task or None)
        return {
            "tasks": stats["tasks"],
            "validators": list(stats["validators"]),
            "reasons": stats["reject_reasons"],
            "records": stats["records"],
        }

    @app.get("/api/records")
    def records(
        run_key: str = _run(),
        task: str | None = None,
        split: str | None = None,
        validator: str | None = None,
        verdict: str | None = None,
        reason: str | None = None,
        score_min: float | None = None,
        score_max: float | None = None,
        q: str | None = None,
        sort: str | None = None,
        order: str = "asc",
        page: int = 1,
        per_page: int = 24,
    ) -> dict[str, Any]:
        start = time.perf_counter()
        r = run(run_key)
        query = Query(
            task=task or None,
            split=split or None,
            validator=validator or None,
            verdict=verdict or None,
            reason=reason or None,
            score_min=score_min,
            score_max=score_max,
            q=q or None,
            sort=sort or None,
            order=order,
            page=page,
            per_page=per_page,
        )
        snap = r.index.snapshot()
        hits = r.selector.select(snap, query)
        shown, pages = page_of(snap, hits, query)
        cards = [card(row) for row in read_rows(snap, shown, CARD_COLUMNS)]
        return {
            "total": len(hits),
            "page": query.page,
            "pages": pages,
            "per_page": query.per_page,
            "records": cards,
            "ms": round((time.perf_counter() - start) * 1000, 1),
        }

    @app.get("/api/records/{record_id}")
    def record(record_id: str, run_key: str = _run()) -> dict[str, Any]:
        """One record with its lineage, its parent (when in this run) and the records made from it."""
        r = run(run_key)
        snap = r.index.snapshot()
        pos = find(snap, record_id)
        if pos is None:
            raise HTTPException(404, f"no record {record_id!r} in {r.path}")
        row = read_rows(snap, [pos], CARD_COLUMNS + LINEAGE_COLUMNS)[0]
        out = card(row)
        ref = f"{row['template_id']}@{row['template_version']}"
        parent = row.get("parent_id")
        out["template_ref"] = ref
        out["template_saved"] = (r.path / "templates" / f"{ref}.j2").exists()
        out["parent"] = None if not parent else {"id": parent, "in_run": find(snap, parent) is not None}
        out["children"] = children(snap, record_id)
        out["split"] = "accepted" if row["accepted"] else "rejected"
        return out

    @app.get("/api/stats")
    def stats(run_key: str = _run(), task: str | None = None) -> dict[str, Any]:
        r = run(run_key)
        return run_stats(r.index.snapshot(), r.path, task or None)

    @app.get("/api/template", response_class=PlainTextResponse)
    def template(ref: str, run_key: str = _run()) -> str:
        """The template file the run saved (RUN/templates/<id>@<version>.j2)."""
        r = run(run_key)
        folder = r.path / "templates"
        path = (folder / f"{ref}.j2").resolve()
        if path.parent != folder.resolve() or not path.is_file():
            raise HTTPException(404, f"{ref!r} is not saved in {folder}")
        return path.read_text()

    @app.get("/api/compare")
    def compare(
        task: str | None = None, status: str | None = None, page: int = 1, per_page: int = 10
    ) -> dict[str, Any]:
        """Pairs of records by (task, seed_id): run a's against run b's."""
        if "b" not in by_key:
            raise HTTPException(400, "compare needs two runs: mmsynth view RUN_A RUN_B")
        start = time.perf_counter()
        a, b = by_key["a"].index.snapshot(), by_key["b"].index.snapshot()
        pairs = pairing.table(a, b)
        out = compare_page(pairs, a, b, CompareQuery(task or None, status or None, page, per_page))
        out["summary"] = summary(pairs, task or None)
        out["ms"] = round((time.perf_counter() - start) * 1000, 1)
        return out

    return app
