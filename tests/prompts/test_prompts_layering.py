"""mmsynth.prompts is the leaf layer: it imports jinja2, yaml, jsonschema, the stdlib and itself only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
ALLOWED = {"jinja2", "yaml", "jsonschema", "__future__"} | set(sys.stdlib_module_names)
# media.py decodes images on demand (ImageRef.to_pil) and rows.py reads datasets on demand, inside the
# functions, so importing prompts needs neither PIL nor pyarrow/datasets.
ALLOWED_LAZY = {"media.py": {"PIL"}, "rows.py": {"pyarrow", "datasets"}}


def imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, module, at top level) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "mmsynth.prompts", id(node) in top))
            else:
                found.append((node.lineno, node.module or "", id(node) in top))
    return found


@pytest.mark.parametrize("path", sorted(PROMPTS.rglob("*.py")), ids=lambda p: str(p.relative_to(PROMPTS)))
def test_prompts_imports_nothing_else_of_ours(path):
    bad = []
    for line, module, top_level in imports(path):
        root = module.split(".")[0]
        if module == "mmsynth.prompts" or module.startswith("mmsynth.prompts."):
            continue
        if root in ALLOWED or (not top_level and root in ALLOWED_LAZY.get(path.name, set())):
            continue
        bad.append(f"{path.name}:{line}: {module}")
    assert bad == []


def test_the_check_sees_imports():
    # Guard against a check that passes because it finds nothing.
    found = {m for _, m, _ in imports(PROMPTS / "render.py")}
    assert {"jinja2.exceptions", "mmsynth.prompts.template", "re"} <= found
