"""`mmsynth prompts ...`: list, show, render, lint, preview and diff prompt templates."""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmsynth.prompts import (
    ImagePart,
    ImageRef,
    PromptTemplate,
    TemplateError,
    TemplateRegistry,
    lint_template,
    load_template,
    render_template,
)

if TYPE_CHECKING:
    from mmsynth.factory.dataset.records import Record
    from mmsynth.factory.studio.preview import RunReport, StudioSession
    from mmsynth.prompts import RenderedPrompt


def add_prompts_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `prompts` and its subcommands; each sets `func`, a handler returning the exit code."""
    prompts = subparsers.add_parser("prompts", help="list, show, render and lint prompt templates")
    sub = prompts.add_subparsers(dest="prompts_command", metavar="COMMAND", required=True)

    def templates_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--templates",
            metavar="DIR",
            action="append",
            default=None,
            help="a folder of .j2 templates, searched after the built-ins (repeatable; later folders win)",
        )

    p = sub.add_parser("list", help="every template: ref, task, description, hash")
    templates_option(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="a template's front matter and body")
    p.add_argument("id", metavar="ID", help="'caption.dense', 'caption.dense@1', or a path to a .j2 file")
    templates_option(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("render", help="render a template with variables from a JSON or YAML file")
    p.add_argument("id", metavar="ID", help="'caption.dense', 'caption.dense@1', or a path to a .j2 file")
    p.add_argument(
        "--vars",
        metavar="FILE",
        required=True,
        help="JSON or YAML mapping of variables; image inputs are file paths relative to it",
    )
    templates_option(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("lint", help="check template files or folders; exit 1 on any error")
    p.add_argument("paths", metavar="PATH", nargs="+", help=".j2 files, or folders searched for them")
    p.set_defaults(func=cmd_lint)

    def sample_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--recipe",
            metavar="RECIPE",
            required=True,
            help="the recipe whose seeds, model and validators to use",
        )
        p.add_argument(
            "--samples", type=int, default=5, metavar="N", help="how many seeds to run on (default 5)"
        )
        p.add_argument(
            "--task",
            metavar="NAME",
            help="the recipe task to run it as (default: the first that uses this template id)",
        )

    p = sub.add_parser(
        "preview",
        help="render a template on a recipe's first seeds, run its model, print outputs and verdicts",
    )
    p.add_argument("id", metavar="ID", help="'caption.short', 'caption.short@2', or a path to a .j2 file")
    sample_options(p)
    p.add_argument("--no-run", action="store_true", help="only render the prompts; load no model")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser(
        "diff", help="two versions of a template on the same seeds: text diff, outputs, pass rates"
    )
    p.add_argument("a", metavar="ID@V1", help="the first version (or a .j2 path)")
    p.add_argument("b", metavar="ID@V2", help="the second version (or a .j2 path)")
    sample_options(p)
    p.set_defaults(func=cmd_diff)
    return prompts


def cmd_list(args: argparse.Namespace) -> int:
    templates = TemplateRegistry(args.templates or ()).list()
    rows = [[t.ref, t.task, _shorten(t.description, 60), t.hash[:12]] for t in templates]
    _print_table(["REF", "TASK", "DESCRIPTION", "HASH"], rows)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    t = _find(args.id, args.templates)
    inputs = ", ".join(
        f"{name} ({spec.type}{', optional' if spec.optional else ''}"
        f"{f', default {spec.default!r}' if spec.default is not None else ''})"
        for name, spec in t.inputs.items()
    )
    fields = [
        ("ref", t.ref),
        ("task", t.task),
        ("description", t.description),
        ("path", t.path),
        ("hash", t.hash),
        ("inputs", inputs or "none"),
        ("sampling", ", ".join(f"{k}={v}" for k, v in t.sampling.items()) or "none"),
        ("exemplars", str(len(t.exemplars))),
        ("output_schema", json.dumps(t.output_schema) if t.output_schema else "none (plain text)"),
    ]
    for key, value in fields:
        print(f"{key + ':':<15}{value}")
    print(f"--- body (from line {t.body_line}) ---")
    print(t.body.strip("\n"))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    t = _find(args.id, args.templates)
    prompt = render_template(t, _load_vars(Path(args.vars), t))
    for message in prompt.messages:
        print(f"=== {message.role} ===")
        print("".join(_image_label(p.image) if isinstance(p, ImagePart) else p.text for p in message.parts))
    if prompt.output_schema is not None:
        print("=== output_schema ===")
        print(json.dumps(prompt.output_schema, indent=2))
    print(f"=== {t.ref} sha256 {t.hash[:12]}, sampling {json.dumps(prompt.sampling_defaults)} ===")
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    files: list[Path] = []
    for arg in args.paths:
        path = Path(arg)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.j2") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise TemplateError("no such file or folder", "Pass .j2 files or folders.", path=arg)
    n_errors = n_warnings = 0
    for file in files:
        for issue in lint_template(file):
            print(issue)
            n_errors += issue.severity == "error"
            n_warnings += issue.severity == "warning"
    print(f"{len(files)} {'file' if len(files) == 1 else 'files'}: {n_errors} errors, {n_warnings} warnings")
    return 1 if n_errors else 0


def cmd_preview(args: argparse.Namespace) -> int:
    from mmsynth.factory.studio.preview import StudioSession, read_source

    session = StudioSession(args.recipe)
    try:
        template = session.template(args.id)
        task = args.task or session.task_for(template.id).name
        issues = session.lint(task, read_source(template), path=template.path)
        for issue in issues:
            print(issue)
        if any(i.severity == "error" for i in issues):
            return 1
        if args.no_run:
            for sample in session.render(task, template, args.samples):
                print(f"--- seed {sample.seed.index} ({sample.seed.id[:8]}) ---")
                print(sample.error or _prompt_text(sample.prompt))
            return 0
        report = session.run(task, template, args.samples)
    finally:
        session.close()
    print(f"{template.ref} on task '{task}' ({_model(session, task)}), {len(report.samples)} seeds")
    for sample in report.samples:
        print(f"--- seed {sample.seed.index} ({sample.seed.id[:8]}) ---")
        first = sample.records[0]
        if first.prompt:
            print(f"prompt: {_shorten(first.prompt, 160)}")
        for k, record in enumerate(sample.records):
            print(f"  [{k + 1}] {_verdict_line(record)}")
    print(_pass_line(report))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from mmsynth.factory.studio.preview import StudioSession, read_source

    session = StudioSession(args.recipe)
    try:
        a, b = session.template(args.a), session.template(args.b)
        task = args.task or session.task_for(a.id).name
        reports = [session.run(task, t, args.samples) for t in (a, b)]
    finally:
        session.close()
    diff = difflib.unified_diff(
        read_source(a).splitlines(keepends=True),
        read_source(b).splitlines(keepends=True),
        fromfile=f"{a.ref} ({a.path})",
        tofile=f"{b.ref} ({b.path})",
    )
    print("".join(diff).rstrip("\n") or f"{a.ref} and {b.ref} have the same text")
    print(f"=== outputs on {len(reports[0].samples)} seeds, task '{task}' ({_model(session, task)}) ===")
    for sa, sb in zip(reports[0].samples, reports[1].samples, strict=True):
        print(f"--- seed {sa.seed.index} ({sa.seed.id[:8]}) ---")
        for label, sample in (("A", sa), ("B", sb)):
            for k, record in enumerate(sample.records):
                print(f"  {label}{k + 1} {_verdict_line(record)}")
    for label, report in zip("AB", reports, strict=True):
        print(f"{label}: {_pass_line(report)}")
    return 0


def _model(session: StudioSession, task: str) -> str:
    view = next(v for v in session.tasks() if v.name == task)
    return f"model {view.model}, n={view.n}"


def _verdict_line(record: Record) -> str:
    head = "KEEP  " if record.accepted else "REJECT"
    text = json.dumps(_shorten(record.output, 100), ensure_ascii=False) if record.error is None else ""
    why = "" if record.accepted else f"  <- {record.reject_reason}"
    return f"{head} {text}{why}".rstrip()


def _pass_line(report: RunReport) -> str:
    total = len(report.records)
    return f"{report.template.ref}: pass rate {report.accepted}/{total} ({report.pass_rate:.0%}), {report.sent} requests sent"


def _prompt_text(prompt: RenderedPrompt) -> str:
    return "\n".join(
        f"[{m.role}] "
        + "".join(_image_label(p.image) if isinstance(p, ImagePart) else p.text for p in m.parts)
        for m in prompt.messages
    )


def _find(ref: str, folders: list[str] | None) -> PromptTemplate:
    # A path lets authors try a file before it is in any folder.
    if ref.endswith(".j2"):
        return load_template(ref)
    return TemplateRegistry(folders or ()).get(ref)


def _load_vars(path: Path, template: PromptTemplate) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TemplateError(
            f"cannot read variables: {e.strerror or e}", "Check the --vars path.", path=str(path)
        ) from e
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise TemplateError(
            f"cannot parse variables: {e}", "Write a JSON or YAML mapping.", path=str(path)
        ) from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TemplateError("variables must be a mapping of name to value", "", path=str(path))
    for name, spec in template.inputs.items():
        value = data.get(name)
        if spec.type == "image" and value is not None:
            data[name] = (
                [_load_image(path, v) for v in value] if isinstance(value, list) else _load_image(path, value)
            )
    return data


def _load_image(vars_path: Path, value: Any) -> ImageRef:
    if not isinstance(value, str):
        raise TemplateError(f"an image must be given as a file path, got {value!r}", "", path=str(vars_path))
    image_path = vars_path.parent / value
    try:
        return ImageRef.from_path(image_path)
    except OSError as e:
        raise TemplateError(
            f"cannot read image {value!r}: {e.strerror or e}",
            "Image paths are relative to the variables file.",
            path=str(vars_path),
        ) from e


def _image_label(image: ImageRef) -> str:
    try:
        width, height = image.to_pil().size
        size = f"{width}x{height}"
    except ValueError:
        size = "undecodable"
    return f"<image {image.sha256[:12]} {size}>"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
