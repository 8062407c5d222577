"""Prompt templates: rows of `prompt_templates`, served from a per-process cache.

Every process keeps the active templates in memory and compares the version in `system_config`
(key `prompt_cache`) with the one it loaded, at most once per `OURVIDZ_PROMPT_CACHE_CHECK_SECONDS`.
`POST /refresh-prompt-cache` and the scheduled refresh flow bump that version, so an edited template
reaches every gateway and worker within one check interval without a restart.

The shipped defaults (`default_templates.toml`) are inserted by `ourvidz db upgrade` and also answer
any lookup that no active row matches, so enhancement works on an empty table.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import JobType
from ourvidz.db.models import PromptTemplate, SystemConfig
from ourvidz.policy import ContentTier
from ourvidz.prompts.rules import PLACEHOLDER

CACHE_KEY = "prompt_cache"
DEFAULTS_FILE = Path(__file__).with_name("default_templates.toml")
ANY_FAMILY = "any"
CHAT_FAMILY = "chat"
UseCase = Literal["enhancement", "chat", "rules"]
logger = logging.getLogger(__name__)
_TIER_RANK = {tier: rank for rank, tier in enumerate(ContentTier)}


@dataclass(frozen=True, slots=True)
class Template:
    """One template; `content_tier` is the lowest tier it serves (higher tiers may override it)."""

    name: str
    use_case: str
    model_family: str
    quality: str | None
    content_tier: ContentTier
    text: str
    token_limit: int | None = None
    version: int = 1

    def problem(self) -> str | None:
        """Why an operator's edit cannot be used (it is then skipped, never raised into a request)."""
        if self.use_case == "rules" and self.text.count(PLACEHOLDER) != 1:
            return f"a rules template must contain {PLACEHOLDER} exactly once"
        if self.use_case == "enhancement":
            try:
                self.text.format_map(_Fill())
            except (ValueError, IndexError) as exc:
                return f"unusable placeholder syntax: {exc}"
        return None


class Templates:
    """An immutable set of templates with the lookup rule: for the asked tier, the template of the
    highest tier not above it wins, then an exact model family over `any`, then an exact quality."""

    def __init__(self, templates: Iterable[Template], version: int = 0) -> None:
        self.all = tuple(templates)
        self.version = version

    def find(self, use_case: UseCase, family: str, quality: str | None, tier: ContentTier) -> Template | None:
        candidates = [
            t
            for t in self.all
            if t.use_case == use_case
            and t.model_family in (family, ANY_FAMILY)
            and t.quality in (quality, None)
            and _TIER_RANK[t.content_tier] <= _TIER_RANK[tier]
        ]
        if not candidates:
            return None
        return max(
            candidates,
            key=lambda t: (_TIER_RANK[t.content_tier], t.model_family == family, t.quality == quality),
        )

    def enhancement_prompt(self, job_type: JobType, tier: ContentTier) -> str:
        """The LLM enhancers' system prompt for a job type and tier, placeholders filled in."""
        template = self.find("enhancement", job_type.family, job_type.quality, tier) or _DEFAULTS.find(
            "enhancement", job_type.family, job_type.quality, ContentTier.ARTISTIC
        )
        assert template is not None, "the shipped defaults cover every model family"
        model = "Stable Diffusion XL" if job_type.family == "sdxl" else "Wan 2.1"
        words = (template.token_limit or job_type.token_budget) * 2 // 3
        return template.text.format_map(_Fill(model=model, output=job_type.output, words=words))

    def chat_prompt(self, tier: ContentTier) -> str:
        """The playground chat's system prompt for a conversation at `tier`."""
        template = self.find("chat", CHAT_FAMILY, None, tier) or _DEFAULTS.find(
            "chat", CHAT_FAMILY, None, tier
        )
        assert template is not None, "the shipped defaults cover every tier"
        return template.text

    def rules_template(self, job_type: JobType, tier: ContentTier) -> str | None:
        """An operator's `{prompt}` template for the rules enhancer, if there is one."""
        template = self.find("rules", job_type.family, job_type.quality, tier)
        return template.text if template is not None else None


class _Fill(dict[str, Any]):
    """str.format_map mapping that leaves unknown placeholders as written (operators edit these)."""

    def __missing__(self, key: str) -> str:
        return f"{{{key}}}"


def load_defaults(path: Path = DEFAULTS_FILE) -> list[Template]:
    with path.open("rb") as file:
        entries = tomllib.load(file)["template"]
    return [
        Template(
            name=entry["name"],
            use_case=entry["use_case"],
            model_family=entry["model_family"],
            quality=entry.get("quality"),
            content_tier=ContentTier(entry.get("content_tier", ContentTier.ARTISTIC)),
            text=entry["text"],
            token_limit=entry.get("token_limit"),
        )
        for entry in entries
    ]


_DEFAULTS = Templates(load_defaults())


def default_templates() -> Templates:
    """The shipped templates alone (for processes without a database, and for tests)."""
    return _DEFAULTS


def seed_defaults(sessions: sessionmaker[Session]) -> list[str]:
    """Insert the shipped templates missing from the table (by name); returns the names inserted."""
    with sessions.begin() as session:
        present = set(session.scalars(select(PromptTemplate.template_name)))
        missing = [t for t in _DEFAULTS.all if t.name not in present]
        session.add_all(_row(t) for t in missing)
    return [t.name for t in missing]


def _row(t: Template) -> PromptTemplate:
    return PromptTemplate(
        template_name=t.name, use_case=t.use_case, model_family=t.model_family, quality=t.quality,
        content_tier=t.content_tier, system_prompt=t.text, token_limit=t.token_limit,
    )  # fmt: skip


def _template(row: PromptTemplate) -> Template:
    return Template(
        name=row.template_name, use_case=row.use_case, model_family=row.model_family, quality=row.quality,
        content_tier=row.content_tier, text=row.system_prompt, token_limit=row.token_limit,
        version=row.version,
    )  # fmt: skip


def read_templates(session: Session, skipped: dict[str, str] | None = None) -> list[Template]:
    """The active rows of `prompt_templates` that can be used; broken ones are logged and skipped
    (and named in `skipped`, with the reason, when given)."""
    rows = session.scalars(select(PromptTemplate).where(PromptTemplate.is_active.is_(True)))
    templates = []
    for template in map(_template, rows):
        if (problem := template.problem()) is None:
            templates.append(template)
        else:
            logger.warning("prompt template %r skipped: %s", template.name, problem)
            if skipped is not None:
                skipped[template.name] = problem
    return templates


def fingerprint(templates: Iterable[Template]) -> str:
    """A digest of the active templates' content: a change means processes should reload."""
    digest = hashlib.sha256()
    for t in sorted(templates, key=lambda t: t.name):
        digest.update(repr((t.name, t.use_case, t.model_family, t.quality, t.content_tier.value,
                            t.text, t.token_limit)).encode())  # fmt: skip
    return digest.hexdigest()[:16]


def cache_state(session: Session) -> dict[str, Any]:
    row = session.get(SystemConfig, CACHE_KEY)
    return dict(row.value) if row is not None else {}


def bump_version(
    sessions: sessionmaker[Session], reason: str, only_if_changed: bool = False
) -> dict[str, Any]:
    """Raise the cache version so every process reloads its templates; returns the new state.

    With `only_if_changed`, the version moves only when the templates' fingerprint differs from the
    one recorded at the last bump (the scheduled refresh: direct table edits get picked up, and an
    unchanged table costs no process a reload).
    """
    with sessions.begin() as session:
        row = session.get(SystemConfig, CACHE_KEY, with_for_update=True)
        state = dict(row.value) if row is not None else {}
        templates = read_templates(session)
        digest = fingerprint(templates)
        if only_if_changed and state.get("fingerprint") == digest:
            return {**state, "changed": False}
        state = {
            "version": int(state.get("version", 0)) + 1, "refreshed_at": datetime.now(UTC).isoformat(),
            "fingerprint": digest, "templates": len(templates), "reason": reason,
        }  # fmt: skip
        if row is None:
            session.add(SystemConfig(key=CACHE_KEY, value=state))
        else:
            row.value = state
    return {**state, "changed": True}


class PromptCache:
    """The templates one process uses, reloaded when the shared version moves."""

    def __init__(self, sessions: sessionmaker[Session], check_seconds: float) -> None:
        self.sessions = sessions
        self.check_seconds = check_seconds
        self._templates: Templates | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> Templates:
        now = time.monotonic()
        templates = self._templates
        if templates is not None and now - self._checked_at < self.check_seconds:
            return templates
        with self._lock:
            if self._templates is not None and now - self._checked_at < self.check_seconds:
                return self._templates
            with self.sessions() as session:
                version = int(cache_state(session).get("version", 0))
                if self._templates is None or version != self._templates.version:
                    self._templates = Templates(read_templates(session), version)
            self._checked_at = now
            return self._templates


_caches: dict[int, PromptCache] = {}
_caches_lock = threading.Lock()


def prompt_cache(sessions: sessionmaker[Session], check_seconds: float) -> PromptCache:
    """The process's cache for a database (one per session factory)."""
    with _caches_lock:
        cache = _caches.get(id(sessions))
        if cache is None or cache.sessions is not sessions:
            cache = _caches[id(sessions)] = PromptCache(sessions, check_seconds)
        return cache
