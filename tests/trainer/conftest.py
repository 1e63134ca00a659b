"""Fixtures for the trainer tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainer_helpers import png_bytes


@pytest.fixture
def jsonl_baseline(tmp_path) -> Path:
    (tmp_path / "img.png").write_bytes(png_bytes())
    rows = [
        {"image": "img.png", "caption": "a red square"},
        {"image": "img.png", "question": "What colour is it?", "answers": ["red"] * 9 + ["pink"]},
        {"prompt": "2+2=", "target": "4"},
        {"text": "plain text for language modelling"},
        {"unrelated": 1},
    ]
    path = tmp_path / "base.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path
