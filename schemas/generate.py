"""Writes the JSON Schema of every catalogued event into ``schemas/json/``.

Run ``python -m schemas.generate``; ``tests/unit/test_schemas.py`` fails when the
committed files differ from what this produces.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas.events import CATALOG, Event

JSON_DIR = Path(__file__).parent / "json"


def schema_id(event_type: str, model: type[Event]) -> str:
    """The ``$id`` of an event type's JSON Schema (the AsyncAPI document names it too)."""
    return f"urn:loyalty:event:{event_type}:v{model.VERSION}"


def render() -> dict[str, str]:
    """File name -> JSON text for every event type."""
    out: dict[str, str] = {}
    for event_type, model in sorted(CATALOG.items()):
        schema = model.model_json_schema()
        schema["$id"] = schema_id(event_type, model)
        out[f"{event_type}.v{model.VERSION}.json"] = json.dumps(schema, indent=2) + "\n"
    return out


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    for stale in JSON_DIR.glob("*.json"):
        stale.unlink()
    for name, text in render().items():
        (JSON_DIR / name).write_text(text)
    print(f"wrote {len(CATALOG)} schemas to {JSON_DIR}")


if __name__ == "__main__":
    main()
