"""The wheel holds `mmsynth/` and nothing else, with the built-in templates as package data, every
package folder, and a console script that runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import distributions
from pathlib import Path

import pytest
import tomllib

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


def test_console_script_resolves_and_runs():
    """The installed `mmsynth` entry point loads a callable, and the script pip wrote runs through it."""
    # The installed metadata, not a stale mmsynth.egg-info a source build left in the checkout
    # (the current directory is on sys.path under pytest, and would shadow it).
    (dist,) = distributions(name="mmsynth", path=[sysconfig.get_paths()["purelib"]])
    (ep,) = dist.entry_points.select(group="console_scripts", name="mmsynth")
    assert callable(ep.load())
    script = shutil.which("mmsynth", path=str(Path(sys.executable).parent))
    assert script, "pip installed no `mmsynth` script next to this interpreter"
    r = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: mmsynth" in r.stdout and "run" in r.stdout


PACKAGE_DIRS = {"prompts", "generators", "validators", "factory", "trainer"}


def test_every_package_folder_is_listed_for_the_wheel():
    """`packages` is an explicit list: a folder missing from it is silently left out of the wheel."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(meta["tool"]["setuptools"]["packages"])
    dirs = meta["tool"]["setuptools"]["package-dir"]
    assert {Path(d).name for d in dirs.values()} == PACKAGE_DIRS
    found = set()
    for name, folder in dirs.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *rel)))
    assert found - listed == set(), "package folders not in [tool.setuptools] packages"
    assert listed - found == set(), "listed packages with no folder"
