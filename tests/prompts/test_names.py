"""The one did-you-mean helper every 'unknown name' message uses."""

from __future__ import annotations

from mmsynth.prompts.names import did_you_mean


def test_close_name_is_suggested_with_a_leading_space():
    assert did_you_mean("max_token", ["max_tokens", "top_p"]) == " Did you mean 'max_tokens'?"


def test_nothing_close_gives_the_empty_string():
    assert did_you_mean("zzz", ["max_tokens"]) == ""
    assert did_you_mean("anything", []) == ""


def test_several_matches_and_a_looser_cutoff():
    assert did_you_mean("caption", ["caption.short", "caption.dense", "qa"], n=3) == (
        " Did you mean 'caption.short' or 'caption.dense'?"
    )
    assert did_you_mean("qwen", ["Qwen/Qwen2.5-VL"]) == ""
    assert did_you_mean("qwen", ["Qwen/Qwen2.5-VL"], cutoff=0.1) == " Did you mean 'Qwen/Qwen2.5-VL'?"
