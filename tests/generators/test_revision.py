"""resolve_revision: content hashes for local folders, commit shas for Hub ids."""

from __future__ import annotations

import shutil

from mmsynth.generators.revision import resolve_revision

SHA = "0123456789abcdef0123456789abcdef01234567"


def _folder(tmp_path, name="m"):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text('{"hidden_size": 128}')
    (d / "model.safetensors").write_bytes(b"\0" * 1000)
    return d


def test_local_folder_revision_is_stable_and_follows_content(tmp_path):
    d = _folder(tmp_path)
    rev = resolve_revision(str(d), None)
    assert rev.startswith("local-") and len(rev) == len("local-") + 16
    assert resolve_revision(str(d), "main") == rev  # a folder's content is its revision
    assert resolve_revision(str(shutil.copytree(d, tmp_path / "copy")), None) == rev  # mtimes do not count

    (d / "config.json").write_text('{"hidden_size": 256}')
    changed = resolve_revision(str(d), None)
    assert changed != rev
    (d / "model.safetensors").write_bytes(b"\1" + b"\0" * 999)
    assert resolve_revision(str(d), None) not in (rev, changed)


def test_large_weight_files_are_sampled_but_still_tracked(tmp_path):
    d = _folder(tmp_path)
    big = d / "model-00001-of-00002.safetensors"
    big.write_bytes(b"\0" * (6 << 20))
    rev = resolve_revision(str(d), None)
    with big.open("r+b") as f:  # a change in the first window (where the safetensors header lives)
        f.write(b"\1")
    assert resolve_revision(str(d), None) != rev


def test_a_real_model_folder_keeps_its_revision_when_copied_and_loses_it_when_a_weight_changes(
    tiny_lm, tmp_path
):
    rev = resolve_revision(str(tiny_lm), None)
    copy = shutil.copytree(tiny_lm, tmp_path / "elsewhere" / "lm")
    assert resolve_revision(str(copy), None) == rev  # same bytes at another path: the same model

    (weights,) = copy.glob("*.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight (hashed whole or in the last window alike)
    weights.write_bytes(bytes(data))
    changed = resolve_revision(str(copy), None)
    assert changed != rev
    assert resolve_revision(str(tiny_lm), None) == rev  # the original is untouched

    (copy / ".cache").mkdir()
    (copy / ".cache" / "lock").write_text("x")  # download/lock leftovers are not the model
    assert resolve_revision(str(copy), None) == changed
    weights.rename(copy / "renamed.safetensors")  # names count: a loader looks files up by name
    assert resolve_revision(str(copy), None) not in (rev, changed)


def test_hub_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_revision("org/model", SHA) == SHA
    assert resolve_revision("org/model", None) == "unknown"
    assert resolve_revision("org/model", "v1.0") == "v1.0"

    refs = tmp_path / "hub" / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(SHA)
    assert resolve_revision("org/model", None) == SHA
    assert resolve_revision("org/model", "main") == SHA
    assert resolve_revision("tiny:lm", None) == "unknown"
