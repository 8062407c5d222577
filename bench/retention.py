"""Run count over time: the embedded stack (`ourvidz up`'s processes) left running with its maintenance
schedules, sampled every minute; the flow runs Prefect keeps (those that ran: not the scheduled ones
it keeps ready ahead) against the runs that ran (the baseline: what it would keep without
retention), in the same run.

    python bench/retention.py [--minutes 60] [--retention-minutes 10] [--prune-every 5] [--json PATH]

Retention is shortened (OURVIDZ_MAINTENANCE_RUN_RETENTION_HOURS, OURVIDZ_PRUNE_INTERVAL_MINUTES) so
that an hour shows the plateau a day would: kept runs should stop growing at about (retention + prune
interval) x the schedules' rate (~4.4 runs a minute). Made = kept + deleted, the deleted ones summed
from the `ourvidz.runs.pruned` events of the prune runs (events outlive the runs they count).
Target (issue 20): the run count stays bounded over a 1-hour run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.settings import PREFECT_API_URL, temporary_settings

from ourvidz.config import Settings
from ourvidz.stack import free_port, start_local_stack

from report import publish

PRUNED = "ourvidz.runs.pruned"


def _sample(started: datetime) -> tuple[int, int]:
    """(maintenance runs kept, maintenance runs deleted so far)."""
    with get_client(sync_client=True) as client:
        ran = FlowRunFilter(  # not the runs the scheduler keeps ready ahead (up to 100 per deployment)
            tags=FlowRunFilterTags(all_=["maintenance"]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED])),
        )
        kept = client.count_flow_runs(flow_run_filter=ran)
        events = client.read_events(
            EventFilter(
                event=EventNameFilter(name=[PRUNED]),
                occurred=EventOccurredFilter(since=started, until=datetime.now(UTC) + timedelta(minutes=1)),
            ),
            limit=50,
        )
        deleted = 0
        page: Any = events
        while True:
            deleted += sum(int(e.payload.get("maintenance runs", 0)) for e in page.events)
            if not page.next_page:
                break
            page = client.read_events_page(page.next_page)
    return kept, deleted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--retention-minutes", type=float, default=10)
    parser.add_argument("--prune-every", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="ourvidz-retention-"))
    os.environ |= {
        "OURVIDZ_DATA_DIR": str(data_dir), "OURVIDZ_PREFECT_PORT": str(free_port()),
        "OURVIDZ_API_PORT": str(free_port()), "OURVIDZ_EMBEDDED_DATABASE": "sqlite",
        "OURVIDZ_MAINTENANCE_RUN_RETENTION_HOURS": str(args.retention_minutes / 60),
        "OURVIDZ_PRUNE_INTERVAL_MINUTES": str(args.prune_every),
    }  # fmt: skip
    os.environ.pop("PREFECT_API_URL", None)
    local = start_local_stack(Settings())
    samples = []
    started = datetime.now(UTC)
    try:
        with temporary_settings(updates={PREFECT_API_URL: local.api_url}):
            for minute in range(args.minutes + 1):
                kept, deleted = _sample(started)
                samples.append({"minute": minute, "kept": kept, "made": kept + deleted, "deleted": deleted})
                print(f"{minute:>4} min  kept {kept:>5}  made {kept + deleted:>5}", flush=True)
                if minute < args.minutes:
                    time.sleep(60)  # the sampling period: what is measured is the count over time
    finally:
        local.stack.stop()
    last_half = [s["kept"] for s in samples[len(samples) // 2 :]]
    result = {
        "benchmark": "retention", "minutes": args.minutes, "retention_minutes": args.retention_minutes,
        "prune_every_minutes": args.prune_every, "samples": samples,
        "summary": {"kept_max": max(s["kept"] for s in samples), "kept_last": samples[-1]["kept"],
                    "made_last": samples[-1]["made"], "kept_max_second_half": max(last_half),
                    "kept_min_second_half": min(last_half)},
    }  # fmt: skip
    publish(result, args.json)
    print(f"\n{'minute':>6} {'kept':>6} {'made (no retention)':>20}")
    for s in samples[:: max(1, len(samples) // 12)]:
        print(f"{s['minute']:>6} {s['kept']:>6} {s['made']:>20}")


if __name__ == "__main__":
    main()
