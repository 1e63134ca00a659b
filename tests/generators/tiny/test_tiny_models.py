"""Tiny random-weight models: they build offline, reload through from_pretrained and produce output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mmsynth.generators.revision import resolve_revision
from mmsynth.generators.tiny import builders as tiny_models
from mmsynth.generators.tiny.builders import MARKER, make_tiny


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_lm_reloads_chats_and_generates(tiny_lm):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    cfg = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert cfg.hidden_size // cfg.num_attention_heads == 32 == cfg.head_dim
    assert model.dtype == torch.float32
    assert cfg.max_position_embeddings >= 1024
    assert 1000 <= len(tok) <= 2048
    # The caption words are whole tokens, so the vocabulary really was trained on them.
    assert tok.tokenize(" red circles") == ["Ġred", "Ġcircles"]

    as_string = [{"role": "user", "content": "Count the red squares."}]
    as_parts = [{"role": "user", "content": [{"type": "text", "text": "Count the red squares."}]}]
    text = tok.apply_chat_template(as_string, add_generation_prompt=True, tokenize=False)
    assert text == tok.apply_chat_template(as_parts, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert not tok.apply_chat_template(as_string, tokenize=False).endswith("assistant\n")

    enc = tok([text], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, enc["input_ids"].shape[1] + 4)


def test_vlm_reloads_and_answers_an_image_chat(tiny_vlm):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    assert type(processor).__name__ == "Idefics3Processor"
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"
    text_cfg, vision_cfg = model.config.text_config, model.config.vision_config
    assert text_cfg.hidden_size // text_cfg.num_attention_heads == 32
    assert vision_cfg.hidden_size // vision_cfg.num_attention_heads == 32
    assert model.dtype == torch.float32
    for tok in [
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        "<end_of_utterance>",
        "<row_6_col_6>",
    ]:
        assert processor.tokenizer.convert_tokens_to_ids(tok) != processor.tokenizer.unk_token_id

    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is this?"}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True)
    enc = processor(text=[text], images=[[Image.new("RGB", (64, 40), "blue")]], return_tensors="pt")
    n_image_tokens = int((enc["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == processor.image_seq_len == tiny_models.VLM_IMAGE_SEQ_LEN == 16
    assert enc["pixel_values"].shape[-2:] == (64, 64)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4


def test_sd_reloads_and_draws_64px(tiny_sd):
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_sd)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.safety_checker is None
    assert list(pipe.unet.config.block_out_channels) == [32, 64]
    assert pipe.tokenizer.tokenize("A red circle") == ["a</w>", "red</w>", "circle</w>"]
    image = pipe(
        "a red circle on the left",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (64, 64)


@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_vlm", "tiny_sd", "tiny_clip"])
def test_make_tiny_returns_a_complete_build_without_rebuilding(fixture, request, monkeypatch):
    folder = request.getfixturevalue(fixture)
    marker = json.loads((folder / MARKER).read_text())
    assert marker["kind"] == fixture.removeprefix("tiny_")
    assert marker["format_version"] == tiny_models.FORMAT_VERSION
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}

    def explode(out, seed):
        raise AssertionError("rebuilt a complete model")

    monkeypatch.setitem(tiny_models._BUILDERS, marker["kind"], explode)
    assert make_tiny(marker["kind"], folder) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == mtimes


def test_make_tiny_is_deterministic_per_seed(tmp_path):
    a = make_tiny("vlm", tmp_path / "a", seed=0)
    b = make_tiny("vlm", tmp_path / "b", seed=0)
    c = make_tiny("vlm", tmp_path / "c", seed=1)
    assert _digest(a) == _digest(b)  # marker included: rebuilding keeps the folder's revision
    assert resolve_revision(str(a), None) == resolve_revision(str(b), None)
    assert _digest(a)["model.safetensors"] != _digest(c)["model.safetensors"]


def test_make_tiny_rebuilds_for_another_seed(tmp_path):
    out = make_tiny("vlm", tmp_path / "m", seed=0)
    before = _digest(out)
    assert make_tiny("vlm", out, seed=3) == out
    assert json.loads((out / MARKER).read_text())["seed"] == 3
    assert _digest(out) != before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary or old folders left


def test_a_crashed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def crash(out, seed):
        (out / "config.json").write_text("{}")
        raise RuntimeError("power cut")

    monkeypatch.setitem(tiny_models._BUILDERS, "lm", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        make_tiny("lm", tmp_path / "lm")
    assert list(tmp_path.iterdir()) == []


def test_make_tiny_refuses_foreign_folders_and_kinds(tmp_path, tiny_vlm):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a tiny-model build"):
        make_tiny("lm", foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileExistsError, match="'vlm'"):
        make_tiny("lm", tiny_vlm)
    with pytest.raises(ValueError, match="lm, vlm, sd"):
        make_tiny("llm", tmp_path / "x")
