"""Template files: YAML front matter between `---` lines, then a Jinja2 body with system and user blocks."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateSyntaxError, nodes
from jinja2.meta import TrackingCodeGenerator

from mmsynth.prompts.errors import TemplateError
from mmsynth.prompts.frontmatter import FORMAT_HINT, FrontMatter, InputSpec
from mmsynth.prompts.sandbox import ENV, compile_template

BLOCKS = ("system", "user")


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded, validated template file. `hash` is the sha256 of the file's bytes with \\n line endings."""

    id: str
    version: int
    task: str
    description: str
    inputs: Mapping[str, InputSpec]
    output_schema: dict[str, Any] | None
    sampling: dict[str, Any]
    exemplars: tuple[dict[str, Any], ...]
    body: str
    path: str
    hash: str
    body_line: int = 1  # file line of the body's first line

    def __hash__(self) -> int:
        return hash((self.path, self.hash))

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def source(self) -> str:
        """The body padded with blank lines, so Jinja's line numbers are the file's line numbers."""
        return "\n" * (self.body_line - 1) + self.body

    def variables(self) -> set[str]:
        """Names the body reads that it does not set itself (`exemplars` left out: the renderer gives it)."""
        tracker = TrackingCodeGenerator(ENV)
        tracker.optimizer = None  # jinja2.meta would fold constants: `'x' * 10**10` at lint time
        tracker.visit(self.ast)
        return set(tracker.undeclared_identifiers) - {"exemplars"}

    def required_variables(self) -> set[str]:
        """The names a caller must provide: what the body reads and every declared input, less optional inputs."""
        names = self.variables() | set(self.inputs)
        return {v for v in names if not (v in self.inputs and self.inputs[v].optional)}

    @cached_property
    def ast(self) -> nodes.Template:
        return ENV.parse(self.source, name=self.ref, filename=self.path)

    @cached_property
    def jinja(self) -> Template:
        """The compiled body; runtime errors carry `path` and file line numbers in their traceback."""
        code = compile_template(ENV, self.source, name=self.ref, filename=self.path)
        # The environment's globals as a plain dict, not Jinja's ChainMap over them: every render
        # copies them into its context, and iterating a ChainMap cost a quarter of a short render.
        # They are all set when sandbox.py builds ENV, before any template is compiled.
        return ENV.template_class.from_code(ENV, code, dict(ENV.make_globals(None)), None)

    def first_use(self, name: str) -> int | None:
        """File line where the body first reads `name`, or None."""
        lines = [n.lineno for n in self.ast.find_all(nodes.Name) if n.name == name and n.ctx == "load"]
        return min(lines) if lines else None

    def block_line(self, name: str) -> int:
        for block in self.ast.find_all(nodes.Block):
            if block.name == name:
                return block.lineno
        return self.body_line


def load_template(path: str | Path) -> PromptTemplate:
    """Read and validate one template file; raise TemplateError at the first problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise TemplateError(f"cannot read template: {e.strerror or e}", "Check the path.", path=str(p)) from e
    return parse_template(raw, str(p))


def parse_template(source: bytes | str, path: str = "<string>") -> PromptTemplate:
    """Validate template text; `path` is only used in messages and tracebacks."""
    template, errors = check_source(source, path)
    if errors:
        raise errors[0]
    assert template is not None
    return template


def source_hash(source: bytes | str) -> str:
    raw = source.encode() if isinstance(source, str) else source
    return hashlib.sha256(raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")).hexdigest()


def check_source(source: bytes | str, path: str) -> tuple[PromptTemplate | None, list[TemplateError]]:
    """Every problem found in a template's text, in file order, and the template when there are none."""
    errors: list[TemplateError] = []

    def fail(problem: str, hint: str, line: int) -> tuple[None, list[TemplateError]]:
        errors.append(TemplateError(problem, hint, path=path, line=line))
        return None, errors

    try:
        text = source.decode("utf-8-sig") if isinstance(source, bytes) else source
    except UnicodeDecodeError as e:
        return fail(f"the file is not UTF-8 ({e.reason} at byte {e.start})", "Save it as UTF-8.", 1)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[0].rstrip() != "---":
        return fail("the file does not start with front matter", FORMAT_HINT, 1)
    close = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if close is None:
        return fail(
            "the front matter is never closed", "Add a '---' line between the front matter and the body.", 1
        )

    front = FrontMatter(path, "\n".join(lines[1:close]), errors)
    body_line = close + 2
    body = "\n".join(lines[close + 1 :])
    ast = _check_body(path, "\n" * (body_line - 1) + body, body_line, errors)
    if front.data is None or ast is None or errors:
        errors.sort(key=lambda e: e.line or 0)
        return None, errors
    d = front.data
    return (
        PromptTemplate(
            id=d["id"],
            version=d["version"],
            task=d.get("task") or "",
            description=(d.get("description") or "").strip(),
            inputs=front.inputs,
            output_schema=d.get("output_schema"),
            sampling=dict(d.get("sampling") or {}),
            exemplars=tuple(dict(e) for e in d.get("exemplars") or ()),
            body=body,
            path=path,
            hash=source_hash(source),
            body_line=body_line,
        ),
        errors,
    )


def _check_body(path: str, source: str, body_line: int, errors: list[TemplateError]) -> nodes.Template | None:
    """Parse the body and check its shape: system and user blocks only, nothing outside them."""
    try:
        ast = ENV.parse(source, filename=path)
    except RecursionError:
        errors.append(
            TemplateError(
                "expressions are nested too deeply to parse",
                "Flatten the nesting (set intermediate values with {% set %}).",
                path=path,
                line=body_line,
            )
        )
        return None
    except TemplateSyntaxError as e:
        errors.append(
            TemplateError(
                f"Jinja syntax error: {e.message}",
                "Fix the template near this line.",
                path=path,
                line=e.lineno,
            )
        )
        return None

    def add(problem: str, hint: str, line: int) -> None:
        errors.append(TemplateError(problem, hint, path=path, line=line))

    n_errors = len(errors)
    for node in ast.body:
        if isinstance(node, nodes.Block):
            continue
        if isinstance(node, nodes.Output) and all(
            isinstance(c, nodes.TemplateData) and not c.data.strip() for c in node.nodes
        ):
            continue
        line = node.lineno
        if isinstance(node, nodes.Output) and node.nodes and isinstance(node.nodes[0], nodes.TemplateData):
            data = node.nodes[0].data
            # Point at the text itself, not at the blank lines before it.
            line += data[: len(data) - len(data.lstrip())].count("\n")
        # The renderer runs the blocks alone, so anything outside them would silently never run.
        add(
            "text or statements outside the blocks",
            "Move them into {% block system %} or {% block user %}.",
            line,
        )
    for block in ast.find_all(nodes.Block):
        if block.name not in BLOCKS:
            add(
                f"unknown block '{block.name}'",
                "Use {% block system %} and {% block user %} only.",
                block.lineno,
            )
        elif not any(block is top for top in ast.body):
            add(
                f"block '{block.name}' is nested in another block",
                "Put system and user side by side.",
                block.lineno,
            )
    for node in ast.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        add(
            f"{{% {type(node).__name__.lower()} %}} is not available",
            "Templates are self-contained: write the text in this file.",
            node.lineno,
        )
    if not any(isinstance(b, nodes.Block) and b.name == "user" for b in ast.body):
        add("the body has no {% block user %}", "Every template needs a user block.", body_line)
    return ast if len(errors) == n_errors else None
