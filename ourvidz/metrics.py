"""Prometheus metrics computed from the job database at scrape time.

Several gateway processes may serve `/metrics`, so nothing is counted in process: every scrape runs a
few aggregate queries (GROUP BY, sums of CASE expressions) against the database, the source of truth,
and every process answers the same. The queries are the same on SQLite and PostgreSQL; the one thing
the two spell differently, the seconds between two timestamps, is compiled per dialect below.

Counters (`*_total`) count rows of the table: they only grow while jobs are kept, and drop (a counter
reset to Prometheus) if old jobs are deleted. Histograms and rates cover a recent window, said in their
HELP text. Every label takes few values: job types and queues of the catalog, statuses, error codes
(the jobs' `error_code` column), enhancement strategies, storage buckets of the catalog and registered
workers; never free text or user ids.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.utils import floatToGoString
from sqlalchemy import ColumnElement, Float, and_, case, distinct, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from ourvidz.catalog import JOB_TYPES
from ourvidz.db.models import ContentRefusal, Image, Job, Video, Worker, WorkerHealth
from ourvidz.db.types import utcnow
from ourvidz.job_status import FINAL_STATUSES, JobStatus
from ourvidz.policy import Layer, ProhibitedCategory

PREFIX = "ourvidz"
WINDOW = timedelta(hours=24)  # durations and worker health look this far back
RATE_WINDOW = timedelta(minutes=5)  # processing rate: completions in this window per second
# seconds: SDXL jobs take a few, Wan images about a minute or two, Wan videos three to five minutes
DURATION_BUCKETS = (
    0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
ACTIVE_USER_WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}

OTHER = "other"
MAX_CODE_CHARS = 40
MAX_LABEL_VALUES = 50  # per label of codes, strategies and workers: a safety net, far above real use
CODE_PATTERN = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]{2,}")
STRATEGY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
NO_ENHANCEMENT = "none"
FALLBACK_SUFFIX = "_fallback"
HEALTHY = "healthy"
UNKNOWN_ERROR = "UNKNOWN"  # a failed job without a code (none is written so any more)

KNOWN_JOB_TYPES = tuple(JOB_TYPES)
KNOWN_QUEUES = tuple(sorted({job.queue for job in JOB_TYPES.values()}))
KNOWN_BUCKETS = frozenset(job.default_bucket for job in JOB_TYPES.values())
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.PROCESSING)
FINAL_ORDER = tuple(status for status in JobStatus if status in FINAL_STATUSES)


# --- the expression SQLite and PostgreSQL spell differently -----------------------------------------------


class seconds_between(FunctionElement[float]):  # a SQL function, named like one
    """`end - start` in seconds (NULL if either is NULL)."""

    type = Float()
    name = "seconds_between"
    inherit_cache = True


@compiles(seconds_between)
def _seconds_between(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(seconds_between, "sqlite")
def _seconds_between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


# --- bounded label values ------------------------------------------------------------------------------


def _code(value: str) -> str:
    return value if len(value) <= MAX_CODE_CHARS and CODE_PATTERN.fullmatch(value) else OTHER


def _job_type(value: str | None) -> str:
    return value if value in JOB_TYPES else OTHER


def _bucket(value: str | None) -> str:
    return value if value in KNOWN_BUCKETS else OTHER


def _strategy(value: str) -> str:
    return value if STRATEGY_PATTERN.fullmatch(value) else OTHER


def _capped(counts: dict[tuple[str, ...], float], position: int) -> dict[tuple[str, ...], float]:
    """Keep the MAX_LABEL_VALUES most common values of label `position`; fold the rest into `other`."""
    totals: Counter[str] = Counter()
    for labels, value in counts.items():
        totals[labels[position]] += value
    if len(totals) <= MAX_LABEL_VALUES:
        return counts
    ranked = sorted(totals, key=lambda label: (-totals[label], label))  # ties: the same choice every scrape
    kept = set(ranked[: MAX_LABEL_VALUES - 1])
    capped: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in counts.items():
        if labels[position] not in kept:
            labels = (*labels[:position], OTHER, *labels[position + 1 :])
        capped[labels] += value
    return dict(capped)


def _worker_name(value: str | None) -> str:
    """A worker name as a label: a URL is cut to host[:port] (no path, no credentials)."""
    if not value:
        return ""
    if "://" in value:
        parts = urlsplit(value)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if parts.port else host
    return value[:200]


# --- the collector ------------------------------------------------------------------------------------


@dataclass
class _Histogram:
    count: int = 0
    total: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))

    def samples(self) -> list[tuple[str, float]]:
        return [(floatToGoString(b), n) for b, n in zip(DURATION_BUCKETS, self.buckets, strict=True)] + [
            ("+Inf", self.count)
        ]


def _float(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _name(metric: str) -> str:
    return f"{PREFIX}_{metric}"


class JobMetrics:
    """A Prometheus collector over the job database of `sessions` (register it in a CollectorRegistry)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        window: timedelta = WINDOW,
        rate_window: timedelta = RATE_WINDOW,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.window = window
        self.rate_window = rate_window
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples, so registering costs no database query."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        now = self.clock()
        families = self._families()
        with self.sessions() as session:
            self._jobs(session, families)
            self._queues(session, families, now)
            self._durations(session, families, now)
            self._failures(session, families)
            self._refusals(session, families)
            self._storage(session, families)
            self._enhancement(session, families)
            self._active_users(session, families, now)
            self._workers(session, families, now)
        families["scrape_seconds"].add_metric([], time.perf_counter() - started)
        yield from families.values()

    def _families(self) -> dict[str, Metric]:
        hours = f"{self.window.total_seconds() / 3600:g} h"
        rate_seconds = f"{self.rate_window.total_seconds():g} s"
        return {
            "created": CounterMetricFamily(
                _name("jobs_created"), "Jobs created (job table rows), by job type.", labels=["job_type"]
            ),
            "finished": CounterMetricFamily(
                _name("jobs_finished"),
                "Jobs that reached a final status (completed, failed, cancelled), by job type.",
                labels=["job_type", "status"],
            ),
            "active": GaugeMetricFamily(
                _name("jobs_active"), "Jobs queued or processing, by job type.", labels=["job_type", "status"]
            ),
            "queue_length": GaugeMetricFamily(
                _name("queue_length"), "Jobs queued or processing now, by queue.", labels=["queue"]
            ),
            "queue_age": GaugeMetricFamily(
                _name("queue_oldest_job_age_seconds"),
                "Age of the oldest job still waiting (queued) in the queue; 0 if none waits.",
                labels=["queue"],
            ),
            "undispatched": GaugeMetricFamily(
                _name("queue_undispatched"),
                "Queued jobs that have no flow run yet, by queue (waiting for the gateway or a dispatcher).",
                labels=["queue"],
            ),
            "undispatched_age": GaugeMetricFamily(
                _name("queue_oldest_undispatched_age_seconds"),
                "Age of the oldest queued job without a flow run; 0 if none. More than a few seconds while "
                "Prefect is idle means nothing dispatches (with OURVIDZ_DISPATCH=dispatcher: no dispatcher).",
                labels=["queue"],
            ),
            "duration": HistogramMetricFamily(
                _name("job_duration_seconds"),
                f"Creation to completion of the jobs completed in the last {hours}, by job type (a sliding "
                "window: use histogram_quantile on the buckets directly, not on rate()).",
                labels=["job_type"],
            ),
            "processing": HistogramMetricFamily(
                _name("job_processing_seconds"),
                f"Start to completion (last attempt) of the jobs completed in the last {hours}, by job type "
                "(a sliding window: use histogram_quantile on the buckets directly, not on rate()).",
                labels=["job_type"],
            ),
            "rate": GaugeMetricFamily(
                _name("job_processing_rate"),
                f"Jobs completed per second over the last {rate_seconds}, by job type.",
                labels=["job_type"],
            ),
            "failures": CounterMetricFamily(
                _name("job_failures"),
                "Failed jobs by job type and error code (the job's `error_code`: CONTENT_PROHIBITED, "
                f"GENERATION_FAILED, WORKER_LOST, ...; {UNKNOWN_ERROR} for a job without one).",
                labels=["job_type", "code"],
            ),
            "refusals": CounterMetricFamily(
                _name("content_refusals"),
                "Texts the content gate refused (jobs, enhancements, chat turns), by the layer that refused "
                "them (lexical, semantic, moderation) and the prohibited category.",
                labels=["layer", "category"],
            ),
            "storage_bytes": GaugeMetricFamily(
                _name("storage_bytes"),
                "Bytes of stored output files (images, videos) by kind and bucket.",
                labels=["kind", "bucket"],
            ),
            "storage_files": GaugeMetricFamily(
                _name("storage_files"),
                "Stored output files (images, videos) by kind and bucket.",
                labels=["kind", "bucket"],
            ),
            "enhancements": CounterMetricFamily(
                _name("enhancements"),
                "Jobs whose prompt was enhanced, by strategy (chat_worker, local_llm, rules, *_fallback).",
                labels=["strategy"],
            ),
            "enhancement_success": GaugeMetricFamily(
                _name("enhancement_success_ratio"),
                "Share of enhanced jobs whose first enhancer answered (strategy not *_fallback); NaN: none.",
            ),
            "token_ratio": SummaryMetricFamily(
                _name("enhancement_token_ratio"),
                "Tokens of the enhanced prompt per token of the original, by strategy (sum/count = mean).",
                labels=["strategy"],
            ),
            "compressed": CounterMetricFamily(
                _name("enhancement_compressed"),
                "Enhanced jobs whose prompt was compressed to fit the token budget, by strategy.",
                labels=["strategy"],
            ),
            "active_users": GaugeMetricFamily(
                _name("active_users"), "Distinct users who created a job in the window.", labels=["window"]
            ),
            "worker_up": GaugeMetricFamily(
                _name("worker_up"),
                f"1 if the worker's latest health check (last {hours}) found it healthy, else 0.",
                labels=["worker_type", "worker_name"],
            ),
            "worker_response": GaugeMetricFamily(
                _name("worker_response_seconds"),
                "Response time of the worker's latest health check.",
                labels=["worker_type", "worker_name"],
            ),
            "worker_checked": GaugeMetricFamily(
                _name("worker_last_check_timestamp_seconds"),
                "Unix time of the worker's latest health check.",
                labels=["worker_type", "worker_name"],
            ),
            "scrape_seconds": GaugeMetricFamily(
                _name("metrics_scrape_seconds"), "Seconds this scrape spent computing the metrics."
            ),
        }

    def _jobs(self, session: Session, families: dict[str, Metric]) -> None:
        query = select(Job.job_type, Job.status, func.count()).group_by(Job.job_type, Job.status)
        rows = session.execute(query)
        created: dict[str, int] = dict.fromkeys(KNOWN_JOB_TYPES, 0)
        by_status: dict[tuple[str, JobStatus], int] = defaultdict(int)
        for job_type, status, count in rows:
            label = _job_type(job_type)
            created[label] = created.get(label, 0) + count
            by_status[label, JobStatus(status)] += count
        for job_type, count in created.items():
            families["created"].add_metric([job_type], count)
            for status in FINAL_ORDER:
                families["finished"].add_metric([job_type, status.value], by_status[job_type, status])
            for status in ACTIVE_STATUSES:
                families["active"].add_metric([job_type, status.value], by_status[job_type, status])

    def _queues(self, session: Session, families: dict[str, Metric], now: datetime) -> None:
        no_run = Job.flow_run_id.is_(None)
        columns = (func.count(), func.min(Job.created_at), func.count(case((no_run, 1))))
        query = (
            select(Job.queue, Job.status, *columns, func.min(case((no_run, Job.created_at))))
            .where(Job.status.in_(ACTIVE_STATUSES))
            .group_by(Job.queue, Job.status)
        )
        lengths: dict[str, int] = dict.fromkeys(KNOWN_QUEUES, 0)
        ages: dict[str, float] = dict.fromkeys(KNOWN_QUEUES, 0.0)
        waiting: dict[str, int] = dict.fromkeys(KNOWN_QUEUES, 0)
        waiting_ages: dict[str, float] = dict.fromkeys(KNOWN_QUEUES, 0.0)
        for queue, status, count, oldest, undispatched, oldest_undispatched in session.execute(query):
            label = queue if queue in KNOWN_QUEUES else OTHER
            lengths[label] = lengths.get(label, 0) + count
            if status == JobStatus.QUEUED and oldest is not None:
                ages[label] = max(ages.get(label, 0.0), (now - oldest).total_seconds())
            if status == JobStatus.QUEUED and oldest_undispatched is not None:
                waiting[label] = waiting.get(label, 0) + undispatched
                age = (now - oldest_undispatched).total_seconds()
                waiting_ages[label] = max(waiting_ages.get(label, 0.0), age)
        for queue, length in lengths.items():
            families["queue_length"].add_metric([queue], length)
            families["queue_age"].add_metric([queue], max(0.0, ages.get(queue, 0.0)))
            families["undispatched"].add_metric([queue], waiting.get(queue, 0))
            families["undispatched_age"].add_metric([queue], max(0.0, waiting_ages.get(queue, 0.0)))

    def _durations(self, session: Session, families: dict[str, Metric], now: datetime) -> None:
        total = seconds_between(Job.created_at, Job.completed_at)
        run = seconds_between(Job.started_at, Job.completed_at)

        def at_most(seconds: ColumnElement[float], bound: float) -> ColumnElement[Any]:
            return func.sum(case((seconds <= bound, 1), else_=0))

        recent = Job.completed_at >= now - self.rate_window
        query = (
            select(
                Job.job_type,
                func.count(),
                func.sum(total),
                func.count(run),
                func.sum(run),
                func.sum(case((recent, 1), else_=0)),
                *(at_most(total, bound) for bound in DURATION_BUCKETS),
                *(at_most(run, bound) for bound in DURATION_BUCKETS),
            )
            .where(Job.status == JobStatus.COMPLETED, Job.completed_at >= now - self.window)
            .group_by(Job.job_type)
        )
        totals = {job_type: _Histogram() for job_type in KNOWN_JOB_TYPES}
        runs = {job_type: _Histogram() for job_type in KNOWN_JOB_TYPES}
        recent_counts: dict[str, int] = dict.fromkeys(KNOWN_JOB_TYPES, 0)
        size = len(DURATION_BUCKETS)
        for row in session.execute(query):
            job_type, count, total_sum, run_count, run_sum, recent_count = row[:6]
            label = _job_type(job_type)
            for histograms, n, seconds, buckets in (
                (totals, count, total_sum, row[6 : 6 + size]),
                (runs, run_count, run_sum, row[6 + size :]),
            ):
                histogram = histograms.setdefault(label, _Histogram())
                histogram.count += n
                histogram.total += _float(seconds)
                histogram.buckets = [a + int(b or 0) for a, b in zip(histogram.buckets, buckets, strict=True)]
            recent_counts[label] = recent_counts.get(label, 0) + int(recent_count or 0)
        for job_type in totals:
            families["duration"].add_metric([job_type], totals[job_type].samples(), totals[job_type].total)
            families["processing"].add_metric([job_type], runs[job_type].samples(), runs[job_type].total)
        for job_type, count in recent_counts.items():
            families["rate"].add_metric([job_type], count / self.rate_window.total_seconds())

    def _failures(self, session: Session, families: dict[str, Metric]) -> None:
        code = func.coalesce(Job.error_code, UNKNOWN_ERROR)
        query = (
            select(Job.job_type, code, func.count())
            .where(Job.status == JobStatus.FAILED)
            .group_by(Job.job_type, code)
        )
        counts: dict[tuple[str, ...], float] = defaultdict(float)
        for job_type, error_code, count in session.execute(query):
            counts[_job_type(job_type), _code(error_code)] += count
        for labels, count in sorted(_capped(counts, 1).items()):
            families["failures"].add_metric(list(labels), count)

    def _refusals(self, session: Session, families: dict[str, Metric]) -> None:
        query = select(ContentRefusal.layer, ContentRefusal.category, func.count()).group_by(
            ContentRefusal.layer, ContentRefusal.category
        )
        counts = {(layer.value, category.value): 0 for layer in Layer for category in ProhibitedCategory}
        for layer, category, count in session.execute(query):
            if (layer, category) in counts:
                counts[layer, category] = count
        for labels, count in counts.items():
            families["refusals"].add_metric(list(labels), count)

    def _storage(self, session: Session, families: dict[str, Metric]) -> None:
        for kind, model in (("image", Image), ("video", Video)):
            query = (
                select(model.bucket, func.count(), func.sum(model.size_bytes))
                .where(model.size_bytes.is_not(None))
                .group_by(model.bucket)
            )
            files: dict[str, int] = defaultdict(int)
            sizes: dict[str, float] = defaultdict(float)
            for bucket, count, size in session.execute(query):
                files[_bucket(bucket)] += count
                sizes[_bucket(bucket)] += _float(size)
            for bucket in sorted(files):
                families["storage_files"].add_metric([kind, bucket], files[bucket])
                families["storage_bytes"].add_metric([kind, bucket], sizes[bucket])

    def _enhancement(self, session: Session, families: dict[str, Metric]) -> None:
        # written by the enhancement stage of every job with a strategy (the WHERE below), so numbers
        tokens = Job.meta[("enhancement", "token_count")].as_float()
        original = Job.meta[("enhancement", "original_token_count")].as_float()
        ratio = case((original > 0, tokens / original))
        compressed = case((Job.meta[("enhancement", "compression_applied")].as_boolean(), 1), else_=0)
        query = (
            select(Job.enhancement_strategy, func.count())
            .add_columns(func.count(ratio), func.sum(ratio), func.sum(compressed))
            .where(Job.enhancement_strategy.is_not(None), Job.enhancement_strategy != NO_ENHANCEMENT)
            .group_by(Job.enhancement_strategy)
        )
        counts: dict[tuple[str, ...], float] = defaultdict(float)
        ratio_counts: dict[str, float] = defaultdict(float)
        ratio_sums: dict[str, float] = defaultdict(float)
        compressions: dict[str, float] = defaultdict(float)
        for strategy, count, ratio_count, ratio_sum, compressed_count in session.execute(query):
            label = _strategy(strategy)
            counts[(label,)] += count
            ratio_counts[label] += ratio_count
            ratio_sums[label] += _float(ratio_sum)
            compressions[label] += _float(compressed_count)
        capped = _capped(counts, 0)
        for (strategy,), count in sorted(capped.items()):
            families["enhancements"].add_metric([strategy], count)
        for strategy in sorted(ratio_counts):
            label = strategy if (strategy,) in capped else OTHER
            families["token_ratio"].add_metric([label], ratio_counts[strategy], ratio_sums[strategy])
            families["compressed"].add_metric([label], compressions[strategy])
        enhanced = sum(counts.values())
        first_choice = sum(n for (s,), n in counts.items() if not s.endswith(FALLBACK_SUFFIX))
        families["enhancement_success"].add_metric([], first_choice / enhanced if enhanced else float("nan"))

    def _active_users(self, session: Session, families: dict[str, Metric], now: datetime) -> None:
        windows = sorted(ACTIVE_USER_WINDOWS.items(), key=lambda item: item[1])
        longest = windows[-1][1]
        columns = [
            func.count(distinct(case((Job.created_at >= now - span, Job.user_id)))) for _, span in windows
        ]
        row = session.execute(select(*columns).where(Job.created_at >= now - longest)).one()
        for (label, _), count in zip(windows, row, strict=True):
            families["active_users"].add_metric([label], count)

    def _workers(self, session: Session, families: dict[str, Metric], now: datetime) -> None:
        since = now - self.window
        name = func.coalesce(WorkerHealth.worker_name, "")
        latest = (
            select(WorkerHealth.worker_type, name.label("name"))
            .add_columns(func.max(WorkerHealth.checked_at).label("at"))
            .where(WorkerHealth.checked_at >= since)
            .group_by(WorkerHealth.worker_type, name)
            .subquery()
        )
        query = (
            select(
                WorkerHealth.worker_type,
                WorkerHealth.worker_name,
                WorkerHealth.status,
                WorkerHealth.response_time_ms,
                WorkerHealth.checked_at,
            )
            .join(
                latest,
                and_(
                    WorkerHealth.worker_type == latest.c.worker_type,
                    name == latest.c.name,
                    WorkerHealth.checked_at == latest.c.at,
                ),
            )
            .order_by(WorkerHealth.worker_type, name)
        )
        seen: dict[tuple[str, str], tuple[bool, float | None, datetime]] = {}
        for worker_type, worker_name, status, response_ms, checked_at in session.execute(query):
            key = (worker_type, _worker_name(worker_name))
            if key not in seen and len(seen) < MAX_LABEL_VALUES:
                response = None if response_ms is None else response_ms / 1000
                seen[key] = (status == HEALTHY, response, checked_at)
        chat = self._chat_health(session, since)
        if chat is not None and not any(worker_type == "chat" for worker_type, _ in seen):
            seen[chat[0]] = chat[1]
        for (worker_type, worker_name), (up, response, checked_at) in sorted(seen.items()):
            labels = [worker_type, worker_name]
            families["worker_up"].add_metric(labels, 1 if up else 0)
            if response is not None:
                families["worker_response"].add_metric(labels, response)
            families["worker_checked"].add_metric(labels, checked_at.timestamp())

    @staticmethod
    def _chat_health(
        session: Session, since: datetime
    ) -> tuple[tuple[str, str], tuple[bool, float | None, datetime]] | None:
        """The registered chat worker's last probe (kept with its registration), if within the window."""
        row = session.scalar(select(Worker).where(Worker.kind == "chat", Worker.name == ""))
        if row is None or row.probed_at is None or row.probed_at < since:
            return None
        response = None if row.probe_response_ms is None else row.probe_response_ms / 1000
        return ("chat", _worker_name(row.url)), (row.probe_status == HEALTHY, response, row.probed_at)


def metrics_registry(sessions: sessionmaker[Session], **options: Any) -> CollectorRegistry:
    """A private registry holding only the job-database collector of `sessions`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobMetrics(sessions, **options))
    return registry
