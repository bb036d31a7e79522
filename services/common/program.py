"""What every service's part of the program file shares: the error that lists
its problems, and strict (unknown keys refused), frozen sections."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ProgramError(ValueError):
    """An invalid program; one line per problem, each naming where it is."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid program:\n  " + "\n  ".join(problems))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
