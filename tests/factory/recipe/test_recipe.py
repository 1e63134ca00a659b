"""Recipe loading: typed objects, resolved paths, and errors that point at the line."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from mmsynth.factory.errors import RecipeError, format_loc, locate
from mmsynth.factory.recipe import (
    CacheSpec,
    DocumentSpec,
    ImageSpec,
    ModelSpec,
    OutputSpec,
    Recipe,
    SamplingSpec,
    TaskSpec,
    load_recipe,
)
from mmsynth.factory.seeds import HFDatasetConfig, ImageFolderConfig, JsonlConfig, ScenesConfig
from mmsynth.generators.types import SamplingParams

REPO = Path(__file__).resolve().parents[3]

VALID = """\
name: quickstart
description: "A smoke-test recipe."
seed: 7
templates: [my_templates/]
seeds:
  type: jsonl
  path: data/seeds.jsonl
  image_field: file
  limit: 10
models:
  vlm:
    backend: transformers
    model: tiny:vlm
    batch_size: 8
    dtype: float32
    options: {attn_implementation: eager}
  local:
    backend: transformers
    model: ./models/my-lm
  hub:
    backend: vllm-server
    model: org/some-model
    revision: main
tasks:
  - name: captions
    template: caption.short@2
    model: vlm
    n: 2
    sampling: {temperature: 0.7, max_tokens: 64, stop: ["\\n\\n"]}
    inputs: {image: image}
  - name: questions
    template: vqa.simple
    model: local
validators:
  - type: heuristics
    min_chars: 3
  - type: dedup
output:
  chunk_size: 32
cache:
  path: ../shared_cache
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # Errors name the recipe as the user would type it: relative to the working folder.
    monkeypatch.chdir(tmp_path)


def make_project(tmp_path: Path, text: str = VALID) -> Path:
    """A recipe file plus the files and folders VALID refers to."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "my_templates").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "seeds.jsonl").write_text('{"file": "a.png"}\n')
    (tmp_path / "models" / "my-lm").mkdir(parents=True, exist_ok=True)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(text))
    return recipe


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing `needle`."""
    hits = [i for i, line in enumerate(textwrap.dedent(text).splitlines(), 1) if needle in line]
    return hits[nth - 1]


def col_of(text: str, needle: str, nth: int = 1) -> int:
    line = textwrap.dedent(text).splitlines()[line_of(text, needle, nth) - 1]
    return line.index(needle) + 1


def load_error(tmp_path: Path, text: str) -> RecipeError:
    path = make_project(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return info.value


def only_line(err: RecipeError) -> str:
    lines = str(err).splitlines()
    assert len(lines) == 1, str(err)
    return lines[0]


# --- valid recipes ---------------------------------------------------------------------------------


def test_valid_recipe_loads_into_typed_objects(tmp_path):
    recipe = load_recipe(make_project(tmp_path))
    assert isinstance(recipe, Recipe)
    assert recipe.name == "quickstart" and recipe.seed == 7
    assert isinstance(recipe.seeds, JsonlConfig)
    assert recipe.seeds.path == tmp_path / "data" / "seeds.jsonl"
    assert recipe.seeds.path.is_absolute()
    assert recipe.seeds.limit == 10 and recipe.seeds.image_field == "file"
    assert recipe.templates == [tmp_path / "my_templates"]

    vlm = recipe.models["vlm"]
    assert isinstance(vlm, ModelSpec)
    assert (vlm.model, vlm.batch_size, vlm.dtype, vlm.device) == ("tiny:vlm", 8, "float32", "auto")
    assert vlm.options == {"attn_implementation": "eager"} and vlm.is_tiny and vlm.local_path is None
    assert recipe.models["local"].model == str(tmp_path / "models" / "my-lm")
    assert recipe.models["local"].local_path == tmp_path / "models" / "my-lm"
    # A Hub id is kept as written, and need not exist anywhere.
    assert recipe.models["hub"].model == "org/some-model"
    assert recipe.models["hub"].local_path is None and recipe.models["hub"].revision == "main"

    captions = recipe.tasks[0]
    assert isinstance(captions, TaskSpec) and isinstance(captions.sampling, SamplingSpec)
    assert (captions.template_id, captions.template_version) == ("caption.short", 2)
    assert captions.n == 2 and captions.inputs == {"image": "image"}
    assert captions.sampling.overrides() == {"temperature": 0.7, "max_tokens": 64, "stop": ("\n\n",)}
    assert recipe.tasks[1].template_version is None and recipe.tasks[1].sampling.overrides() == {}

    # Validator entries stay plain mappings: the validators registry checks their settings later.
    assert recipe.validators == [{"type": "heuristics", "min_chars": 3}, {"type": "dedup"}]
    assert recipe.output == OutputSpec(chunk_size=32)
    assert recipe.cache.path == tmp_path.parent / "shared_cache"

    assert recipe.source_path == tmp_path / "recipe.yaml"
    assert isinstance(recipe.source_nodes, yaml.MappingNode)
    assert recipe.base_dir == tmp_path


def test_defaults_and_scene_seed_follows_recipe_seed(tmp_path):
    recipe = load_recipe(
        make_project(
            tmp_path,
            """\
            name: minimal
            seed: 5
            seeds: {type: scenes}
            models: {m: {backend: transformers, model: tiny:lm}}
            tasks: [{name: t, template: caption.short, model: m}]
            """,
        )
    )
    assert isinstance(recipe.seeds, ScenesConfig)
    assert (recipe.seeds.count, recipe.seeds.image_size, recipe.seeds.max_objects) == (64, 64, 3)
    assert recipe.seeds.seed == 5
    assert recipe.output.chunk_size == 256 and recipe.cache == CacheSpec()
    assert recipe.models["m"].batch_size == 16
    assert recipe.tasks[0].n == 1 and recipe.validators == [] and recipe.templates == []


def test_every_seed_source_type_is_in_the_union(tmp_path):
    (tmp_path / "imgs").mkdir()
    from datasets import Dataset

    Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "ds"))
    expected = {
        "{type: scenes, count: 3}": ScenesConfig,
        "{type: image_folder, path: imgs}": ImageFolderConfig,
        "{type: jsonl, path: data/seeds.jsonl}": JsonlConfig,
        "{type: hf_dataset, path: ./ds}": HFDatasetConfig,
        "{type: hf_dataset, path: org/some-dataset}": HFDatasetConfig,
    }
    for seeds, cls in expected.items():
        text = f"name: r\nseeds: {seeds}\nmodels: {{m: {{backend: b, model: tiny:lm}}}}\ntasks: [{{name: t, template: x, model: m}}]\n"
        recipe = load_recipe(make_project(tmp_path, text))
        assert type(recipe.seeds) is cls
    assert load_recipe(make_project(tmp_path, text.replace("org/some-dataset", "ds"))).seeds.path == str(
        tmp_path / "ds"
    )


def test_sampling_fields_match_sampling_params_minus_n():
    # `image` comes from the task's own `image:` block (diffusion settings), not from `sampling:`.
    params = {f.name for f in dataclasses.fields(SamplingParams)} - {"n", "image"}
    assert set(SamplingSpec.model_fields) == params


CONFIG_MODELS = (
    Recipe,
    ModelSpec,
    SamplingSpec,
    TaskSpec,
    ImageSpec,
    DocumentSpec,
    OutputSpec,
    CacheSpec,
    ScenesConfig,
    ImageFolderConfig,
    JsonlConfig,
    HFDatasetConfig,
)


def test_every_field_has_a_description():
    for model in CONFIG_MODELS:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_docs_list_every_field_with_its_description():
    docs = (REPO / "docs" / "recipes.md").read_text()
    flat = re.sub(r"\s+", " ", docs)
    for model in CONFIG_MODELS:
        for name, field in model.model_fields.items():
            name = field.alias or name  # `from` is spelled `from_` in Python
            assert f"`{name}`" in docs, f"docs/recipes.md does not mention {model.__name__}.{name}"
            assert re.sub(r"\s+", " ", field.description) in flat, (
                f"docs/recipes.md lacks the description of {model.__name__}.{name}: {field.description!r}"
            )


# --- fingerprint -----------------------------------------------------------------------------------


def test_fingerprint_ignores_key_order_and_description(tmp_path):
    a = load_recipe(make_project(tmp_path / "a"))
    reordered = VALID.replace(
        "    batch_size: 8\n    dtype: float32\n", "    dtype: float32\n    batch_size: 8\n"
    ).replace("{temperature: 0.7, max_tokens: 64,", "{max_tokens: 64, temperature: 0.7,")
    reordered = reordered.replace('description: "A smoke-test recipe."', 'description: "Other words."')
    assert reordered != VALID
    b = load_recipe(make_project(tmp_path / "b", reordered))
    assert len(a.fingerprint()) == 64
    # Different folders, same content relative to each recipe: same fingerprint.
    assert a.fingerprint() == b.fingerprint()


def test_fingerprint_changes_with_a_sampling_value(tmp_path):
    a = load_recipe(make_project(tmp_path / "a"))
    b = load_recipe(make_project(tmp_path / "b", VALID.replace("temperature: 0.7", "temperature: 0.8")))
    c = load_recipe(make_project(tmp_path / "c", VALID.replace("seed: 7", "seed: 8")))
    assert len({a.fingerprint(), b.fingerprint(), c.fingerprint()}) == 3


# --- errors ----------------------------------------------------------------------------------------


def test_unknown_top_level_key_did_you_mean(tmp_path):
    text = VALID.replace("validators:", "validator:")
    line = only_line(load_error(tmp_path, text))
    assert (
        line
        == f"recipe.yaml:{line_of(text, 'validator:')}:1: validator: unknown key. Did you mean 'validators'?"
    )


def test_unknown_key_in_sampling_did_you_mean(tmp_path):
    text = VALID.replace("max_tokens: 64", "max_token: 64")
    line = only_line(load_error(tmp_path, text))
    expected = f"recipe.yaml:{line_of(text, 'max_token:')}:{col_of(text, 'max_token:')}: "
    assert line == expected + "tasks[0].sampling.max_token: unknown key. Did you mean 'max_tokens'?"


def test_unknown_key_in_seeds_did_you_mean(tmp_path):
    text = VALID.replace("image_field: file", "image_feild: file")
    line = only_line(load_error(tmp_path, text))
    # The pydantic tag ('jsonl') does not appear in the key path.
    assert (
        line
        == f"recipe.yaml:{line_of(text, 'image_feild')}:3: seeds.image_feild: unknown key. Did you mean 'image_field'?"
    )


def test_unknown_key_without_close_match_lists_allowed_keys(tmp_path):
    text = VALID.replace("  chunk_size: 32", "  zzz: 32")
    line = only_line(load_error(tmp_path, text))
    assert line.endswith("output.zzz: unknown key. Allowed keys: chunk_size.")


def test_wrong_type_names_expected_and_given(tmp_path):
    text = VALID.replace("batch_size: 8", "batch_size: eight")
    line = only_line(load_error(tmp_path, text))
    assert line == (
        f"recipe.yaml:{line_of(text, 'batch_size')}:{col_of(text, 'eight')}: models.vlm.batch_size: "
        "wrong type. Expected an integer, got the string 'eight'."
    )


def test_quoted_number_is_not_coerced(tmp_path):
    text = VALID.replace("n: 2", 'n: "2"')
    assert "tasks[0].n: wrong type. Expected an integer, got the string '2'." in str(
        load_error(tmp_path, text)
    )


def test_missing_required_field(tmp_path):
    text = VALID.replace("    template: vqa.simple\n", "")
    line = only_line(load_error(tmp_path, text))
    # Points at the task that lacks it; the hint is the field's documentation.
    assert line.startswith(
        f"recipe.yaml:{line_of(text, 'name: questions')}:5: tasks[1].template: missing required key. "
    )
    assert "Template id" in line


def test_missing_seed_type_lists_known_types(tmp_path):
    text = VALID.replace("  type: jsonl\n", "")
    line = only_line(load_error(tmp_path, text))
    assert line.startswith(f"recipe.yaml:{line_of(text, 'seeds:')}:1: seeds.type: missing required key.")
    assert "scenes, image_folder, jsonl, hf_dataset" in line


def test_unknown_seed_type_did_you_mean(tmp_path):
    text = VALID.replace("type: jsonl", "type: jsonlines")
    line = only_line(load_error(tmp_path, text))
    assert (
        line
        == f"recipe.yaml:{line_of(text, 'jsonlines')}:9: seeds.type: unknown type 'jsonlines'. Did you mean 'jsonl'?"
    )


def test_yaml_syntax_error_has_parser_line(tmp_path):
    text = VALID.replace("  image_field: file", "   image_field: file")
    line = only_line(load_error(tmp_path, text))
    assert re.match(rf"recipe\.yaml:{line_of(text, 'image_field')}:\d+: YAML syntax error: ", line), line


def test_missing_jsonl_file(tmp_path):
    text = VALID.replace("data/seeds.jsonl", "data/nope.jsonl")
    line = only_line(load_error(tmp_path, text))
    assert line.startswith(f"recipe.yaml:{line_of(text, 'nope.jsonl')}:9: seeds.path: file not found: ")
    assert str(tmp_path / "data" / "nope.jsonl") in line
    assert "resolved against the recipe's folder" in line


def test_missing_local_paths_everywhere(tmp_path):
    text = VALID.replace("my_templates/", "other_templates/").replace("./models/my-lm", "./models/gone")
    err = load_error(tmp_path, text)
    lines = str(err).splitlines()
    assert len(lines) == 2 and len(err.problems) == 2
    assert lines[0].startswith(
        f"recipe.yaml:{line_of(text, 'other_templates')}:13: templates[0]: folder not found"
    )
    assert lines[1].startswith(
        f"recipe.yaml:{line_of(text, 'models/gone')}:12: models.local.model: model folder not found"
    )


def test_task_model_not_in_models(tmp_path):
    text = VALID.replace("    model: local\n", "    model: locl\n")
    line = only_line(load_error(tmp_path, text))
    assert (
        line
        == f"recipe.yaml:{line_of(text, 'model: locl')}:12: tasks[1].model: unknown model 'locl'. Did you mean 'local'?"
    )


def test_duplicate_task_name(tmp_path):
    text = VALID.replace("name: questions", "name: captions")
    line = only_line(load_error(tmp_path, text))
    first = line_of(text, "name: captions")
    assert line.startswith(
        f"recipe.yaml:{line_of(text, 'name: captions', 2)}:11: tasks[1].name: duplicate task name 'captions'"
    )
    assert f"line {first}" in line


def test_bad_task_name(tmp_path):
    text = VALID.replace("name: questions", "name: Questions-2")
    line = only_line(load_error(tmp_path, text))
    assert line.startswith(
        f"recipe.yaml:{line_of(text, 'Questions-2')}:11: tasks[1].name: invalid task name 'Questions-2'"
    )
    assert "lower-case letters" in line


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ("n: 2", "n: 0", "tasks[0].n", "must be at least 1, got 0"),
        ("chunk_size: 32", "chunk_size: 0", "output.chunk_size", "must be at least 1, got 0"),
        (
            "temperature: 0.7",
            "temperature: -1",
            "tasks[0].sampling.temperature",
            "must be at least 0, got -1",
        ),
        ("max_tokens: 64", "max_tokens: 0", "tasks[0].sampling.max_tokens", "must be at least 1, got 0"),
        ("dtype: float32", "dtype: fp32", "models.vlm.dtype", "invalid value 'fp32'"),
        (
            "model: tiny:vlm",
            "model: tiny:vln",
            "models.vlm.model",
            "unknown tiny model 'tiny:vln'. Did you mean 'tiny:vlm'?",
        ),
        (
            "  - type: dedup",
            "  - dedup",
            "validators[1]",
            "wrong type. Expected a mapping, got the string 'dedup'",
        ),
        ("  - type: dedup", "  - {min_chars: 3}", "validators[1].type", "missing required key"),
        (
            "  - type: dedup",
            "  - {type: 3}",
            "validators[1].type",
            "wrong type. Expected a string, got the integer 3",
        ),
        ("name: quickstart", "name: Quick Start", "name", "invalid recipe name 'Quick Start'"),
    ],
)
def test_bad_values(tmp_path, old, new, where, message):
    text = VALID.replace(old, new)
    assert text != VALID
    line = only_line(load_error(tmp_path, text))
    assert line.startswith(f"recipe.yaml:{line_of(text, new.strip())}:")
    assert f": {where}: {message}" in line


def test_several_problems_each_with_its_own_line(tmp_path):
    text = VALID.replace("max_tokens: 64", "max_token: 64").replace("chunk_size: 32", "chunk_size: many")
    err = load_error(tmp_path, text)
    lines = str(err).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"recipe.yaml:{line_of(text, 'max_token:')}:")
    assert lines[1].startswith(f"recipe.yaml:{line_of(text, 'chunk_size')}:")


def test_duplicate_yaml_key(tmp_path):
    text = VALID.replace("    n: 2\n", "    n: 2\n    n: 3\n")
    line = only_line(load_error(tmp_path, text))
    assert line.startswith(f"recipe.yaml:{line_of(text, 'n: 3')}:5: tasks[0].n: duplicate key 'n'")


def test_empty_and_non_mapping_recipes(tmp_path):
    assert "the recipe is empty" in str(load_error(tmp_path, ""))
    assert "a recipe is a mapping" in str(load_error(tmp_path, "- a\n- b\n"))
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "absent.yaml")


def test_recipe_error_exit_code_and_at_helper(tmp_path):
    recipe = load_recipe(make_project(tmp_path))
    assert RecipeError.exit_code == 2
    err = recipe.error_at(
        ("tasks", 1, "template"), "template 'vqa.simple' needs variable 'question'", "Add it to `inputs`."
    )
    assert str(err) == (
        f"recipe.yaml:{line_of(VALID, 'vqa.simple')}:15: tasks[1].template: "
        "template 'vqa.simple' needs variable 'question'. Add it to `inputs`."
    )
    assert err.problems[0].line == line_of(VALID, "vqa.simple") and err.problems[0].column == 15
    # Validator settings are checked later by the validators registry: point at one of them.
    err = recipe.error_at(("validators", 0, "min_chars"), "must be a positive integer")
    assert (
        err.problems[0].line == line_of(VALID, "min_chars")
        and err.problems[0].loc == "validators[0].min_chars"
    )
    # key=True points at the key rather than the value.
    err = recipe.error_at(("models", "hub", "backend"), "unknown backend", key=True)
    assert (err.problems[0].line, err.problems[0].column) == (line_of(VALID, "backend: vllm-server"), 5)
    merged = RecipeError.merge([err, recipe.error_at(("seed",), "x")])
    assert len(str(merged).splitlines()) == 2


def test_locate_skips_union_tags_and_reports_missing_parts():
    root = yaml.compose("seeds:\n  type: jsonl\n  path: x.jsonl\n")
    found = locate(root, ("seeds", "jsonl", "path"))
    assert found.complete and found.loc == ("seeds", "path") and found.mark.line == 2
    missing = locate(root, ("seeds", "jsonl", "image_field"))
    assert not missing.complete and missing.loc == ("seeds", "image_field") and missing.mark.line == 0
    assert format_loc(("tasks", 0, "sampling", "top_p")) == "tasks[0].sampling.top_p"
    assert format_loc(("models", "my model", "dtype")) == "models['my model'].dtype"
