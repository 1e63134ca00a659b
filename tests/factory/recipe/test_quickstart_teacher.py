"""The quickstart on the trained teacher: real filtering, with real reasons, in the documented range.

README reports 58 of 144 records kept (captions 40 of 96, QA 18 of 48; 65 of 144 on another
machine of the same kind) on the teacher that docs/models.md measures (83% exact greedy short
captions, 64-69% right QA answers). The CPU's float rounding moves the teacher's weights and so single
outputs, so the test asks for the range that quality predicts, not the exact counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsynth.factory.cli.main import main

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def test_quickstart_keeps_the_teachers_good_records_and_rejects_its_mistakes(scene_vlm, tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["run", str(REPO / "recipes" / "quickstart.yaml"), "--out", str(out), "-q"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    tasks = stats["tasks"]
    captions, qa = tasks["captions"], tasks["qa"]
    assert captions["accepted"] + captions["rejected"] == 96 and qa["accepted"] + qa["rejected"] == 48
    share = (captions["accepted"] + qa["accepted"]) / 144
    assert 0.25 <= share <= 0.75, share  # neither everything (a perfect model) nor nothing (noise)
    assert 0.30 <= captions["accepted"] / 96 <= 0.85, captions
    assert 0.15 <= qa["accepted"] / 48 <= 0.80, qa
    reasons = json.dumps(stats["reject_reasons"])
    # The rejects are the teacher's own mistakes, caught against the exact scene.
    assert "scene_grounding: hallucination" in reasons and "scene_grounding: wrong answer" in reasons
