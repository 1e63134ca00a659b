"""The student: loading through from_pretrained, label masking, determinism, LoRA, checkpoints, generation."""

from __future__ import annotations

import torch
from trainer_helpers import scene

from mmsynth.trainer.data import Example, caption_example
from mmsynth.trainer.student import (
    TrainConfig,
    generate,
    load_student,
    render,
    train_student,
    training_batch,
    usable,
)


def captions(n, start=0):
    return [caption_example(f"s{i}", *(lambda b, c: (b, [c]))(*scene(i))) for i in range(start, start + n)]


def test_vlm_labels_cover_only_the_answer(tiny_vlm):
    st = load_student(tiny_vlm, device="cpu")
    ex = captions(2)
    batch = training_batch(st, ex)
    for i, e in enumerate(ex):
        ids = batch["input_ids"][i][batch["labels"][i] != -100]
        text = st.tokenizer.decode(ids)
        assert text.startswith(e.target) and "Describe" not in text  # prompt and image tokens masked
    assert "pixel_values" in batch


def test_text_examples_train_on_all_text_lm(tiny_lm):
    st = load_student(tiny_lm, device="cpu")
    lm = Example(id="t", kind="text", prompt="", target="There are two red circles.")
    qa = Example(id="q", kind="text", prompt="How many circles?", target="two")
    batch = training_batch(st, [lm, qa])
    assert st.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != -100]).startswith("There are two")
    assert st.tokenizer.decode(batch["input_ids"][1][batch["labels"][1] != -100]).startswith("two")
    assert not usable(st, captions(1)[0])  # a text-only student cannot take image examples


def test_training_is_deterministic_and_learns(tiny_vlm):
    cfg = TrainConfig(steps=12, batch_size=4, lr=3e-3, progress=False, seed=5)
    a = train_student(load_student(tiny_vlm, device="cpu"), captions(8), cfg)
    b = train_student(load_student(tiny_vlm, device="cpu"), captions(8), cfg)
    assert a == b
    assert sum(a[-3:]) / 3 < a[0] / 2
    c = train_student(
        load_student(tiny_vlm, device="cpu"), captions(8), TrainConfig(**{**cfg.__dict__, "seed": 6})
    )
    assert c != a


def test_lora_trains_adapters_only_and_checkpoints(tiny_lm, tmp_path):
    st = load_student(tiny_lm, device="cpu")
    before = {k: v.clone() for k, v in st.model.state_dict().items()}
    cfg = TrainConfig(
        steps=4,
        batch_size=2,
        lr=1e-2,
        lora=True,
        progress=False,
        checkpoint_dir=tmp_path / "ck",
        checkpoint_every=2,
    )
    data = [Example(id=str(i), kind="text", prompt="", target=f"there are {i} red circles") for i in range(4)]
    train_student(st, data, cfg)
    trainable = [n for n, p in st.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    base = st.model.get_base_model().state_dict()
    for k, v in before.items():
        if "lora_" not in k and k in base:
            assert torch.equal(base[k], v), k
    assert (tmp_path / "ck" / "step-2" / "adapter_config.json").exists()
    assert (tmp_path / "ck" / "final" / "adapter_model.safetensors").exists()


def test_full_checkpoint_reloads(tiny_lm, tmp_path):
    st = load_student(tiny_lm, device="cpu")
    data = [Example(id="a", kind="text", prompt="", target="one blue square")]
    train_student(st, data, TrainConfig(steps=2, batch_size=1, progress=False, checkpoint_dir=tmp_path))
    again = load_student(tmp_path / "final", device="cpu")
    x = torch.tensor([[1, 2, 3]])
    assert torch.allclose(again.model(x).logits, st.model(x).logits, atol=1e-5)


def test_generate_in_context_prompt(tiny_vlm):
    st = load_student(tiny_vlm, device="cpu")
    shots = captions(2)
    query = captions(1, start=9)[0]
    text, images = render(st, [(shots[0], shots[0].target), (shots[1], shots[1].target), (query, None)])
    assert len(images) == 3 and text.count(shots[0].target) == 1 and text.rstrip().endswith("assistant")
    outs = generate(st, [[(query, None)], [(shots[0], shots[0].target), (query, None)]], max_new_tokens=5)
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)
