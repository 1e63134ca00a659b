"""The student: load any Hugging Face causal LM or VLM folder, fine-tune it briefly (full or LoRA), generate.

The loop is ours and short on purpose: sample a batch, mask everything but the answer, step AdamW with
warmup and linear decay, clip gradients. Seeds fix the LoRA initialisation and the data order, so two
runs with the same seed on the same machine train the same model.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsynth.trainer.data import IMAGE, Example

Turn = tuple[Example, str | None]  # (example, the answer to show; None for the turn to complete)


@dataclass
class TrainConfig:
    """How one student is fine-tuned on one pool."""

    steps: int = 200
    """Optimizer steps; the same for every arm, so arms differ in data, not in compute."""
    batch_size: int = 8
    grad_accum: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size * grad_accum)."""
    lr: float = 2e-4
    warmup: float = 0.1
    """Share of the steps with a linear learning-rate warm-up."""
    schedule: str = "linear"
    """After warm-up: "linear" decay to zero, or "constant"."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora: bool = False
    """Train LoRA adapters (peft) instead of every weight."""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    max_length: int = 1024
    """Longer training sequences are truncated on the right."""
    seed: int = 0
    checkpoint_dir: Path | None = None
    """Where checkpoints go (step-N folders, then `final`); None saves nothing."""
    checkpoint_every: int = 0
    progress: bool = True


@dataclass
class Student:
    model: Any
    tokenizer: Any
    processor: Any | None
    is_vlm: bool
    device: str
    autocast_dtype: Any | None = None
    losses: list[float] = field(default_factory=list)
    _pil_cache: dict[bytes, Any] = field(default_factory=dict, repr=False)
    _prompt_lengths: dict[tuple, int] = field(default_factory=dict, repr=False)

    def image(self, data: bytes):
        img = self._pil_cache.get(data)
        if img is None:
            from PIL import Image

            img = Image.open(io.BytesIO(data)).convert("RGB")
            self._pil_cache[data] = img
        return img


def load_student(path: str | Path, device: str = "auto", seed: int = 0) -> Student:
    """Load a causal LM or an image-text-to-text model (with its processor) from a folder or Hub id.

    Weights stay float32; on a GPU with bf16 support the forward passes run under bf16 autocast.
    """
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    is_vlm = is_vlm_folder(path)
    if is_vlm:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(str(path))
        tokenizer = processor.tokenizer
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        processor = None
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    autocast = None
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        autocast = torch.bfloat16
    return Student(model.to(device), tokenizer, processor, is_vlm, device, autocast)


def is_vlm_folder(path: str | Path) -> bool:
    """True when the model's config has a vision part (it reads images)."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(str(path)), "vision_config", None) is not None


def usable(student: Student, ex: Example) -> bool:
    """A text-only student cannot see images: it trains and evaluates on text examples only."""
    return student.is_vlm or not ex.images


# --- encoding --------------------------------------------------------------------------------------


def _content(student: Student, prompt: str) -> Any:
    if not student.is_vlm:
        return prompt.replace(IMAGE, "")
    parts: list[dict[str, str]] = []
    for i, chunk in enumerate(prompt.split(IMAGE)):
        if i:
            parts.append({"type": "image"})
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def render(student: Student, turns: Sequence[Turn]) -> tuple[str, list[Any]]:
    """Chat text for `turns` and the images it shows, in order; ends with the generation prompt when the
    last turn has no answer. An example with an empty prompt is plain text (language-model style)."""
    images = [student.image(img) for ex, _ in turns for img in ex.images] if student.is_vlm else []
    if len(turns) == 1 and not turns[0][0].prompt:
        text = turns[0][0].target
        if student.is_vlm:
            text = text.replace(IMAGE, getattr(student.processor, "image_token", IMAGE))
        else:
            text = text.replace(IMAGE, "")
        return text + (student.tokenizer.eos_token or ""), images
    messages: list[dict[str, Any]] = []
    for ex, answer in turns:
        messages.append({"role": "user", "content": _content(student, ex.prompt)})
        if answer is not None:
            messages.append(
                {
                    "role": "assistant",
                    "content": answer if not student.is_vlm else [{"type": "text", "text": answer}],
                }
            )
    open_turn = turns[-1][1] is None
    templ = student.processor if student.is_vlm else student.tokenizer
    if getattr(templ, "chat_template", None) is None:  # a base model: plain "Q\nA" lines
        lines = []
        for ex, answer in turns:
            lines.append(
                ex.prompt.replace(
                    IMAGE, getattr(student.processor, "image_token", "") if student.is_vlm else ""
                )
            )
            if answer is not None:
                lines.append(answer + (student.tokenizer.eos_token or ""))
        return "\n".join(lines) + ("\n" if open_turn else ""), images
    return templ.apply_chat_template(messages, add_generation_prompt=open_turn, tokenize=False), images


def _encode(
    student: Student, texts: list[str], images: list[list[Any]], side: str, max_length: int | None = None
):
    tok = student.tokenizer
    tok.padding_side = side
    kw: dict[str, Any] = {"padding": True, "return_tensors": "pt", "add_special_tokens": False}
    if max_length:
        kw.update(truncation=True, max_length=max_length)
    if student.is_vlm:
        return student.processor(text=texts, images=images if any(images) else None, **kw)
    return tok(texts, **kw)


def training_batch(student: Student, examples: Sequence[Example], max_length: int = 1024) -> dict[str, Any]:
    """Model inputs with labels: loss on the answer (and its end-of-turn), or on all text for LM-style examples."""
    import torch

    full, prompts, images = [], [], []
    for ex in examples:
        text, imgs = render(student, [(ex, ex.target)])
        full.append(text)
        images.append(imgs)
        prompts.append(render(student, [(ex, None)])[0] if ex.prompt else None)
    batch = _encode(student, full, images, "right", max_length)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    for i, (p, imgs) in enumerate(zip(prompts, images, strict=True)):
        if p is not None:
            labels[i, : _prompt_length(student, p, imgs)] = -100
    image_token = getattr(student.processor, "image_token", None) if student.is_vlm else None
    if image_token is not None:
        for tid in {student.tokenizer.convert_tokens_to_ids(image_token)}:
            labels[labels == tid] = -100
    batch["labels"] = labels
    return {k: v.to(student.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _prompt_length(student: Student, prompt: str, images: list[Any]) -> int:
    """Tokens of a rendered prompt; cached by text and image sizes, which are all a length depends on."""
    key = (prompt, tuple(img.size for img in images))
    n = student._prompt_lengths.get(key)
    if n is None:
        n = int(_encode(student, [prompt], [images], "right")["attention_mask"].sum())
        student._prompt_lengths[key] = n
    return n


# --- training --------------------------------------------------------------------------------------


def add_lora(student: Student, cfg: TrainConfig) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)  # LoRA's A matrices are random: seed them
    lcfg = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets), lora_dropout=0.0
    )
    student.model = get_peft_model(student.model, lcfg)


def train_student(
    student: Student,
    examples: Sequence[Example],
    cfg: TrainConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Fine-tune `student` in place on `examples` for cfg.steps optimizer steps; returns the loss per step."""
    import torch

    pool = [ex for ex in examples if usable(student, ex)]
    if not pool:
        raise ValueError(
            "no training example this student can use (a text-only model gets no image examples)"
        )
    if cfg.lora:
        add_lora(student, cfg)
    torch.manual_seed(cfg.seed)
    model = student.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup * cfg.steps))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    order = _batches(len(pool), cfg.batch_size, random.Random(cfg.seed))
    losses: list[float] = []
    with _progress(cfg.progress, cfg.steps) as advance:
        for step in range(cfg.steps):
            total = 0.0
            for _ in range(cfg.grad_accum):
                batch = training_batch(student, [pool[i] for i in next(order)], cfg.max_length)
                with _autocast(student):
                    loss = model(**batch).loss / cfg.grad_accum
                loss.backward()
                total += float(loss.detach())
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(total)
            advance(total)
            if on_step:
                on_step(step, total)
            if cfg.checkpoint_dir and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                save_student(student, Path(cfg.checkpoint_dir) / f"step-{step + 1}")
    if cfg.checkpoint_dir:
        save_student(student, Path(cfg.checkpoint_dir) / "final")
    model.eval()
    student.losses = losses
    return losses


def _batches(n: int, size: int, rng: random.Random):
    """Endless batches of indices: each epoch a fresh seeded permutation (a batch never spans two epochs
    unless the pool is smaller than a batch, then indices repeat)."""
    while True:
        perm = list(range(n))
        rng.shuffle(perm)
        if n < size:
            perm = (perm * math.ceil(size / n))[:size]
        for i in range(0, len(perm) - size + 1, size):
            yield perm[i : i + size]


def save_student(student: Student, out: Path) -> None:
    """Save weights (adapters only under LoRA) and the tokenizer/processor, loadable with from_pretrained."""
    out.mkdir(parents=True, exist_ok=True)
    student.model.save_pretrained(out)
    (student.processor or student.tokenizer).save_pretrained(out)


class _progress:
    """A rich progress bar with the current loss, or nothing."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self) -> Callable[[float], None]:
        if not self.enabled:
            return lambda loss: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}"),
            TimeRemainingColumn(),
            transient=True,
        )
        self._p.__enter__()
        task = self._p.add_task("train", total=self.total, loss=float("nan"))
        return lambda loss: self._p.update(task, advance=1, loss=loss)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._p.__exit__(*exc)


def _autocast(student: Student):
    import contextlib

    import torch

    if student.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=student.autocast_dtype)


# --- generation ------------------------------------------------------------------------------------


def generate(
    student: Student, prompts: Sequence[Sequence[Turn]], max_new_tokens: int = 32, batch_size: int = 16
) -> list[str]:
    """Greedy completions of the open last turn of each prompt, special tokens removed, stripped."""
    import torch

    out: list[str] = []
    model = student.model
    model.eval()
    tok = student.tokenizer
    eos = {tok.eos_token_id, tok.pad_token_id} - {None}
    for i in range(0, len(prompts), batch_size):
        rendered = [render(student, turns) for turns in prompts[i : i + batch_size]]
        batch = _encode(student, [t for t, _ in rendered], [imgs for _, imgs in rendered], "left")
        batch = {k: v.to(student.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.no_grad(), _autocast(student):
            ids = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(eos),
                pad_token_id=tok.pad_token_id,
            )
        new = ids[:, batch["input_ids"].shape[1] :]
        out.extend(s.strip() for s in tok.batch_decode(new, skip_special_tokens=True))
    return out
