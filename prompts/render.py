"""Rendering: a template and one set of variables become chat messages, with images where they were written."""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context

from mmsynth.prompts.errors import TemplateRenderError
from mmsynth.prompts.limits import TemplateLimitError, collect_output, render_budget
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import ImagePart, Message, Part, RenderedPrompt, TextPart
from mmsynth.prompts.sandbox import ENV
from mmsynth.prompts.template import BLOCKS, PromptTemplate

_MARK = "\x00mmsynth-image:{nonce}:"
_PLACEHOLDER = re.compile("\x00mmsynth-image:([0-9a-f]{16}):([0-9]+)\x00")


class _ImageSlot:
    """Stands in for an image inside Jinja: its string form is a sentinel the renderer splits on.

    It has no public attribute, and the sandbox refuses names starting with `_`: a template can place
    the image, never read its bytes.
    """

    __slots__ = ("_marker",)

    def __init__(self, marker: str):
        self._marker = marker

    def __str__(self) -> str:
        return self._marker

    __repr__ = __str__


class _ImageList(list):
    """Image slots of a list input: iterate it, index it, or write it whole to place every image in order."""

    def __str__(self) -> str:
        return "".join(str(s) for s in self)

    __repr__ = __str__


def render_template(template: PromptTemplate, variables: Mapping[str, Any]) -> RenderedPrompt:
    """Render the system (when present and not empty) and user blocks into messages.

    Every variable is visible to the body; declared inputs are checked: required ones must be given and
    not None, optional ones default, image inputs must be ImageRef or a list of ImageRef.
    """
    # A random nonce per render: no text in a variable can forge an image placeholder. Made when the
    # first image is placed: a render without images has no placeholder to protect and skips the
    # system-random read (about 4% of a short text render).
    nonces: list[str] = []
    images: list[ImageRef] = []

    def place(image: ImageRef) -> _ImageSlot:
        if not nonces:
            nonces.append(secrets.token_hex(8))
        images.append(image)
        return _ImageSlot(f"{_MARK.format(nonce=nonces[0])}{len(images) - 1}\x00")

    # One Jinja context for every block, as Jinja's own render shares one between a template's blocks
    # (`{% set %}` inside a block stays in that block); making it costs as much as rendering a block.
    context = template.jinja.new_context(_context(template, variables, place))
    messages = []
    with render_budget():  # one deadline for the whole prompt
        texts = {r: _render_block(template, r, context) for r in BLOCKS if r in template.jinja.blocks}
    for role, text in texts.items():
        parts = _split(template, role, text.strip(), nonces[0] if nonces else None, images)
        if parts:
            messages.append(Message(role=role, parts=tuple(parts)))
        elif role == "user":
            raise TemplateRenderError(
                "the user block rendered to nothing",
                "Check its conditions for these variables.",
                path=template.path,
                line=template.block_line(role),
            )
    return RenderedPrompt(
        messages=tuple(messages),
        template_id=template.id,
        template_version=template.version,
        template_hash=template.hash,
        output_schema=copy.deepcopy(template.output_schema),
        sampling_defaults=dict(template.sampling),
    )


def _context(
    template: PromptTemplate, variables: Mapping[str, Any], place: Callable[[ImageRef], _ImageSlot]
) -> dict[str, Any]:
    context = dict(variables)
    for name, spec in template.inputs.items():
        value = variables.get(name)
        if value is None:
            if not spec.optional:
                problem = f"required input '{name}' is " + ("None" if name in variables else "missing")
                raise _input_error(
                    template, name, problem, "Pass it, or declare it `{type: ..., optional: true}`."
                )
            context[name] = copy.deepcopy(spec.default)
        elif spec.type == "image":
            context[name] = _image_value(template, name, value, place)
        elif _holds_image(value):
            raise _input_error(
                template,
                name,
                f"input '{name}' is declared {spec.type} but holds an image",
                "Declare it `image` so the image becomes part of the message.",
            )
    context["exemplars"] = [dict(e) for e in template.exemplars]
    return context


def _input_error(template: PromptTemplate, name: str, problem: str, hint: str) -> TemplateRenderError:
    # Point where the body first reads the input, which is where its author will look; else its declaration.
    line = template.first_use(name) or template.inputs[name].line
    return TemplateRenderError(problem, hint, path=template.path, line=line, variable=name)


def _image_value(
    template: PromptTemplate, name: str, value: Any, place: Callable[[ImageRef], _ImageSlot]
) -> _ImageSlot | _ImageList:
    if isinstance(value, ImageRef):
        return place(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, ImageRef) for v in value):
        return _ImageList(place(v) for v in value)
    raise _input_error(
        template,
        name,
        f"image input '{name}' must be an ImageRef or a list of ImageRef, got {type(value).__name__}",
        "Make one with ImageRef.from_path(...) or ImageRef.from_pil(...).",
    )


def _holds_image(value: Any, depth: int = 0) -> bool:
    if isinstance(value, ImageRef):
        return True
    if depth >= 4:
        return False
    if isinstance(value, Mapping):
        value = value.values()
    elif not isinstance(value, (list, tuple, set)):
        return False
    return any(_holds_image(v, depth + 1) for v in value)


def _render_block(template: PromptTemplate, role: str, context: Context) -> str:
    jinja = template.jinja
    try:
        try:
            return collect_output(jinja.blocks[role](context))
        except Exception:
            # Rewrites the traceback so its frames carry the template file and line.
            ENV.handle_exception()
    except Exception as e:
        raise _render_error(template, e, role) from e


def _render_error(template: PromptTemplate, error: Exception, role: str) -> TemplateRenderError:
    line, tb = None, error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == template.path:
            line = tb.tb_lineno
        tb = tb.tb_next
    message = str(error)
    variable = None
    if isinstance(error, TemplateLimitError):
        problem = f"over a template limit: {message}"
        hint = "Templates are capped in time, size and range (docs/reliability.md)."
    elif isinstance(error, (RecursionError, MemoryError)):
        problem = f"{type(error).__name__}: the template recursed or grew too far"
        hint = "Check macros that call themselves and values that double."
    elif isinstance(error, SecurityError):
        problem = f"blocked by the sandbox: {message.rstrip('.')}"
        hint = "Templates cannot reach Python internals or change their inputs."
    elif isinstance(error, UndefinedError):
        m = re.match(r"'([^']+)' is undefined", message)
        if m:
            variable = m.group(1)
            problem = f"undefined variable '{variable}'"
            hint = (
                f"Declare it under `inputs` and pass it, or guard it with {{% if {variable} is defined %}}."
            )
        else:
            problem = f"undefined value: {message}"
            hint = "Check the key or attribute name."
    else:
        problem = f"{type(error).__name__}: {message}"
        hint = "Check the expression on this line."
    # No template frame (the output cap, checked outside Jinja's code): the block's line.
    line = line or template.block_line(role)
    return TemplateRenderError(problem, hint, path=template.path, line=line, variable=variable)


def _split(
    template: PromptTemplate, role: str, text: str, nonce: str | None, images: list[ImageRef]
) -> list[Part]:
    """The block's text cut into text and image parts at this render's placeholders (`nonce` None: no image)."""
    parts: list[Part] = []
    start = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.group(1) != nonce:
            continue  # text that looks like a placeholder but was not made by this render stays text
        if m.start() > start:
            parts.append(TextPart(text[start : m.start()]))
        parts.append(ImagePart(images[int(m.group(2))]))
        start = m.end()
    if start < len(text):
        parts.append(TextPart(text[start:]))
    for part in parts:
        if nonce is not None and isinstance(part, TextPart) and nonce in part.text.lower():
            raise TemplateRenderError(
                "an image was changed by a filter or expression",
                "Write an image input alone, as {{ image }}.",
                path=template.path,
                line=template.block_line(role),
            )
    return parts
