"""One error base with its exit code, mapped in one place (`cli.main.main`): a message, no traceback."""

from __future__ import annotations

import pytest

from mmsynth.factory.cli.main import main
from mmsynth.factory.curate.filter import ValidateError
from mmsynth.factory.dataset.run_dir import RunDirError
from mmsynth.factory.engine.dispatch import BackendFailure
from mmsynth.factory.engine.plan import ModelLoadError
from mmsynth.factory.errors import RecipeError
from mmsynth.factory.executors.ray import RayExecutorError
from mmsynth.factory.publish.plan import PublishError
from mmsynth.factory.publish.upload import PublishAborted
from mmsynth.factory.studio.preview import StudioError
from mmsynth.prompts.errors import MmsynthError, TemplateError, TemplateRenderError


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (RecipeError, 2),
        (RunDirError, 2),
        (ValidateError, 2),
        (PublishError, 2),
        (TemplateError, 2),
        (TemplateRenderError, 2),
        (StudioError, 2),
        (PublishAborted, 1),
        (ModelLoadError, 1),
        (RayExecutorError, 1),
        (BackendFailure, 1),
    ],
)
def test_every_user_facing_error_is_an_mmsynth_error_with_its_exit_code(cls, code):
    assert issubclass(cls, MmsynthError) and cls.exit_code == code


def test_template_errors_stay_value_errors():
    # Callers (and the validators) catch them as ValueError.
    assert issubclass(TemplateError, ValueError)


def test_a_template_error_exits_2_with_its_message_and_no_traceback(capsys):
    assert main(["prompts", "show", "caption.shrot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown template 'caption.shrot'") and "Did you mean 'caption.short'" in err
    assert "Traceback" not in err


def test_a_publish_error_exits_2_through_main(tmp_path, capsys):
    code = main(
        ["publish", str(tmp_path / "no-run"), "--repo", "me/data", "--dry-run", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
