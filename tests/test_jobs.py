"""The job life cycle in the database, on SQLite and PostgreSQL: create, start, outputs, finish."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import UnknownJobType
from ourvidz.db.models import Image, Job, Profile, UsageLog, Video
from ourvidz.generation.request import InvalidRequest
from ourvidz.generation.results import Asset
from ourvidz.job_status import JobStatus
from ourvidz.jobs.create import add_job, create_job, ensure_profile
from ourvidz.jobs.enhancement import apply_enhancement
from ourvidz.jobs.finish import Superseded, finish_job, set_progress
from ourvidz.jobs.outputs import record_outputs
from ourvidz.jobs.recovery import RunFate, recover_job
from ourvidz.jobs.start import JobNotFound, JobNotRunnable, JobRejected, start_job
from ourvidz.policy import ContentTier, ContentTierNotAllowed


@pytest.fixture
def user(sessions: sessionmaker[Session]) -> uuid.UUID:
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id)
    return user_id


def _job(
    sessions: sessionmaker[Session], user: uuid.UUID, job_type: str = "sdxl_image_fast", **kw: object
) -> Job:
    return create_job(sessions, user_id=user, job_type=job_type, prompt="a quiet harbour", **kw).job  # type: ignore[arg-type]


def test_create_checks_like_the_flow_will(sessions: sessionmaker[Session], user: uuid.UUID) -> None:
    with pytest.raises(UnknownJobType):
        _job(sessions, user, job_type="sdxl_video")
    with pytest.raises(InvalidRequest, match="width"):
        _job(sessions, user, metadata={"width": 1001})
    with pytest.raises(InvalidRequest, match="num_images"):
        _job(sessions, user, metadata={"num_images": 2})
    with pytest.raises(InvalidRequest, match="bucket"):
        _job(sessions, user, metadata={"bucket": "../etc"})
    with pytest.raises(InvalidRequest, match="content_tier"):
        _job(sessions, user, metadata={"content_tier": "anything"})
    job = _job(sessions, user, job_type="wan_video_fast")
    assert (job.job_type, job.queue, job.format, job.quality, job.status) == (
        "video_fast", "wan", "video", "fast", JobStatus.QUEUED,
    )  # fmt: skip


def test_idempotency_key_returns_the_same_job(sessions: sessionmaker[Session], user: uuid.UUID) -> None:
    first = _job(sessions, user, idempotency_key="click-1")
    assert _job(sessions, user, idempotency_key="click-1").id == first.id
    assert _job(sessions, user, idempotency_key="click-2").id != first.id
    other_user = uuid.uuid4()
    ensure_profile(sessions, other_user)
    assert _job(sessions, other_user, idempotency_key="click-1").id != first.id


def test_a_racing_retry_gets_the_first_job(sessions: sessionmaker[Session], user: uuid.UUID) -> None:
    """Two requests with one key, the second checking before the first commits: the unique constraint
    stops the second insert and it answers with the first job."""
    fields = {"user_id": user, "job_type": "sdxl_image_fast", "prompt": "a quiet harbour"}
    with ThreadPoolExecutor(1) as pool, sessions.begin() as first:
        mine = add_job(first, **fields, idempotency_key="click-race")  # type: ignore[arg-type]
        second = pool.submit(create_job, sessions, **fields, idempotency_key="click-race")
        time.sleep(0.5)  # the second request now waits on the first one's uncommitted row
        assert not second.done()
    retried = second.result(timeout=30)
    assert (retried.created, retried.job.id) == (False, mine.job.id)
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Job.idempotency_key == "click-race")) == 1


def test_two_first_jobs_of_a_new_user_at_once_both_succeed(sessions: sessionmaker[Session]) -> None:
    """The second request, which saw no profile either, waits on the first one's profile row and then
    uses it instead of failing on the duplicate key."""
    new_user = uuid.uuid4()
    fields = {"user_id": new_user, "job_type": "sdxl_image_fast", "prompt": "a quiet harbour"}
    with ThreadPoolExecutor(1) as pool, sessions.begin() as first:
        mine = add_job(first, **fields)  # type: ignore[arg-type]
        second = pool.submit(create_job, sessions, **fields)
        time.sleep(0.5)
    other = second.result(timeout=30)
    assert other.created and other.job.id != mine.job.id
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Job.user_id == new_user)) == 2
        assert session.get(Profile, new_user) is not None


def test_start_moves_a_queued_job_to_processing_once(
    sessions: sessionmaker[Session], user: uuid.UUID
) -> None:
    job = _job(sessions, user, metadata={"num_images": 3, "seeds": [1, 2, 3], "steps": 5})
    run_id = uuid.uuid4()
    spec = start_job(sessions, job.id, run_id)
    assert (spec.request.seeds, spec.request.steps, spec.bucket) == ((1, 2, 3), 5, "sdxl_image_fast")
    with sessions() as session:
        row = session.get_one(Job, job.id)
        assert (row.status, row.attempts, row.flow_run_id) == (JobStatus.PROCESSING, 1, run_id)
    with pytest.raises(JobNotRunnable):
        start_job(sessions, job.id, uuid.uuid4())
    with pytest.raises(JobNotFound):
        start_job(sessions, uuid.uuid4(), None)


@pytest.mark.parametrize(
    ("allowed", "verified", "requested", "ok"),
    [
        (ContentTier.ARTISTIC, False, "artistic", True),
        (ContentTier.ARTISTIC, True, "explicit", False),
        (ContentTier.EXPLICIT, False, "explicit", False),
        (ContentTier.EXPLICIT, True, "explicit", True),
        (ContentTier.EXPLICIT, True, "unrestricted", False),
        (ContentTier.UNRESTRICTED, True, "unrestricted", True),
    ],
)
def test_content_tier_permission(
    sessions: sessionmaker[Session], allowed: ContentTier, verified: bool, requested: str, ok: bool
) -> None:
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id, tier=allowed, age_verified=verified)
    job = _job(sessions, user_id, metadata={"content_tier": requested})
    if ok:
        assert start_job(sessions, job.id, None).content_tier == requested
        return
    with pytest.raises(JobRejected) as info:
        start_job(sessions, job.id, None)
    assert info.value.code == "CONTENT_TIER_NOT_ALLOWED" and info.value.user_id == user_id
    with sessions() as session:
        row = session.get_one(Job, job.id)
        assert row.status is JobStatus.FAILED and row.error_message.startswith("CONTENT_TIER_NOT_ALLOWED")


def test_prompt_content_decides_the_tier_and_prohibited_is_refused_for_everyone(
    sessions: sessionmaker[Session],
) -> None:
    """The prompt's own words count, not only the tier the job asks for (placeholder vocabulary)."""
    artistic, open_user = uuid.uuid4(), uuid.uuid4()
    ensure_profile(sessions, artistic)
    ensure_profile(sessions, open_user, tier=ContentTier.UNRESTRICTED, age_verified=True)

    def create(user_id: uuid.UUID, prompt: str) -> Job:
        return create_job(sessions, user_id=user_id, job_type="sdxl_image_fast", prompt=prompt).job

    needs_explicit = create(artistic, "a zorblax scene")
    with pytest.raises(JobRejected) as info:
        start_job(sessions, needs_explicit.id, None)
    assert info.value.code == "CONTENT_TIER_NOT_ALLOWED"

    allowed = create(open_user, "a zorblax scene")
    assert start_job(sessions, allowed.id, None).content_tier is ContentTier.EXPLICIT

    prohibited = create(open_user, "zorblax, a minor")
    with pytest.raises(JobRejected) as info:
        start_job(sessions, prohibited.id, None)
    assert info.value.code == "CONTENT_PROHIBITED" and "zorblax" not in str(info.value)
    with sessions() as session:
        assert session.get_one(Job, prohibited.id).status is JobStatus.FAILED


def test_final_prompt_is_checked_again(sessions: sessionmaker[Session]) -> None:
    """A profile downgraded after its job started: the enhance stage refuses the prompt."""
    user_id = uuid.uuid4()
    ensure_profile(sessions, user_id, tier=ContentTier.EXPLICIT, age_verified=True)
    job = create_job(sessions, user_id=user_id, job_type="sdxl_image_fast", prompt="zorblax at dusk").job
    spec = start_job(sessions, job.id, None)
    with sessions.begin() as session:
        session.get_one(Profile, user_id).age_verified = False
    with pytest.raises(ContentTierNotAllowed):
        apply_enhancement(sessions, spec)


@pytest.mark.parametrize(
    ("column", "value", "code"),
    [
        ("job_type", "sdxl_video", "INVALID_JOB_TYPE"),
        ("original_prompt", "   ", "MISSING_PROMPT"),
        ("original_prompt", "x" * 2001, "PROMPT_TOO_LONG"),
        ("meta", {"steps": 0}, "INVALID_PARAMETERS"),
    ],
)
def test_rows_that_cannot_run_are_failed_with_a_reason(
    sessions: sessionmaker[Session], user: uuid.UUID, column: str, value: object, code: str
) -> None:
    job = _job(sessions, user)
    with sessions.begin() as session:
        setattr(session.get_one(Job, job.id), column, value)
    with pytest.raises(JobRejected) as info:
        start_job(sessions, job.id, None)
    assert info.value.code == code
    with sessions() as session:
        assert session.get_one(Job, job.id).status is JobStatus.FAILED


def test_progress_enhancement_outputs_and_finish(sessions: sessionmaker[Session], user: uuid.UUID) -> None:
    job = _job(sessions, user, job_type="video_fast")
    set_progress(sessions, job.id, 50)  # not processing yet: ignored
    spec = start_job(sessions, job.id, None)
    assert apply_enhancement(sessions, spec) == "a quiet harbour"
    set_progress(sessions, job.id, 40)
    assets = [
        Asset(
            "video", "video_fast", f"{user}/{job.id}/0.mp4", 0, 832, 480, 7, 1000, frames=81, duration=81 / 16
        ),
        Asset("thumbnail", "video_fast", f"{user}/{job.id}/0.webp", 0, 832, 480, 7, 100),
    ]
    record_outputs(sessions, spec, assets, "a quiet harbour")
    assert finish_job(sessions, job.id, JobStatus.COMPLETED) is True
    assert finish_job(sessions, job.id, JobStatus.FAILED, "late failure") is False
    with sessions() as session:
        row = session.get_one(Job, job.id)
        assert (row.status, row.progress, row.error_message) == (JobStatus.COMPLETED, 100, None)
        assert (row.enhancement_strategy, row.enhanced_prompt) == ("none", "a quiet harbour")
        video = session.scalars(select(Video).where(Video.job_id == job.id)).one()
        assert row.video_id == video.id
        assert (video.thumbnail_key, video.frames, video.fps, video.seed) == (assets[1].key, 81, 16, 7)
        assert session.scalars(select(Image).where(Image.job_id == job.id)).all() == []
        usage = session.scalars(select(UsageLog).where(UsageLog.job_id == job.id)).one()
        assert (usage.credits_consumed, usage.action) == (3, "video_fast")


def test_a_run_whose_job_was_recovered_changes_nothing(
    sessions: sessionmaker[Session], user: uuid.UUID
) -> None:
    """A hung run that comes back after recovery moved its job onto another run: its outputs and its
    final status are refused; the current run's are kept."""
    job = _job(sessions, user)
    first, second = uuid.uuid4(), uuid.uuid4()
    stale = start_job(sessions, job.id, first)
    assert stale.flow_run_id == first
    assert recover_job(sessions, job.id, first, RunFate.LOST, "its worker hung") == "requeued"
    current = start_job(sessions, job.id, second)
    asset = Asset("image", "sdxl_image_fast", f"{user}/{job.id}/0.png", 0, 1024, 1024, 7, 1000)
    with pytest.raises(Superseded):
        record_outputs(sessions, stale, [asset], "a quiet harbour")
    assert finish_job(sessions, job.id, JobStatus.FAILED, "late", flow_run_id=first) is False
    record_outputs(sessions, current, [asset], "a quiet harbour")
    assert finish_job(sessions, job.id, JobStatus.COMPLETED, flow_run_id=second) is True
    with sessions() as session:
        row = session.get_one(Job, job.id)
        assert (row.status, row.attempts, row.flow_run_id, row.error_message) == (
            JobStatus.COMPLETED, 2, second, None,
        )  # fmt: skip
        assert len(session.scalars(select(Image).where(Image.job_id == job.id)).all()) == 1


def test_enhanced_jobs_get_the_rules_enhancer_within_their_budget(
    sessions: sessionmaker[Session], user: uuid.UUID
) -> None:
    long_prompt = ", ".join(f"a distinct detail {n}" for n in range(40))
    for prompt in ("a quiet harbour", long_prompt):
        metadata = {"enhance": True}
        job = create_job(
            sessions, user_id=user, job_type="sdxl_image_fast", prompt=prompt, metadata=metadata
        ).job
        spec = start_job(sessions, job.id, None)
        enhanced = apply_enhancement(sessions, spec)
        with sessions() as session:
            row = session.get_one(Job, job.id)
        details = row.meta["enhancement"]
        assert (row.enhancement_strategy, row.enhanced_prompt) == ("rules", enhanced)
        assert details["token_count"] <= details["token_budget"] == 75
        if prompt == long_prompt:
            assert details["compression_applied"] is True and enhanced.startswith("a distinct detail 0")
        else:
            assert enhanced.startswith("a quiet harbour, ") and details["added_phrases"]
            assert details["compression_applied"] is False
