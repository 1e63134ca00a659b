"""Pydantic's validation errors as recipe Problems: `file:line:col: key.path: what is wrong. Hint.`

Each error kind gets a message a user can act on (the expected type, the allowed keys or values, the
bound) at the line of the entry it is about, found by walking the error's `loc` through the YAML tree.
"""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel

from mmsynth.factory.errors import Loc, Problem, choice_hint, describe_value, display_path, problem_at
from mmsynth.factory.recipe.schema import Recipe
from mmsynth.factory.seeds import SEED_SOURCES

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "path_type": "a path string",
    "none_required": "null",
}

_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "greater than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def problem_from_pydantic(
    err: dict[str, Any],
    path: str | Path,
    root: yaml.Node | None,
    *,
    model: type[BaseModel] = Recipe,
    prefix: Loc = (),
    base_dir: Path | None = None,
) -> Problem:
    """One pydantic error (of `model.model_validate`) as a Problem at its line in `root`.

    `prefix` is where the validated data sits in the file (`('validators', 2)` for a validator's
    config, `()` for the whole recipe); `base_dir` is named in the hint of a missing relative path.
    """
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    rel = tuple(err["loc"])
    loc = (*prefix, *rel)
    if kind == "extra_forbidden":
        fields = _fields_at(model, rel[:-1])
        # At the key: the key is what is wrong, its value may be fine under the right name.
        return problem_at(path, root, loc, "unknown key", choice_hint(rel[-1], fields or ()), key=True)
    if kind == "missing":
        field = (_fields_at(model, rel[:-1]) or {}).get(rel[-1])
        return problem_at(path, root, loc, "missing required key", field.description if field else None)
    if kind == "union_tag_invalid":
        tags = _tags_at(model, rel)
        return problem_at(
            path,
            root,
            (*loc, "type"),
            f"unknown type '{ctx.get('tag')}'",
            choice_hint(ctx.get("tag", ""), tags, "known types"),
        )
    if kind == "union_tag_not_found":
        tags = _tags_at(model, rel)
        return problem_at(
            path, root, (*loc, "type"), "missing required key", f"Known types: {', '.join(tags)}."
        )
    if kind in _EXPECTED:
        return problem_at(
            path, root, loc, "wrong type", f"Expected {_EXPECTED[kind]}, got {describe_value(value)}."
        )
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return problem_at(
            path, root, loc, f"invalid value {value!r}", choice_hint(str(value), choices, "allowed values")
        )
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return problem_at(path, root, loc, f"must be {words} {bound}, got {value}")
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return problem_at(path, root, loc, f"must have at least {n} {'entry' if n == 1 else 'entries'}")
    if kind in ("validator_type_missing", "validator_type_not_str"):
        return problem_at(path, root, (*loc, "type"), err["msg"], ctx.get("hint"))
    if kind == "path_not_found":
        given = str(ctx.get("given", ""))
        hint = None
        if base_dir is not None and given and not os.path.isabs(os.path.expanduser(given)):
            hint = f"Relative paths are resolved against the recipe's folder ({display_path(base_dir)})."
        return problem_at(path, root, loc, err["msg"], hint)
    message = str(err["msg"]).removeprefix("Value error, ")
    return problem_at(path, root, loc, message, ctx.get("hint"))


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _annotation_at(model: type[BaseModel], loc: Loc) -> Any:
    """The type at pydantic error location `loc` of `model` (tags of tagged unions included), or None."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if _is_model(tp):
            field = _fields(tp).get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif origin in (list, tuple, set):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(tp) if _is_model(m) and _tag(m) == part]
            if not members:
                return None
            tp = members[0]
        else:
            return None
    return _unwrap(tp)


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the key a file writes: the alias where there is one (`from`, not `from_`)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _fields_at(model: type[BaseModel], loc: Loc) -> dict[str, Any] | None:
    tp = _annotation_at(model, loc)
    return _fields(tp) if _is_model(tp) else None


def _tags_at(model: type[BaseModel], loc: Loc) -> list[str]:
    tp = _annotation_at(model, loc)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [t for t in (_tag(m) for m in typing.get_args(tp) if _is_model(m)) if t]
    return list(SEED_SOURCES) if model is Recipe else []


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    return field.default if field is not None and isinstance(field.default, str) else None
