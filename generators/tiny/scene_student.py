"""`tiny:scene-student`: the proving ground's student, a pretrained vision encoder and nothing else.

Real multimodal students start from a pretrained vision encoder and learn language from data. This
one is the teacher's architecture (tiny Idefics3, 48 px in 16 px patches, 9 cell-aligned image
tokens, head_dim 32, float32) with only the teacher's vision stage (scene_vlm._pretrain_vision): the
vision tower and connector learn, through a linear head dropped after, what each grid cell holds and
which cell it is. The language side (embeddings, text layers, LM head) keeps its random init: the
student cannot caption or answer anything until the gain measurement trains it.

Honest by construction: its vision scenes come from its own index range (STUDENT_VISION_START..),
disjoint from the teacher's two ranges and from every evaluation range in the project (all below
200,000); it never sees a caption, a question or a teacher output. Built offline and deterministically
in seconds on one thread, cached by a build key of its builder version and configuration.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from mmsynth.generators.tiny import scene_data as sd
from mmsynth.generators.tiny.scene_vlm import BUILD_THREADS, SceneVLMConfig

BUILDER_VERSION = 1  # bump when the data, the recipe or the code changes what a build produces
# Its own vision scenes: above the teacher's language (10M..) and vision (20M..) ranges, which each
# use under a million scenes, and far above every evaluation range (< 200,000).
STUDENT_VISION_START = 30_000_000


@dataclass(frozen=True)
class SceneStudentConfig:
    """Everything that decides the weights; its hash (with BUILDER_VERSION) is the build key."""

    text_layers: int = 2
    """Text decoder layers (the teacher has 4): a student smaller than its teacher, cheaper to train."""
    vision_steps: int = 300
    vision_batch: int = 32
    vision_lr: float = 3e-3
    max_objects: int = 4
    """Vision scenes have 1..max_objects objects."""
    vision_start: int = STUDENT_VISION_START


DEFAULT_CONFIG = SceneStudentConfig()


def vlm_config(config: SceneStudentConfig) -> SceneVLMConfig:
    """The teacher's configuration with the student's sizes and no language stage (steps=0)."""
    return SceneVLMConfig(
        text_layers=config.text_layers,
        steps=0,
        vision_steps=config.vision_steps,
        vision_batch=config.vision_batch,
        vision_lr=config.vision_lr,
        max_objects=config.max_objects,
        # No added tokens for the teacher's instruction texts: the student is asked in its own words.
        prompt_tokens=False,
    )


def build_key(config: SceneStudentConfig = DEFAULT_CONFIG, seed: int = 0) -> str:
    blob = json.dumps(
        {"version": BUILDER_VERSION, "seed": seed, "threads": BUILD_THREADS, **asdict(config)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_scene_student(
    out: Path, seed: int = 0, config: SceneStudentConfig = DEFAULT_CONFIG, log=None
) -> dict:
    """Pretrain the student's vision side and save model + processor into `out`; returns the build summary."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)  # the build key holds the thread count: float sums depend on it
    try:
        return _build(Path(out), seed, config, log or (lambda msg: None))
    finally:
        torch.set_num_threads(threads)


def _build(out: Path, seed: int, config: SceneStudentConfig, log) -> dict:
    import torch
    from transformers import Idefics3ForConditionalGeneration, Idefics3Processor

    from mmsynth.generators.tiny import scene_vlm
    from mmsynth.generators.tiny.builders import _idefics3_image_processor

    vcfg = vlm_config(config)
    random.seed(seed)
    tok = scene_vlm._tokenizer(vcfg, seed)
    processor = Idefics3Processor(
        image_processor=_idefics3_image_processor(vcfg.image_size),
        tokenizer=tok,
        image_seq_len=scene_vlm.image_seq_len(vcfg),
        chat_template=tok.chat_template,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(scene_vlm._model_config(vcfg, tok)).to(torch.float32).train()
    scene_vlm._pretrain_vision(model, vcfg, log, start=config.vision_start)
    eos, pad = tok.convert_tokens_to_ids("<end_of_utterance>"), tok.convert_tokens_to_ids("<|endoftext|>")
    scene_vlm.save_model(model, processor, out, eos, pad)
    summary = {
        "builder_version": BUILDER_VERSION,
        "build_key": build_key(config, seed),
        "seed": seed,
        "config": asdict(config),
        "vision_scenes": [
            config.vision_start,
            config.vision_start + config.vision_steps * config.vision_batch - 1,
        ],
        "scene_seed": sd.SCENE_SEED,
        "language": "untrained (random init)",
    }
    (out / "scene_student_build.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
