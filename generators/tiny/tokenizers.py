"""Tokenizers of the tiny models, trained offline: byte-level BPE on a generated corpus of caption-like text.

Shared by the random-weight builders (builders.py) and the trained scene teacher (scene_vlm.py): the
corpus, the special tokens, the ChatML chat template and the BPE trainers.
"""

from __future__ import annotations

import json
import random

VOCAB_SIZE = 2048
MAX_POSITIONS = 2048

# Chat template shared by lm and vlm: ChatML turns; content is a string or a list of parts
# ({"type": "text", "text": ...} / {"type": "image"}); `image_token` is what an image part becomes.
_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '@IMAGE@' -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '@EOT@\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_LM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_VLM_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
    *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
]
_SD_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]


def _words(text: str) -> list[str]:
    return text.split()


_COLOURS = _words(
    "red green blue yellow orange purple pink brown black white gray grey cyan magenta violet gold"
)
_SHAPES = _words(
    "circle square triangle rectangle star ellipse hexagon pentagon diamond oval line dot cross heart"
)
_COUNTS = _words("no one two three four five six seven eight nine ten several many a few")
_SIZES = _words("small large big tiny medium huge little wide tall thin")
_POSITIONS = [
    "on the left",
    "on the right",
    "at the top",
    "at the bottom",
    "in the center",
    "in the centre",
    "in the middle",
    "in the upper left corner",
    "in the upper right corner",
    "in the lower left corner",
    "in the lower right corner",
    "near the edge",
]
_RELATIONS = [
    "above",
    "below",
    "next to",
    "beside",
    "near",
    "inside",
    "outside",
    "to the left of",
    "to the right of",
    "between",
]
_GENERIC = _words(
    "the of and to in is it that for on with as was at by this be are from or have an they which you one "
    "had not but what all were when we there can been has more if will their so no out up about into them "
    "some could would than then its only other new also time these two may first any like over such our "
    "most after made very where through back years just much good well people how because each image "
    "picture photo shows shown contains background foreground object objects color colour shape shapes "
    "count number answer question describe caption detailed short simple scene visible single pair group "
    "row column grid pattern filled outline solid bright dark light yes none true false json list value "
    "text title label description summary model data sample example first second third last total exactly "
    "please write give return output input user assistant system instruction task step reason because"
)
_PLURAL = {"cross": "crosses"}


def _plural(shape: str) -> str:
    return _PLURAL.get(shape, shape + "s")


def _corpus(seed: int, n: int = 4000) -> list[str]:
    """Generated caption-like, question-like and JSON-like lines using the words captions of shapes use."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        c, s, z, p = rng.choice(_COLOURS), rng.choice(_SHAPES), rng.choice(_SIZES), rng.choice(_POSITIONS)
        k = rng.randint(0, 12)
        form = rng.randrange(7)
        if form == 0:
            lines.append(f"There are {rng.choice(_COUNTS)} {z} {c} {_plural(s)} {p} of the image.")
        elif form == 1:
            lines.append(
                f"A {c} {s} {rng.choice(_RELATIONS)} a {rng.choice(_COLOURS)} {rng.choice(_SHAPES)}, {p}."
            )
        elif form == 2:
            lines.append(f"Question: How many {c} {_plural(s)} are there? Answer: {k}")
        elif form == 3:
            lines.append(
                json.dumps(
                    {"caption": f"a {z} {c} {s} {p}", "objects": [{"shape": s, "color": c, "count": k}]}
                )
            )
        elif form == 4:
            lines.append(
                f"The image shows {k} {_plural(s)}: "
                + ", ".join(rng.choice(_COLOURS) for _ in range(3))
                + "."
            )
        elif form == 5:
            lines.append(" ".join(rng.choice(_GENERIC) for _ in range(rng.randint(6, 16))).capitalize() + ".")
        else:
            lines.append(f"- {c.capitalize()} {s} ({z}) {p}; {k} in total.\n")
    return lines


def _train_bytelevel_bpe(
    lines: list[str],
    specials: list[str],
    *,
    vocab_size: int = VOCAB_SIZE,
    split_words: bool = True,
    max_token_chars: int | None = None,
):
    """A byte-level BPE trained on `lines`.

    split_words=False drops GPT-2's word-splitting regex, so merges may span spaces and punctuation
    (multi-word tokens, as in SuperBPE); `max_token_chars` then caps how long a token may grow.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if split_words:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    extra = {} if max_token_chars is None else {"max_token_length": max_token_chars}
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        **extra,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def _chat_tokenizer(
    seed: int,
    specials: list[str],
    image_token: str,
    eot: str,
    *,
    lines: list[str] | None = None,
    bpe: dict | None = None,
    **special_kw,
):
    """A chat tokenizer (the shared ChatML template) on a BPE trained on `lines` (default: the corpus)."""
    from transformers import PreTrainedTokenizerFast

    backend = _train_bytelevel_bpe(_corpus(seed) if lines is None else lines, specials, **(bpe or {}))
    template = _CHAT_TEMPLATE.replace("@IMAGE@", image_token).replace("@EOT@", eot)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=template,
        model_max_length=MAX_POSITIONS,
        padding_side="left",
        **special_kw,
    )


def _clip_tokenizer(seed: int):
    """A CLIPTokenizer whose vocab and merges come from a BPE trained with CLIP's own pipeline."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=2,
        special_tokens=_SD_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return CLIPTokenizer(vocab=_canonical_vocab(model["vocab"], merges), merges=merges, model_max_length=77)


def _canonical_vocab(vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict[str, int]:
    """Renumber a trained BPE vocabulary: specials, then base symbols sorted, then merge results in order.

    The trainer numbers the `</w>` symbols in hash-map order, which changes from one process to the next;
    the merges themselves are deterministic, so this numbering makes the saved tokenizer reproducible.
    """
    merged = [a + b for a, b in merges]
    made = set(merged)
    out = {t: i for i, t in enumerate(_SD_SPECIALS)}
    for t in sorted(t for t in vocab if t not in made and t not in out):
        out[t] = len(out)
    for t in merged:
        out.setdefault(t, len(out))
    return out
