"""Prompt templates: the lookup rule, seeding, the version bump and the per-process cache."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from ourvidz.catalog import get_job_type
from ourvidz.db.models import PromptTemplate
from ourvidz.policy import ContentTier
from ourvidz.prompts.templates import (
    PromptCache,
    Template,
    Templates,
    bump_version,
    default_templates,
    read_templates,
    seed_defaults,
)

SDXL_FAST = get_job_type("sdxl_image_fast")
WAN_HIGH = get_job_type("video_high")


def _template(
    name: str, family: str = "sdxl", quality: str | None = None, tier: str = "artistic"
) -> Template:
    return Template(name, "enhancement", family, quality, ContentTier(tier), f"text of {name}")


def test_the_most_specific_template_for_the_tier_wins() -> None:
    templates = Templates([
        _template("family"), _template("family-fast", quality="fast"),
        _template("any-explicit", "any", tier="explicit"), _template("sdxl-explicit", tier="explicit"),
        _template("wan", "wan"),
    ])  # fmt: skip

    def name(family: str, quality: str, tier: ContentTier) -> str | None:
        found = templates.find("enhancement", family, quality, tier)
        return found.name if found else None

    assert name("sdxl", "fast", ContentTier.ARTISTIC) == "family-fast"
    assert name("sdxl", "high", ContentTier.ARTISTIC) == "family"
    assert name("sdxl", "fast", ContentTier.EXPLICIT) == "sdxl-explicit"  # the tier outranks the quality
    assert name("sdxl", "fast", ContentTier.UNRESTRICTED) == "sdxl-explicit"  # highest tier not above
    assert name("wan", "fast", ContentTier.EXPLICIT) == "any-explicit"
    assert name("wan", "fast", ContentTier.ARTISTIC) == "wan"
    assert templates.find("chat", "chat", None, ContentTier.ARTISTIC) is None


def test_the_shipped_defaults_cover_every_job_type_and_tier() -> None:
    defaults = default_templates()
    for tier in ContentTier:
        assert defaults.chat_prompt(tier)
        sdxl, wan = defaults.enhancement_prompt(SDXL_FAST, tier), defaults.enhancement_prompt(WAN_HIGH, tier)
        assert "Stable Diffusion XL image" in sdxl and "Wan 2.1 video" in wan and "{" not in sdxl + wan
    assert defaults.chat_prompt(ContentTier.EXPLICIT) != defaults.chat_prompt(ContentTier.ARTISTIC)
    assert "50 words" in defaults.enhancement_prompt(SDXL_FAST, ContentTier.ARTISTIC)  # 75 tokens * 2/3


def test_an_empty_table_falls_back_to_the_shipped_templates() -> None:
    empty = Templates([])
    assert empty.chat_prompt(ContentTier.ARTISTIC) == default_templates().chat_prompt(ContentTier.ARTISTIC)
    assert empty.rules_template(SDXL_FAST, ContentTier.ARTISTIC) is None


def test_unknown_placeholders_in_an_operator_template_are_kept() -> None:
    templates = Templates(
        [Template("x", "enhancement", "sdxl", None, ContentTier.ARTISTIC, "{model}: {other}")]
    )
    assert templates.enhancement_prompt(SDXL_FAST, ContentTier.ARTISTIC) == "Stable Diffusion XL: {other}"


def test_seeding_adds_missing_templates_and_keeps_edits(sessions: sessionmaker[Session]) -> None:
    assert len(seed_defaults(sessions)) == len(default_templates().all)
    with sessions.begin() as session:
        session.execute(
            sa.update(PromptTemplate)
            .where(PromptTemplate.template_name == "chat-artistic")
            .values(system_prompt="edited by an operator")
        )
        session.execute(sa.delete(PromptTemplate).where(PromptTemplate.template_name == "chat-explicit"))
    assert seed_defaults(sessions) == ["chat-explicit"]
    with sessions() as session:
        edited = session.scalars(
            sa.select(PromptTemplate.system_prompt).where(PromptTemplate.template_name == "chat-artistic")
        ).one()
    assert edited == "edited by an operator"


def test_every_process_cache_reloads_after_a_version_bump(sessions: sessionmaker[Session]) -> None:
    seed_defaults(sessions)
    first, second = PromptCache(sessions, check_seconds=0), PromptCache(sessions, check_seconds=3600)
    assert first.current().chat_prompt(ContentTier.ARTISTIC) == second.current().chat_prompt(
        ContentTier.ARTISTIC
    )
    with sessions.begin() as session:
        session.execute(
            sa.update(PromptTemplate)
            .where(PromptTemplate.template_name == "chat-artistic")
            .values(system_prompt="version two")
        )
    assert first.current().chat_prompt(ContentTier.ARTISTIC) != "version two"  # not before the bump
    state = bump_version(sessions, reason="test")
    assert state["changed"] and state["version"] == 1
    assert first.current().chat_prompt(ContentTier.ARTISTIC) == "version two"
    assert second.current().chat_prompt(ContentTier.ARTISTIC) != "version two"  # until its next check


def test_the_scheduled_bump_moves_the_version_only_when_templates_changed(
    sessions: sessionmaker[Session],
) -> None:
    seed_defaults(sessions)
    assert bump_version(sessions, "first", only_if_changed=True)["version"] == 1
    unchanged = bump_version(sessions, "again", only_if_changed=True)
    assert (unchanged["changed"], unchanged["version"]) == (False, 1)
    with sessions.begin() as session:
        session.execute(
            sa.update(PromptTemplate)
            .where(PromptTemplate.template_name == "chat-artistic")
            .values(is_active=False)
        )
    changed = bump_version(sessions, "edited", only_if_changed=True)
    assert (changed["changed"], changed["version"], changed["templates"]) == (
        True, 2, len(default_templates().all) - 1
    )  # fmt: skip
    assert bump_version(sessions, "forced")["version"] == 3


def test_broken_operator_templates_are_skipped_not_raised(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.add_all([
            PromptTemplate(template_name="no-placeholder", use_case="rules", model_family="sdxl",
                           system_prompt="film grain only"),
            PromptTemplate(template_name="bad-braces", use_case="enhancement", model_family="sdxl",
                           system_prompt="You rewrite {model prompts"),
            PromptTemplate(template_name="fine", use_case="rules", model_family="wan",
                           system_prompt="{prompt}, film grain"),
        ])  # fmt: skip
    skipped: dict[str, str] = {}
    with sessions() as session:
        templates = Templates(read_templates(session, skipped))
    assert [t.name for t in templates.all] == ["fine"] and sorted(skipped) == ["bad-braces", "no-placeholder"]
    assert templates.rules_template(SDXL_FAST, ContentTier.ARTISTIC) is None
    assert "Stable Diffusion XL" in templates.enhancement_prompt(SDXL_FAST, ContentTier.ARTISTIC)
