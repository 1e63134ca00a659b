"""The manifest carries a sha256 per shard; publish refuses a shard that is not the one the run wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmsynth.factory.cli.main import main
from mmsynth.factory.dataset.shards import file_sha256, shard_hashes
from mmsynth.factory.publish.plan import RepoOp
from mmsynth.factory.publish.upload import PublishAborted, check_unchanged

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, scene_vlm) -> Path:
    out = tmp_path_factory.mktemp("hashes") / "run"
    assert main(["run", str(REPO / "recipes" / "quickstart.yaml"), "--out", str(out), "-q"]) == 0
    return out


def copy(run: Path, dst: Path) -> Path:
    return Path(shutil.copytree(run, dst, ignore=shutil.ignore_patterns("cache")))


@pytest.mark.slow
def test_the_manifest_records_every_shards_sha256(finished):
    manifest = json.loads((finished / "manifest.json").read_text())
    files = sorted(p.relative_to(finished).as_posix() for p in (finished / "data").glob("*/*.parquet"))
    assert sorted(manifest["shards"]) == files and files
    for rel, sha in manifest["shards"].items():
        assert sha == file_sha256(finished / rel)


@pytest.mark.slow
def test_a_shard_replaced_by_one_with_the_same_row_count_is_refused(finished, tmp_path, capsys):
    run = copy(finished, tmp_path / "run")
    shard = sorted((run / "data").glob("*/*.parquet"))[-1]
    table = pq.read_table(shard)
    outputs = table.column("output").to_pylist()
    outputs[0] = (outputs[0] or "") + " (edited)"
    swapped = table.set_column(table.schema.get_field_index("output"), "output", pa.array(outputs))
    pq.write_table(swapped, shard)
    assert pq.ParquetFile(shard).metadata.num_rows == table.num_rows  # the row count check passes
    rel = shard.relative_to(run).as_posix()
    code = main(
        ["publish", str(run), "--repo", "me/q", "--dry-run", str(tmp_path / "o"), "--include-rejects"]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"{rel} is not the shard the run wrote" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_run_without_hashes_still_publishes_with_a_warning(finished, tmp_path, capsys):
    run = copy(finished, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["shards"]  # what runs made before the hashes look like
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert main(["publish", str(run), "--repo", "me/q", "--dry-run", str(tmp_path / "o")]) == 0
    assert "records no shard hashes" in capsys.readouterr().err


def test_shard_hashes_name_every_parquet_file_by_its_run_relative_path(tmp_path):
    (tmp_path / "data" / "qa").mkdir(parents=True)
    (tmp_path / "data" / "qa" / "train-00000.parquet").write_bytes(b"one")
    assert shard_hashes(tmp_path) == {
        "data/qa/train-00000.parquet": "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
    }


def test_a_staged_file_changed_after_the_plan_is_not_uploaded(tmp_path):
    f = tmp_path / "train-00000-of-00001.parquet"
    f.write_bytes(b"planned bytes")
    op = RepoOp.from_file("data/qa/train-00000-of-00001.parquet", f)
    check_unchanged([op, RepoOp.from_bytes("README.md", b"card")])
    f.write_bytes(b"other bytes!!")  # same size, other content
    with pytest.raises(PublishAborted, match="changed after the publish plan was made"):
        check_unchanged([op])
