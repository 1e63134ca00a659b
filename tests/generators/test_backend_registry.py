"""The backend registry: names to lazily imported classes, helpful errors for unknown names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmsynth.generators import BACKENDS, Backend, build_backend, known_backends


def test_unknown_backend_lists_the_names_and_suggests_one():
    with pytest.raises(ValueError) as err:
        build_backend("transformer", model="x")
    msg = str(err.value)
    assert "'transformer'" in msg
    assert ", ".join(known_backends()) in msg
    assert "Did you mean 'transformers'?" in msg
    with pytest.raises(ValueError, match="known backends: diffusers, transformers") as err:
        build_backend("zzz")
    assert "Did you mean" not in str(err.value)


def test_build_backend_constructs_without_loading(tiny_lm):
    backend = build_backend("transformers", model="tiny:lm", path=str(tiny_lm), batch_size=4)
    assert isinstance(backend, Backend)
    assert (backend.name, backend.model, backend.batch_size, backend.max_concurrency) == (
        "transformers",
        "tiny:lm",
        4,
        1,
    )
    assert backend.revision.startswith("local-")
    assert backend.is_vlm is None  # nothing loaded yet


def test_every_registered_path_imports():
    from mmsynth.generators.registry import backend_class

    assert "transformers" in BACKENDS
    for name in BACKENDS:
        assert backend_class(name).name == name


def test_importing_generators_does_not_import_torch():
    code = (
        "import sys, mmsynth.generators as g; "
        "heavy = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]; "
        "assert not heavy, heavy; print(g.known_backends())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "transformers" in out.stdout
