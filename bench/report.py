"""What every benchmark here shares: the percentile it reports and how it publishes its result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0..1); NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def publish(result: dict[str, Any], path: Path | None) -> None:
    """Print the result as JSON, and write it to `path` when one was given."""
    text = json.dumps(result, indent=2)
    print(text)
    if path is not None:
        path.write_text(text)
