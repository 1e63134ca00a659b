"""The gain measurement's controls on the CPU: correct synthetic captions help, shuffled ones do not.

Protocol in trainer/controls.py and docs/trainer.md: 8 labelled rendered scenes (baseline) +/- 120
synthetic scenes captioned exactly (positive) or with the captions shuffled across images (negative),
0-shot CIDEr-D on 48 held-out scenes. The full protocol (the random tiny Idefics3, 3 seeds of 800
steps per arm, about 7 minutes) is bench/gain_controls.py. This test runs a short version that fits
a test's budget: one seed of 800 steps per arm on `tiny:scene-student`, whose vision side is
pretrained, so whether it learns to use the image does not hang on the float rounding of one seed
(the random student's single seed did on one machine and not on another). Measured: positive
+6.22 [+5.28, +7.10], negative +0.07 [-0.72, +0.85], 66 s on one thread.
"""

from __future__ import annotations

import pytest

from mmsynth.generators.scenes.world import make_scene
from mmsynth.trainer.controls import ControlConfig, run_controls, shuffled
from mmsynth.trainer.data import caption_example
from mmsynth.trainer.student import TrainConfig

SHORT = ControlConfig(
    seeds=1, train=TrainConfig(steps=800, batch_size=8, lr=3e-3, schedule="linear", progress=False)
)


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_shuffle_moves_every_caption():
    ex = [caption_example(f"s{i}", b"img", [f"caption {i}"]) for i in range(10)]
    out = shuffled(ex, seed=3)
    assert sorted(e.target for e in out) == sorted(e.target for e in ex)
    assert all(a.target != b.target for a, b in zip(ex, out, strict=True))
    assert [e.images for e in out] == [e.images for e in ex]


@pytest.mark.slow
def test_correct_captions_gain_and_shuffled_captions_do_not(scene_student, tmp_path, one_thread):
    r = run_controls(
        scene_student, make_scene, SHORT, out_dir=tmp_path / "gain", log=lambda m: None, device="cpu"
    )
    pos, neg = r["positive"], r["negative"]
    assert pos["n_seeds"] == 1 and pos["n_examples"] == 48
    assert pos["lo"] > 0, f"positive control: gain {pos['gain']:.3f} [{pos['lo']:.3f}, {pos['hi']:.3f}]"
    assert neg["lo"] <= 0, f"negative control: gain {neg['gain']:.3f} [{neg['lo']:.3f}, {neg['hi']:.3f}]"
    assert pos["gain"] > neg["gain"]
    assert (tmp_path / "gain" / "report.md").exists()
