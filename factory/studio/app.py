"""The studio's web app: server-rendered pages and a small JSON API over a StudioSession.

Everything it serves is in this package (templates/, static/): nothing is fetched at run time, so it
works offline. It is meant for 127.0.0.1; `create_app` refuses requests whose Host header is not one
of `hosts`, so a web page elsewhere cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import escape
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mmsynth.factory.dataset.records import Record
from mmsynth.factory.seeds import Seed
from mmsynth.factory.studio.preview import (
    MAX_SAMPLES,
    RenderedSample,
    RunReport,
    StudioError,
    StudioSession,
    parse_editor_text,
    read_source,
)
from mmsynth.factory.studio.samples import COMPARE_A, COMPARE_B, RUN, SampleFolders
from mmsynth.factory.studio.versions import SaveProposal, propose_version, save_version
from mmsynth.prompts import ImagePart, ImageRef, PromptTemplate, TemplateError

# resolve(): a strict editable install serves this module from a tree of symlinks, and StaticFiles
# refuses files that are links pointing outside its directory.
HERE = Path(__file__).resolve().parent
# The page templates are ours and trusted; autoescape keeps recipe and template text inert in HTML.
PAGES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


class TemplateIn(BaseModel):
    """A template to work on: editor text (`source`) or a saved version (`ref`), for one task."""

    task: str
    source: str | None = None
    ref: str | None = None
    samples: int = Field(default=3, ge=1, le=MAX_SAMPLES)


class CompareIn(BaseModel):
    task: str
    a: TemplateIn
    b: TemplateIn
    samples: int = Field(default=3, ge=1, le=MAX_SAMPLES)


class SaveIn(BaseModel):
    task: str
    base_ref: str
    source: str
    version: int | None = None  # set on the confirming call: the version the diff was shown for


VIEW, VIEW_COMPARE = "/view", "/view-compare"


def create_app(
    session: StudioSession,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    samples: SampleFolders | None = None,
) -> FastAPI:
    """The studio app over `session`; the caller closes the session when the server stops.

    With `samples`, each Run and Compare writes its records there, and the app serves the viewer over
    them (at /view/ the last Run, at /view-compare/ the last Compare's A and B), linked from the page.
    """
    app = FastAPI(title="mmsynth studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    if samples is not None:
        from mmsynth.factory.viewer.app import create_app as create_viewer

        app.mount(VIEW, create_viewer([samples.path(RUN)], hosts, base=VIEW))
        app.mount(
            VIEW_COMPARE,
            create_viewer([samples.path(COMPARE_A), samples.path(COMPARE_B)], hosts, base=VIEW_COMPARE),
        )

    def keep(name: str, body: TemplateIn, report: RunReport) -> None:
        if samples is not None:
            t = report.template
            source = body.source.encode("utf-8") if body.source is not None else Path(t.path).read_bytes()
            samples.write(name, report.records, t.ref, source)

    @app.exception_handler(StudioError)
    async def _studio_error(request: Request, exc: StudioError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(TemplateError)
    async def _template_error(request: Request, exc: TemplateError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "line": exc.line}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return PAGES.get_template("index.html").render(
            recipe=session.recipe,
            recipe_path=session.recipe_path,
            tasks=session.tasks(),
            save_dir=session.save_dir,
        )

    @app.get("/tasks/{name}", response_class=HTMLResponse)
    def editor(name: str) -> HTMLResponse:
        try:
            task = session.task(name)
        except StudioError as e:
            return HTMLResponse(f"<p>{escape(str(e))}</p><p><a href='/'>Back</a></p>", status_code=404)
        view = next(v for v in session.tasks() if v.name == name)
        html = PAGES.get_template("editor.html").render(
            recipe=session.recipe,
            task=view,
            source=read_source(task.template),
            versions=[t.ref for t in session.versions(task.template.id)],
            save_dir=session.save_dir,
            max_samples=MAX_SAMPLES,
        )
        return HTMLResponse(html)

    @app.get("/api/tasks")
    def tasks() -> list[dict[str, Any]]:
        return [
            {
                "name": v.name,
                "template": v.template.ref,
                "model": v.model,
                "n": v.n,
                "versions": [t.ref for t in session.versions(v.template.id)],
                "why_not": v.why_not,
            }
            for v in session.tasks()
        ]

    @app.get("/api/source")
    def source(ref: str) -> dict[str, Any]:
        t = session.template(ref)
        return {"ref": t.ref, "hash": t.hash, "path": t.path, "source": read_source(t)}

    @app.post("/api/lint")
    def lint(body: TemplateIn) -> dict[str, Any]:
        return {"issues": _issues(session, body.task, body.source or "")}

    @app.post("/api/render")
    def render(body: TemplateIn) -> dict[str, Any]:
        """Lint and, when the text parses, the rendered prompt of each sample (errors per sample)."""
        issues = _issues(session, body.task, body.source or "")
        try:
            template = _template(session, body)
        except TemplateError as e:
            return {"issues": issues, "samples": [], "error": str(e)}
        try:
            samples = session.render(body.task, template, body.samples)
        except StudioError as e:  # what the run would refuse (a variable no seed gives): shown, with the lint
            return {"issues": issues, "samples": [], "error": str(e)}
        return {"issues": issues, "samples": [_rendered(s) for s in samples], "error": None}

    @app.post("/api/run")
    def run(body: TemplateIn) -> dict[str, Any]:
        report = session.run(body.task, _template(session, body), body.samples)
        keep(RUN, body, report)
        return {**_report(session, report), "viewer": f"{VIEW}/" if samples is not None else None}

    @app.post("/api/compare")
    def compare(body: CompareIn) -> dict[str, Any]:
        a = session.run(body.task, _template(session, body.a), body.samples)
        b = session.run(body.task, _template(session, body.b), body.samples)
        keep(COMPARE_A, body.a, a)
        keep(COMPARE_B, body.b, b)
        viewer = f"{VIEW_COMPARE}/#compare" if samples is not None else None
        return {"a": _report(session, a), "b": _report(session, b), "viewer": viewer}

    @app.post("/api/save")
    def save(body: SaveIn) -> dict[str, Any]:
        """Without `version`: the proposal and its diff, nothing written. With it: write that version."""
        base = session.template(body.base_ref)
        proposal = propose_version(session, base, body.source)
        if body.version is None:
            return {"written": False, **_proposal(proposal)}
        if body.version != proposal.version:
            raise StudioError(
                f"{proposal.template_id}@{body.version} is no longer the next version; review the new diff"
            )
        saved = save_version(session, proposal)
        return {
            "written": True,
            **_proposal(proposal),
            "hash": saved.hash,
            "versions": [t.ref for t in session.versions(saved.id)],
        }

    return app


def _template(session: StudioSession, body: TemplateIn) -> PromptTemplate:
    if body.source is not None:
        return parse_editor_text(body.source)
    if body.ref:
        return session.template(body.ref)
    raise StudioError("give the template as `source` (editor text) or `ref` (a saved version)")


def _issues(session: StudioSession, task: str, source: str) -> list[dict[str, Any]]:
    return [
        {"line": i.line, "severity": i.severity, "message": i.message} for i in session.lint(task, source)
    ]


def _proposal(p: SaveProposal) -> dict[str, Any]:
    return {
        "ref": p.ref,
        "version": p.version,
        "path": str(p.path),
        "diff": p.diff,
        "note": p.note,
        "source": p.source,
    }


def data_url(image: ImageRef) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


def _seed(seed: Seed) -> dict[str, Any]:
    image = next((v for v in seed.fields.values() if isinstance(v, ImageRef)), None)
    text = {k: v for k, v in seed.fields.items() if isinstance(v, str) and len(v) < 500}
    return {
        "id": seed.id,
        "index": seed.index,
        "image": data_url(image) if image else None,
        "fields": text,
        "error": seed.error,
    }


def _rendered(s: RenderedSample) -> dict[str, Any]:
    messages = []
    for m in s.prompt.messages if s.prompt else ():
        parts = [
            {"type": "image", "src": data_url(p.image)}
            if isinstance(p, ImagePart)
            else {"type": "text", "text": p.text}
            for p in m.parts
        ]
        messages.append({"role": m.role, "parts": parts})
    return {"seed": _seed(s.seed), "messages": messages, "error": s.error}


def _record(r: Record) -> dict[str, Any]:
    return {
        "text": r.output,
        "parsed": r.parsed,
        "accepted": r.accepted,
        "reason": r.reject_reason,
        "finish_reason": r.finish_reason,
        "verdicts": [
            {"validator": v.validator, "keep": v.keep, "reason": v.reason, "score": v.score}
            for v in r.verdicts
        ],
    }


def _report(session: StudioSession, report: RunReport) -> dict[str, Any]:
    t = report.template
    saved = t.ref in session.registry and session.registry.get(t.ref).hash == t.hash
    return {
        "task": report.task,
        "ref": t.ref,
        "hash": t.hash,
        "edited": not saved,  # editor text that differs from the saved file of its ref
        "pass_rate": report.pass_rate,
        "accepted": report.accepted,
        "total": len(report.records),
        "seconds": round(report.seconds, 3),
        "sent": report.sent,
        "samples": [
            {"seed": _seed(s.seed), "outputs": [_record(r) for r in s.records]} for s in report.samples
        ],
    }
