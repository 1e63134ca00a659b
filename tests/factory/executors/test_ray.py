"""`--executor ray` on a local Ray instance (2 CPUs) started here: same records as a local run, a killed
actor costs only its batch, a Ray run resumes locally, and nothing touches Ray without the flag."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from mmsynth.factory.engine.plan import ModelLoadError
from mmsynth.factory.engine.runner import run_recipe
from mmsynth.factory.errors import RecipeError
from mmsynth.factory.executors.ray import RayExecutorError, RayOptions, import_ray
from mmsynth.factory.recipe import RayModelSpec, RaySpec, load_recipe

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def write_recipe(path: Path, *, model_extra: str = "", ray_section: str = "", validators: str = "") -> Path:
    path.write_text(
        textwrap.dedent(
            """\
            name: e2e
            seed: 7
            seeds: {type: scenes, count: 24, image_size: 64}
            models:
              vlm: {backend: transformers, model: "tiny:vlm", batch_size: 8, device: cpu%s}
            tasks:
              - name: captions
                template: caption.short
                model: vlm
                n: 2
                sampling: {temperature: 0.8, max_tokens: 12}
              - name: qa
                template: vqa.pairs
                model: vlm
                inputs: {scene: description}
                sampling: {max_tokens: 16}
            validators:
              - {type: heuristics, min_chars: 4, reject_truncated: false}
              - {type: json_schema}
              - {type: exact_dedup}%s
            output: {chunk_size: 4}
            """
        )
        % (model_extra, validators)
        + ray_section
    )
    return path


def rows(run: Path) -> dict[str, list[tuple[str, str]]]:
    """(id, text) of every row per split, sorted; duplicates kept, so a repeated row shows."""
    out = {}
    for split in ("train", "rejected"):
        got = []
        for f in sorted((run / "data").glob(f"*/{split}-*.parquet")):
            t = pq.read_table(f, columns=["id", "output"]).to_pydict()
            got += zip(t["id"], t["output"], strict=True)
        out[split] = sorted(got)
    return out


def log_keys(run: Path, event: str) -> list[str]:
    import json

    path = run / ".mmsynth" / "requests.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [k for e in lines if e["event"] == event for k in e["keys"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A local run, made while `ray.init` would fail the test: the rows every Ray run must reproduce."""
    base = tmp_path_factory.mktemp("ref")
    recipe = write_recipe(base / "recipe.yaml")
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        # The path the autouse fixture gives every test, so the tiny model is built once.
        mp.setenv("MMSYNTH_HOME", str(tmp_path_factory.getbasetemp() / "mmsynth_home"))
        mp.setattr(ray, "init", lambda *a, **k: calls.append(a))
        started_before = ray.is_initialized()
        run_recipe(recipe, base / "run", progress=False)
        touched = ray.is_initialized() and not started_before
    return recipe, base / "run", calls, touched


@pytest.fixture(scope="module")
def cluster(reference):
    """The local Ray instance the tests use (after the local reference run, which must not see one)."""
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": OFFLINE})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_a_local_run_never_calls_ray_init(reference):
    _, out, calls, touched = reference
    assert (out / "manifest.json").exists()
    assert calls == [] and not touched
    got = rows(out)
    assert got["train"] and got["rejected"]  # the job keeps some records and rejects others


def test_ray_run_gives_the_same_records_as_a_local_run(reference, cluster, tmp_path):
    recipe, ref_out, _, _ = reference
    out = tmp_path / "run"
    result = run_recipe(recipe, out, progress=False, ray=RayOptions(actors=2))
    assert rows(out) == rows(ref_out)
    assert (
        result.stats["records"] == __import__("json").loads((ref_out / "stats.json").read_text())["records"]
    )
    assert sorted(log_keys(out, "sent")) == sorted(log_keys(ref_out, "sent"))
    # Same layout: the same shard files, the same manifest lineage.
    files = lambda run: sorted(p.relative_to(run) for p in (run / "data").rglob("*.parquet"))  # noqa: E731
    assert files(out) == files(ref_out)
    assert ray.is_initialized()  # the run used the test's instance and left it running
    assert not [n for n in ray.util.list_named_actors() if n.startswith("mmsynth-")], "actors left behind"


def test_a_killed_actor_costs_only_its_batch(reference, cluster, tmp_path, capfd):
    recipe, ref_out, _, _ = reference
    out = tmp_path / "run"
    errors = []

    def run():
        try:
            run_recipe(recipe, out, progress=False, ray=RayOptions(actors=2))
        except BaseException as e:  # reported to the test thread
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.time() + 300
    while not log_keys(out, "answered") and worker.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    actors = [n for n in ray.util.list_named_actors() if n.startswith("mmsynth-vlm-")]
    assert len(actors) == 2 and worker.is_alive(), "the run finished before an actor could be killed"
    ray.kill(ray.get_actor(actors[0]), no_restart=True)
    worker.join(timeout=300)
    assert not errors, errors
    assert "replacing it" in capfd.readouterr().err
    got = rows(out)
    for split in got:
        assert len({i for i, _ in got[split]}) == len(got[split]), f"duplicate rows in {split}"
    assert got == rows(ref_out)


def test_a_ray_run_killed_mid_way_resumes_locally(reference, cluster, tmp_path):
    recipe, ref_out, _, _ = reference
    out = tmp_path / "run"
    env = {**os.environ, **OFFLINE}
    cmd = [sys.executable, "-m", "mmsynth.factory.cli.main", "run", str(recipe), "--out", str(out), "-q"]
    proc = subprocess.Popen(
        [*cmd, "--executor", "ray", "--address", cluster, "--ray-actors", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    # Chunk 0 finished: the next chunks are in flight on the actors (answers arrive a batch at a time).
    marker = out / ".mmsynth" / "chunks" / "00000.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the Ray run finished before it could be killed"
    answered = set(log_keys(out, "answered"))
    assert answered
    sent_before = len(log_keys(out, "sent"))

    run_recipe(recipe, out, progress=False)  # locally this time
    assert not answered & set(log_keys(out, "sent")[sent_before:]), "answered requests were sent again"
    assert rows(out) == rows(ref_out)


def test_recipe_checks_refuse_bad_ray_settings_at_their_line(reference, cluster, tmp_path):
    # A model name the recipe does not define.
    bad = write_recipe(tmp_path / "a.yaml", ray_section="ray:\n  models:\n    vlmm: {actors: 2}\n")
    with pytest.raises(RecipeError, match=r"a\.yaml:\d+:\d+: ray\.models\.vlmm: unknown model 'vlmm'.*'vlm'"):
        load_recipe(bad)
    # An unknown key.
    bad = write_recipe(tmp_path / "b.yaml", ray_section="ray:\n  models:\n    vlm: {actor: 2}\n")
    with pytest.raises(RecipeError, match=r"ray\.models\.vlm\.actor"):
        load_recipe(bad)
    # A model on cuda whose actors reserve no GPU: refused before Ray is even asked.
    gpu = write_recipe(tmp_path / "c.yaml", ray_section="ray:\n  models:\n    vlm: {actors: 1}\n")
    gpu.write_text(gpu.read_text().replace("device: cpu", "device: cuda"))
    with pytest.raises(RecipeError, match=r"reserve no GPU"):
        run_recipe(gpu, tmp_path / "c", progress=False, ray=RayOptions())
    assert not (tmp_path / "c").exists()
    # More GPUs than the cluster has (it has none): refused before any actor starts.
    many = write_recipe(tmp_path / "d.yaml", ray_section="ray:\n  models:\n    vlm: {num_gpus: 1}\n")
    with pytest.raises(RecipeError, match=r"d\.yaml:\d+:\d+: ray\.models\.vlm\.num_gpus: .*no node"):
        run_recipe(many, tmp_path / "d", progress=False, ray=RayOptions())
    assert not list(tmp_path.glob("d/data/**/*.parquet"))
    # A validator on cuda when the driver has no GPU.
    val = write_recipe(
        tmp_path / "e.yaml",
        validators="\n  - {type: semantic_dedup, device: cuda}",
    )
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RecipeError, match=r"validators\[3\]\.device: validators run in the Ray driver"):
            run_recipe(val, tmp_path / "e", progress=False, ray=RayOptions())
    # A model the actor cannot load: a load error before any record, and no actor left behind.
    broken = write_recipe(tmp_path / "h.yaml")
    broken.write_text(broken.read_text().replace("device: cpu", "device: nonsense"))
    with pytest.raises(ModelLoadError, match=r"model 'vlm'.*could not be loaded.*in a Ray actor"):
        run_recipe(broken, tmp_path / "h", progress=False, ray=RayOptions(actors=2))
    assert not list(tmp_path.glob("h/data/**/*.parquet"))
    assert not [n for n in ray.util.list_named_actors() if n.startswith("mmsynth-")]
    # Kept: the same ray settings are fine, and they do not change the fingerprint (a run resumes
    # under any actor count).
    ok = write_recipe(tmp_path / "f.yaml", ray_section="ray:\n  models:\n    vlm: {actors: 2, num_cpus: 1}\n")
    plain = write_recipe(tmp_path / "g.yaml")
    assert load_recipe(ok).ray.models["vlm"].actors == 2
    assert load_recipe(ok).fingerprint() == load_recipe(plain).fingerprint()


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayExecutorError, match=r"pip install 'mmsynth\[ray\]'"):
        import_ray()


def test_docs_describe_every_ray_setting():
    docs = (REPO / "docs" / "recipes.md").read_text() + (REPO / "docs" / "ray.md").read_text()
    flat = " ".join(docs.split())
    for model in (RaySpec, RayModelSpec):
        for name, field in model.model_fields.items():
            assert f"`{name}`" in docs and " ".join(field.description.split()) in flat, name
