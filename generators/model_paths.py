"""Where model names point: `tiny:KIND` becomes a random-weight model built once under MMSYNTH_HOME."""

from __future__ import annotations

import os
from pathlib import Path


def mmsynth_home() -> Path:
    """MMSYNTH_HOME, or ~/.cache/mmsynth: where tiny models and other built artefacts live."""
    return Path(os.environ.get("MMSYNTH_HOME") or Path.home() / ".cache" / "mmsynth")


def resolve_model_path(model: str) -> str:
    """`tiny:KIND` -> a random-weight model built once under MMSYNTH_HOME; anything else unchanged."""
    if model.startswith("tiny:"):
        from mmsynth.generators.tiny.builders import make_tiny

        kind = model.split(":", 1)[1]
        return str(make_tiny(kind, mmsynth_home() / "tiny-models" / kind))
    return model
