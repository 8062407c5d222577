"""The prompt a job is generated from. Until an enhancer is configured the original passes unchanged."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.jobs.spec import JobSpec

NO_ENHANCEMENT = "none"


def apply_enhancement(sessions: sessionmaker[Session], spec: JobSpec) -> str:
    """Decide the prompt to generate from and record it (and how it was made) on the job."""
    prompt, strategy = spec.prompt, NO_ENHANCEMENT
    with sessions.begin() as session:
        job = session.get_one(Job, spec.id)
        job.enhanced_prompt = prompt
        job.enhancement_strategy = strategy
    return prompt
