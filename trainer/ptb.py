"""The caption tokenisation pycocoevalcap applies before CIDEr, in Python (it runs Java for it).

pycocoevalcap pipes captions through Stanford CoreNLP 3.4.1's `PTBTokenizer -preserveLines -lowerCase`
and then drops the tokens of its PUNCTUATIONS list. These rules reproduce that tokenizer's output on
caption text (checked token for token against the real jar, see tests/trainer/test_cider.py):
clitics split off ("dog's" -> "dog 's", "can't" -> "ca n't", "gonna" -> "gon na", "cannot" -> "can
not"); hyphenated words, numbers like "3.5", "1,000", "3:30", "1/2", abbreviations ("mr.", "u.s.",
"p.m.") and "word/word" stay whole; other punctuation splits off, a run of "?"/"!" being one token;
quotes become `` '' ` ' and dashes "--", ellipses "...". Lowercasing comes last, so the bracket
escapes come out as "-lrb-", "-rrb-", "-lsb-", "-rsb-", "-lcb-", "-rcb-", which the upper-case
entries of PUNCTUATIONS never match: pycocoevalcap keeps them as words, and so do we.

Measured against the jar on 1,500 random captions mixing these cases: 1,499 identical token lists.
Not reproduced (rare in captions): "y'all" (CoreNLP: "y' all"), a clitic inside a hyphenated word
("man's-hat"), "AT&T"-style ampersand words, and CoreNLP looking past the end of a caption into the
next one (a single letter with a period ending a caption before a capitalised one). CoreNLP 3.4.1 does
not americanize spellings, so neither do we.
"""

from __future__ import annotations

import re

# pycocoevalcap/tokenizer/ptbtokenizer.py, verbatim: compared with the lower-cased tokens.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
# Single words PTB splits in two (its "SREDAUX"/"APOWORD" rules), matched on the whole word.
_SPLIT_WORDS = {
    "cannot": 3,
    "gonna": 3,
    "gotta": 3,
    "lemme": 3,
    "gimme": 3,
    "wanna": 3,
    "'tis": 2,
    "'twas": 2,
}
# Words CoreNLP 3.4.1 keeps with their period, in any case (checked one by one against the jar;
# "no." only before a number). Not: may, sat, sun, fig, min, max, ok, units.
_ABBREVIATIONS = (
    "mr|mrs|ms|dr|st|jr|sr|prof|rev|gen|gov|sen|rep|capt|col|lt|sgt|mt|ft|ave|blvd|rd|vs|etc|al|inc|co|"
    "corp|ltd|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|thu|fri|hon|messrs|mme|"
    "mlle|esq|pres|adm|maj|cmdr|brig|ph|cf|dept|sq|est|univ|assn|bros"
)
_CLITIC = re.compile(r"(?i)^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
# Words kept with a leading apostrophe ('em, 'n', '90s); any other leading apostrophe is a quote.
_APOSTROPHE_WORD = re.compile(r"(?i)'(?:em|n'|\d+s?)(?!\w)")

_TOKEN = re.compile(
    r"""
    (?P<url>(?:https?://|www\.)[^\s"<>()\[\]{}]*[^\s"<>()\[\]{}.,;:!?']
      | [\w.+-]+@\w[\w-]*(?:\.\w[\w-]*)+)
  | (?P<emoticon>[:;]-?[()])
  | (?P<ellipsis>\.\.\.+|…)
  | (?P<dash>--+|[—–])
  | (?P<fraction>(?<![\w.,/])\d+\ \d+/\d+(?![\w/]))
  | (?P<number>\d+(?:[.,:/]\d+)+)
  | (?P<abbrev>(?<![\w.'])(?:(?i:ABBREVIATIONS)\.|[^\W\d_]\.(?!\w)|(?i:no)\.(?=\s*\d)))
  | (?P<acronym>[^\W\d_](?:\.[^\W\d_])+\.)
  | (?P<word>(?:(?<![\w'])'(?=(?i:em|n'|\d+s?|t(?:is|was))(?!\w)))?
        \w(?:\w|(?<=[^\W\d_])['’](?=[^\W\d_])|(?<=\w)[-/.](?=\w))*(?:(?<=[^\W\d_])['’](?![\w']))?)
  | (?P<quote>["“”`‘’']+)
  | (?P<marks>[?!]+)
  | (?P<other>\S)
    """.replace("ABBREVIATIONS", _ABBREVIATIONS),
    re.VERBOSE,
)


def ptb_tokens(text: str) -> list[str]:
    """CoreNLP PTBTokenizer tokens of one caption, before lowercasing and punctuation removal."""
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        kind, tok = m.lastgroup, m.group()
        if kind == "word":
            out += _word(tok, text[m.end() :])
        elif kind == "fraction":  # "2 1/2" is one token, joined by a no-break space
            out.append(tok.replace(" ", "\xa0"))
        elif kind == "ellipsis":
            out.append("...")
        elif kind == "dash":
            out.append("--")
        elif kind == "emoticon":
            out.append(tok[:-1] + _BRACKETS[tok[-1]])
        elif kind == "quote":
            out.append("''")  # every quote form ends up in PUNCTUATIONS: which one does not matter
        elif kind == "other" and tok in _BRACKETS:
            out.append(_BRACKETS[tok])
        else:
            out.append(tok)
    return out


def _word(tok: str, rest: str) -> list[str]:
    """A word with its clitic ("'s", "n't", ...) or trailing apostrophe split off."""
    tok = tok.replace("’", "'")
    low = tok.lower()
    if low in _SPLIT_WORDS and not rest[:1].isalnum():
        k = _SPLIT_WORDS[low]
        return [tok[:k], tok[k:]]
    if _APOSTROPHE_WORD.fullmatch(tok):
        return [tok]
    if tok.endswith("'"):  # "dogs'": a possessive apostrophe is its own token
        return [*_word(tok[:-1], "'"), "'"]
    m = _CLITIC.match(tok)
    return list(m.groups()) if m else [tok]


def tokenize_caption(text: str) -> list[str]:
    """pycocoevalcap's tokens for one caption: PTB tokens, lowercased, without its PUNCTUATIONS."""
    toks = ptb_tokens(text.replace("\n", " "))
    return [t.lower() for t in toks if t.lower() not in PUNCTUATIONS]
