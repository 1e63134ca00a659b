"""Fault injection, disk level: the run folder lives on a real, small tmpfs that fills at a random
point. The run must end on its own with a clean message (no hang, no traceback), and once there is room
again the same command must finish to exactly the rows of an uninterrupted run.

Needs root and a kernel that allows tmpfs mounts (CI runs as root); elsewhere it skips.
MMSYNTH_FAULT_SEED replays the size that filled up.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from fault_seed import fault_rng
from test_fault_kills import finish, rows, same_rows, start, write_recipe

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs mounted under tmp_path; `resize(bytes)` changes its size (remount), unmounted at the end."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()

    def mount(size: int, remount: bool = False) -> None:
        opts = f"{'remount,' if remount else ''}size={size}"
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True, text=True
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); needs root")

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount(64 * 1024)
    yield mnt, lambda size: mount(size, remount=True)
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("disk-ref")
    recipe = write_recipe(base)
    finish(recipe, base / "run")
    return recipe, rows(base / "run")


def test_a_full_disk_ends_the_run_cleanly_and_the_rerun_with_room_equals_an_uninterrupted_run(
    reference, small_disk
):
    recipe, ref = reference
    mnt, resize = small_disk
    rng = fault_rng("disk full")
    # Somewhere between "the claim barely fits" and "most shards fit": the run fills it mid-way.
    resize(rng.randrange(24, 160) * 1024)
    out = mnt / "run"
    proc = start(recipe, out)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the run hung on a full disk")
    if proc.returncode == 0:
        pytest.skip("the whole run fitted in this size (replay with another MMSYNTH_FAULT_SEED)")
    assert "Traceback" not in err, err
    said = err.lower()  # a shard or marker write (OSError) or the cache's sqlite commit ("disk is full")
    assert ("no space left" in said or "disk is full" in said) and "resume" in said, err
    resize(64 * 1024 * 1024)
    finish(recipe, out)
    same_rows(rows(out), ref)
    assert not list(Path(out).rglob("*.tmp-*")), "a temporary file was left behind"
