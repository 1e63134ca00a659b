"""The one Jinja2 environment templates are parsed and rendered in, and what it forbids.

- ImmutableSandboxedEnvironment: no attribute whose name starts with `_` (so no `__class__`,
  `__globals__`, `__subclasses__` ...), no unsafe callables, and no mutation of lists or dicts
  passed in (`.append`, `.update`, ... raise SecurityError).
- No loader: `{% include %}`, `{% import %}` and `{% extends %}` cannot read any file.
- StrictUndefined: a misspelled or missing name raises instead of rendering as an empty string.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _tojson(value: Any, indent: int | None = None) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; a prompt wants the JSON exactly as a person writes it.
    return json.dumps(value, ensure_ascii=False, indent=indent)


def make_environment() -> ImmutableSandboxedEnvironment:
    """A fresh sandboxed environment with the settings every template is written against."""
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        # Control lines ({% if %}, {% for %}) leave no blank lines or indentation behind.
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tojson"] = _tojson
    return env


ENV = make_environment()
