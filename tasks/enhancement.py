"""The tasks of the prompt flows (`flows/enhancement/`); each calls one core function."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ourvidz.config import get_settings
from ourvidz.db.session import sessions_for
from ourvidz.jobs.enhancement import review_enhancement
from ourvidz.prompts.templates import bump_version
from tasks.retry import DB_RETRIES


@task(name="refresh-templates", cache_policy=NO_CACHE, **DB_RETRIES)
def refresh_templates(force: bool) -> dict[str, Any]:
    """Bump the prompt-cache version (only when the templates changed, unless forced)."""
    sessions = sessions_for(get_settings().database_url)
    return bump_version(sessions, reason="scheduled refresh", only_if_changed=not force)


@task(name="enhance-prompt", cache_policy=NO_CACHE, **DB_RETRIES)
def enhance_prompt(prompt: str, job_type: str) -> dict[str, Any]:
    return review_enhancement(sessions_for(get_settings().database_url), prompt, job_type)
