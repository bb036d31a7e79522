"""Reading the program file (YAML): ``LOYALTY_PROGRAM`` or the default program.
Each service validates the sections it owns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_PROGRAM = Path(__file__).parent / "default_program.yaml"


def read_program(path: Path | None) -> Any:
    source = path or DEFAULT_PROGRAM
    try:
        return yaml.safe_load(source.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the program file {source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"the program file {source} is not valid YAML: {exc}") from None
