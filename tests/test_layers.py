"""Imports point one way: prompts <- generators <- validators <- factory; trainer imports prompts at most.

Parses the source folders with `ast`, so it holds in every install mode (import-linter needs a
non-editable or strict editable install; .ci/run runs it too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {
    "prompts": set(),
    "generators": {"prompts"},
    "validators": {"prompts", "generators"},
    "trainer": {"prompts"},
    "factory": {"prompts", "generators", "validators", "trainer"},
}


def imported_layers(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mmsynth" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_point_one_way(layer):
    bad = []
    for path in sorted((REPO / layer).rglob("*.py")):
        for target, line in imported_layers(path):
            if target != layer and target not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(REPO)}:{line}: {layer} imports mmsynth.{target}")
    assert not bad, "\n".join(bad)


def test_checker_sees_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text(
        "import os\nfrom mmsynth.factory.dataset.records import Record\nimport mmsynth.validators.types\n"
    )
    assert imported_layers(f) == {("factory", 2), ("validators", 3)}


def test_no_relative_imports_escape_a_layer():
    # Relative imports cannot cross a mapped package boundary safely; we use absolute imports throughout.
    offenders = []
    for layer in ALLOWED:
        for path in (REPO / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level > 1:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
