"""`tiny:scene-vlm`: the tiny Idefics3 VLM, trained offline to answer the built-in templates on rendered scenes.

The same architecture family as `tiny:vlm` (Idefics3ForConditionalGeneration + Idefics3Processor,
head_dim 32, float32), so it loads wherever `tiny:vlm` does, but its images are 48 px in 16 px patches
without pixel shuffle: 9 image tokens, one per cell of the scene grid. Its weights are trained, not
random, on first use from fixed seeds and pinned data (scene_data.py), in about four minutes of one
CPU core. It writes the templates' formats (valid JSON throughout), mostly exact short captions of
one- and two-object scenes and worse ones as scenes fill up; its mistakes (a missed object, a wrong
shape, colour or place, a wrong count) are its own: nothing is injected. Measured quality:
docs/models.md, scene_eval.py.

Training has two stages. Stage 1 (vision_steps): the vision tower and connector learn, through a
linear head dropped after, to say in each image token what its cell holds and which cell it is; from
scratch the language loss alone barely reaches the vision tower in this budget, while this direct
target takes seconds. Stage 2 (steps), with the vision side frozen: scenes TRAIN_START.. of the scene
world, each asked one of caption.short, caption.dense, caption.grounded and vqa.pairs, the last with
and without the scene hint (one kind per batch, in turn), rendered through the real template code and
the processor's chat template; cross-entropy on the answer tokens (and end of turn) only. Scenes
start with one object and the number ramps up to four over the first 40% of the steps.

The tokenizer is a byte-level BPE trained on the corpus of the random models plus the answers,
without the word-splitting regex (merges may span spaces, at most 16 characters), so every answer
fits the recipes' max_tokens (a 4-object short caption in under 24 tokens, three QA pairs in under
48). Each fixed instruction text of the four templates (system prompt, user instructions around the
image and the scene hint) is one added token: a prompt is ~30 tokens instead of ~200, which is what
makes the training budget. A template edited by hand falls back to plain BPE (and the model, like any
model asked something new, answers worse).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from mmsynth.generators.tiny import scene_data as sd
from mmsynth.generators.tiny.tokenizers import _CHAT_TEMPLATE, _VLM_SPECIALS, _chat_tokenizer

BUILDER_VERSION = 2  # bump when the data, the recipe or the code changes what a build produces
# torch threads during the build: fixed, so the same config gives the same weights on a machine. One,
# because the model is too small to gain from two on a shared CPU (spinning threads waste the share).
BUILD_THREADS = 1
_SPECIAL = re.compile("|".join(re.escape(s) for s in _VLM_SPECIALS))


@dataclass(frozen=True)
class SceneVLMConfig:
    """Everything that decides the weights; its hash (with BUILDER_VERSION) is the build key."""

    # Image geometry: 48 px in patches of 16 px, not pixel-shuffled: 9 image tokens, one per cell of the
    # scene grid (objects sit centred in their cells), so each token can say what its cell holds.
    image_size: int = 48
    patch: int = 16
    scale_factor: int = 1
    text_hidden: int = 128
    text_layers: int = 4
    text_intermediate: int = 256
    text_heads: int = 4
    text_kv_heads: int = 2
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_intermediate: int = 128
    vision_heads: int = 2
    steps: int = 2400
    batch: int = 8
    lr: float = 3e-3
    warmup: int = 50
    vision_steps: int = 300  # stage 1: the vision tower alone learns to name each grid cell's object
    vision_batch: int = 32
    vision_lr: float = 3e-3
    freeze_vision: bool = True  # stage 2 leaves the vision tower and connector as stage 1 made them
    max_objects: int = 4  # training scenes have 1..max_objects objects (the recipes use 2, 3 and 4)
    curriculum: float = 0.4  # share of the steps over which the most objects per scene ramps up from 1
    tokenizer_scenes: int = 1000
    tokenizer_prompt_repeats: int = 2
    tokenizer_vqa_prompts: int = 20
    max_token_chars: int = 16
    prompt_tokens: bool = True  # each fixed instruction text of the four templates is one added token


DEFAULT_CONFIG = SceneVLMConfig()


def image_seq_len(config: SceneVLMConfig) -> int:
    return (config.image_size // config.patch) ** 2 // config.scale_factor**2


def build_key(config: SceneVLMConfig = DEFAULT_CONFIG, seed: int = 0) -> str:
    blob = json.dumps(
        {"version": BUILDER_VERSION, "seed": seed, "threads": BUILD_THREADS, **asdict(config)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _split_specials(text: str) -> list[str]:
    return [p for p in _SPECIAL.split(text) if p]


def _tokenizer(config: SceneVLMConfig, seed: int):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from tokenizers import AddedToken

    from mmsynth.generators.tiny.tokenizers import _corpus

    template = _CHAT_TEMPLATE.replace("@IMAGE@", "<image>").replace("@EOT@", "<end_of_utterance>")
    jinja = ImmutableSandboxedEnvironment().from_string(template)

    def chat_text(messages):
        return jinja.render(messages=messages, add_generation_prompt=True)

    lines = sd.tokenizer_corpus(
        _corpus(seed),
        chat_text,
        _split_specials,
        scenes=config.tokenizer_scenes,
        prompt_repeats=config.tokenizer_prompt_repeats,
        vqa_prompts=config.tokenizer_vqa_prompts,
        max_objects=config.max_objects,
    )
    tok = _chat_tokenizer(
        seed,
        _VLM_SPECIALS,
        image_token="<image>",
        eot="<end_of_utterance>",
        lines=lines,
        bpe={"split_words": False, "max_token_chars": config.max_token_chars},
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<fake_token_around_image>", "<image>", "<global-img>"],
    )
    if config.prompt_tokens:
        chunks = sd.prompt_chunks(chat_text, _split_specials)
        tok.add_tokens([AddedToken(c, normalized=False, special=False) for c in chunks])
    return tok


def _model_config(config: SceneVLMConfig, tok):
    from mmsynth.generators.tiny.builders import idefics3_config

    return idefics3_config(
        tok,
        vision_hidden=config.vision_hidden,
        vision_intermediate=config.vision_intermediate,
        vision_layers=config.vision_layers,
        vision_heads=config.vision_heads,
        text_hidden=config.text_hidden,
        text_intermediate=config.text_intermediate,
        text_layers=config.text_layers,
        text_heads=config.text_heads,
        text_kv_heads=config.text_kv_heads,
        image_size=config.image_size,
        patch=config.patch,
        scale_factor=config.scale_factor,
    )


class _Encoder:
    """Token ids of prompt + answer exactly as the backend would feed them (the processor's layout)."""

    def __init__(self, processor, config: SceneVLMConfig):
        self.processor, self.tok, self.size = processor, processor.tokenizer, config.image_size
        self.eos = self.tok.convert_tokens_to_ids("<end_of_utterance>")
        self.image_text = (
            "<fake_token_around_image><global-img>"
            + "<image>" * image_seq_len(config)
            + "<fake_token_around_image>"
        )
        self._fixed = {t: self.prompt_ids(t, None) for t in sd.TEMPLATES}

    def prompt_ids(self, template: str, scene_text: str | None) -> list[int]:
        messages = sd.chat_messages(sd.render_prompt(template, scene_text))
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tok(text.replace("<image>", self.image_text), add_special_tokens=False).input_ids

    def example(
        self, template: str, hint: bool, scene: dict, rng: random.Random
    ) -> tuple[list[int], list[int]]:
        prompt = self.prompt_ids(template, scene["description"]) if hint else self._fixed[template]
        target = [*self.tok(sd.answer(template, scene, rng), add_special_tokens=False).input_ids, self.eos]
        return prompt, target

    def check_against_processor(self, image) -> None:
        """The shortcut above must give the processor's own ids and pixels."""
        import numpy as np

        messages = sd.chat_messages(sd.render_prompt("caption.short"))
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = self.processor(text=[text], images=[[image]], add_special_tokens=False, return_tensors="pt")
        if enc["input_ids"][0].tolist() != self._fixed["caption.short"]:
            raise RuntimeError("scene-vlm: prompt ids differ from the processor's")
        if not np.allclose(enc["pixel_values"][0, 0].numpy(), _pixels(image, self.size), atol=1e-4):
            raise RuntimeError("scene-vlm: pixel values differ from the processor's")


def _pixels(image, size: int):
    """The processor's pixel values (Lanczos resize, scaled to [-1, 1]), without the processor's cost."""
    import numpy as np
    from PIL import Image

    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return ((np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


AUX_CLASSES = 1 + 2 * 6 * 3  # per grid cell: empty, or one of size x colour x shape


def _cell_classes(objects) -> list[int]:
    from mmsynth.generators.scenes.truth import COLOURS, SHAPES, SIZES

    cells = [0] * 9
    for o in objects:
        kind = (SIZES.index(o["size"]) * len(COLOURS) + COLOURS.index(o["colour"])) * len(SHAPES)
        cells[o["row"] * 3 + o["col"]] = 1 + kind + SHAPES.index(o["shape"])
    return cells


def _batch(rows, images, pad: int, size: int):
    import numpy as np
    import torch

    length = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for j, (p, a) in enumerate(rows):
        ids[j, : len(p) + len(a)] = torch.tensor(p + a)
        labels[j, len(p) - 1 : len(p) + len(a) - 1] = torch.tensor(a)  # position k predicts token k + 1
    pixels = torch.from_numpy(np.stack([_pixels(im, size) for im in images])).unsqueeze(1)
    return ids, labels, pixels


def _cell_head(config: SceneVLMConfig):
    """Per image token: what its cell holds (AUX_CLASSES) and which cell it is (9)."""
    import torch

    if image_seq_len(config) != 9:
        raise ValueError("scene-vlm: the vision stage needs one image token per grid cell (9)")
    return torch.nn.Linear(config.text_hidden, AUX_CLASSES + 9)


def save_model(model, processor, out: Path, eos: int, pad: int) -> None:
    """Save a trained tiny Idefics3 in eval mode, generation stopping at end of turn or padding."""
    from transformers import GenerationConfig

    model.eval()
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, max_new_tokens=64)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _pretrain_vision(model, config: SceneVLMConfig, log, start: int = sd.VISION_START) -> None:
    """Stage 1: the vision tower and connector learn to say, in each image token, what its grid cell
    holds (size, colour, shape, or empty) and which cell it is, through a linear head dropped after.
    From scratch the language loss alone barely reaches the vision tower at this budget; a direct
    per-cell target teaches it to see in seconds, as a pretrained encoder would have been taught.
    Scenes are drawn from index `start` on (the student's builder passes its own range)."""
    import numpy as np
    import torch

    head = _cell_head(config)
    cells = torch.arange(9).repeat(config.vision_batch)
    params = [*model.model.vision_model.parameters(), *model.model.connector.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=config.vision_lr, betas=(0.9, 0.98), weight_decay=0.0)
    index = start
    for step in range(config.vision_steps):
        scenes = [sd.training_scene(index + j, config.max_objects) for j in range(config.vision_batch)]
        index += config.vision_batch
        pixels = torch.from_numpy(
            np.stack([_pixels(s["image"], config.image_size) for s in scenes])
        ).unsqueeze(1)
        target = torch.tensor([_cell_classes(s["objects"]) for s in scenes]).reshape(-1)
        feats = model.model.get_image_features(pixels).pooler_output
        feats = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats
        out = head(feats.reshape(len(scenes) * 9, -1))
        logits = out[:, :AUX_CLASSES]
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss = loss + torch.nn.functional.cross_entropy(out[:, AUX_CLASSES:], cells)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == config.vision_steps - 1:
            held = target != 0
            acc = (logits.argmax(-1)[held] == target[held]).float().mean().item()
            log(f"vision step {step}: loss {loss.item():.3f}, objects named right {acc:.0%}")


def build_scene_vlm(out: Path, seed: int = 0, config: SceneVLMConfig = DEFAULT_CONFIG, log=None) -> dict:
    """Train the scene VLM and save model + processor into `out`; returns the training summary."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        return _build(Path(out), seed, config, log or (lambda msg: None))
    finally:
        torch.set_num_threads(threads)


def _build(out: Path, seed: int, config: SceneVLMConfig, log) -> dict:
    import math

    import torch
    from transformers import Idefics3ForConditionalGeneration, Idefics3Processor

    from mmsynth.generators.tiny.builders import _idefics3_image_processor

    random.seed(seed)
    tok = _tokenizer(config, seed)
    processor = Idefics3Processor(
        image_processor=_idefics3_image_processor(config.image_size),
        tokenizer=tok,
        image_seq_len=image_seq_len(config),
        chat_template=tok.chat_template,
    )
    encoder = _Encoder(processor, config)
    encoder.check_against_processor(sd.training_scene(sd.TRAIN_START, config.max_objects)["image"])
    model_config = _model_config(config, tok)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(model_config).to(torch.float32).train()
    if config.vision_steps:
        _pretrain_vision(model, config, log)
    if config.freeze_vision:
        for p in [*model.model.vision_model.parameters(), *model.model.connector.parameters()]:
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.98), weight_decay=0.0)

    def lr_factor(step: int) -> float:  # linear warmup, cosine down to 5%
        if step < config.warmup:
            return (step + 1) / config.warmup
        done = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    qa_rng = random.Random(seed + 1)
    pad = tok.convert_tokens_to_ids("<|endoftext|>")
    index, losses = sd.TRAIN_START, []
    for step in range(config.steps):
        template, hint = sd.SCHEDULE[step % len(sd.SCHEDULE)]  # one prompt kind per batch: little padding
        rows, images = [], []
        most = config.max_objects
        if step < config.curriculum * config.steps:  # one object first: the model learns to look
            most = 1 + int(step / (config.curriculum * config.steps) * (config.max_objects - 1))
        for _ in range(config.batch):
            scene = sd.training_scene(index, most)
            index += 1
            rows.append(encoder.example(template, hint, scene, qa_rng))
            images.append(scene["image"])
        ids, labels, pixels = _batch(rows, images, pad, config.image_size)
        # Right padding under a causal mask: real tokens never see the pads, so no attention mask is needed.
        fwd = model.model(input_ids=ids, pixel_values=pixels, use_cache=False)
        picked = labels != -100
        loss = torch.nn.functional.cross_entropy(model.lm_head(fwd.last_hidden_state[picked]), labels[picked])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == config.steps - 1:
            log(f"step {step}: loss {sum(losses[-100:]) / len(losses[-100:]):.3f}")
    save_model(model, processor, out, encoder.eos, pad)
    summary = {
        "builder_version": BUILDER_VERSION,
        "build_key": build_key(config, seed),
        "seed": seed,
        "config": asdict(config),
        "train_scenes": [sd.TRAIN_START, index - 1],
        "scene_seed": sd.SCENE_SEED,
        "templates": list(sd.TEMPLATES),
        "final_loss": round(sum(losses[-100:]) / len(losses[-100:]), 4),
    }
    (out / "scene_vlm_training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
