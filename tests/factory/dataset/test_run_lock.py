"""One writer per run folder: the second is refused with the first one's PID; a dead holder's lock is taken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from mmsynth.factory.dataset.lock import RunLock, RunLocked
from mmsynth.factory.dataset.run_dir import RunDir, RunDirError


def test_a_second_lock_on_the_folder_is_refused_naming_the_holder(tmp_path):
    held = RunLock.acquire(tmp_path / ".mmsynth")
    with pytest.raises(RunLocked) as e:
        RunLock.acquire(tmp_path / ".mmsynth")  # another open file description: flock conflicts
    assert e.value.pid == os.getpid()
    assert f"process {os.getpid()}" in str(e.value) and str(tmp_path) in str(e.value)
    held.release()
    RunLock.acquire(tmp_path / ".mmsynth").release()


def test_run_dir_open_holds_the_lock_until_close(tmp_path):
    first = RunDir(tmp_path / "run")
    first.open("fp", {}, fresh=False)
    second = RunDir(tmp_path / "run")
    for fresh in (False, True):  # --fresh must not clear a folder another run is writing
        with pytest.raises(RunDirError, match=rf"another mmsynth run \(process {os.getpid()}"):
            second.open("fp", {}, fresh=fresh)
    assert (tmp_path / "run" / ".mmsynth" / "run.json").exists()
    first.close()
    second.open("fp", {}, fresh=True)
    assert (tmp_path / "run" / ".mmsynth" / "lock").exists()
    second.close()


def test_a_folder_holding_only_an_interrupted_claim_can_be_opened(tmp_path):
    (tmp_path / "run" / ".mmsynth").mkdir(parents=True)
    (tmp_path / "run" / ".mmsynth" / "lock").write_text("12345\n")
    rd = RunDir(tmp_path / "run")
    rd.open("fp", {}, fresh=False)
    rd.close()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not an mmsynth run folder"):
        RunDir(tmp_path / "other").open("fp", {}, fresh=False)
    assert not (tmp_path / "other" / ".mmsynth").exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    state = tmp_path / ".mmsynth"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mmsynth.factory.dataset.lock import RunLock\n"
        f"RunLock.acquire(Path({str(state)!r}))\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked) as e:
            RunLock.acquire(state)
        assert e.value.pid == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    lock = RunLock.acquire(state)  # the kernel released the dead process's flock
    assert (state / "lock").read_text().strip() == str(os.getpid())
    lock.release()
