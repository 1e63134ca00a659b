"""Front matter: the YAML between the `---` lines, checked key by key, each problem with its file line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from mmsynth.prompts.errors import TemplateError
from mmsynth.prompts.names import did_you_mean

INPUT_TYPES = ("text", "image", "json", "list", "number")
# Names the renderer puts in the context itself, or that Jinja gives a meaning of its own.
RESERVED_NAMES = frozenset(
    {"exemplars", "loop", "self", "super", "caller", "varargs", "kwargs", "true", "false", "none"}
    | {"True", "False", "None", "and", "or", "not", "in", "is", "if", "else", "for", "block"}
)
# The keys of mmsynth.generators.types.SamplingParams (tests/prompts checks they stay a subset): a key
# the backend does not know would fail only when the first request is built, hours into a run.
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "n", "seed", "stop")
FRONT_MATTER_KEYS = (
    "id",
    "version",
    "task",
    "description",
    "inputs",
    "output_schema",
    "sampling",
    "exemplars",
)

_ID_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_ALIASES = {
    "str": "text",
    "string": "text",
    "int": "number",
    "integer": "number",
    "float": "number",
    "dict": "json",
    "object": "json",
    "array": "list",
    "img": "image",
}
FORMAT_HINT = (
    "A template starts with a '---' line, then YAML front matter (id, version, inputs, ...), "
    "then a '---' line, then the Jinja body."
)


@dataclass(frozen=True)
class InputSpec:
    """A declared template input: its type, whether it may be missing, and its value when missing."""

    type: str  # text | image | json | list | number
    optional: bool = False
    default: Any = None  # used when an optional input is missing or None
    line: int = field(default=0, compare=False)  # where it is declared, for messages


class FrontMatter:
    """Parses and checks front matter text; `data` is the mapping when it is valid, else None.

    Problems are appended to `errors`. The YAML node tree is kept so each can name its file line
    (front matter starts on line 2 of the file).
    """

    def __init__(self, path: str, text: str, errors: list[TemplateError]):
        self.path = path
        self.errors = errors
        self.data: dict[str, Any] | None = None
        self.inputs: dict[str, InputSpec] = {}
        loader = yaml.SafeLoader(text)
        try:
            self.root = loader.get_single_node()
            data = loader.construct_document(self.root) if self.root is not None else None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            problem = getattr(e, "problem", None) or str(e)
            line = mark.line + 2 if mark is not None else 1
            errors.append(
                TemplateError(
                    f"the front matter is not valid YAML: {problem}",
                    "Check indentation and quoting.",
                    path=path,
                    line=line,
                )
            )
            return
        finally:
            loader.dispose()
        if not isinstance(data, dict):
            self.error("the front matter must be a YAML mapping of keys to values", FORMAT_HINT, ())
            return
        n_errors = len(errors)
        self._check_duplicates(self.root)
        self._check(data)
        if len(errors) == n_errors:
            self.data = data

    # -- where things are ------------------------------------------------------------------------------

    def line(self, keys: tuple | None) -> int:
        """File line of the key (or list item) at `keys`; the deepest one found. () is the opening `---`."""
        if not keys:
            return 1
        node, line = self.root, 1
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                match = next((kv for kv in node.value if str(kv[0].value) == str(key)), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 2, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 2
            else:
                break
        return line

    def error(self, problem: str, hint: str, keys: tuple | None) -> None:
        self.errors.append(TemplateError(problem, hint, path=self.path, line=self.line(keys)))

    def _check_duplicates(self, node: yaml.Node) -> None:
        # PyYAML keeps the last of two equal keys without a word; a template author meant one of them.
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in seen:
                        self.errors.append(
                            TemplateError(
                                f"duplicate key '{k.value}'",
                                "Keep one of them.",
                                path=self.path,
                                line=k.start_mark.line + 2,
                            )
                        )
                    seen.add(k.value)
                self._check_duplicates(v)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                self._check_duplicates(item)

    # -- what things are -------------------------------------------------------------------------------

    def _check(self, d: dict[str, Any]) -> None:
        for key in d:
            if key not in FRONT_MATTER_KEYS:
                self.error(f"unknown key '{key}'", _did_you_mean(str(key), FRONT_MATTER_KEYS, "keys"), (key,))
        if "id" not in d:
            self.error("the front matter has no 'id'", "Add e.g. `id: caption.dense`.", ())
        elif not isinstance(d["id"], str) or not _ID_RE.match(d["id"]):
            self.error(f"invalid id {d['id']!r}", "Use dotted snake_case, e.g. `caption.dense`.", ("id",))
        if "version" not in d:
            self.error("the front matter has no 'version'", "Add e.g. `version: 1`.", ())
        elif not _is_int(d["version"]) or d["version"] < 1:
            self.error(f"invalid version {d['version']!r}", "Use an integer >= 1.", ("version",))
        for key in ("task", "description"):
            if d.get(key) is not None and not isinstance(d[key], str):
                self.error(
                    f"'{key}' must be text, got {_kind(d[key])}",
                    "Quote it if YAML read it as something else.",
                    (key,),
                )
        self._check_inputs(d.get("inputs"))
        self._check_schema(d.get("output_schema"))
        self._check_sampling(d.get("sampling"))
        self._check_exemplars(d.get("exemplars"))

    def _check_inputs(self, inputs: Any) -> None:
        if inputs is None:
            return
        if not isinstance(inputs, dict):
            self.error(
                "'inputs' must be a mapping of name to type",
                "E.g. `inputs: {image: image, scene: text}`.",
                ("inputs",),
            )
            return
        for name, spec in inputs.items():
            keys = ("inputs", name)
            if not isinstance(name, str) or not _NAME_RE.match(name):
                self.error(
                    f"invalid input name {name!r}", "Use a name made of letters, digits and '_'.", keys
                )
                continue
            if name in RESERVED_NAMES:
                self.error(f"input name '{name}' is reserved", "Choose another name.", keys)
                continue
            if isinstance(spec, str):
                spec = {"type": spec}
            if not isinstance(spec, dict):
                self.error(
                    f"input '{name}' must be a type or a mapping",
                    "E.g. `scene: {type: text, optional: true}`.",
                    keys,
                )
                continue
            bad = [k for k in spec if k not in ("type", "optional", "default")]
            for k in bad:
                hint = _did_you_mean(str(k), ("type", "optional", "default"), "keys")
                self.error(f"unknown key '{k}' in input '{name}'", hint, (*keys, k))
            kind, optional = spec.get("type"), spec.get("optional", False)
            if kind not in INPUT_TYPES:
                alias = _TYPE_ALIASES.get(str(kind))
                hint = (
                    f"Did you mean '{alias}'? "
                    if alias
                    else _did_you_mean(str(kind), INPUT_TYPES, "", known=False)
                )
                self.error(
                    f"input '{name}' has unknown type {kind!r}",
                    f"{hint}Types: {', '.join(INPUT_TYPES)}.".lstrip(),
                    (*keys, "type") if "type" in spec else keys,
                )
                continue
            if not isinstance(optional, bool):
                self.error(f"'optional' of input '{name}' must be true or false", "", (*keys, "optional"))
                continue
            default = spec.get("default")
            if default is not None and not self._default_ok(
                name, kind, optional, default, (*keys, "default")
            ):
                continue
            if not bad:
                self.inputs[name] = InputSpec(kind, optional, default, line=self.line(keys))

    def _default_ok(self, name: str, kind: str, optional: bool, default: Any, keys: tuple) -> bool:
        if not optional:
            self.error(f"input '{name}' has a default but is not optional", "Add `optional: true`.", keys)
        elif kind == "image":
            self.error(
                f"image input '{name}' cannot have a default", "Leave it out; the input is then None.", keys
            )
        elif (
            (kind == "text" and not isinstance(default, str))
            or (kind == "number" and (isinstance(default, bool) or not isinstance(default, (int, float))))
            or (kind == "list" and not isinstance(default, list))
        ):
            self.error(f"the default of input '{name}' is not {kind}: {default!r}", "", keys)
        else:
            return True
        return False

    def _check_schema(self, schema: Any) -> None:
        if schema is None:
            return
        if not isinstance(schema, dict):
            self.error("'output_schema' must be a JSON Schema mapping or null", "", ("output_schema",))
            return
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as e:
            where = ("output_schema", *e.path)
            self.error(
                f"output_schema is not a valid JSON Schema: {e.message}",
                "See https://json-schema.org.",
                where,
            )

    def _check_sampling(self, sampling: Any) -> None:
        if sampling is None:
            return
        if not isinstance(sampling, dict):
            self.error(
                "'sampling' must be a mapping",
                "E.g. `sampling: {temperature: 0.7, max_tokens: 256}`.",
                ("sampling",),
            )
            return
        for key, value in sampling.items():
            keys = ("sampling", key)
            if key not in SAMPLING_KEYS:
                self.error(
                    f"unknown sampling key '{key}'", _did_you_mean(str(key), SAMPLING_KEYS, "keys"), keys
                )
            elif (problem := _sampling_problem(key, value)) is not None:
                self.error(f"sampling '{key}' {problem}, got {value!r}", "", keys)

    def _check_exemplars(self, exemplars: Any) -> None:
        if exemplars is None:
            return
        if not isinstance(exemplars, list):
            self.error(
                "'exemplars' must be a list", "E.g. `exemplars: [{scene: ..., output: ...}]`.", ("exemplars",)
            )
            return
        for i, ex in enumerate(exemplars):
            keys = ("exemplars", i)
            if not isinstance(ex, dict) or "output" not in ex:
                self.error(f"exemplar {i + 1} must be a mapping with an 'output'", "", keys)
                continue
            for k in ex:
                if k == "output":
                    continue
                spec = self.inputs.get(k)
                if spec is None:
                    self.error(
                        f"exemplar {i + 1} has '{k}', which is not a declared input",
                        "Declare it or remove it.",
                        (*keys, k),
                    )
                elif spec.type == "image":
                    self.error(
                        f"exemplar {i + 1} gives image input '{k}'",
                        "Images cannot be written in YAML.",
                        (*keys, k),
                    )


def _sampling_problem(key: str, value: Any) -> str | None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "temperature" and not (number and value >= 0):
        return "must be a number >= 0"
    if key == "top_p" and not (number and 0 < value <= 1):
        return "must be a number in (0, 1]"
    if key in ("max_tokens", "n") and not (_is_int(value) and value >= 1):
        return "must be an integer >= 1"
    if key == "seed" and not (value is None or _is_int(value)):
        return "must be an integer or null"
    if key == "stop" and not (
        isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))
    ):
        return "must be a string or a list of strings"
    return None


def _did_you_mean(word: str, choices: tuple[str, ...], what: str, known: bool = True) -> str:
    hint = did_you_mean(word, choices).lstrip()
    return (hint + (f" Known {what}: {', '.join(choices)}." if known else "")).lstrip()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return type(value).__name__
