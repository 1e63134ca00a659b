from __future__ import annotations

import pytest
from pydantic import ValidationError

from mmsynth.validators import HeuristicsConfig, HeuristicsValidator

CLEAN = (
    "A golden retriever sprints across a sunlit meadow, ears flapping, while two children "
    "in red jackets chase it near an old wooden fence."
)
PROMPT = (
    "Describe the image in one detailed sentence. Mention the main subject, what it is doing, "
    "the setting and the light."
)
LOOP = "the cat sat on the mat " * 12

# One case per check: (config fields enabling it, text, candidate fields, reason it must give,
# config fields that disable it).
CASES = {
    "empty": ({}, "   \n\t ", {}, "empty output", {"reject_empty": False}),
    "min_chars": ({"min_chars": 10}, "A dog.", {}, "too short: 6 < 10 chars", {"min_chars": None}),
    "max_chars": ({"max_chars": 20}, CLEAN, {}, f"too long: {len(CLEAN)} > 20 chars", {"max_chars": None}),
    "min_words": ({"min_words": 5}, "A big dog.", {}, "too short: 3 < 5 words", {"min_words": None}),
    "max_words": ({"max_words": 5}, CLEAN, {}, "too long: 23 > 5 words", {"max_words": None}),
    "top_ngram": (
        {},
        "buy now " * 15,
        {},
        "repetition: top 3-gram covers 50% of 3-grams (max 30%)",
        {"max_top_ngram_share": None, "max_duplicate_ngram_share": None},
    ),
    "duplicate_ngrams": (
        {},
        LOOP,
        {},
        "repetition: 91% of 3-grams are repeats (max 50%)",
        {"max_duplicate_ngram_share": None},
    ),
    "char_run": (
        {},
        "A dog " + "a" * 40,
        {},
        "repetition: 'a' repeated 40 times (max 30)",
        {"max_char_run": None},
    ),
    "refusal": (
        {},
        "As an AI, I cannot describe people in images.",
        {},
        "refusal: matched 'as an ai'",
        {"check_refusal": False},
    ),
    "refusal_curly_apostrophe": (
        {},
        "I\u2019m sorry, but I can\u2019t help with that.",
        {},
        "refusal: matched 'i'm sorry, but'",
        {"refusal_phrases": []},
    ),
    "truncated": (
        {},
        CLEAN,
        {"finish_reason": "length"},
        "truncated: finish_reason=length",
        {"reject_truncated": False},
    ),
    "prompt_echo": (
        {},
        "Describe the image in one detailed sentence. Mention the main subject, what it is doing.",
        {"prompt_text": PROMPT},
        "prompt echo: 100% of output copies the prompt (max 80%)",
        {"max_prompt_echo": None},
    ),
    "control_chars": (
        {},
        "A dog\x00\x01\x02\x03 runs in the park",
        {},
        "charset: 15% non-printable/control characters (max 5%)",
        {"max_control_char_share": None},
    ),
    "replacement_chars": (
        {},
        "A d\ufffdg r\ufffdns in the park today",
        {},
        "charset: 7% replacement characters U+FFFD (max 1%)",
        {"max_replacement_char_share": None},
    ),
}


def verdict(make_candidate, text, config=None, **fields):
    return HeuristicsValidator(HeuristicsConfig(**(config or {}))).check([make_candidate(text, **fields)])[0]


@pytest.mark.parametrize("case", CASES)
def test_each_check_rejects_its_case(make_candidate, case):
    enable, text, fields, reason, _ = CASES[case]
    v = verdict(make_candidate, text, enable, **fields)
    assert not v.keep
    assert v.reason == reason
    assert v.validator == "heuristics"


@pytest.mark.parametrize("case", CASES)
def test_each_check_can_be_disabled(make_candidate, case):
    enable, text, fields, _, disable = CASES[case]
    v = verdict(make_candidate, text, {**enable, **disable}, **fields)
    assert v.keep, v.reason


def test_clean_caption_kept_with_every_check_on(make_candidate):
    cfg = {"min_chars": 10, "max_chars": 500, "min_words": 5, "max_words": 80}
    v = verdict(make_candidate, CLEAN, cfg, prompt_text=PROMPT)
    assert v.keep and v.reason is None and v.score is None


def test_failing_share_is_the_score(make_candidate):
    assert verdict(make_candidate, "buy now " * 15).score == pytest.approx(0.5)
    assert verdict(make_candidate, LOOP).score == pytest.approx(64 / 70)  # 70 3-grams, 6 distinct


def test_first_failure_wins(make_candidate):
    # Too short and truncated: the length check comes first.
    v = verdict(make_candidate, "A dog", {"min_chars": 10}, finish_reason="length")
    assert v.reason == "too short: 5 < 10 chars"


def test_refusal_needs_whole_words(make_candidate):
    assert verdict(make_candidate, "A nurse working as an aid in a busy hospital ward.").keep
    assert verdict(make_candidate, "The alias an AI picked for the robot was Rex.").keep


def test_extra_refusal_phrases_keep_the_builtin_list(make_candidate):
    cfg = {"extra_refusal_phrases": ["Certainly! Here is"]}
    assert verdict(make_candidate, "Certainly!  Here is a caption: a dog.", cfg).reason == (
        "refusal: matched 'certainly! here is'"
    )
    assert verdict(make_candidate, "As an AI I see a dog.", cfg).reason == "refusal: matched 'as an ai'"


def test_short_outputs_skip_ngram_repetition(make_candidate):
    # Four 3-grams, one repeated: too few to judge.
    assert verdict(make_candidate, "go go go go go go").keep


def test_top_ngram_must_repeat(make_candidate):
    # One 3-gram is 100% of the 3-grams, but nothing repeats.
    assert verdict(make_candidate, "A red car.", {"min_ngrams": 1}).keep
    assert not verdict(make_candidate, "A red car a red car.", {"min_ngrams": 1}).keep


def test_prompt_echo_off_without_prompt_text(make_candidate):
    assert verdict(
        make_candidate, "Describe the image in one detailed sentence please now.", prompt_text=""
    ).keep


def test_partial_prompt_overlap_kept(make_candidate):
    text = "In one detailed sentence: a golden retriever sprints across a sunlit meadow near a fence."
    assert verdict(make_candidate, text, prompt_text=PROMPT).keep


def test_structured_content_checks_read_json_values(make_candidate):
    # Repeated keys in a list of objects are not repetition ...
    objects = [
        {"label": f"object {i}", "colour": c} for i, c in enumerate(["red", "blue", "green", "grey", "tan"])
    ]
    text = str(objects).replace("'", '"')
    fields = {"parsed": objects, "output_schema": {"type": "array"}}
    assert verdict(make_candidate, text, **fields).keep
    # ... but a refusal inside a value is still a refusal, and raw-text length still counts.
    refusal = {"answer": "I'm sorry, but I cannot see the image."}
    fields = {"parsed": refusal, "output_schema": {"type": "object"}}
    assert (
        verdict(make_candidate, '{"answer": "..."}', **fields).reason == "refusal: matched 'i'm sorry, but'"
    )
    assert verdict(make_candidate, text, {"max_chars": 20}, **fields).reason.startswith("too long: ")


def test_newlines_and_tabs_are_not_control_characters(make_candidate):
    assert verdict(make_candidate, "Line one of text.\n\tLine two of text.\r\n").keep


@pytest.mark.parametrize(
    "fields",
    [
        {"min_chars": 10, "max_chars": 5},
        {"min_words": 3, "max_words": 2},
        {"refusal_phrases": ["  "]},
        {"ngram_size": 0},
    ],
)
def test_bad_config_rejected(fields):
    with pytest.raises(ValidationError):
        HeuristicsConfig(**fields)


def test_script_check_keeps_the_asked_writing_system_and_rejects_another():
    from mmsynth.validators import build_validator
    from mmsynth.validators.types import Candidate

    v = build_validator({"type": "heuristics", "scripts": ["latin"], "min_script_share": 0.9})
    latin, cyrillic, mixed_ok = v.check(
        [
            Candidate("a", "t", "A red circle on a white background, café style.", "stop"),
            Candidate("b", "t", "Красный круг на белом фоне.", "stop"),
            Candidate("c", "t", "A red circle labelled Δ in the middle of a large white page.", "stop"),
        ]
    )
    assert latin.keep and mixed_ok.keep  # one Greek letter in 40 Latin ones is within 90%
    assert not cyrillic.keep and cyrillic.reason.startswith("script: 0% of letters in latin")
    assert "most others cyrillic" in cyrillic.reason


def test_the_ascii_charset_path_counts_what_the_category_path_counts(make_candidate):
    # ASCII text takes a regex instead of a category look-up per character: each of the 128 ASCII
    # characters, in a clean text, is bad for one path exactly when it is bad for the other.
    import unicodedata

    v = HeuristicsValidator(HeuristicsConfig(max_control_char_share=0.0, reject_truncated=False))
    for code in range(128):
        ch = chr(code)
        text = f"A clean caption {ch}of a dog."
        bad = ch not in "\t\n\r" and unicodedata.category(ch) in {"Cc", "Cs", "Co", "Cn"}
        verdict = v.check([make_candidate(text)])[0]
        assert verdict.keep == (not bad), (code, verdict.reason)


def test_prompt_echo_counts_only_whole_word_ngrams_of_the_prompt(make_candidate):
    # The prompt's n-grams are matched as whole words in order: "the light" inside "the lighthouse"
    # is not an echo, and n-grams that straddle the prompt's words in another order are not either.
    cfg = HeuristicsConfig(max_prompt_echo=0.5, echo_ngram_size=2, min_chars=1)
    v = HeuristicsValidator(cfg)
    prompt = "Describe the lighthouse and the setting."
    echo = v.check([make_candidate("describe the lighthouse and the setting", prompt_text=prompt)])[0]
    assert not echo.keep and echo.reason.startswith("prompt echo: 100%")
    fresh = v.check([make_candidate("the light and setting the describe", prompt_text=prompt)])[0]
    assert fresh.keep, fresh.reason
