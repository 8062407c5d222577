"""docs/configuration.md, generated from the settings' own descriptions so the two never drift:
`python -m ourvidz.settings_doc > docs/configuration.md` (a test compares them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from ourvidz.config import SECRET_FIELDS, Settings

HEADER = """# Configuration

Every setting is an environment variable (or a line in `.env`), defined in `ourvidz/config.py`; this
page is generated from it (`python -m ourvidz.settings_doc > docs/configuration.md`).

| variable | default | meaning |
|---|---|---|
"""


def _default(name: str, field: FieldInfo) -> str:
    if name in SECRET_FIELDS:
        return "generated (embedded)"
    value: Any = field.get_default(call_default_factory=True)
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value if not isinstance(value, Path) else value.as_posix()}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    rows = [
        f"| `OURVIDZ_{name.upper()}` | {_default(name, field)} | {_cell(field.description or '')} |"
        for name, field in Settings.model_fields.items()
    ]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
