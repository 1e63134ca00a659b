"""`mmsynth view` on a 100,000-record run: paging, sorting and search answer, and the server never holds
the run in memory.

The run is written through the factory's shard writer (about 40 s on a loaded 2-core machine, hence
slow). Its images are random noise that Parquet stores once per shard, so the folder is small while
loading every row's image would take ~1.9 GB: the server's peak RSS shows whether it did. Response
times are printed (run with -s), not asserted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from studio_browser import mmsynth_server
from viewer_runs import write_big_run

pytestmark = pytest.mark.slow

RECORDS = 100_000
SHARD_ROWS = 1000


def _memory_mb(pid: int) -> tuple[int, int]:
    """(peak RSS, RSS) of a process in MiB, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    now = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    return peak // 1024, now // 1024


@pytest.fixture(scope="module")
def big_run(tmp_path_factory) -> Path:
    start = time.perf_counter()
    run = write_big_run(tmp_path_factory.mktemp("big") / "run", RECORDS, shard_rows=SHARD_ROWS)
    size = sum(f.stat().st_size for f in run.glob("data/*/*.parquet"))
    print(
        f"\nwrote {RECORDS} records in {time.perf_counter() - start:.1f} s, {size / 2**20:.0f} MiB of shards"
    )
    return run


@pytest.fixture(scope="module")
def server(big_run, tmp_path_factory):
    if not Path("/proc/self/status").exists():
        pytest.skip("reads peak RSS from /proc (Linux)")
    log = tmp_path_factory.mktemp("log") / "view.log"
    with mmsynth_server(["view", big_run], log, "/static/viewer.css", timeout=180) as served:
        yield served


def test_paging_sorting_and_search_on_100k_records_without_loading_the_run(server, big_run):
    url, proc = server
    first = pq.read_table(next(big_run.glob("data/captions/*.parquet")), columns=["image"]).to_pylist()
    image_bytes = RECORDS * sum(len(r["image"]["bytes"]) for r in first) / len(first)
    start_peak, _ = _memory_mb(proc.pid)

    def get(**params):
        t = time.perf_counter()
        r = httpx.get(url + "/api/records", params=params, timeout=300)
        assert r.status_code == 200, r.text
        data = r.json()
        print(f"{params}: {data['total']} hits, {data['ms']} ms in the server, "
              f"{(time.perf_counter() - t) * 1000:.0f} ms wall, peak/now RSS {_memory_mb(proc.pid)} MiB")  # fmt: skip
        return data

    data = get()
    assert data["total"] == RECORDS and data["pages"] == -(-RECORDS // 24)
    assert len(data["records"]) == 24 and all(
        r["image"].startswith("data:image/png") for r in data["records"]
    )
    last = get(page=data["pages"])
    assert len(last["records"]) == RECORDS - (data["pages"] - 1) * 24
    middle = get(page=2000, per_page=50)
    assert len(middle["records"]) == 50 and all(r["image"] for r in middle["records"])

    top = get(sort="score:judge", order="desc")
    scores = [next(v["score"] for v in r["verdicts"] if v["validator"] == "judge") for r in top["records"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.999
    deep = get(sort="score:judge", order="desc", page=3000)
    deep_scores = [
        next(v["score"] for v in r["verdicts"] if v["validator"] == "judge") for r in deep["records"]
    ]
    assert max(deep_scores) <= min(scores)

    low = get(reason="judge: low score")
    assert 0.15 * RECORDS < low["total"] < 0.25 * RECORDS  # the judge rejects scores under 0.2
    assert all(r["reject_reason"] == "judge: low score" for r in low["records"])

    hit = get(q="#99999")
    assert [r["id"] for r in hit["records"]] == ["captions-99999-0"]
    again = get(q="#99999", page=1)  # the search mask is cached: paging does not scan again
    assert again["total"] == 1
    ranged = get(validator="judge", score_min=0.5, score_max=0.6, page=10)
    assert ranged["records"] and all(
        0.5 <= next(v["score"] for v in r["verdicts"] if v["validator"] == "judge") <= 0.6
        for r in ranged["records"]
    )
    for path in ("/api/stats", "/api/facets", "/api/records/captions-99999-0"):
        t = time.perf_counter()
        assert httpx.get(url + path, timeout=300).status_code == 200
        print(f"{path}: {(time.perf_counter() - t) * 1000:.0f} ms wall")

    peak, _ = _memory_mb(proc.pid)
    growth = peak - start_peak
    print(
        f"server RSS: {start_peak} MiB once indexed, peak {peak} MiB (+{growth} paging); "
        f"every row's image in memory would be {image_bytes / 2**20:.0f} MiB"
    )
    # Generous: Python, the libraries, the index and one shard's decoded rows at a time, never the run.
    assert peak * 2**20 < 0.3 * image_bytes
    assert growth * 2**20 < 0.2 * image_bytes
