"""The daily storage and usage report: what was generated, what it cost, what it occupies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Image, Job, UsageLog, Video
from ourvidz.db.types import utcnow


def usage_report(sessions: sessionmaker[Session], hours: int = 24) -> dict[str, Any]:
    """Jobs by type and status and credits over the last `hours`; storage in use by bucket (all time)."""
    since = utcnow() - timedelta(hours=hours)
    with sessions() as session:
        jobs = session.execute(
            select(Job.job_type, Job.status, func.count()).where(Job.created_at >= since)
            .group_by(Job.job_type, Job.status)
        ).all()  # fmt: skip
        credits = session.execute(
            select(UsageLog.action, func.coalesce(func.sum(UsageLog.credits_consumed), 0), func.count())
            .where(UsageLog.created_at >= since).group_by(UsageLog.action)
        ).all()  # fmt: skip
        storage: dict[str, dict[str, int]] = {}
        for kind, model in (("images", Image), ("videos", Video)):
            rows = session.execute(
                select(model.bucket, func.count(), func.coalesce(func.sum(model.size_bytes), 0))
                .where(model.size_bytes.is_not(None))  # placeholders of unfinished jobs hold no file
                .group_by(model.bucket)
            ).all()  # fmt: skip
            for bucket, files, size in rows:
                entry = storage.setdefault(f"{kind}/{bucket}", {"files": 0, "bytes": 0})
                entry["files"] += files
                entry["bytes"] += int(size)
    by_type: dict[str, dict[str, int]] = {}
    for job_type, status, count in jobs:
        by_type.setdefault(job_type, {})[str(status)] = count
    return {
        "hours": hours, "since": since.isoformat(), "jobs": by_type,
        "jobs_total": sum(count for *_, count in jobs),
        "credits": {action: {"credits": float(total), "jobs": count} for action, total, count in credits},
        "storage": storage, "storage_bytes": sum(entry["bytes"] for entry in storage.values()),
    }  # fmt: skip
