"""What every registered validator shares: a config base (type, name, tasks) and a small base class."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from mmsynth.validators.types import Candidate, Verdict


class ValidatorConfig(BaseModel):
    """Fields every validator config has. Subclasses narrow `type` to a Literal with their registry key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="Registry key of the validator, e.g. 'heuristics'.")
    name: str | None = Field(
        default=None,
        min_length=1,
        description="Name used in verdicts and stats; defaults to the type. Set it to tell two validators of one type apart.",
    )
    tasks: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Apply only to candidates of these tasks; null applies to every task.",
    )

    @property
    def display_name(self) -> str:
        return self.name or self.type

    def applies_to(self, task: str) -> bool:
        """True when this validator should see candidates of `task` (the one place task scoping is decided)."""
        return self.tasks is None or task in self.tasks


C = TypeVar("C", bound=ValidatorConfig)


class ConfiguredValidator(Generic[C]):
    """A validator built from its config: name and task scope come from the config; no memory by default."""

    config_cls: ClassVar[type[ValidatorConfig]]
    # True when `remember` matters, so a resume can skip replaying records into stateless validators.
    stateful: ClassVar[bool] = False

    def __init__(self, config: C | None = None) -> None:
        # No config: the defaults of this class's config model (whose `type` has a default).
        self.config: C = config if config is not None else cast(C, self.config_cls.model_validate({}))
        self.name: str = self.config.display_name

    def applies_to(self, task: str) -> bool:
        return self.config.applies_to(task)

    def check(self, candidates: list[Candidate]) -> list[Verdict]:
        raise NotImplementedError

    def remember(self, candidate: Candidate) -> None:
        # Stateless validators have nothing to remember; dedup overrides this.
        return None

    def close(self) -> None:
        # Only validators with models (llm_judge, clip_score) hold anything to free.
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
