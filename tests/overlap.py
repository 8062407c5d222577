"""How many time spans were open at once: what a concurrency limit must bound."""

from __future__ import annotations

from datetime import datetime


def most_at_once(spans: list[tuple[datetime | None, datetime | None]]) -> int:
    """The most spans open at one time (a span ending at the instant another starts does not overlap it)."""
    edges = []
    for start, end in spans:
        assert start is not None and end is not None, "a span has not started or not ended"
        edges += [(start, 1), (end, -1)]
    open_now = peak = 0
    for _, step in sorted(edges):
        open_now += step
        peak = max(peak, open_now)
    return peak
