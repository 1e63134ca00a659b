"""ocr_text on text rendered with Pillow and read by the real RapidOCR models shipped in their wheel."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from pydantic import ValidationError

from mmsynth.prompts.media import ImageRef
from mmsynth.validators import Candidate, build_validator
from mmsynth.validators.image.ocr import OcrTextConfig, OcrTextValidator, match_claim

pytest.importorskip("rapidocr_onnxruntime")

_DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def render(text: str, size: tuple[int, int] = (360, 120), bg="white", fg="black") -> ImageRef:
    """`text` in 40 px letters on a plain background: large enough for OCR to read reliably."""
    font = ImageFont.truetype(str(_DEJAVU), 40) if _DEJAVU.exists() else ImageFont.load_default(size=40)
    img = Image.new("RGB", size, bg)
    ImageDraw.Draw(img).text((20, 35), text, fill=fg, font=font)
    return ImageRef.from_pil(img, source=f"render:{text}")


@pytest.fixture(scope="module")
def ocr() -> OcrTextValidator:
    # One validator for the module: the OCR models load once and images are read once (cached by hash).
    return OcrTextValidator()


@pytest.fixture(scope="module")
def open_sign() -> ImageRef:
    return render("OPEN 24H")


def cand(text: str, *images: ImageRef, id: str = "r0", parsed=None) -> Candidate:
    return Candidate(id=id, task="captions", text=text, finish_reason="stop", images=images, parsed=parsed)


def test_claimed_text_present_is_kept(ocr, open_sign):
    [v] = ocr.check([cand('A shop window with a sign that reads "OPEN 24H".', open_sign)])
    assert v.keep, v.reason
    assert v.score == 1.0


def test_claimed_text_absent_is_rejected(ocr, open_sign):
    [v] = ocr.check([cand('A shop sign that says "CLOSED".', open_sign)])
    assert not v.keep
    assert v.reason.startswith("text not found: 'CLOSED' (best ")
    assert v.score < 0.8


def test_every_claim_must_be_found(ocr, open_sign):
    [v] = ocr.check([cand('The sign says "OPEN" and below it "SALE".', open_sign)])
    assert not v.keep and v.reason.startswith("text not found: 'SALE'")


def test_unquoted_claims(ocr, open_sign):
    kept, rejected = ocr.check(
        [cand("A door with a sign that reads OPEN.", open_sign), cand("A sign reads WELCOME.", open_sign)]
    )
    assert kept.keep, kept.reason
    assert rejected.reason.startswith("text not found: 'WELCOME'")
    assert ocr.check([cand("A door; the word open is on the sign.", open_sign)])[0].keep


def test_no_claim_is_kept_without_running_ocr(open_sign):
    fresh = OcrTextValidator()
    verdicts = fresh.check(
        [cand("A man reads a book under a lamp.", open_sign), cand("A red shop door.", open_sign)]
    )
    assert all(v.keep and v.score is None for v in verdicts)
    assert fresh._engine is None  # nothing claimed: OCR never loaded


def test_fuzzy_ratio_is_configurable(open_sign):
    caption = 'A sign that reads "OPEN 24HR".'  # one letter more than the sign
    assert OcrTextValidator().check([cand(caption, open_sign)])[0].keep
    strict = OcrTextValidator(OcrTextConfig(min_ratio=1.0)).check([cand(caption, open_sign)])[0]
    assert not strict.keep and "< 1)" in strict.reason


def test_text_on_a_coloured_background_and_in_a_second_image(ocr):
    bread = render("Fresh Bread", bg=(40, 90, 200), fg="white")
    [v] = ocr.check([cand('A bakery banner saying "fresh bread".', render("OPEN 24H"), bread)])
    assert v.keep, v.reason


def test_blank_image_reads_no_text(ocr):
    blank = ImageRef.from_pil(Image.new("RGB", (200, 100), "white"))
    [v] = ocr.check([cand('A sign reading "EXIT".', blank)])
    assert v.reason == "text not found: 'EXIT' (no text read)"
    assert v.score == 0.0


def test_structured_output_claims_come_from_string_values(ocr, open_sign):
    ok = cand(
        '{"caption": "a sign that reads \\"OPEN 24H\\""}', open_sign, parsed={"caption": 'sign "OPEN 24H"'}
    )
    bad = cand('{"caption": "..."}', open_sign, id="r1", parsed={"caption": 'a sign reading "PHARMACY"'})
    v_ok, v_bad = ocr.check([ok, bad])
    assert v_ok.keep and not v_bad.keep
    # JSON keys are not claims: '"caption"' in the raw text is not text in the image.
    assert ocr.claims(str(ok.parsed["caption"])) == ["OPEN 24H"]


def test_claims_without_images_kept_and_undecodable_rejected(ocr):
    assert ocr.check([cand('A sign that says "STOP".')])[0].keep
    bad = ImageRef.from_bytes(b"junk", source="x.png")
    [v] = ocr.check([cand('A sign that says "STOP".', bad)])
    assert v.reason.startswith("undecodable image: image 0 (x.png): ")


def test_claim_extraction(ocr):
    claims = ocr.claims
    assert claims('A sign that says "OPEN" and a “SALE” banner.') == ["OPEN", "SALE"]
    assert claims("A poster with the words 'Hotel California' on it.") == ["Hotel California"]
    assert claims("The label reads: Fresh Milk. A cat sleeps.") == ["Fresh Milk"]
    assert claims("A man reads a book; a woman says hello.") == []  # lowercase after reads/says: no claim
    assert claims("the word hello") == ["hello"]
    assert claims("A flag labelled U.S.A. waves.") == ["U.S.A"]  # inner dots kept, the full stop not
    assert claims('It says "OPEN", then "open" again.') == ["OPEN"]  # repeats dropped
    assert claims('He said "a" and the dog\'s bone.') == []  # too short; apostrophes are not quotes
    long_quote = '"' + "word " * 20 + '"'
    assert claims(f"A man shouting {long_quote}") == []  # longer than max_claim_chars


def test_custom_patterns_replace_the_defaults():
    v = OcrTextValidator(OcrTextConfig(claim_patterns=[r"\[\[(.+?)\]\]"]))
    assert v.claims('says "OPEN" and [[EXIT]]') == ["EXIT"]
    with pytest.raises(ValidationError, match="has no group"):
        OcrTextConfig(claim_patterns=[r"says \w+"])
    with pytest.raises(ValidationError, match="does not compile"):
        OcrTextConfig(claim_patterns=[r"says (\w+"])


def test_match_claim():
    assert match_claim("OPEN 24H", ["open 24h"]) == (1.0, "OPEN 24H")
    assert match_claim("OPEN 24H", ["OPEN24H"])[0] == 1.0  # OCR dropped the space
    assert match_claim("Fresh Bread", ["FRESH", "BREAD daily"])[0] == 1.0  # split over two lines
    ratio, best = match_claim("CLOSED", ["OPEN 24H"])
    assert ratio < 0.5 and best
    assert match_claim("EXIT", []) == (0.0, "")


def test_registry_builds_it():
    v = build_validator({"type": "ocr_text", "min_ratio": 0.9, "tasks": ["captions"]})
    assert isinstance(v, OcrTextValidator) and v.config.min_ratio == 0.9
