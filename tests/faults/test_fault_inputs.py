"""Fault injection, fast part: generated hostile seed lines, templates and images. Each ends as an
error that names where it came from (or a valid value), never a crash, hang or runaway memory.

Random but replayable: each test prints MMSYNTH_FAULT_SEED=<n>; set it to rerun the same inputs.
"""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from fault_seed import fault_rng

from mmsynth.factory.seeds import JsonlConfig, iter_seeds
from mmsynth.factory.seeds.base import image_from_bytes
from mmsynth.prompts import TemplateRenderError, parse_template, render_template
from mmsynth.prompts.errors import TemplateError
from mmsynth.prompts.lint import lint_source


def hostile_line(rng) -> bytes:
    kind = rng.choice(["deep", "wide_int", "constant", "bytes", "long_string", "unicode", "truncated", "ok"])
    if kind == "deep":
        n = rng.choice([65, 200, 1500, 100_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        return (opener * n + "1" + closer * n).encode()
    if kind == "wide_int":
        return ('{"n": ' + "9" * rng.choice([4301, 5000, 50_000]) + "}").encode()
    if kind == "constant":
        return ('{"x": ' + rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"]) + "}").encode()
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b" ")
    if kind == "long_string":
        return json.dumps({"idea": "x" * rng.choice([10, 5000, 300_000])}).encode()
    if kind == "unicode":
        text = "".join(
            chr(rng.choice([0x0, 0x7F, 0xD7FF, 0xE000, 0xFFFD, 0x10FFFF, 0x202E])) for _ in range(50)
        )
        return json.dumps({"idea": text}, ensure_ascii=rng.random() < 0.5).encode()
    if kind == "truncated":
        return json.dumps({"idea": "cut", "more": [1, 2, 3]}).encode()[: rng.randrange(1, 20)]
    return json.dumps({"idea": f"a line {rng.randrange(10**6)}"}).encode()


def test_generated_hostile_jsonl_lines_all_become_seeds_or_named_errors(tmp_path, monkeypatch):
    rng = fault_rng("jsonl")
    monkeypatch.setenv("MMSYNTH_SEED_MAX_LINE_BYTES", "200000")  # so that some lines are over it
    lines = [hostile_line(rng) for _ in range(60)]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    seeds = list(iter_seeds(JsonlConfig(path=path)))
    numbered = [i + 1 for i, raw in enumerate(lines) if raw.strip()]
    assert len(seeds) == len(numbered)
    for seed, lineno in zip(seeds, numbered, strict=True):
        if seed.error is not None:
            assert seed.error.startswith(f"hostile.jsonl:{lineno}: "), seed.error
        else:
            assert isinstance(seed.fields, dict)
            json.dumps(seed.fields, allow_nan=False)  # what the output will hold is standard JSON


DANGERS = [
    "{{ 'x' * N }}",
    "{{ 'x'|center(N) }}",
    "{{ 'ab'.ljust(N) }}",
    "{{ '%*d' % (N, 1) }}",
    "{{ '{:>{}}'.format(1, N) }}",
    "{{ range(N)|list|length }}",
    "{{ [0] * N }}",
    "{{ 9 ** N }}",
    "{{ lipsum(N) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(K) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% for i in range(K) %}{% for j in range(K) %}{% for k in range(K) %}.{% endfor %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(K) }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ (['ab' * K] * K)|join }}",
    "{{ [missing] }}",
    "{{ ('x' * K)|wordwrap(1) }}",
    "{{ ('x' * K)|indent(K, true) }}",
    "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
]


def test_generated_hostile_templates_end_in_an_error_or_a_bounded_prompt(monkeypatch):
    rng = fault_rng("templates")
    monkeypatch.setenv("MMSYNTH_TEMPLATE_MAX_CHARS", "200000")
    monkeypatch.setenv("MMSYNTH_TEMPLATE_TIMEOUT", "0.5")
    for _ in range(40):
        parts = rng.sample(DANGERS, rng.randrange(1, 4))
        body = (
            "".join(parts)
            .replace("N", str(rng.choice([10, 10**6, 10**10, 10**100])))
            .replace("K", str(rng.choice([2, 40, 1000, 100_000])))
        )
        text = f"---\nid: t.fault\nversion: 1\n---\n{{% block user %}}{body}{{% endblock %}}\n"
        issues = lint_source(text, "mem/fault.j2")  # lint evaluates nothing: quick whatever the body
        try:
            template = parse_template(text, "mem/fault.j2")
        except TemplateError as e:
            assert e.path == "mem/fault.j2" and e.line and issues, body
            continue
        try:
            prompt = render_template(template, {})
        except TemplateRenderError as e:
            assert e.path == "mem/fault.j2" and e.line == 5, (body, str(e))
            continue
        assert sum(len(getattr(p, "text", "")) for m in prompt.messages for p in m.parts) <= 200_000


def png_header(width: int, height: int, body: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(body))
        + chunk(b"IEND", b"")
    )


def test_generated_extreme_images_are_refused_by_name_without_decoding(monkeypatch):
    from PIL import Image

    rng = fault_rng("images")
    monkeypatch.setenv("MMSYNTH_MAX_IMAGE_PIXELS", "1000000")
    for i in range(30):
        kind = rng.choice(["huge", "wide", "tall", "truncated", "garbage", "small"])
        label = f"img{i}.png"
        if kind in ("huge", "wide", "tall"):
            w, h = {"huge": (100_000, 100_000), "wide": (2**31 - 1, 1), "tall": (1, 2**30)}[kind]
            data = png_header(w, h)
        elif kind == "truncated":
            buf = io.BytesIO()
            Image.new("RGB", (64, 64), (rng.randrange(256), 0, 0)).save(buf, format="PNG")
            data = buf.getvalue()[: rng.randrange(8, 60)]
        elif kind == "garbage":
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        else:
            buf = io.BytesIO()
            Image.new("RGB", (rng.randrange(1, 40), rng.randrange(1, 40))).save(buf, format="PNG")
            data = buf.getvalue()
        image, error = image_from_bytes(data, label)
        if kind == "small":
            assert error is None and image is not None, error
        else:
            assert image is None and label in error, (kind, error)


@pytest.mark.parametrize("depth", [10, 64, 65, 5000])
def test_nesting_right_at_and_past_the_limit(tmp_path, depth):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": ' + "[" * depth + "]" * depth + "}\n")
    (seed,) = iter_seeds(JsonlConfig(path=path))
    # The object itself is one level: 63 lists inside it are 64 levels, the most allowed.
    assert (seed.error is None) == (depth <= 63), seed.error
