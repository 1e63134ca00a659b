"""Prompt templates: versioned Jinja2 files rendered into chat messages (the leaf layer)."""

from mmsynth.prompts.errors import TemplateError, TemplateRenderError
from mmsynth.prompts.lint import LintIssue, lint_template
from mmsynth.prompts.media import ImageRef
from mmsynth.prompts.messages import ImagePart, Message, RenderedPrompt, TextPart
from mmsynth.prompts.registry import TemplateRegistry
from mmsynth.prompts.render import render_template
from mmsynth.prompts.template import InputSpec, PromptTemplate, load_template, parse_template

__all__ = [
    "ImagePart",
    "ImageRef",
    "InputSpec",
    "LintIssue",
    "Message",
    "PromptTemplate",
    "RenderedPrompt",
    "TemplateError",
    "TemplateRegistry",
    "TemplateRenderError",
    "TextPart",
    "lint_template",
    "load_template",
    "parse_template",
    "render_template",
]
