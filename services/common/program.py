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


def where(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as the start of a problem line."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2:
        return f"{'.'.join(parts[:-1])}, field {parts[-1]!r}: "
    return f"{'.'.join(parts) or 'program'}: "
