"""Saving an edited template as a new version: same id, the next version number, a new `<id>@<v>.j2` file.

Saving is two steps, so the diff is always seen first: `propose_version` says what would be written
where (with the diff), `save_version` writes exactly that, and refuses if anything moved meanwhile.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from mmsynth.factory.studio.preview import StudioError, StudioSession, read_source
from mmsynth.prompts import PromptTemplate
from mmsynth.prompts.template import check_source

# A top-level `version:` line of the front matter, keeping any comment after the value.
_VERSION_LINE = re.compile(r"^version[ \t]*:[ \t]*[^#\n]*?([ \t]*#.*)?$", re.MULTILINE)


@dataclass(frozen=True)
class SaveProposal:
    """What saving would do: write `source` (version set to `version`) to `path`; `diff` against the base."""

    template_id: str
    version: int
    base_ref: str
    path: Path
    source: str
    diff: str
    note: str | None = None  # e.g. the recipe does not read the folder the file goes to

    @property
    def ref(self) -> str:
        return f"{self.template_id}@{self.version}"


def set_version(source: str, version: int) -> str:
    """`source` with its front matter's top-level `version:` set to `version`; StudioError if it has none."""
    text = source.replace("\r\n", "\n")
    lines = text.split("\n")
    close = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if lines[0].rstrip() != "---" or close is None:
        raise StudioError("the template has no front matter between '---' lines")
    front = "\n".join(lines[1:close])
    new_front, count = _VERSION_LINE.subn(lambda m: f"version: {version}{m.group(1) or ''}", front, count=1)
    if not count:
        raise StudioError("the front matter has no top-level `version:` line")
    return "\n".join([lines[0], new_front, *lines[close:]])


def propose_version(session: StudioSession, base: PromptTemplate, source: str) -> SaveProposal:
    """The next version of `base`'s id made of `source`; StudioError if it is broken, renamed or unchanged."""
    latest = max(t.version for t in session.versions(base.id)) if session.versions(base.id) else base.version
    version = max(latest, base.version) + 1
    new_source = set_version(source, version)
    path = session.save_dir / f"{base.id}@{version}.j2"
    template, errors = check_source(new_source, str(path))
    if errors:
        first = errors[0]
        raise StudioError(
            f"the template has errors; fix them before saving (line {first.line}: {first.problem})"
        )
    assert template is not None
    if template.id != base.id:
        raise StudioError(
            f"the id changed from '{base.id}' to '{template.id}': a new version keeps its id "
            f"(put it back to '{base.id}'; a new template is a new file)"
        )
    base_source = read_source(base)
    if set_version(base_source, version) == new_source:
        raise StudioError(f"nothing to save: the text is the same as {base.ref}")
    if path.exists():
        raise StudioError(f"{path} already exists")
    diff = "".join(
        difflib.unified_diff(
            base_source.splitlines(keepends=True),
            new_source.splitlines(keepends=True),
            fromfile=f"{base.ref} ({base.path})",
            tofile=f"{base.id}@{version} ({path})",
        )
    )
    note = None
    if not session.recipe_sees_save_dir:
        note = (
            f"the recipe does not read {path.parent}: add it under `templates:` in "
            f"{session.recipe_path.name} so that runs use this version"
        )
    return SaveProposal(base.id, version, base.ref, path, new_source, diff, note)


def save_version(session: StudioSession, proposal: SaveProposal) -> PromptTemplate:
    """Write the proposal's file (never over an existing one) and reload the session; the saved template."""
    current = propose_version(session, session.template(proposal.base_ref), proposal.source)
    if (current.version, current.path, current.source) != (proposal.version, proposal.path, proposal.source):
        raise StudioError(f"{proposal.template_id} changed since the diff was shown; review the new diff")
    proposal.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(proposal.path, "x", encoding="utf-8", newline="\n") as f:  # "x": never overwrite
            f.write(proposal.source)
    except FileExistsError:
        raise StudioError(f"{proposal.path} already exists") from None
    session.reload()
    return session.template(proposal.ref)
