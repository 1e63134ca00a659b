"""Image-text alignment: the cosine between a CLIP-style model's image and text embeddings.

Any transformers model with `get_image_features` and `get_text_features` works: CLIP (CLIPModel),
SigLIP and SigLIP 2 (loaded through AutoModel / AutoProcessor). The score is recorded on every verdict,
kept or not, so stats.json shows its distribution; candidates below `min_score` are rejected.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from mmsynth.generators.model_paths import resolve_model_path
from mmsynth.prompts.media import ImageRef
from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.image.checks import decode_error, image_name
from mmsynth.validators.types import Candidate, Verdict


class ClipScoreConfig(ValidatorConfig):
    type: Literal["clip_score"] = Field(default="clip_score", description="Registry key: 'clip_score'.")
    model: str = Field(
        default="openai/clip-vit-base-patch32",
        min_length=1,
        description="Model folder or Hub id of a CLIP or SigLIP model (with its processor); 'tiny:clip' is a random-weight smoke-test model.",
    )
    min_score: float | None = Field(
        default=0.2,
        description="Reject below this cosine (-1 to 1; CLIP ViT-B/32 gives matching captions about 0.25-0.35); null: only record the score.",
    )
    text_from: str = Field(
        default="output",
        pattern=r"^(output|seed\..+)$",
        description="The text to score: 'output' (the model's output) or 'seed.<field>' (a seed field, e.g. 'seed.description').",
    )
    batch_size: int = Field(default=32, ge=1, description="Candidates per model call.")
    device: str = Field(
        default="auto",
        min_length=1,
        description="'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:1', ...",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="Weights' dtype; 'auto': bfloat16 on a GPU that supports it (else float16), float32 on the CPU.",
    )


class ClipScoreValidator(ConfiguredValidator[ClipScoreConfig]):
    """Scores each candidate's first image against its text; rejects below `min_score`.

    Candidates without images are kept unscored. The model loads on first use (or `load()`).
    """

    config_cls = ClipScoreConfig

    def __init__(self, config: ClipScoreConfig | None = None) -> None:
        super().__init__(config)
        self._model: Any = None
        self._processor: Any = None
        self.device: str | None = None
        self._pad_to_max = False

    def load(self) -> None:
        """Load model and processor now (idempotent), so that a bad path fails before a run."""
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel, AutoProcessor

        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.config.dtype
        if dtype == "auto":
            dtype = "float32"
            if device.startswith("cuda"):
                dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        path = resolve_model_path(self.config.model)
        model = AutoModel.from_pretrained(path, dtype=getattr(torch, dtype))
        if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
            raise ValueError(
                f"{self.config.model!r} loads as {type(model).__name__}, which has no image and text "
                "embeddings; use a CLIP or SigLIP model"
            )
        self._processor = AutoProcessor.from_pretrained(path)
        self._model = model.to(device).eval()
        self.device = device
        # SigLIP was trained on texts padded to the full length; CLIP pools at the end token, padding is moot.
        self._pad_to_max = "siglip" in str(getattr(model.config, "model_type", ""))

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(candidates)
        todo: list[tuple[int, ImageRef, str]] = []  # (position, image, text)
        for k, c in enumerate(candidates):
            if not c.images:
                verdicts[k] = Verdict.ok(self.name)
                continue
            text = self.text_of(c)
            if text is None:
                verdicts[k] = Verdict.reject(self.name, f"no text: seed has no field {self._seed_field!r}")
                continue
            todo.append((k, c.images[0], text))
        size = self.config.batch_size
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            # Several records often share one image (n captions of a seed): decode and embed it once.
            pils: dict[str, Any] = {}
            for k, img, _ in chunk:
                if img.sha256 not in pils:
                    try:
                        pils[img.sha256] = img.to_pil()
                    except ValueError as e:
                        verdicts[k] = Verdict.reject(
                            self.name, f"undecodable image: {image_name(img, 0)}: {decode_error(e)}"
                        )
                        pils[img.sha256] = None
            ok = [(k, img, text) for k, img, text in chunk if pils[img.sha256] is not None]
            if not ok:
                continue
            order = [h for h, pil in pils.items() if pil is not None]
            scores = self.scores(
                [pils[h] for h in order],
                [text for _, _, text in ok],
                [order.index(img.sha256) for _, img, _ in ok],
            )
            for (k, _, _), score in zip(ok, scores, strict=True):
                verdicts[k] = self._verdict(score)
        return [v for v in verdicts if v is not None]

    def _verdict(self, score: float) -> Verdict:
        threshold = self.config.min_score
        if threshold is not None and (score < threshold or math.isnan(score)):
            return Verdict.reject(self.name, f"low clip score: {score:.3f} < {threshold:g}", score)
        return Verdict.ok(self.name, score)

    @property
    def _seed_field(self) -> str | None:
        src = self.config.text_from
        return src.split(".", 1)[1] if src.startswith("seed.") else None

    def text_of(self, c: Candidate) -> str | None:
        """The text scored for `c`: its output, or its seed field (None when the seed lacks it)."""
        field = self._seed_field
        if field is None:
            return c.text
        value = c.seed.get(field)
        return None if value is None else str(value)

    def scores(self, images: list[Any], texts: list[str], image_of: list[int] | None = None) -> list[float]:
        """Cosine of each text with its image: `texts[i]` against `images[image_of[i]]` (default: `images[i]`).

        One forward pass per tower for the whole call; `images` are PIL images.
        """
        import torch

        self.load()
        image_of = list(range(len(texts))) if image_of is None else image_of
        if len(image_of) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(image_of)} image indices")
        tok = self._processor.tokenizer
        encoded = tok(
            texts,
            padding="max_length" if self._pad_to_max else True,
            truncation=True,
            max_length=min(tok.model_max_length, 512),
            return_tensors="pt",
        )
        # Only what the text towers take (some tokenizers add token_type_ids).
        text_in = {k: encoded[k].to(self.device) for k in ("input_ids", "attention_mask") if k in encoded}
        pixels = self._processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, dtype=self._model.dtype)
        with torch.inference_mode():
            text_emb = _embedding(self._model.get_text_features(**text_in))
            image_emb = _embedding(self._model.get_image_features(pixel_values=pixels))
        text_emb = torch.nn.functional.normalize(text_emb.float(), dim=-1)
        image_emb = torch.nn.functional.normalize(image_emb.float(), dim=-1)
        image_emb = image_emb[torch.tensor(image_of, device=image_emb.device)]
        return (text_emb * image_emb).sum(-1).clamp(-1.0, 1.0).tolist()

    def close(self) -> None:
        """Drop the model and give its memory back (it loads again on the next check)."""
        from mmsynth.generators.inprocess.memory import release_memory

        self._model = self._processor = None
        release_memory()


def _embedding(out: Any) -> Any:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor.
    return out if hasattr(out, "dim") else out.pooler_output
