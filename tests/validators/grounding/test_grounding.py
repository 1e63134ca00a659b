"""scene_grounding, answer_consistency and question_diversity on real rendered scenes and QA outputs."""

from __future__ import annotations

import pytest

from mmsynth.generators.scenes.truth import answer_is_correct, answer_question, scene_qa
from mmsynth.generators.scenes.world import make_scene
from mmsynth.validators import build_validator

OBJECTS = [
    {"shape": "circle", "colour": "red", "size": "large", "row": 0, "col": 0, "position": "top left"},
    {"shape": "circle", "colour": "blue", "size": "small", "row": 1, "col": 1, "position": "centre"},
    {"shape": "square", "colour": "red", "size": "small", "row": 2, "col": 2, "position": "bottom right"},
]


def qa(*pairs, **kw):
    return {"pairs": [{"question": q, "answer": a, "type": "other"} for q, a in pairs], **kw}


@pytest.mark.parametrize(
    ("question", "truth"),
    [
        ("How many objects are there?", ("count", "3")),
        ("How many circles are there?", ("count", "2")),
        ("How many red shapes can you see in the image?", ("count", "2")),
        ("How many small red squares are there?", ("count", "1")),
        ("How many triangles are in the picture?", ("count", "0")),
        ("How many objects are at the top left?", ("count", "1")),
        ("What color is the square?", ("colour", "red")),
        ("What colour is the circle in the center?", ("colour", "blue")),
        ("What shape is the blue object?", ("shape", "circle")),
        ("Where is the red square?", ("position", "bottom right")),
        ("Where is the blue circle?", ("position", "centre")),
        ("Is there a green triangle?", ("exists", "no")),
        ("Are there any red circles?", ("exists", "yes")),
        # Not understood: relations, comparisons, ambiguous references, unknown words.
        ("What colour is the circle?", None),
        ("Where is the red circle or the blue circle?", None),
        ("Are there more circles than squares?", None),
        ("How many objects are to the left of the square?", None),
        ("What is the meaning of this picture?", None),
    ],
)
def test_answer_question(question, truth):
    assert answer_question(OBJECTS, question) == truth


@pytest.mark.parametrize(
    ("kind", "truth", "answer", "ok"),
    [
        ("count", "2", "2", True),
        ("count", "2", "There are two circles.", True),
        ("count", "0", "None", True),
        ("count", "2", "3", False),
        ("count", "2", "two or three", False),
        ("colour", "red", "Red.", True),
        ("colour", "red", "red and blue", False),
        ("position", "bottom right", "In the bottom-right corner", True),
        ("position", "bottom right", "lower right", True),
        ("position", "bottom right", "right", False),
        ("position", "centre", "in the center", True),
        ("position", "centre", "top", False),
        ("exists", "no", "No, there is not.", True),
        ("exists", "no", "Yes", False),
        ("shape", "circle", "a circle", True),
    ],
)
def test_answer_is_correct(kind, truth, answer, ok):
    assert answer_is_correct(kind, truth, answer) is ok


def test_every_exact_scene_question_is_understood_and_its_answer_checks():
    for index in range(40):
        scene = make_scene(7, index)
        for item in scene_qa(scene["objects"]):
            kind, exact = answer_question(scene["objects"], item["question"])
            assert exact == item["answer"]
            assert answer_is_correct(kind, exact, item["answer"])


def test_scene_grounding_rejects_a_wrong_count_and_keeps_correct_answers(make_candidate):
    v = build_validator({"type": "scene_grounding"})
    seed = {"objects": OBJECTS}
    good = make_candidate(
        "{}",
        task="qa",
        seed=seed,
        parsed=qa(("How many circles are there?", "2"), ("What colour is the square?", "red")),
    )
    bad = make_candidate(
        "{}",
        task="qa",
        seed=seed,
        parsed=qa(("How many circles are there?", "3"), ("What colour is the square?", "red")),
    )
    unknown = make_candidate("{}", task="qa", seed=seed, parsed=qa(("Why is the sky blue?", "physics")))
    not_a_scene = make_candidate("{}", task="qa", seed={}, parsed=qa(("How many circles are there?", "9")))
    got = v.check([good, bad, unknown, not_a_scene])
    assert [x.keep for x in got] == [True, False, True, True]
    assert got[0].score == 1.0
    assert got[1].reason.startswith("wrong answer: 1 of 2 checked correct (min 100%)")
    assert "'How many circles are there?' answered '3', the scene says '2'" in got[1].reason
    assert got[1].score == 0.5


def test_scene_grounding_fraction_and_require_checkable(make_candidate):
    seed = {"objects": OBJECTS}
    half = make_candidate(
        "{}",
        seed=seed,
        parsed=qa(("How many circles are there?", "3"), ("What colour is the square?", "red")),
    )
    lenient = build_validator({"type": "scene_grounding", "min_fraction_correct": 0.5})
    assert lenient.check([half])[0].keep
    strict = build_validator({"type": "scene_grounding", "require_checkable": True, "min_checked": 2})
    unknown = make_candidate("{}", seed=seed, parsed=qa(("How many circles are there?", "2"), ("Why?", "x")))
    verdict = strict.check([unknown])[0]
    assert not verdict.keep and verdict.reason == "unverifiable: 1 checkable questions < 2"


def test_scene_grounding_on_a_real_scene_seed(make_candidate):
    scene = make_scene(0, 3)
    seed = {k: v for k, v in scene.items() if k != "image"}
    items = scene["qa"]
    right = make_candidate("{}", seed=seed, parsed=qa(*[(i["question"], i["answer"]) for i in items]))
    wrong = make_candidate(
        "{}", seed=seed, parsed=qa(("How many objects are there?", str(len(scene["objects"]) + 1)))
    )
    v = build_validator({"type": "scene_grounding"})
    assert [x.keep for x in v.check([right, wrong])] == [True, False]


def test_answer_consistency_rejects_the_sample_against_the_majority(make_candidate, image_a, image_b):
    def sample(i, answer, image=image_a, prompt="Write QA pairs."):
        return make_candidate(
            "{}",
            id=f"s{i}",
            task="qa",
            prompt_text=prompt,
            images=(image,),
            parsed=qa(("How many circles are there?", answer), ("Where is the red square?", "bottom right")),
        )

    batch = [sample(0, "2"), sample(1, "two"), sample(2, "3"), sample(3, "3", image=image_b)]
    v = build_validator({"type": "answer_consistency"})
    got = v.check(batch)
    # s3 shows another image: its own group of one, never compared.
    assert [x.keep for x in got] == [True, True, False, True]
    assert got[2].reason == (
        "disagrees with majority: 'How many circles are there?': '3' vs majority '2' (2 of 3)"
    )
    # A tie has no majority: nothing rejected.
    assert all(x.keep for x in v.check([sample(0, "2"), sample(1, "3")]))
    assert all(
        x.keep
        for x in build_validator({"type": "answer_consistency", "min_samples": 2}).check(
            [sample(0, "2"), sample(1, "3")]
        )
    )
    tolerant = build_validator({"type": "answer_consistency", "max_disagreements": 1})
    assert all(x.keep for x in tolerant.check(batch))


def test_question_diversity(make_candidate):
    v = build_validator({"type": "question_diversity"})
    varied = make_candidate(
        "{}", parsed=qa(("How many circles are there?", "2"), ("What colour is the square?", "red"))
    )
    same = make_candidate(
        "{}",
        parsed=qa(
            ("How many red circles can be seen in the top row of the image?", "1"),
            ("What colour is the square?", "red"),
            ("How many red circles can be seen in the top row of this image?", "1"),
        ),
    )
    exact = make_candidate("{}", parsed=qa(("Where is it?", "left"), ("where is it", "left")))
    got = v.check([varied, same, exact, make_candidate("plain caption")])
    assert [x.keep for x in got] == [True, False, False, True]
    assert got[1].reason == "near-duplicate questions: #0 and #2 (Jaccard 0.93 > 0.80)"
    assert got[2].score == 1.0
    assert build_validator({"type": "question_diversity", "max_jaccard": 0.95}).check([same])[0].keep


def test_scene_grounding_checks_captions_when_asked(make_candidate_for_scene):
    v = build_validator({"type": "scene_grounding", "captions": True})
    seed = {"objects": OBJECTS}
    good = make_candidate_for_scene("A large red circle at the top left and a small red square.", seed)
    bad = make_candidate_for_scene("A large red circle and a green triangle in the centre.", seed)
    grounded = make_candidate_for_scene(
        "{}", seed, parsed={"caption": "two blue circles", "objects": ["blue circle"]}
    )
    plain = make_candidate_for_scene("no scene words here", seed)
    keep, reject, reject_json, kept_plain = v.check([good, bad, grounded, plain])
    assert keep.keep and keep.score == 1.0
    assert not reject.keep and reject.reason.startswith("hallucination: 1 of 2 mentions true")
    assert "'green triangle in the centre'" in reject.reason and "no triangle" in reject.reason
    assert not reject_json.keep and "the scene has 1" in reject_json.reason
    assert kept_plain.keep


def test_scene_grounding_leaves_captions_alone_by_default(make_candidate_for_scene):
    v = build_validator({"type": "scene_grounding"})
    (verdict,) = v.check([make_candidate_for_scene("a green triangle", {"objects": OBJECTS})])
    assert verdict.keep


@pytest.fixture
def make_candidate_for_scene(make_candidate):
    def make(text, seed, **kw):
        return make_candidate(text, seed=seed, **kw)

    return make
