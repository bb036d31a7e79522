"""Progress bars for long CLI commands: on a terminal a bar (tqdm) per phase on
stderr; in a pipe or a file, nothing."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from tqdm import tqdm


class TerminalProgress:
    """A bar for each phase of a long command, shown only when stderr is a TTY."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None

    def phase(self, name: str, total: int) -> None:
        self.close()
        if self.enabled:
            unit = "B" if name == "reading" else " events"
            self._bar = tqdm(
                total=total,
                desc=name,
                unit=unit,
                unit_scale=name == "reading",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
