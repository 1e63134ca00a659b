"""`tiny:scene-vlm`: the tiny Idefics3 VLM, trained offline to answer the built-in templates on rendered scenes.

Same architecture family and file layout as `tiny:vlm` (Idefics3ForConditionalGeneration +
Idefics3Processor, 64 px images, 16 image tokens, head_dim 32, float32), so it loads and serves
wherever `tiny:vlm` does. Its weights are trained, not random. It is built on first use from fixed seeds
and pinned data (scene_data.py), in about 3.5 minutes of one CPU core. It answers the templates in
their formats (valid JSON throughout) and the hinted QA mostly right; from the image alone it is still
weak: its captions are mostly wrong at this budget. Its mistakes (a wrong count, colour, size or
position) are its own: nothing is injected. Measured quality: docs/models.md, scene_eval.py.

Training: scenes TRAIN_START.. of the scene world, each asked one of caption.short, caption.dense,
caption.grounded and vqa.pairs, the last with and without the scene hint (one kind per batch, in
turn), rendered through the real template code and the processor's chat template; cross-entropy on the answer tokens (and end of turn) only.
Scenes start with one object and the number ramps up to four over the first 40% of the steps. An
optional auxiliary linear head (aux_weight, off by default: it did not help at this budget) reads the
16 image tokens and names what each of the 9 grid cells holds; it is dropped before saving.

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

BUILDER_VERSION = 1  # bump when the data, the recipe or the code changes what a build produces
# torch threads during the build: fixed, so the same config gives the same weights on a machine. One,
# because the model is too small to gain from two on a shared CPU (spinning threads waste the share).
BUILD_THREADS = 1
IMAGE_SIZE, PATCH, SCALE_FACTOR = 64, 8, 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH) ** 2 // SCALE_FACTOR**2  # 16 image tokens
_SPECIAL = re.compile("|".join(re.escape(s) for s in _VLM_SPECIALS))


@dataclass(frozen=True)
class SceneVLMConfig:
    """Everything that decides the weights; its hash (with BUILDER_VERSION) is the build key."""

    text_hidden: int = 128
    text_layers: int = 2
    text_intermediate: int = 256
    text_heads: int = 4
    text_kv_heads: int = 2
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_intermediate: int = 128
    vision_heads: int = 2
    steps: int = 1600
    batch: int = 8
    lr: float = 3e-3
    warmup: int = 50
    aux_weight: float = 0.0  # weight of the auxiliary per-cell loss on the image features (0: off)
    max_objects: int = 4  # training scenes have 1..max_objects objects (the recipes use 2, 3 and 4)
    curriculum: float = 0.4  # share of the steps over which the most objects per scene ramps up from 1
    tokenizer_scenes: int = 1000
    tokenizer_prompt_repeats: int = 2
    tokenizer_vqa_prompts: int = 20
    max_token_chars: int = 16
    prompt_tokens: bool = True  # each fixed instruction text of the four templates is one added token


DEFAULT_CONFIG = SceneVLMConfig()


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
    )


class _Encoder:
    """Token ids of prompt + answer exactly as the backend would feed them (the processor's layout)."""

    def __init__(self, processor):
        self.processor, self.tok = processor, processor.tokenizer
        self.eos = self.tok.convert_tokens_to_ids("<end_of_utterance>")
        self.image_text = (
            "<fake_token_around_image><global-img>" + "<image>" * IMAGE_SEQ_LEN + "<fake_token_around_image>"
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
        if not np.allclose(enc["pixel_values"][0, 0].numpy(), _pixels(image), atol=1e-5):
            raise RuntimeError("scene-vlm: pixel values differ from the processor's")


def _pixels(image):
    import numpy as np

    return ((np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


AUX_CLASSES = 1 + 2 * 6 * 3  # per grid cell: empty, or one of size x colour x shape


def _cell_classes(objects) -> list[int]:
    from mmsynth.generators.scenes.truth import COLOURS, SHAPES, SIZES

    cells = [0] * 9
    for o in objects:
        kind = (SIZES.index(o["size"]) * len(COLOURS) + COLOURS.index(o["colour"])) * len(SHAPES)
        cells[o["row"] * 3 + o["col"]] = 1 + kind + SHAPES.index(o["shape"])
    return cells


def _batch(rows, images, pad: int):
    import numpy as np
    import torch

    length = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for j, (p, a) in enumerate(rows):
        ids[j, : len(p) + len(a)] = torch.tensor(p + a)
        labels[j, len(p) - 1 : len(p) + len(a) - 1] = torch.tensor(a)  # position k predicts token k + 1
    pixels = torch.from_numpy(np.stack([_pixels(im) for im in images])).unsqueeze(1)
    return ids, labels, pixels


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
    from transformers import GenerationConfig, Idefics3ForConditionalGeneration, Idefics3Processor

    from mmsynth.generators.tiny.builders import _idefics3_image_processor

    random.seed(seed)
    tok = _tokenizer(config, seed)
    processor = Idefics3Processor(
        image_processor=_idefics3_image_processor(),
        tokenizer=tok,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=tok.chat_template,
    )
    encoder = _Encoder(processor)
    encoder.check_against_processor(sd.training_scene(sd.TRAIN_START, config.max_objects)["image"])
    model_config = _model_config(config, tok)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(model_config).to(torch.float32).train()
    aux_head = torch.nn.Linear(IMAGE_SEQ_LEN * config.text_hidden, 9 * AUX_CLASSES)
    params = [*model.parameters(), *aux_head.parameters()]
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
        rows, images, cells = [], [], []
        most = config.max_objects
        if step < config.curriculum * config.steps:  # one object first: the model learns to look
            most = 1 + int(step / (config.curriculum * config.steps) * (config.max_objects - 1))
        for _ in range(config.batch):
            scene = sd.training_scene(index, most)
            index += 1
            rows.append(encoder.example(template, hint, scene, qa_rng))
            images.append(scene["image"])
            cells.append(_cell_classes(scene["objects"]))
        ids, labels, pixels = _batch(rows, images, pad)
        # Right padding under a causal mask: real tokens never see the pads, so no attention mask is needed.
        fwd = model.model(input_ids=ids, pixel_values=pixels, use_cache=False)
        picked = labels != -100
        loss = torch.nn.functional.cross_entropy(model.lm_head(fwd.last_hidden_state[picked]), labels[picked])
        if config.aux_weight:
            feats = fwd.image_outputs.pooler_output
            feats = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats
            aux = aux_head(feats.reshape(len(rows), -1)).reshape(-1, AUX_CLASSES)
            loss = loss + config.aux_weight * torch.nn.functional.cross_entropy(
                aux, torch.tensor(cells).reshape(-1)
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == config.steps - 1:
            log(f"step {step}: loss {sum(losses[-100:]) / len(losses[-100:]):.3f}")
    model.eval()
    eos = encoder.eos
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, max_new_tokens=64)
    model.save_pretrained(out)
    processor.save_pretrained(out)
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
