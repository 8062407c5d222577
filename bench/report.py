"""What every benchmark here shares: the percentile it reports and how it publishes its result."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0..1); NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def publish(result: dict[str, Any], path: Path | None) -> None:
    """Print the result as JSON, with the machine and date it was measured on, and write it to `path`
    when one was given."""
    text = json.dumps({"machine": machine(), "date": datetime.now(UTC).isoformat(), **result}, indent=2)
    print(text)
    if path is not None:
        path.write_text(text)


def machine() -> dict[str, Any]:
    """What the numbers depend on: CPU model and count, memory, OS, Python."""
    model = next(
        (line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    memory = next((line.split()[1] for line in _lines("/proc/meminfo") if line.startswith("MemTotal")), None)
    return {
        "cpu": model, "cpus": os.cpu_count(), "memory_gib": round(int(memory) / 2**20, 1) if memory else None,
        "system": platform.platform(), "python": platform.python_version(),
    }  # fmt: skip


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []
