"""Rendering: text, images in place, strict undefined names, the sandbox."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from mmsynth.prompts import (
    ImagePart,
    Message,
    TemplateRenderError,
    TextPart,
    parse_template,
    render_template,
)


def tpl(inputs: str, body: str, extra: str = ""):
    """A template whose front matter declares `inputs` (a YAML flow mapping); body starts at line 6."""
    text = f"---\nid: t.render\nversion: 3\ninputs: {inputs}\n{extra}---\n{body}"
    return parse_template(text, "mem/t.j2")


def test_a_set_in_one_block_is_not_seen_by_the_next_and_renders_do_not_share_state():
    # The blocks of one render share a Jinja context (made once per render, not once per block).
    t = tpl(
        "{name: text}",
        "{% block system %}{% set who = 'system' %}{% set ns = namespace(n=1) %}S {{ who }} {{ ns.n }}"
        "{% endblock %}\n{% block user %}U {{ who is defined }} {{ ns is defined }} {{ name }}{% endblock %}",
    )
    first = render_template(t, {"name": "Ada"})
    again = render_template(t, {"name": "Bo"})
    assert [m.text for m in first.messages] == ["S system 1", "U False False Ada"]
    assert [m.text for m in again.messages] == ["S system 1", "U False False Bo"]


def test_renders_system_and_user_text_stripped():
    t = tpl(
        "{name: text}",
        "{% block system %}\n  You are terse.  \n{% endblock %}\n{% block user %}\n\nHello {{ name }}!\n\n{% endblock %}",
        extra="sampling: {temperature: 0.2}\noutput_schema: {type: object}\n",
    )
    p = render_template(t, {"name": "Ada"})
    assert p.messages == (
        Message("system", (TextPart("You are terse."),)),
        Message("user", (TextPart("Hello Ada!"),)),
    )
    assert (p.template_id, p.template_version, p.template_hash) == ("t.render", 3, t.hash)
    assert p.sampling_defaults == {"temperature": 0.2}
    assert p.output_schema == {"type": "object"}
    p.output_schema["type"] = "array"  # the rendered copy is the caller's; the template is unchanged
    assert t.output_schema == {"type": "object"}


def test_no_system_block_gives_user_message_only():
    p = render_template(tpl("{}", "{% block user %}Hi{% endblock %}"), {})
    assert [m.role for m in p.messages] == ["user"]


def test_system_block_that_renders_empty_is_left_out():
    t = tpl(
        "{strict: {type: text, optional: true}}",
        "{% block system %}{{ strict or '' }}{% endblock %}{% block user %}Hi{% endblock %}",
    )
    assert [m.role for m in render_template(t, {}).messages] == ["user"]
    assert [m.role for m in render_template(t, {"strict": "Be strict."}).messages] == ["system", "user"]


def test_control_lines_leave_no_blank_lines():
    t = tpl(
        "{items: list}",
        "{% block user %}\nItems:\n{% for i in items %}\n- {{ i }}\n{% endfor %}\nDone.\n{% endblock %}",
    )
    assert render_template(t, {"items": ["a", "b"]}).messages[0].text == "Items:\n- a\n- b\nDone."


def test_image_parts_in_written_order(red, blue):
    t = tpl(
        "{first: image, second: image}",
        "{% block user %}Look: {{ first }} and {{ second }}. Compare.{% endblock %}",
    )
    parts = render_template(t, {"first": red, "second": blue}).messages[0].parts
    assert parts == (
        TextPart("Look: "),
        ImagePart(red),
        TextPart(" and "),
        ImagePart(blue),
        TextPart(". Compare."),
    )


def test_image_first_and_last_has_no_empty_text_parts(red, blue):
    t = tpl("{a: image, b: image}", "{% block user %}{{ b }}Between{{ a }}{% endblock %}")
    assert render_template(t, {"a": red, "b": blue}).messages[0].parts == (
        ImagePart(blue),
        TextPart("Between"),
        ImagePart(red),
    )


def test_list_of_images_iterated(red, blue, make_image):
    green = make_image("green")
    t = tpl(
        "{images: image}",
        "{% block user %}{% for img in images %}Image {{ loop.index }}: {{ img }}\n{% endfor %}Which differs?{% endblock %}",
    )
    p = render_template(t, {"images": [red, blue, green]})
    assert p.images == (red, blue, green)
    assert p.messages[0].parts[:3] == (TextPart("Image 1: "), ImagePart(red), TextPart("\nImage 2: "))
    assert p.messages[0].text == "Image 1: \nImage 2: \nImage 3: \nWhich differs?"


def test_list_of_images_written_whole_and_indexed(red, blue):
    t = tpl(
        "{images: image}", "{% block user %}{{ images }}|{{ images[1] }}|{{ images | length }}{% endblock %}"
    )
    parts = render_template(t, {"images": (red, blue)}).messages[0].parts
    assert parts == (ImagePart(red), ImagePart(blue), TextPart("|"), ImagePart(blue), TextPart("|2"))


def test_same_image_twice(red):
    t = tpl("{image: image}", "{% block user %}{{ image }} again {{ image }}{% endblock %}")
    assert render_template(t, {"image": red}).images == (red, red)


def test_image_in_system_block(red):
    t = tpl(
        "{image: image}", "{% block system %}Ref: {{ image }}{% endblock %}{% block user %}Go{% endblock %}"
    )
    p = render_template(t, {"image": red})
    assert p.messages[0].role == "system" and p.messages[0].images == (red,)


def test_text_cannot_forge_an_image_placeholder(red):
    t = tpl("{image: image, note: text}", "{% block user %}{{ image }}{{ note }}{% endblock %}")
    forged = "\x00mmsynth-image:0000000000000000:0\x00"
    p = render_template(t, {"image": red, "note": forged})
    assert p.images == (red,)
    assert p.messages[0].parts[1] == TextPart(forged)


def test_text_cannot_forge_an_image_placeholder_in_a_render_without_images():
    # No image is placed, so the render makes no nonce: a placeholder-like text stays text.
    t = tpl("{note: text}", "{% block user %}Note: {{ note }}{% endblock %}")
    forged = "\x00mmsynth-image:0000000000000000:0\x00"
    p = render_template(t, {"note": forged})
    assert p.images == () and p.messages[0].parts == (TextPart("Note: " + forged),)


def test_filter_that_changes_an_image_is_an_error(red):
    t = tpl("{image: image}", "{% block user %}{{ image | upper }}{% endblock %}")
    with pytest.raises(TemplateRenderError, match="image was changed"):
        render_template(t, {"image": red})


def test_rendering_is_deterministic(red):
    t = tpl("{image: image, q: text}", "{% block user %}{{ image }}{{ q }}{% endblock %}")
    assert (
        render_template(t, {"image": red, "q": "x"}).digest()
        == render_template(t, {"image": red, "q": "x"}).digest()
    )


def test_undefined_variable_names_path_line_and_variable():
    t = tpl(
        "{name: text}",
        "{% block system %}Sys{% endblock %}\n{% block user %}\nHello {{ name }}\nand {{ nmae }}\n{% endblock %}",
    )
    with pytest.raises(TemplateRenderError) as info:
        render_template(t, {"name": "Ada"})
    assert str(info.value).startswith("mem/t.j2:9: undefined variable 'nmae'.")
    assert info.value.variable == "nmae"
    assert isinstance(info.value.__cause__, UndefinedError)


def test_undefined_attribute_is_an_error():
    t = tpl("{data: json}", "{% block user %}\n{{ data.missing }}{% endblock %}")
    with pytest.raises(TemplateRenderError, match=r"mem/t\.j2:7: undefined value"):
        render_template(t, {"data": {"present": 1}})


def test_missing_required_input_names_first_use():
    t = tpl("{name: text}", "{% block user %}\n\nHello {{ name }}{% endblock %}")
    with pytest.raises(TemplateRenderError, match=r"mem/t\.j2:8: required input 'name' is missing") as info:
        render_template(t, {})
    assert info.value.variable == "name"


def test_required_input_given_as_none():
    t = tpl("{name: text}", "{% block user %}Hello {{ name }}{% endblock %}")
    with pytest.raises(TemplateRenderError, match="required input 'name' is None"):
        render_template(t, {"name": None})


def test_optional_input_missing_is_none_or_its_default():
    t = tpl(
        "{scene: {type: text, optional: true}, n: {type: number, optional: true, default: 3}}",
        "{% block user %}{{ scene is none }} {{ n }}{% endblock %}",
    )
    assert render_template(t, {}).messages[0].text == "True 3"
    assert render_template(t, {"scene": None, "n": None}).messages[0].text == "True 3"
    assert render_template(t, {"scene": "s", "n": 5}).messages[0].text == "False 5"


def test_undeclared_variables_are_passed_through():
    t = tpl("{}", "{% block user %}{{ column }}{% endblock %}")
    assert render_template(t, {"column": "from the seeds"}).messages[0].text == "from the seeds"


def test_image_input_must_be_an_image_ref():
    t = tpl("{image: image}", "{% block user %}{{ image }}{% endblock %}")
    with pytest.raises(TemplateRenderError, match="image input 'image' must be an ImageRef") as info:
        render_template(t, {"image": "cat.png"})
    assert info.value.variable == "image"


def test_image_inside_a_text_input_is_refused(red):
    t = tpl("{items: list}", "{% block user %}{{ items }}{% endblock %}")
    with pytest.raises(TemplateRenderError, match="declared list but holds an image"):
        render_template(t, {"items": ["a", red]})


def test_user_block_that_renders_to_nothing():
    t = tpl("{q: {type: text, optional: true}}", "{% block user %}{% if q %}{{ q }}{% endif %}{% endblock %}")
    with pytest.raises(TemplateRenderError, match="user block rendered to nothing"):
        render_template(t, {})


def test_runtime_error_names_the_line():
    t = tpl("{n: number}", "{% block user %}\n\n{{ 10 / n }}{% endblock %}")
    with pytest.raises(TemplateRenderError, match=r"mem/t\.j2:8: ZeroDivisionError"):
        render_template(t, {"n": 0})


def test_tojson_writes_plain_json():
    t = tpl("{data: json}", "{% block user %}{{ data | tojson }}{% endblock %}")
    text = render_template(t, {"data": {"tag": "<b>", "name": "café"}}).messages[0].text
    assert text == '{"tag": "<b>", "name": "café"}'


def test_exemplars_are_in_the_context():
    t = tpl(
        "{q: text}",
        "{% block user %}{% for e in exemplars %}Q: {{ e.q }} A: {{ e.output }}\n{% endfor %}Q: {{ q }} A:{% endblock %}",
        extra="exemplars:\n  - {q: '1+1', output: '2'}\n  - {q: '2+2', output: '4'}\n",
    )
    assert render_template(t, {"q": "3+3"}).messages[0].text == "Q: 1+1 A: 2\nQ: 2+2 A: 4\nQ: 3+3 A:"


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__",
        "''.__class__.__mro__[1].__subclasses__()",
        "cycler.__init__.__globals__",
        "image._marker",
        "name.__len__()",
    ],
)
def test_sandbox_blocks_internals(red, expression):
    t = tpl(
        "{image: image, name: text}", "{% block user %}{{ image }}\n{{ " + expression + " }}{% endblock %}"
    )
    with pytest.raises(TemplateRenderError, match=r"mem/t\.j2:7: blocked by the sandbox") as info:
        render_template(t, {"image": red, "name": "x"})
    assert isinstance(info.value.__cause__, SecurityError)


def test_sandbox_blocks_mutating_inputs():
    t = tpl("{items: list}", "{% block user %}{{ items.append(4) }}{{ items }}{% endblock %}")
    items = [1, 2, 3]
    with pytest.raises(TemplateRenderError, match="blocked by the sandbox") as info:
        render_template(t, {"items": items})
    assert isinstance(info.value.__cause__, SecurityError)
    assert items == [1, 2, 3]
