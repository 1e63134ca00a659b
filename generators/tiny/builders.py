"""Tiny random-weight models built offline, saved in Hugging Face format.

They load through `from_pretrained` exactly like real checkpoints, so every code path that takes a
model folder (transformers, diffusers, a vLLM server) can be exercised on a CPU in seconds. Their
weights are random: outputs are gibberish. They are for smoke tests and CI, never for real data.

    make_tiny("lm", dir)   Qwen2ForCausalLM, hidden 128, 4 heads (head_dim 32), 2 layers
    make_tiny("vlm", dir)  Idefics3ForConditionalGeneration (SmolVLM v1) + Idefics3Processor, 64 px images
    make_tiny("sd", dir)   StableDiffusionPipeline, 64 px, no safety checker
    make_tiny("clip", dir) CLIPModel + CLIPProcessor, 64 px images, 32-dim embeddings (image-text scores)

One kind is trained rather than random: make_tiny("scene-vlm", dir) is the vlm architecture taught to
caption and question rendered shape scenes (scene_vlm.py; about two minutes on two CPU cores), and
make_tiny("scene-student", dir) is its student: the same architecture with only the vision side
pretrained and the language side random (scene_student.py; seconds).

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

from mmsynth.generators.tiny.tokenizers import (  # noqa: F401  (re-exported: part of this module's API)
    _CHAT_TEMPLATE,
    _LM_SPECIALS,
    _SD_SPECIALS,
    _VLM_SPECIALS,
    MAX_POSITIONS,
    VOCAB_SIZE,
    _chat_tokenizer,
    _clip_tokenizer,
)

FORMAT_VERSION = 1
MARKER = "mmsynth_tiny.json"
KINDS = ("lm", "vlm", "sd", "clip", "scene-vlm", "scene-student")

IMAGE_SIZE = 64  # px, vlm and sd
VLM_PATCH = 8  # 8x8 patches of 8 px ...
VLM_SCALE_FACTOR = 2  # ... pixel-shuffled 2x2: (64/8)**2 / 2**2 = 16 image tokens per image
VLM_IMAGE_SEQ_LEN = (IMAGE_SIZE // VLM_PATCH) ** 2 // VLM_SCALE_FACTOR**2


def make_tiny(kind: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build the tiny `kind` model (one of KINDS) into `out_dir`; return that folder.

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
            # Frozen text: the marker is part of the folder's content revision, so a change here would
            # change every request key and record id made with these models (the module has moved since).
            "note": "random weights built by mmsynth.generators.tiny_models; for smoke tests only",
        }
        key = _build_key(kind, seed)
        if key is not None:  # a trained kind: its marker also names the recipe that made it
            marker["build_key"] = key
            marker["note"] = _TRAINED_NOTES[kind]
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
    return (
        m.get("kind") == kind
        and m.get("format_version") == FORMAT_VERSION
        and m.get("seed") == seed
        and m.get("build_key") == _build_key(kind, seed)
    )


def _build_key(kind: str, seed: int) -> str | None:
    """Trained kinds: a hash of their builder version and training config (a change rebuilds); else None."""
    if kind == "scene-vlm":
        from mmsynth.generators.tiny.scene_vlm import build_key

        return build_key(seed=seed)
    if kind == "scene-student":
        from mmsynth.generators.tiny import scene_student

        return scene_student.build_key(seed=seed)
    return None


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


def _idefics3_image_processor(size: int = IMAGE_SIZE):
    from transformers.models.idefics3 import image_processing_pil_idefics3 as pil

    return pil.Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": size},
        max_image_size={"longest_edge": size},
    )


def idefics3_config(
    tok,
    *,
    vision_hidden: int = 64,
    vision_intermediate: int = 128,
    vision_layers: int = 2,
    vision_heads: int = 2,
    text_hidden: int = 128,
    text_intermediate: int = 256,
    text_layers: int = 2,
    text_heads: int = 4,
    text_kv_heads: int = 2,
    image_size: int = IMAGE_SIZE,
    patch: int = VLM_PATCH,
    scale_factor: int = VLM_SCALE_FACTOR,
):
    """The tiny Idefics3 configuration (64 px images, 16 image tokens, head_dim 32) for tokenizer `tok`;
    the defaults are `tiny:vlm`'s, and `tiny:scene-vlm` widens them."""
    from transformers import Idefics3Config

    eos, pad = tok.convert_tokens_to_ids("<end_of_utterance>"), tok.convert_tokens_to_ids("<|endoftext|>")
    return Idefics3Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        tie_word_embeddings=False,
        pad_token_id=pad,
        vision_config={
            "hidden_size": vision_hidden,
            "intermediate_size": vision_intermediate,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": vision_heads,
            "image_size": image_size,
            "patch_size": patch,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tok),
            "hidden_size": text_hidden,
            "intermediate_size": text_intermediate,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_heads,
            "num_key_value_heads": text_kv_heads,
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


def _build_vlm(out: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, Idefics3ForConditionalGeneration, Idefics3Processor

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
    config = idefics3_config(tok)
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


def _build_scene_vlm(out: Path, seed: int) -> None:
    from mmsynth.generators.tiny.scene_vlm import build_scene_vlm

    build_scene_vlm(out, seed)


def _build_scene_student(out: Path, seed: int) -> None:
    from mmsynth.generators.tiny.scene_student import build_scene_student

    build_scene_student(out, seed)


_TRAINED_NOTES = {
    "scene-vlm": "trained on rendered shape scenes by mmsynth.generators.tiny.scene_vlm; a tiny teacher, not a real model",
    "scene-student": "vision side pretrained on rendered shape scenes by mmsynth.generators.tiny.scene_student, language side random; a tiny student",
}
_BUILDERS = {
    "lm": _build_lm,
    "vlm": _build_vlm,
    "sd": _build_sd,
    "clip": _build_clip,
    "scene-vlm": _build_scene_vlm,
    "scene-student": _build_scene_student,
}
