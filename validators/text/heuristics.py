"""Cheap text checks: empty, length, repetition, refusals, truncation, prompt echo, broken characters.

Checks run in a fixed order and the first failure is the reason. Each reason starts with a stable prefix
("too short", "repetition", ...) followed by ':' and the numbers, so stats group them by prefix.

Structured tasks: length, word counts, truncation and charset look at the raw text; repetition, refusal
and prompt echo look at the string values of the parsed JSON (keys and punctuation would otherwise
count as repetition), or at the raw text when nothing was parsed.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mmsynth.validators.base import ConfiguredValidator, ValidatorConfig
from mmsynth.validators.types import Candidate, Verdict

DEFAULT_REFUSAL_PHRASES: tuple[str, ...] = (
    "as an ai",
    "as a language model",
    "as an ai language model",
    "i'm sorry, but",
    "i am sorry, but",
    "i apologize, but",
    "i cannot help",
    "i can't help with",
    "i cannot assist",
    "i can't assist",
    "i cannot provide",
    "i can't provide",
    "i cannot fulfill",
    "i can't fulfill",
    "i'm unable to",
    "i am unable to",
    "i'm not able to",
    "i cannot see the image",
    "i can't see the image",
    "i cannot view images",
    "i can't view images",
)

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
# Control characters that are not layout (tab, newline, carriage return), surrogates, private use, unassigned.
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn"})
_LAYOUT = frozenset("\t\n\r")
# The same set within ASCII (control characters but layout: ASCII has no Cs, Co or Cn): most outputs
# are ASCII, and one regex pass is several times cheaper than a category look-up per character.
_ASCII_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class HeuristicsConfig(ValidatorConfig):
    type: Literal["heuristics"] = Field(default="heuristics", description="Registry key: 'heuristics'.")
    reject_empty: bool = Field(default=True, description="Reject outputs that are empty or whitespace only.")
    min_chars: int | None = Field(
        default=None,
        ge=0,
        description="Fewest characters (surrounding whitespace stripped); null: no minimum.",
    )
    max_chars: int | None = Field(
        default=None, ge=1, description="Most characters (surrounding whitespace stripped); null: no maximum."
    )
    min_words: int | None = Field(default=None, ge=0, description="Fewest words; null: no minimum.")
    max_words: int | None = Field(default=None, ge=1, description="Most words; null: no maximum.")
    ngram_size: int = Field(
        default=3, ge=1, le=10, description="Word n-gram length for the repetition checks."
    )
    min_ngrams: int = Field(
        default=10,
        ge=1,
        description="Skip the n-gram repetition checks on outputs with fewer n-grams than this (shares of short texts are noise).",
    )
    max_top_ngram_share: float | None = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Reject when the most frequent n-gram (occurring at least twice) makes up more than this share of all n-grams; null: off.",
    )
    max_duplicate_ngram_share: float | None = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Reject when more than this share of n-grams repeat an earlier one; null: off.",
    )
    max_char_run: int | None = Field(
        default=30,
        ge=2,
        description="Reject a run of the same non-whitespace character longer than this ('aaaa...'); null: off.",
    )
    check_refusal: bool = Field(
        default=True, description="Reject outputs containing a refusal/boilerplate phrase."
    )
    refusal_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSAL_PHRASES),
        description="Refusal phrases, matched case-insensitively as whole words anywhere in the output; replaces the built-in list.",
    )
    extra_refusal_phrases: list[str] = Field(
        default_factory=list, description="Phrases added to `refusal_phrases` (keeps the built-in list)."
    )
    reject_truncated: bool = Field(
        default=True, description="Reject outputs the model stopped at max_tokens (finish_reason 'length')."
    )
    max_prompt_echo: float | None = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Reject when more than this share of the output's word n-grams also occur in the prompt; null: off. Skipped when the prompt text is empty.",
    )
    echo_ngram_size: int = Field(
        default=5,
        ge=1,
        le=20,
        description="Word n-gram length for the prompt-echo check (outputs shorter are skipped).",
    )
    max_control_char_share: float | None = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Reject when more than this share of characters are control/non-printable (tab and newlines excepted); null: off.",
    )
    max_replacement_char_share: float | None = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Reject when more than this share of characters are U+FFFD replacement characters (broken decoding); null: off.",
    )

    scripts: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Writing systems the output must be in, by Unicode script name (e.g. `[latin]`, `[cjk, hiragana, katakana]`); letters in other scripts count against `min_script_share`. null: off.",
    )
    min_script_share: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="With `scripts`: the least share of letters that must be in those scripts.",
    )

    @field_validator("refusal_phrases", "extra_refusal_phrases")
    @classmethod
    def _no_blank_phrases(cls, phrases: list[str]) -> list[str]:
        if any(not p.strip() for p in phrases):
            raise ValueError("refusal phrases must not be blank")
        return phrases

    @model_validator(mode="after")
    def _bounds_ordered(self) -> HeuristicsConfig:
        for lo, hi in (("min_chars", "max_chars"), ("min_words", "max_words")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a}) is greater than {hi} ({b})")
        return self


class HeuristicsValidator(ConfiguredValidator[HeuristicsConfig]):
    """Runs the enabled checks of its config in order; the first failure rejects with a short reason."""

    config_cls = HeuristicsConfig

    def __init__(self, config: HeuristicsConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        phrases = [*cfg.refusal_phrases, *cfg.extra_refusal_phrases] if cfg.check_refusal else []
        # Longest first so the reason names the most specific phrase; lookarounds keep "as an ai" out of "as an aid".
        alternation = "|".join(re.escape(_normalise(p)) for p in sorted(set(phrases), key=len, reverse=True))
        self._refusal = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)") if phrases else None
        self._char_run = (
            re.compile(rf"(\S)\1{{{cfg.max_char_run},}}") if cfg.max_char_run is not None else None
        )

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        return [self._check_one(c) for c in candidates]

    def _check_one(self, c: Candidate) -> Verdict:
        failure = self.first_failure(c)
        if failure is None:
            return Verdict.ok(self.name)
        reason, score = failure
        return Verdict.reject(self.name, reason, score)

    def first_failure(self, c: Candidate) -> tuple[str, float | None] | None:
        """The first failing check as (reason, score), or None when every enabled check passes."""
        cfg = self.config
        raw = c.text.strip()
        if cfg.reject_empty and not raw:
            return "empty output", None
        n_chars = len(raw)
        if cfg.min_chars is not None and n_chars < cfg.min_chars:
            return f"too short: {n_chars} < {cfg.min_chars} chars", None
        if cfg.max_chars is not None and n_chars > cfg.max_chars:
            return f"too long: {n_chars} > {cfg.max_chars} chars", None
        if cfg.min_words is not None or cfg.max_words is not None:
            n_words = len(_WORD.findall(raw))
            if cfg.min_words is not None and n_words < cfg.min_words:
                return f"too short: {n_words} < {cfg.min_words} words", None
            if cfg.max_words is not None and n_words > cfg.max_words:
                return f"too long: {n_words} > {cfg.max_words} words", None

        content = _content_text(c)
        words = _WORD.findall(content.lower())
        failure = self._repetition(content, words) or self._refusal_match(content)
        if failure is not None:
            return failure
        if cfg.reject_truncated and c.finish_reason == "length":
            return "truncated: finish_reason=length", None
        return self._prompt_echo(words, c.prompt_text) or self._charset(c.text) or self._script(content)

    def _repetition(self, content: str, words: list[str]) -> tuple[str, float] | None:
        cfg, n = self.config, self.config.ngram_size
        grams = _ngrams(words, n)
        if len(grams) >= cfg.min_ngrams:
            counts = Counter(grams)
            top = counts.most_common(1)[0][1]
            share = top / len(grams)
            if cfg.max_top_ngram_share is not None and top > 1 and share > cfg.max_top_ngram_share:
                return (
                    f"repetition: top {n}-gram covers {share:.0%} of {n}-grams (max {cfg.max_top_ngram_share:.0%})",
                    share,
                )
            dup = 1 - len(counts) / len(grams)
            if cfg.max_duplicate_ngram_share is not None and dup > cfg.max_duplicate_ngram_share:
                return (
                    f"repetition: {dup:.0%} of {n}-grams are repeats (max {cfg.max_duplicate_ngram_share:.0%})",
                    dup,
                )
        if self._char_run is not None:
            m = self._char_run.search(content)
            if m is not None:
                run = m.end() - m.start()
                return f"repetition: {m.group(1)!r} repeated {run} times (max {cfg.max_char_run})", float(run)
        return None

    def _refusal_match(self, content: str) -> tuple[str, None] | None:
        if self._refusal is None:
            return None
        m = self._refusal.search(_normalise(content))
        return (f"refusal: matched '{m.group(0)}'", None) if m else None

    def _prompt_echo(self, words: list[str], prompt_text: str) -> tuple[str, float] | None:
        cfg = self.config
        if cfg.max_prompt_echo is None or not prompt_text.strip():
            return None
        out = _ngrams(words, cfg.echo_ngram_size)
        if not out:
            return None
        # An n-gram of words is in the prompt's word sequence when its space-joined text is in the prompt's,
        # between spaces (words hold no spaces): substring searches instead of a set of the prompt's n-grams.
        prompt = f" {' '.join(_WORD.findall(prompt_text.lower()))} "
        share = sum(f" {' '.join(g)} " in prompt for g in out) / len(out)
        if share > cfg.max_prompt_echo:
            return (
                f"prompt echo: {share:.0%} of output copies the prompt (max {cfg.max_prompt_echo:.0%})",
                share,
            )
        return None

    def _charset(self, text: str) -> tuple[str, float] | None:
        cfg = self.config
        if not text:
            return None
        if cfg.max_control_char_share is not None:
            if text.isascii():
                bad = len(_ASCII_BAD.findall(text))
            else:
                bad = sum(
                    1 for ch in text if ch not in _LAYOUT and unicodedata.category(ch) in _BAD_CATEGORIES
                )
            share = bad / len(text)
            if share > cfg.max_control_char_share:
                return (
                    f"charset: {share:.0%} non-printable/control characters (max {cfg.max_control_char_share:.0%})",
                    share,
                )
        if cfg.max_replacement_char_share is not None:
            share = text.count("\ufffd") / len(text)
            if share > cfg.max_replacement_char_share:
                return (
                    f"charset: {share:.0%} replacement characters U+FFFD (max {cfg.max_replacement_char_share:.0%})",
                    share,
                )
        return None

    def _script(self, content: str) -> tuple[str, float] | None:
        # The script is the first word of a letter's Unicode name (LATIN SMALL LETTER A, CJK UNIFIED ...):
        # a cheap language-family check that needs no model and no download.
        allowed = self.config.scripts
        if not allowed:
            return None
        wanted = {s.upper() for s in allowed}
        letters = [ch for ch in content if ch.isalpha()]
        if not letters:
            return None
        foreign = Counter(_script_of(ch) for ch in letters if _script_of(ch) not in wanted)
        share = 1 - sum(foreign.values()) / len(letters)
        if share < self.config.min_script_share:
            top = foreign.most_common(1)[0][0].lower()
            return (
                f"script: {share:.0%} of letters in {', '.join(allowed)} (min {self.config.min_script_share:.0%}; most others {top})",
                share,
            )
        return None


def _script_of(ch: str) -> str:
    return unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(n)), strict=False))  # shorter tails end it


def _normalise(text: str) -> str:
    # Models write both ' and ’; phrases are written with '.
    return _SPACE.sub(" ", text.lower().replace("\u2019", "'"))


def _content_text(c: Candidate) -> str:
    """The text the content checks read: string values of the parsed JSON when there is one, else the raw text."""
    if c.parsed is not None:
        return "\n".join(_strings(c.parsed))
    return c.text


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
