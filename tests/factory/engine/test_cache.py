"""The response cache: hits and misses, failed answers, writers on several connections, and a write
torn by kill -9 that leaves whole batches only."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mmsynth.factory.engine.cache import ResponseCache
from mmsynth.generators.types import Generation, Output


def gen(text: str) -> Generation:
    return Generation((Output(text, "stop"),), 3, 4, None, {"replica": "r"})


def test_hits_misses_and_round_trip(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    stamp = cache.put_many([("a", gen("x")), ("b", gen("y"))])
    found = cache.get_many(["a", "b", "nope", "a"])
    assert set(found) == {"a", "b"}
    assert found["a"] == (gen("x"), stamp)
    assert cache.get_many([]) == {}
    cache.close()
    again = ResponseCache(tmp_path / "c.sqlite")  # it persists
    assert len(again) == 2 and again.get_many(["b"])["b"][0].outputs[0].text == "y"


def test_failed_answers_are_hits_unless_retry_failed(tmp_path):
    path = tmp_path / "c.sqlite"
    ResponseCache(path).put_many([("bad", Generation.failed("400: too long")), ("good", gen("x"))])
    assert set(ResponseCache(path).get_many(["bad", "good"])) == {"bad", "good"}
    assert set(ResponseCache(path, retry_failed=True).get_many(["bad", "good"])) == {"good"}


def test_more_keys_than_sqlite_binds_at_once(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put_many((f"k{i}", gen(str(i))) for i in range(1234))
    assert len(cache.get_many(f"k{i}" for i in range(1300))) == 1234


def test_a_batch_that_fails_half_way_stores_nothing(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")

    def rows():
        yield "a", gen("x")
        raise OSError("the answer could not be read")

    with pytest.raises(OSError):
        cache.put_many(rows())
    assert len(cache) == 0
    cache.put_many([("b", gen("y"))])  # and the cache still works
    assert len(cache) == 1


def test_concurrent_writers_on_their_own_connections(tmp_path):
    path = tmp_path / "c.sqlite"
    ResponseCache(path).close()
    errors = []

    def write(w: int) -> None:
        try:
            cache = ResponseCache(path)
            for b in range(20):
                cache.put_many((f"w{w}-{b}-{i}", gen(f"{w}.{b}.{i}")) for i in range(25))
            cache.close()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    cache = ResponseCache(path)
    assert len(cache) == 4 * 20 * 25
    assert cache.get_many(["w3-19-24"])["w3-19-24"][0].outputs[0].text == "3.19.24"


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mmsynth.factory.engine.cache import ResponseCache
    from mmsynth.generators.types import Generation, Output

    cache = ResponseCache(Path(sys.argv[1]))
    text = "x" * 2000
    b = 0
    while True:
        cache.put_many((f"b{b}-{i}", Generation((Output(text, "stop"),), 1, 1)) for i in range(50))
        b += 1
        if b == 5:
            print("writing", flush=True)
    """
)


def test_kill_9_mid_write_leaves_whole_batches(tmp_path):
    path = tmp_path / "c.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    cache = ResponseCache(path)
    n = len(cache)
    assert n >= 250 and n % 50 == 0  # whole batches only
    batches = n // 50
    found = cache.get_many(f"b{b}-{i}" for b in range(batches) for i in range(50))
    assert len(found) == n and all(g.outputs[0].text == "x" * 2000 for g, _ in found.values())
