"""The one card writer (`card_text`) and the run folder's README.md written with it."""

from __future__ import annotations

import pytest
import yaml
from huggingface_hub import DatasetCard

from mmsynth.factory.dataset.card import card_text, dataset_configs, write_card


def test_card_text_keeps_key_order_and_unicode_and_the_body_as_is():
    meta = {
        "tags": ["synthetic"],
        "pretty_name": "Ünïcode ✓",
        "license": None,
        "configs": [{"config_name": "a"}],
    }
    text = card_text(meta, "\n# Title\n")
    head, body = text.removeprefix("---\n").split("\n---\n", 1)
    assert body == "\n# Title\n"
    assert list(yaml.safe_load(head)) == ["tags", "pretty_name", "configs"]  # None is left out
    assert "Ünïcode ✓" in head  # written as is, not escaped
    assert DatasetCard(text).data.to_dict() == {k: v for k, v in meta.items() if v is not None}


def test_card_text_refuses_metadata_the_card_rewrites():
    # DatasetCardData renames train_eval_index to train-eval-index: the card would not say what was asked.
    with pytest.raises(ValueError, match="did not parse back"):
        card_text({"train_eval_index": [{"config": "x"}]}, "")


def test_run_folder_card(tmp_path):
    for task, split in [("captions", "train"), ("captions", "rejected"), ("qa", "rejected")]:
        (tmp_path / "data" / task).mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / task / f"{split}-00000.parquet").touch()
    stats = {
        "records": {"accepted": 3, "rejected": 5},
        "tasks": {"captions": {"accepted": 3, "rejected": 1}, "qa": {"accepted": 0, "rejected": 4}},
    }
    write_card(tmp_path, "demo", ["captions", "qa"], stats, {"models": {"vlm": {"model": "tiny:vlm"}}})
    text = (tmp_path / "README.md").read_text()
    card = DatasetCard(text)
    assert card.data.to_dict() == {
        "configs": dataset_configs(tmp_path, ["captions", "qa"]),
        "tags": ["synthetic", "mmsynth"],
    }
    configs = {c["config_name"]: [f["split"] for f in c["data_files"]] for c in card.data.configs}
    assert configs == {
        "default": ["train", "rejected"],
        "captions": ["train", "rejected"],
        "qa": ["rejected"],
    }
    assert card.text.startswith("# demo\n\nSynthetic data made by mmsynth") and text.endswith("`.\n")
    assert "| qa | 0 | 4 |" in card.text and '"model": "tiny:vlm"' in card.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "data"]  # no temp file left
