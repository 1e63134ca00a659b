"""A small recipe for the studio tests: scenes, the tiny VLM, loose heuristics and the JSON-schema validator.

The heuristics are loosened so that the tiny model's gibberish (even empty) passes them; what decides keep or
reject is then the template: without an output schema every output is kept, with one every output
is rejected by json_schema (the tiny model cannot write JSON). That makes verdicts predictable.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

LOOSE_HEURISTICS = (
    "{type: heuristics, reject_empty: false, min_chars: null, reject_truncated: false, check_refusal: false, max_prompt_echo: null, "
    "max_top_ngram_share: null, max_duplicate_ngram_share: null, max_replacement_char_share: null, "
    "max_control_char_share: null, max_char_run: null}"
)


def write_recipe(folder: Path, model: Path | str, *, templates: bool = True) -> Path:
    """`folder/recipe.yaml`, reading templates from `folder/tmpl` (created empty) when `templates`."""
    folder.mkdir(parents=True, exist_ok=True)
    if templates:
        (folder / "tmpl").mkdir(exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: studio-test
            seed: 5
            {"templates: [tmpl]" if templates else ""}
            seeds: {{type: scenes, count: 6, image_size: 64}}
            models:
              vlm: {{backend: transformers, model: "{model}", batch_size: 8, device: cpu}}
            tasks:
              - name: captions
                template: caption.short
                model: vlm
                n: 2
                sampling: {{temperature: 0.8, max_tokens: 8}}
              - name: qa
                template: vqa.pairs
                model: vlm
                inputs: {{scene: description}}
                sampling: {{max_tokens: 8}}
            validators:
              - {LOOSE_HEURISTICS}
              - {{type: json_schema}}
            """
        )
    )
    return path


def with_schema(source: str) -> str:
    """The caption template asking for JSON: every tiny-model output then fails json_schema."""
    assert "output_schema: null" in source
    return source.replace(
        "output_schema: null",
        "output_schema: {type: object, properties: {caption: {type: string}}, required: [caption]}",
    ).replace("Reply with the sentence only.", 'Reply with JSON: {"caption": "..."}.')
