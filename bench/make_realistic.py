"""Random-weight models of realistic size, built offline, for the GPU benchmarks (bench/gpu.sh).

    python bench/make_realistic.py DIR [--only vlm-256m,vlm-2b,sd] [--scale tiny] [--device auto]

Builds into DIR/<name>, each loadable with `from_pretrained` like a real checkpoint (bf16 weights):

    vlm-256m  Idefics3 (SmolVLM-256M-like): SigLIP-base-like tower (hidden 768, 12 layers, patch 16,
              512 px) + SmolLM2-135M-like text model (hidden 576, 30 layers, 9 heads, 3 KV heads,
              vocab 49152), pixel shuffle 4: 64 image tokens per image
    vlm-2b    Idefics3 (SmolVLM2-2.2B-like): SigLIP-so400m-like tower (hidden 1152, 27 layers,
              patch 14, 384 px) + text model hidden 2048, 24 layers, 32 heads, vocab 49152, pixel
              shuffle 3: 81 image tokens per image
    sd        StableDiffusionPipeline, SD-1.5 sized: UNet (320, 640, 1280, 1280), cross-attention
              768, CLIP text encoder (hidden 768, 12 layers), the standard AutoencoderKL, DDIM

Weights are random: the point is the compute and memory of the real shapes, not the outputs. The
tokenizers are mmsynth's tiny offline BPEs (about 1,100 tokens): their ids fit the larger model vocab,
and ids the model emits beyond them decode to nothing, on both sides of a benchmark alike.

`--scale tiny` shrinks widths and depths (not the image geometry: image size, patch size and pixel
shuffle stay, so the processor and image-token path is the real one) so the whole GPU script can be
smoke-tested on a CPU in about a minute. A folder whose marker names the same model and scale is
reused; a build goes into a temporary sibling folder renamed into place when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import _common as C  # noqa: F401  (before torch: offline mode, thread pins)

NAMES = ("vlm-256m", "vlm-2b", "sd")
MARKER = "mmsynth_realistic.json"
FORMAT_VERSION = 1

# Vision tower, text model and pixel-shuffle factor of each VLM, full size and tiny. Heads are chosen
# so head_dim is 64 at full size (as in the real models) and 32 at tiny scale.
VLM_SHAPES = {
    "vlm-256m": {
        "full": {
            "vision": {
                "hidden_size": 768,
                "intermediate_size": 3072,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
            },
            "text": {
                "hidden_size": 576,
                "intermediate_size": 1536,
                "num_hidden_layers": 30,
                "num_attention_heads": 9,
                "num_key_value_heads": 3,
                "head_dim": 64,
                "max_position_embeddings": 8192,
                "rope_theta": 100000.0,
            },
        },
        "tiny": {
            "vision": {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
            },
            "text": {
                "hidden_size": 96,
                "intermediate_size": 192,
                "num_hidden_layers": 2,
                "num_attention_heads": 3,
                "num_key_value_heads": 1,
                "head_dim": 32,
                "max_position_embeddings": 8192,
                "rope_theta": 100000.0,
            },
        },
        "image_size": 512,
        "patch_size": 16,
        "scale_factor": 4,
    },
    "vlm-2b": {
        "full": {
            "vision": {
                "hidden_size": 1152,
                "intermediate_size": 4304,
                "num_hidden_layers": 27,
                "num_attention_heads": 16,
            },
            "text": {
                "hidden_size": 2048,
                "intermediate_size": 8192,
                "num_hidden_layers": 24,
                "num_attention_heads": 32,
                "num_key_value_heads": 32,
                "head_dim": 64,
                "max_position_embeddings": 16384,
                "rope_theta": 273768.0,
            },
        },
        "tiny": {
            "vision": {
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
            },
            "text": {
                "hidden_size": 128,
                "intermediate_size": 256,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 4,
                "head_dim": 32,
                "max_position_embeddings": 16384,
                "rope_theta": 273768.0,
            },
        },
        "image_size": 384,
        "patch_size": 14,
        "scale_factor": 3,
    },
}
TEXT_VOCAB = 49152  # both VLMs: the SmolLM2 vocabulary size (rounded), far above the tokenizer's ids

SD_SHAPES = {
    "full": {
        "unet": {
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
        },
        "vae": (128, 256, 512, 512),
        "text": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
        },
    },
    "tiny": {
        "unet": {
            "block_out_channels": (32, 32, 64, 64),
            "layers_per_block": 1,
            "cross_attention_dim": 64,
            "attention_head_dim": 8,
        },
        "vae": (32, 32, 32, 32),
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
    },
}
SD_IMAGE_SIZE = 512
CLIP_VOCAB = 49408  # CLIP's vocabulary size; the tiny CLIP tokenizer's ids fit in it


def image_size(name: str) -> int:
    """The image width/height a model is built for (what the benchmark renders its scenes at)."""
    return SD_IMAGE_SIZE if name == "sd" else VLM_SHAPES[name]["image_size"]


def image_tokens(name: str) -> int:
    """Image tokens per image of a VLM: (image / patch)^2 patches, pixel-shuffled by scale^2."""
    s = VLM_SHAPES[name]
    return (s["image_size"] // s["patch_size"]) ** 2 // s["scale_factor"] ** 2


def _image_processor(size: int):
    """Idefics3's image processor at one fixed size (no splitting: one image, one set of tokens).

    The PIL variant first (transformers 5: the default one wants torchvision); older transformers
    only have the numpy one, which needs no torchvision."""
    try:
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil as cls,
        )
    except ImportError:
        from transformers import Idefics3ImageProcessor as cls
    return cls(do_image_splitting=False, size={"longest_edge": size}, max_image_size={"longest_edge": size})


def _build_vlm(out: Path, name: str, scale: str, device: str) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
    )

    from mmsynth.generators.tiny.builders import _VLM_SPECIALS, _chat_tokenizer

    shape = VLM_SHAPES[name]
    dims = shape[scale]
    tok = _chat_tokenizer(
        0,
        _VLM_SPECIALS,
        image_token="<image>",
        eot="<end_of_utterance>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<fake_token_around_image>", "<image>", "<global-img>"],
    )
    eos, pad = tok.convert_tokens_to_ids("<end_of_utterance>"), tok.convert_tokens_to_ids("<|endoftext|>")
    config = Idefics3Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=shape["scale_factor"],
        tie_word_embeddings=False,
        pad_token_id=pad,
        vision_config={
            **dims["vision"],
            "image_size": shape["image_size"],
            "patch_size": shape["patch_size"],
        },
        text_config={
            **dims["text"],
            "model_type": "llama",
            "vocab_size": TEXT_VOCAB,
            "rms_norm_eps": 1e-5,
            "bos_token_id": None,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "tie_word_embeddings": False,
        },
        dtype="bfloat16",
    )
    processor = Idefics3Processor(
        image_processor=_image_processor(shape["image_size"]),
        tokenizer=tok,
        image_seq_len=image_tokens(name),
        chat_template=tok.chat_template,
    )
    torch.manual_seed(0)
    # Initialised in float32 on the build device (some init functions lack bf16 CPU kernels), then cast.
    with torch.device(device):
        model = Idefics3ForConditionalGeneration(config)
    model = model.to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, max_new_tokens=64)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _build_sd(out: Path, scale: str, device: str) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mmsynth.generators.tiny.builders import _clip_tokenizer

    dims = SD_SHAPES[scale]
    tok = _clip_tokenizer(0)
    torch.manual_seed(0)
    with torch.device(device):
        # UNet2DConditionModel's defaults are SD-1.5's block types; only the sizes are set here.
        unet = UNet2DConditionModel(
            sample_size=SD_IMAGE_SIZE // 8, in_channels=4, out_channels=4, **dims["unet"]
        )
        vae = AutoencoderKL(
            block_out_channels=dims["vae"],
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=SD_IMAGE_SIZE,
            scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **dims["text"],
                vocab_size=CLIP_VOCAB,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                # Pooling reads the hidden state at the first eos token: the ids must be the tokenizer's.
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
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
        vae=vae.to(torch.bfloat16).eval(),
        text_encoder=text_encoder.to(torch.bfloat16).eval(),
        tokenizer=tok,
        unet=unet.to(torch.bfloat16).eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def build(root: Path, name: str, scale: str = "full", device: str = "cpu") -> Path:
    """Build model `name` at `scale` into root/name (reused when its marker matches); return the folder."""
    out = (root / name).resolve()
    want = {"name": name, "scale": scale, "format_version": FORMAT_VERSION}
    try:
        found = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        found = None
    if found and all(found.get(k) == v for k, v in want.items()):
        return out
    if out.exists() and found is None and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a make_realistic build ({MARKER} missing)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        t0 = time.perf_counter()
        if name == "sd":
            _build_sd(tmp, scale, device)
        else:
            _build_vlm(tmp, name, scale, device)
        (tmp / MARKER).write_text(json.dumps({**want, "note": "random weights, for benchmarks only"}) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(
            f"built {name} ({scale}) in {time.perf_counter() - t0:.1f}s: {size / 2**20:.0f} MiB at {out}",
            flush=True,
        )
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, help="where the model folders go (one subfolder per model)")
    ap.add_argument("--only", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    ap.add_argument("--scale", default="full", choices=("full", "tiny"))
    ap.add_argument(
        "--device", default="auto", help="where weights are initialised: auto (cuda if available), cpu, cuda"
    )
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    for name in names:
        build(args.dir, name, args.scale, device)


if __name__ == "__main__":
    main()
