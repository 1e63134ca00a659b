"""tiny:scene-student: a pretrained vision side, an untouched language side, its own scenes, a build key."""

from __future__ import annotations

import json

from mmsynth.factory.cli.main import main
from mmsynth.generators.tiny import scene_data as sd
from mmsynth.generators.tiny import scene_student, scene_vlm
from mmsynth.generators.tiny.builders import MARKER, make_tiny
from mmsynth.generators.tiny.scene_student import SceneStudentConfig


def test_vision_scenes_are_its_own_and_held_out():
    cfg = scene_student.DEFAULT_CONFIG
    first, last = cfg.vision_start, cfg.vision_start + cfg.vision_steps * cfg.vision_batch
    # Above the teacher's language and vision ranges (each under a million scenes), far above every
    # evaluation range in the project (< 200,000).
    assert first >= sd.VISION_START + 1_000_000 > sd.TRAIN_START + 1_000_000
    assert last - first < 1_000_000


def test_build_key_follows_the_config_and_differs_from_the_teacher():
    base = scene_student.build_key()
    assert base == scene_student.build_key(SceneStudentConfig())
    assert base != scene_student.build_key(SceneStudentConfig(vision_steps=301))
    assert base != scene_student.build_key(seed=1)
    assert base != scene_vlm.build_key()


def test_builds_loads_and_only_the_vision_side_is_trained(tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, Idefics3ForConditionalGeneration

    folder = make_tiny("scene-student", tmp_path / "student")
    marker = json.loads((folder / MARKER).read_text())
    assert marker["kind"] == "scene-student"
    assert marker["build_key"] == scene_student.build_key()
    assert make_tiny("scene-student", folder) == folder  # a complete build is reused
    assert main(["models", "make-tiny", "scene-student", str(folder)]) == 0  # the CLI kind, reused too

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"
    assert model.config.text_config.num_hidden_layers == 2
    assert processor.image_seq_len == 9  # one image token per grid cell, as the teacher

    # The same seed's random init, built as the builder builds it: the language side is untouched
    # (no caption or answer was ever trained into it), the vision tower and connector moved.
    torch.manual_seed(0)
    fresh = Idefics3ForConditionalGeneration(model.config).to(torch.float32)
    got, init = model.state_dict(), fresh.state_dict()
    text = [k for k in got if k.startswith(("model.text_model.", "lm_head."))]
    vision = [k for k in got if k.startswith(("model.vision_model.", "model.connector."))]
    assert text and vision
    assert all(torch.equal(got[k], init[k]) for k in text)
    assert sum(not torch.equal(got[k], init[k]) for k in vision) > len(vision) // 2

    # Asked a question, it loads and answers through the processor's chat path (noise: untrained).
    scene = sd.training_scene(0, 2)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}
    ]
    text_in = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text_in], images=[[scene["image"]]], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 4
