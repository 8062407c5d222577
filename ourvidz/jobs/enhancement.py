"""The prompt a job is generated from. Until an enhancer is configured the original passes unchanged."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from ourvidz.db.models import Job
from ourvidz.jobs.content import check_content
from ourvidz.jobs.spec import JobSpec

NO_ENHANCEMENT = "none"


def apply_enhancement(sessions: sessionmaker[Session], spec: JobSpec) -> str:
    """Decide the prompt to generate from and record it (and how it was made) on the job.

    The final prompt passes the content check again (raises a PolicyError): an enhancer may add words.
    """
    prompt, strategy = spec.prompt, NO_ENHANCEMENT
    with sessions.begin() as session:
        check_content(session, spec.user_id, prompt, spec.content_tier)
        job = session.get_one(Job, spec.id)
        job.enhanced_prompt = prompt
        job.enhancement_strategy = strategy
    return prompt
