"""The daily storage and usage report, as a markdown artifact in the Prefect UI."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact

from tasks.maintenance import report_usage

ARTIFACT_KEY = "usage-report"
STATUSES = ("queued", "processing", "completed", "failed", "cancelled")


@flow(name="usage-report", log_prints=True)
async def daily_usage_report(hours: int = 24) -> dict[str, Any]:
    report = report_usage(hours)
    await acreate_markdown_artifact(key=ARTIFACT_KEY, markdown=_markdown(report), description="Usage")
    return report


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"**Last {report['hours']} h**: {report['jobs_total']} job(s); "
        f"storage in use {report['storage_bytes']:,} bytes",
        "",
        "| job type | " + " | ".join(STATUSES) + " |",
        "|---" * (len(STATUSES) + 1) + "|",
    ]
    for job_type, counts in sorted(report["jobs"].items()):
        lines.append(f"| {job_type} | " + " | ".join(str(counts.get(s, 0)) for s in STATUSES) + " |")
    lines += ["", "| storage | files | bytes |", "|---|---|---|"]
    for name, entry in sorted(report["storage"].items()):
        lines.append(f"| {name} | {entry['files']} | {entry['bytes']:,} |")
    return "\n".join(lines)
