"""Templates by id and version: the built-ins, then user folders, a later folder overriding an earlier one."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator
from importlib.resources import files
from pathlib import Path

from mmsynth.prompts.errors import TemplateError
from mmsynth.prompts.names import did_you_mean
from mmsynth.prompts.template import PromptTemplate, parse_template

BUILTIN_PACKAGE = "mmsynth.prompts.builtin"


class TemplateRegistry:
    """Look up templates as `"caption.dense"` (latest version) or `"caption.dense@1"` (that version).

    Built-in files are named `<id>@<version>.j2` and that name is checked; user folders are searched
    recursively for `*.j2`, named as their authors like. Two files with the same id@version in one
    folder are an error; in different folders, the later folder wins.
    """

    def __init__(self, folders: Iterable[str | Path] = (), *, builtin: bool = True) -> None:
        self._templates: dict[tuple[str, int], PromptTemplate] = {}
        if builtin:
            self._add(_builtin_files(), check_names=True)
        for folder in folders:
            self._add(_folder_files(Path(folder)), check_names=False)

    def get(self, ref: str) -> PromptTemplate:
        """The template `ref` names; TemplateError (with the close matches and known ids) when none does."""
        template_id, sep, version_text = ref.partition("@")
        versions = {v: t for (i, v), t in self._templates.items() if i == template_id}
        if not versions:
            ids = self.ids()
            hint = did_you_mean(template_id, ids, n=3).lstrip()
            raise TemplateError(
                f"unknown template '{template_id}'",
                f"{hint} Known templates: {', '.join(ids) or 'none'}.".lstrip(),
            )
        if not sep:
            return versions[max(versions)]
        if not version_text.isdigit():
            raise TemplateError(
                f"invalid template reference '{ref}'", "Write 'id' or 'id@version', e.g. 'caption.dense@1'."
            )
        if int(version_text) not in versions:
            known = ", ".join(str(v) for v in sorted(versions))
            raise TemplateError(
                f"template '{template_id}' has no version {int(version_text)}",
                f"Known versions: {known}. Write '{template_id}' for the latest.",
            )
        return versions[int(version_text)]

    def ids(self) -> builtins.list[str]:
        return sorted({i for i, _ in self._templates})

    def list(self) -> builtins.list[PromptTemplate]:
        """Every template, sorted by id then version."""
        return [self._templates[k] for k in sorted(self._templates)]

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, str):
            return False
        try:
            self.get(ref)
        except TemplateError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._templates)

    def __iter__(self) -> Iterator[PromptTemplate]:
        return iter(self.list())

    def _add(self, sources: Iterable[tuple[str, bytes]], *, check_names: bool) -> None:
        seen: dict[tuple[str, int], str] = {}
        for path, raw in sources:
            template = parse_template(raw, path)
            key = (template.id, template.version)
            if key in seen:
                raise TemplateError(
                    f"{template.ref} is defined twice, in {seen[key]} and {path}",
                    "Give one of them another id or version, or remove it.",
                )
            seen[key] = path
            if check_names and Path(path).name != f"{template.ref}.j2":
                raise TemplateError(
                    f"built-in file name does not match its front matter ({template.ref})",
                    f"Rename it {template.ref}.j2.",
                    path=path,
                )
            self._templates[key] = template


def _builtin_files() -> Iterator[tuple[str, bytes]]:
    root = files(BUILTIN_PACKAGE)
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".j2") and entry.is_file():
            yield str(entry), entry.read_bytes()


def _folder_files(folder: Path) -> Iterator[tuple[str, bytes]]:
    if not folder.is_dir():
        raise TemplateError(
            "templates folder not found", "Pass an existing folder of .j2 files.", path=str(folder)
        )
    for path in sorted(folder.rglob("*.j2")):
        if path.is_file():
            yield str(path), path.read_bytes()
