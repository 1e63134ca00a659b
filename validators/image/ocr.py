"""Text a caption claims is in the image, checked by reading the image with OCR.

A caption that says a sign reads "OPEN" is only right if the image shows OPEN. Claims are found with
regular expressions (quoted strings, `reads STOP`, `the word hello`, ...); the candidate's images are
read with RapidOCR (PP-OCR models in ONNX, shipped inside the `rapidocr-onnxruntime` wheel) and every
claim must be found there, exactly or by a fuzzy match. Candidates that claim no text are kept
without running OCR.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import unicodedata
from collections import OrderedDict
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mmsynth.prompts.media import ImageRef
from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.image.checks import decode_error, image_name
from mmsynth.validators.text.heuristics import _content_text as content_text
from mmsynth.validators.types import Candidate, Verdict

# Each pattern's first group is the claimed text. Quoted strings first; then a word or Capitalised run after
# a verb of writing. The unquoted forms want capitals or digits after says/reads ("reads STOP", "says Hotel
# California") so that "a man reads a book" claims nothing; after "the word(s)" any word counts. A dot
# belongs to a word only between letters ("U.S.A"), so a sentence's full stop ends the claim.
DEFAULT_CLAIM_PATTERNS: tuple[str, ...] = (
    r'"([^"\n]+)"',
    r"“([^”\n]+)”",
    r"«([^»\n]+)»",
    r"‘([^’\n]+)’",
    r"(?<!\w)'([^'\n]+)'(?!\w)",
    r"(?i:\b(?:says|saying|reads|reading|spells|spelling|labell?ed|inscribed with|written)\b)\s*:?\s+"
    r"([A-Z0-9](?:[\w&-]|\.(?=\w))*(?:[ \t]+[A-Z0-9](?:[\w&-]|\.(?=\w))*)*)",
    r"(?i:\bthe\s+words?\b)\s*:?\s+(\w(?:[\w&-]|\.(?=\w))*)",
)

_NOT_WORD = re.compile(r"[\W_]+")
_OCR_CACHE = 256  # a caption task shows one image in several records; OCR it once


class OcrTextConfig(ValidatorConfig):
    type: Literal["ocr_text"] = Field(default="ocr_text", description="Registry key: 'ocr_text'.")
    claim_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CLAIM_PATTERNS),
        description="Regular expressions that find text the output claims is in the image; group 1 of each match is the claimed text. Replaces the built-in list.",
    )
    min_claim_chars: int = Field(
        default=2,
        ge=1,
        description="Ignore claims with fewer letters and digits than this (a quoted 'a' is not a sign).",
    )
    max_claim_chars: int = Field(
        default=48,
        ge=1,
        description="Ignore claims longer than this many characters (long quotes are speech, not text in the picture).",
    )
    min_ratio: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Fuzzy match: a claim counts as found when some run of OCR words matches it with a difflib ratio of at least this (1.0: exact, case and punctuation ignored).",
    )
    min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="Drop OCR lines the recogniser is less sure of than this."
    )
    max_side: int = Field(
        default=960,
        ge=32,
        description="Images are scaled down so their longer side is at most this for text detection; larger reads smaller text, slower.",
    )
    use_angle_cls: bool = Field(
        default=False,
        description="Also run the text-orientation classifier (upside-down text); about 1.5x slower.",
    )
    threads: int | None = Field(
        default=1,
        ge=1,
        description="CPU threads for the OCR models (onnxruntime intra-op); null: onnxruntime's default (all cores). One thread is fastest on busy shared machines.",
    )

    @field_validator("claim_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                compiled = re.compile(p)
            except re.error as e:
                raise ValueError(f"claim pattern {p!r} does not compile: {e}") from None
            if compiled.groups < 1:
                raise ValueError(f"claim pattern {p!r} has no group; group 1 must be the claimed text")
        return patterns

    @model_validator(mode="after")
    def _bounds_ordered(self) -> OcrTextConfig:
        if self.min_claim_chars > self.max_claim_chars:
            raise ValueError(
                f"min_claim_chars ({self.min_claim_chars}) is greater than max_claim_chars ({self.max_claim_chars})"
            )
        return self


class OcrTextValidator(ConfiguredValidator[OcrTextConfig]):
    """Rejects a candidate whose output claims text that OCR does not find in any of its images.

    The OCR model loads on the first candidate that needs it; a missing package fails at construction.
    """

    config_cls = OcrTextConfig

    def __init__(self, config: OcrTextConfig | None = None) -> None:
        super().__init__(config)
        if importlib.util.find_spec("rapidocr_onnxruntime") is None:
            raise ImportError(
                "the ocr_text validator needs the OCR package rapidocr-onnxruntime: "
                "pip install 'mmsynth[hf]' (or pip install rapidocr-onnxruntime)"
            )
        self._patterns = [re.compile(p) for p in self.config.claim_patterns]
        self._engine: Any = None
        self._cache: OrderedDict[str, list[str]] = OrderedDict()  # sha256 -> OCR lines

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        return [self._check_one(c) for c in candidates]

    def _check_one(self, c: Candidate) -> Verdict:
        claims = self.claims(content_text(c))
        if not claims or not c.images:
            return Verdict.ok(self.name)
        lines: list[str] = []
        for i, img in enumerate(c.images):
            try:
                lines.extend(self.read_text(img))
            except ValueError as e:
                return Verdict.reject(
                    self.name, f"undecodable image: {image_name(img, i)}: {decode_error(e)}"
                )
        worst = 1.0
        for claim in claims:
            ratio, best = match_claim(claim, lines)
            worst = min(worst, ratio)
            if ratio < self.config.min_ratio:
                if not lines:
                    return Verdict.reject(self.name, f"text not found: {claim!r} (no text read)", ratio)
                return Verdict.reject(
                    self.name,
                    f"text not found: {claim!r} (best {best!r}, ratio {ratio:.2f} < {self.config.min_ratio:g})",
                    ratio,
                )
        return Verdict.ok(self.name, worst)

    def claims(self, text: str) -> list[str]:
        """The texts `text` claims are in the image, in order of appearance, without repeats."""
        found: list[tuple[int, str]] = []
        for pattern in self._patterns:
            for m in pattern.finditer(text):
                claim = m.group(1).strip().strip(".,;:!?").strip()
                letters = len(_normalise(claim).replace(" ", ""))
                if self.config.min_claim_chars <= letters and len(claim) <= self.config.max_claim_chars:
                    found.append((m.start(1), claim))
        out: dict[str, str] = {}
        for _, claim in sorted(found):
            out.setdefault(_normalise(claim), claim)
        return list(out.values())

    def read_text(self, img: ImageRef) -> list[str]:
        """The lines of text OCR reads in `img` (cached by sha256); ValueError when it does not decode."""
        lines = self._cache.get(img.sha256)
        if lines is not None:
            self._cache.move_to_end(img.sha256)
            return lines
        import numpy as np

        pixels = np.asarray(img.to_pil())
        result, _ = self._ocr()(pixels)
        lines = [text for _box, text, score in result or () if float(score) >= self.config.min_confidence]
        self._cache[img.sha256] = lines
        if len(self._cache) > _OCR_CACHE:
            self._cache.popitem(last=False)
        return lines

    def _ocr(self) -> Any:
        if self._engine is None:
            from rapidocr_onnxruntime import RapidOCR

            cfg = self.config
            kwargs: dict[str, Any] = {
                # "max": scale down large images only. The library default ("min", 736) scales every
                # small image up to 736 px on its short side, which is several times slower.
                "det_limit_type": "max",
                "det_limit_side_len": cfg.max_side,
                "use_cls": cfg.use_angle_cls,
                # The library's own score filter is off: min_confidence filters, so it is one setting.
                "text_score": 0.0,
            }
            if cfg.threads is not None:
                kwargs["intra_op_num_threads"] = cfg.threads
            self._engine = RapidOCR(**kwargs)
        return self._engine


def _normalise(text: str) -> str:
    """Casefolded letters and digits, one space between words: what matching compares."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def match_claim(claim: str, lines: list[str]) -> tuple[float, str]:
    """(best ratio, the OCR text it matched) of `claim` against every run of consecutive OCR words.

    1.0 when the normalised claim occurs in the normalised OCR text. Runs span line ends, so a claim
    split over two lines is found; spaces are ignored too, as OCR often drops or adds them.
    """
    target = _normalise(claim)
    words = _normalise(" ".join(lines)).split()
    if f" {target} " in f" {' '.join(words)} ":
        return 1.0, claim
    n = len(target.split())
    best, best_text = 0.0, ""
    # Runs of one word fewer to one more than the claim (OCR splits and joins words), capped at what was read.
    for size in sorted({min(s, len(words)) for s in range(max(1, n - 1), n + 2)} - {0}):
        for start in range(len(words) - size + 1):
            window = " ".join(words[start : start + size])
            ratio = max(
                difflib.SequenceMatcher(None, target, window).ratio(),
                difflib.SequenceMatcher(None, target.replace(" ", ""), window.replace(" ", "")).ratio(),
            )
            if ratio > best:
                best, best_text = ratio, window
    return best, best_text
