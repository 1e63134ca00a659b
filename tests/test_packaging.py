"""The wheel holds `mmsynth/` and nothing else, with the built-in templates as package data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_only_mmsynth(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mmsynth-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"mmsynth"}
    for pkg in ("prompts", "generators", "validators", "factory", "trainer"):
        assert f"mmsynth/{pkg}/__init__.py" in names
    assert any(n.startswith("mmsynth/prompts/builtin/") and n.endswith(".j2") for n in names)
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)


def test_console_script_declared():
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["mmsynth"] == "mmsynth.factory.cli.main:main"
    from mmsynth.factory.cli.main import main

    assert callable(main)
