"""The one Jinja2 environment templates are parsed and rendered in, and what it forbids.

Templates are user input (recipes, the studio, shared files), so the sandbox must hold against a
template that tries to hang the process or fill its memory, not only against one that reaches for
Python internals:

- ImmutableSandboxedEnvironment: no attribute whose name starts with `_` (so no `__class__`,
  `__globals__`, `__subclasses__` ...), no unsafe callables, and no mutation of lists or dicts
  passed in (`.append`, `.update`, ... raise SecurityError).
- No loader: `{% include %}`, `{% import %}` and `{% extends %}` cannot read any file.
- Undefined names raise wherever they are used, even inside a list or dict that is printed.
- Limits (see Limits and docs/reliability.md): no constant folding at compile time (Jinja's optimizer
  would evaluate `{{ 'x' * 10**10 }}` while compiling, before any check could run); every string or
  list a template builds, and its whole output, is capped in size; `range` is capped in length;
  numbers are capped in size; a render has a deadline, checked in every operator, call, attribute
  access, loop step and output chunk; `lipsum` is gone.
"""

from __future__ import annotations

import json
import math
import re
import types
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import StrictUndefined, Undefined, filters, nodes, pass_environment, pass_eval_context
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from mmsynth.prompts.limits import (
    ENV_MAX_RANGE,
    MAX_INT_BITS,
    TemplateLimitError,
    check_deadline,
    check_int,
    check_size,
    limits,
    too_big,
)

# --- the checked operations ------------------------------------------------------------------------

_SIZED = (str, list, tuple)
_WIDTH = re.compile(r"\d+")


def _checked_binop(op: str, left: Any, right: Any) -> None:
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, _SIZED) and isinstance(n, int):
                check_size("a repeated string or list", len(seq) * max(n, 0))
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() + right.bit_length() > MAX_INT_BITS
        ):
            raise TemplateLimitError(f"a product of numbers over {MAX_INT_BITS} bits")
    elif op == "**":
        if isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(left) > 1:
            bits = abs(right) * math.log2(abs(left))
            if bits > MAX_INT_BITS:
                raise TemplateLimitError(f"a power over {MAX_INT_BITS} bits")
    elif op == "+":
        if isinstance(left, _SIZED) and isinstance(right, _SIZED):
            check_size("a joined string or list", len(left) + len(right))
    elif op == "%" and isinstance(left, str):
        _check_format(left, right)


def _check_format(fmt: str, *args: Any) -> None:
    """Width and precision are what make formatting big: `'%*s' % (10**9, '')`, `'{:>999999999}'`;
    so no number in the format string, and no integer argument, may exceed the size limit."""
    cap = limits().max_chars
    for m in _WIDTH.finditer(fmt):
        if len(m.group()) > 12 or int(m.group()) > cap:
            raise too_big("a formatted string", int(m.group()[:13]), cap)
    values: list[Any] = []
    for a in args:
        if isinstance(a, dict):
            values += a.values()
        elif isinstance(a, (tuple, list)):
            values += a
        else:
            values.append(a)
    for v in values:
        check_int("a formatting width", v)
        _checked_str(v)


def _materialize(value: Iterable[Any]) -> list[Any]:
    """A lazy sequence (`map`, `select`, a generator) made a list within the size limit: filters like
    `list`, `sort` and `join` would otherwise build it whole first, in C, before any check."""
    if isinstance(value, (str, dict)):
        value = list(value)
    cap, out, size = limits().max_chars, [], 0
    for i, item in enumerate(value):
        if i % 64 == 0:
            check_deadline()
        size += 1 + (len(item) if isinstance(item, _SIZED) else 0)
        if size > cap:
            raise too_big("a list the template builds", size, cap)
        out.append(item)
    return out


def _json_size_over(value: Any, cap: int) -> bool:
    """Whether `value` as JSON is longer than `cap`, found without building it (iteratively)."""
    size, stack = 0, [value]
    while stack:
        v = stack.pop()
        size += 2
        if isinstance(v, str):
            size += len(v)
        elif isinstance(v, dict):
            stack += [*v.keys(), *v.values()]
        elif isinstance(v, (list, tuple)):
            stack += v
        if size > cap:
            return True
    return False


def _checked_str(value: Any) -> Any:
    """A list or dict is printed item by item (repr): a list of a million references to one long
    string would print terabytes. Refuse that before building the text."""
    if isinstance(value, (list, tuple, dict)) and _json_size_over(value, limits().max_chars):
        raise too_big("a printed list or dict", limits().max_chars + 1, limits().max_chars)
    return value


def _checked_concat(parts: Iterable[Any]) -> str:
    """`~`, `{% set %}` blocks, macros and call blocks all join through here."""
    check_deadline()
    strings = [p if isinstance(p, str) else str(_checked_str(p)) for p in parts]
    check_size("a joined string", sum(map(len, strings)))
    return "".join(strings)


class _LoopGuard:
    """Every `{% for %}` iterates through this, so loops that print nothing still meet the deadline."""

    def __init__(self, iterable: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        for i, item in enumerate(self.iterable):
            if i % 64 == 0:
                check_deadline()
            yield item

    def __len__(self) -> int:  # loop.length, loop.revindex
        return len(self.iterable)


def _safe_range(*args: int) -> range:
    rng = range(*args)
    cap = limits().max_range
    if len(rng) > cap:
        raise TemplateLimitError(
            f"range() of {len(rng):,} items, over the limit of {cap:,} (set {ENV_MAX_RANGE} to allow more)"
        )
    return rng


class _Namespace(Namespace):
    """namespace(): the one object a loop can carry values out of, so its values are size-checked."""

    def __setitem__(self, name: str, value: Any) -> None:
        if isinstance(value, _SIZED):
            check_size(f"namespace value '{name}'", len(value))
        super().__setitem__(name, value)


def _str_method_check(name: str, s: str, args: tuple, kwargs: dict[str, Any]) -> tuple:
    """Refuse a str method call whose result would be over the size limit; returns the arguments to
    call it with (`join`'s iterable made a list, so that it is read once)."""
    if name in ("center", "ljust", "rjust", "zfill") and args:
        check_int(f"str.{name} width", args[0])
    elif name == "expandtabs":
        check_size("str.expandtabs", len(s) * max(int((args or [8])[0]), 1))
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else s.count(str(args[0])) + 1
        check_size("str.replace", len(s) + len(str(args[1])) * max(min(count, len(s) + 1), 0))
    elif name == "join" and args:
        items = _materialize(args[0])
        check_size("str.join", sum(len(str(x)) for x in items) + len(s) * len(items))
        return (items, *args[1:])
    elif name in ("format", "format_map"):
        _check_format(s, args, kwargs)
    return args


# --- filters with size arguments -------------------------------------------------------------------


def _tojson(value: Any, indent: int | None = None) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; a prompt wants the JSON exactly as a person writes it.
    if indent is not None and not 0 <= indent <= 64:
        raise TemplateLimitError(f"tojson indent must be between 0 and 64, got {indent}")

    def undefined(o: Any) -> Any:
        if isinstance(o, Undefined):
            o._fail_with_undefined_error()
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    if _json_size_over(value, limits().max_chars):
        raise too_big("tojson output", limits().max_chars + 1, limits().max_chars)
    out = json.dumps(value, ensure_ascii=False, indent=indent, default=undefined)
    check_size("tojson output", len(out))
    return out


def _center(value: Any, width: int = 80) -> str:
    check_int("center width", width)
    return filters.do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    pad = len(width) if isinstance(width, str) else width
    check_size("indented text", len(str(s)) + max(pad, 0) * (str(s).count("\n") + 1))
    return filters.do_indent(s, width, first, blank)


@pass_environment
def _wordwrap(environment, s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True):
    text = str(s)
    sep = len(wrapstring if wrapstring is not None else environment.newline_sequence)
    check_size("wrapped text", len(text) + (len(text) // max(int(width), 1) + 1) * sep)
    return filters.do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_format(str(value), args, kwargs)
    return filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _replace(eval_ctx, s, old, new, count=None):
    _str_method_check("replace", str(s), (old, new) + (() if count is None else (count,)), {})
    return filters.do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _join(eval_ctx, value, d="", attribute=None):
    items = _materialize(value)
    check_size("joined text", sum(len(str(x)) for x in items) + len(str(d)) * len(items))
    return filters.sync_do_join(eval_ctx, items, d, attribute)


def _slice(value, slices, fill_with=None):
    check_int("slice count", slices)
    return filters.sync_do_slice(value, slices, fill_with)


def _string(value: Any) -> str:
    return filters.soft_str(_checked_str(value))


def _list(value: Iterable[Any]) -> list[Any]:
    return _materialize(value)


@pass_environment
def _sort(environment, value, reverse=False, case_sensitive=False, attribute=None):
    return filters.do_sort(environment, _materialize(value), reverse, case_sensitive, attribute)


@pass_environment
def _unique(environment, value, case_sensitive=False, attribute=None):
    return filters.do_unique(environment, _materialize(value), case_sensitive, attribute)


def _batch(value, linecount, fill_with=None):
    check_int("batch size", linecount)
    return filters.do_batch(_materialize(value), linecount, fill_with)


@pass_environment
def _sum(environment, iterable, attribute=None, start=0):
    # Summing lists is quadratic inside C code, where no deadline can stop it: numbers only.
    if not isinstance(start, (int, float)):
        raise TemplateLimitError("sum() adds numbers only")
    return filters.sync_do_sum(environment, iterable, attribute, start)


# --- the environment -------------------------------------------------------------------------------


class _UndefinedEverywhere(StrictUndefined):
    """StrictUndefined still prints as `Undefined` inside a container (`{{ [missing] }}` rendered
    `[Undefined]`), because Python formats list items with repr(): make repr fail too."""

    __slots__ = ()
    __repr__ = StrictUndefined._fail_with_undefined_error  # type: ignore[assignment]


class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        # `~` compiles to a bare "".join the sandbox never sees; route it through the checked concat.
        self.write("concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def concat(self, parts: Iterable[Any]) -> str:  # type: ignore[override]
        return _checked_concat(parts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_deadline()
        _checked_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        check_deadline()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format arrives wrapped by the sandbox
        if isinstance(target, types.BuiltinMethodType) and isinstance(target.__self__, str):
            args = _str_method_check(target.__name__, target.__self__, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        check_deadline()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        check_deadline()
        return super().getitem(obj, argument)


def _guard_loops(ast: nodes.Template) -> nodes.Template:
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "mmsynth_loop_guard", [], [], None, None, lineno=loop.iter.lineno)
    return ast


def compile_template(env: LimitedEnvironment, source: str, name: str, filename: str) -> Any:
    """Compile template source with every `{% for %}` passing through the loop guard."""
    ast = _guard_loops(env.parse(source, name=name, filename=filename))
    return env.compile(ast, name=name, filename=filename)


def make_environment() -> LimitedEnvironment:
    """A fresh sandboxed environment with the settings every template is written against."""
    env = LimitedEnvironment(
        undefined=_UndefinedEverywhere,
        autoescape=False,
        keep_trailing_newline=False,
        # Control lines ({% if %}, {% for %}) leave no blank lines or indentation behind.
        trim_blocks=True,
        lstrip_blocks=True,
        optimized=False,  # the optimizer folds constants at compile time, outside every limit
        finalize=_checked_str,  # every {{ value }} passes here before it becomes text
    )
    env.globals["range"] = _safe_range
    env.globals["namespace"] = _Namespace
    env.globals.pop("lipsum", None)
    env.filters.update(
        tojson=_tojson,
        center=_center,
        indent=_indent,
        wordwrap=_wordwrap,
        format=_format,
        replace=_replace,
        join=_join,
        slice=_slice,
        sum=_sum,
        list=_list,
        string=_string,
        sort=_sort,
        unique=_unique,
        batch=_batch,
        mmsynth_loop_guard=_LoopGuard,
    )
    return env


ENV = make_environment()
