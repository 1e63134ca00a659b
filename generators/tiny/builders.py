"""Tiny random-weight models built offline, saved in Hugging Face format.

They load through `from_pretrained` exactly like real checkpoints, so every code path that takes a
model folder (transformers, diffusers, a vLLM server) can be exercised on a CPU in seconds. Their
weights are random: outputs are gibberish. They are for smoke tests and CI, never for real data.

    make_tiny("lm", dir)   Qwen2ForCausalLM, hidden 128, 4 heads (head_dim 32), 2 layers
    make_tiny("vlm", dir)  Idefics3ForConditionalGeneration (SmolVLM v1) + Idefics3Processor, 64 px images
    make_tiny("sd", dir)   StableDiffusionPipeline, 64 px, no safety checker
    make_tiny("clip", dir) CLIPModel + CLIPProcessor, 64 px images, 32-dim embeddings (image-text scores)

head_dim is 32 because vLLM's CPU attention kernels reject 16. Weights are float32 and configs keep
standard values so a real vLLM CPU server can serve the lm and vlm folders.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MARKER = "mmsynth_tiny.json"
KINDS = ("lm", "vlm", "sd", "clip")

VOCAB_SIZE = 2048
IMAGE_SIZE = 64  # px, vlm and sd
VLM_PATCH = 8  # 8x8 patches of 8 px ...
VLM_SCALE_FACTOR = 2  # ... pixel-shuffled 2x2: (64/8)**2 / 2**2 = 16 image tokens per image
VLM_IMAGE_SEQ_LEN = (IMAGE_SIZE // VLM_PATCH) ** 2 // VLM_SCALE_FACTOR**2
MAX_POSITIONS = 2048

# Chat template shared by lm and vlm: ChatML turns; content is a string or a list of parts
# ({"type": "text", "text": ...} / {"type": "image"}); `image_token` is what an image part becomes.
_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '@IMAGE@' -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '@EOT@\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_LM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_VLM_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
]
_SD_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]


def make_tiny(kind: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build the tiny `kind` model ("lm", "vlm", "sd" or "clip") into `out_dir` and return that folder.

    Returns at once when `out_dir` already holds a complete build of the same kind, format version and
    seed. The build goes into a temporary sibling folder that is renamed into place once its marker
    file (written last) exists, so a crash never leaves a half-built `out_dir`. Same seed, same bytes.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {', '.join(KINDS)}")
    out = Path(out_dir).resolve()
    if _is_complete(out, kind, seed):
        return out
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FileExistsError(
            f"{out} exists and is not a tiny-model build ({MARKER} missing); refusing to replace it"
        )
    if (out / MARKER).exists():
        found = _read_marker(out)
        if found.get("kind") not in (None, kind):
            raise FileExistsError(f"{out} holds a tiny {found.get('kind')!r} model, not {kind!r}")

    out.parent.mkdir(parents=True, exist_ok=True)
    # os.mkdir (not mkdtemp, which makes 0700 folders) so the build gets the usual umask permissions.
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Writing model shards" bars are noise for a 1 MB model
        _BUILDERS[kind](tmp, seed)
        # No timestamps or timings in the marker: the whole folder, marker included, is reproducible,
        # so its content-hash revision (and every cache key built on it) survives a rebuild.
        marker = {
            "kind": kind,
            "format_version": FORMAT_VERSION,
            "seed": seed,
            "note": "random weights built by mmsynth.generators.tiny.builders; for smoke tests only",
        }
        # The marker is written last: its presence means every other file is complete.
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _move_into_place(tmp, out, kind, seed)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _read_marker(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def _is_complete(folder: Path, kind: str, seed: int) -> bool:
    m = _read_marker(folder)
    return m.get("kind") == kind and m.get("format_version") == FORMAT_VERSION and m.get("seed") == seed


def _move_into_place(tmp: Path, out: Path, kind: str, seed: int) -> None:
    """Rename `tmp` to `out`; an older build (other seed or format) is swapped out first.

    When another process finished the same build in the meantime, its folder wins and ours is dropped.
    """
    if out.exists():
        if _is_complete(out, kind, seed):
            return
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
            out.rename(old)
            shutil.rmtree(old, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:
        if not _is_complete(out, kind, seed):
            raise


# ---------------------------------------------------------------------------------------------------
# Corpus and tokenizers


def _words(text: str) -> list[str]:
    return text.split()


_COLOURS = _words(
    "red green blue yellow orange purple pink brown black white gray grey cyan magenta violet gold"
)
_SHAPES = _words(
    "circle square triangle rectangle star ellipse hexagon pentagon diamond oval line dot cross heart"
)
_COUNTS = _words("no one two three four five six seven eight nine ten several many a few")
_SIZES = _words("small large big tiny medium huge little wide tall thin")
_POSITIONS = [
    "on the left",
    "on the right",
    "at the top",
    "at the bottom",
    "in the center",
    "in the centre",
    "in the middle",
    "in the upper left corner",
    "in the upper right corner",
    "in the lower left corner",
    "in the lower right corner",
    "near the edge",
]
_RELATIONS = [
    "above",
    "below",
    "next to",
    "beside",
    "near",
    "inside",
    "outside",
    "to the left of",
    "to the right of",
    "between",
]
_GENERIC = _words(
    "the of and to in is it that for on with as was at by this be are from or have an they which you one "
    "had not but what all were when we there can been has more if will their so no out up about into them "
    "some could would than then its only other new also time these two may first any like over such our "
    "most after made very where through back years just much good well people how because each image "
    "picture photo shows shown contains background foreground object objects color colour shape shapes "
    "count number answer question describe caption detailed short simple scene visible single pair group "
    "row column grid pattern filled outline solid bright dark light yes none true false json list value "
    "text title label description summary model data sample example first second third last total exactly "
    "please write give return output input user assistant system instruction task step reason because"
)
_PLURAL = {"cross": "crosses"}


def _plural(shape: str) -> str:
    return _PLURAL.get(shape, shape + "s")


def _corpus(seed: int, n: int = 4000) -> list[str]:
    """Generated caption-like, question-like and JSON-like lines using the words captions of shapes use."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        c, s, z, p = rng.choice(_COLOURS), rng.choice(_SHAPES), rng.choice(_SIZES), rng.choice(_POSITIONS)
        k = rng.randint(0, 12)
        form = rng.randrange(7)
        if form == 0:
            lines.append(f"There are {rng.choice(_COUNTS)} {z} {c} {_plural(s)} {p} of the image.")
        elif form == 1:
            lines.append(
                f"A {c} {s} {rng.choice(_RELATIONS)} a {rng.choice(_COLOURS)} {rng.choice(_SHAPES)}, {p}."
            )
        elif form == 2:
            lines.append(f"Question: How many {c} {_plural(s)} are there? Answer: {k}")
        elif form == 3:
            lines.append(
                json.dumps(
                    {"caption": f"a {z} {c} {s} {p}", "objects": [{"shape": s, "color": c, "count": k}]}
                )
            )
        elif form == 4:
            lines.append(
                f"The image shows {k} {_plural(s)}: "
                + ", ".join(rng.choice(_COLOURS) for _ in range(3))
                + "."
            )
        elif form == 5:
            lines.append(" ".join(rng.choice(_GENERIC) for _ in range(rng.randint(6, 16))).capitalize() + ".")
        else:
            lines.append(f"- {c.capitalize()} {s} ({z}) {p}; {k} in total.\n")
    return lines


def _train_bytelevel_bpe(lines: list[str], specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def _chat_tokenizer(seed: int, specials: list[str], image_token: str, eot: str, **special_kw):
    from transformers import PreTrainedTokenizerFast

    backend = _train_bytelevel_bpe(_corpus(seed), specials)
    template = _CHAT_TEMPLATE.replace("@IMAGE@", image_token).replace("@EOT@", eot)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=template,
        model_max_length=MAX_POSITIONS,
        padding_side="left",
        **special_kw,
    )


def _clip_tokenizer(seed: int):
    """A CLIPTokenizer whose vocab and merges come from a BPE trained with CLIP's own pipeline."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=2,
        special_tokens=_SD_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return CLIPTokenizer(vocab=_canonical_vocab(model["vocab"], merges), merges=merges, model_max_length=77)


def _canonical_vocab(vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict[str, int]:
    """Renumber a trained BPE vocabulary: specials, then base symbols sorted, then merge results in order.

    The trainer numbers the `</w>` symbols in hash-map order, which changes from one process to the next;
    the merges themselves are deterministic, so this numbering makes the saved tokenizer reproducible.
    """
    merged = [a + b for a, b in merges]
    made = set(merged)
    out = {t: i for i, t in enumerate(_SD_SPECIALS)}
    for t in sorted(t for t in vocab if t not in made and t not in out):
        out[t] = len(out)
    for t in merged:
        out.setdefault(t, len(out))
    return out


# ---------------------------------------------------------------------------------------------------
# Builders


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _build_lm(out: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = _chat_tokenizer(
        seed,
        _LM_SPECIALS,
        image_token="",
        eot="<|im_end|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
        dtype="float32",
    )
    _seed_all(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, max_new_tokens=64)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _idefics3_image_processor():
    from transformers.models.idefics3 import image_processing_pil_idefics3 as pil

    return pil.Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )


def _build_vlm(out: Path, seed: int) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
    )

    tok = _chat_tokenizer(
        seed,
        _VLM_SPECIALS,
        image_token="<image>",
        eot="<end_of_utterance>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<fake_token_around_image>", "<image>", "<global-img>"],
    )
    eos, pad = tok.convert_tokens_to_ids("<end_of_utterance>"), tok.convert_tokens_to_ids("<|endoftext|>")
    image_id = tok.convert_tokens_to_ids("<image>")
    config = Idefics3Config(
        image_token_id=image_id,
        scale_factor=VLM_SCALE_FACTOR,
        tie_word_embeddings=False,
        pad_token_id=pad,
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": VLM_PATCH,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tok),
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "max_position_embeddings": MAX_POSITIONS,
            "rms_norm_eps": 1e-5,
            "bos_token_id": None,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "tie_word_embeddings": False,
        },
        dtype="float32",
    )
    processor = Idefics3Processor(
        image_processor=_idefics3_image_processor(),
        tokenizer=tok,
        image_seq_len=VLM_IMAGE_SEQ_LEN,
        chat_template=tok.chat_template,
    )
    _seed_all(seed)
    model = Idefics3ForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, max_new_tokens=64)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _build_sd(out: Path, seed: int) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = _clip_tokenizer(seed)
    _seed_all(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=IMAGE_SIZE // 2,  # the 2-level VAE below halves the resolution once
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=IMAGE_SIZE,
        norm_num_groups=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            projection_dim=64,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tok,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def _build_clip(out: Path, seed: int) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = _clip_tokenizer(seed)
    layers = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={
            **layers,
            "vocab_size": len(tok),
            "max_position_embeddings": 77,
            # Pooling reads the hidden state at the first eos token, so the ids must be the tokenizer's.
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={**layers, "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=32,
    )
    # The PIL image processor: the default one needs torchvision, which the CPU install lacks.
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    _seed_all(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)


_BUILDERS = {"lm": _build_lm, "vlm": _build_vlm, "sd": _build_sd, "clip": _build_clip}
