"""The deterministic rules enhancer: the fallback that is always available (no network, no model).

It tidies the prompt, adds a few neutral style phrases chosen by model family, output kind and quality
(or the parts of a stored template), and fits the result to the job type's token budget. Added phrases
have the lowest priority, so fitting drops them before any phrase the user wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ourvidz.catalog import Family, JobType, Output, Quality
from ourvidz.prompts.budget import (
    JOINER,
    count_tokens,
    fit_prompt,
    normalise_whitespace,
    phrase_key,
    split_phrases,
)

PLACEHOLDER = "{prompt}"
STRATEGY = "rules"

# Style vocabulary, not content: neutral photographic and camera terms only.
DEFAULT_STYLE: dict[tuple[Family, Output], tuple[str, ...]] = {
    ("sdxl", "image"): ("highly detailed", "sharp focus", "professional lighting"),
    ("wan", "image"): ("cinematic composition", "natural light"),
    ("wan", "video"): ("cinematic composition", "natural light", "smooth motion", "stable camera"),
}
QUALITY_STYLE: dict[Quality, tuple[str, ...]] = {
    "fast": (),
    "high": ("intricate detail", "8k"),
}

_ADDED, _USER = 0, 1  # fit_prompt priorities: lower is dropped first
_SPACE_BEFORE_CLOSING = re.compile(r"\s+([.,:;!?)\]}])")
_SPACE_AFTER_OPENING = re.compile(r"([(\[{])\s+")
_REPEATED_MARKS = re.compile(r"([!?])[!?]+")
_SEPARATOR_AT = re.compile(r"[,;\r\n]")


@dataclass(frozen=True, slots=True)
class Enhancement:
    """An enhanced prompt and how it was made; `original_token_count` counts the prompt as given."""

    prompt: str
    strategy: str
    token_count: int
    budget: int
    compression_applied: bool
    original_token_count: int
    added: list[str]
    dropped: list[str]
    truncated: bool


def default_style(job_type: JobType) -> tuple[str, ...]:
    """The style phrases the enhancer adds for a job type when no template is given."""
    return DEFAULT_STYLE.get((job_type.family, job_type.output), ()) + QUALITY_STYLE[job_type.quality]


def clean_phrases(prompt: str) -> list[str]:
    """The prompt's phrases with whitespace and punctuation tidied and duplicates removed."""
    phrases: list[str] = []
    seen: set[str] = set()
    for raw in split_phrases(prompt):
        phrase = _SPACE_BEFORE_CLOSING.sub(r"\1", raw)
        phrase = _SPACE_AFTER_OPENING.sub(r"\1", phrase)
        phrase = _REPEATED_MARKS.sub(r"\1", phrase).strip(" .")
        key = phrase_key(phrase)
        if phrase and key not in seen:
            seen.add(key)
            phrases.append(phrase)
    return phrases


def rules_enhance(prompt: str, job_type: JobType, template: str | None = None) -> Enhancement:
    """Tidy `prompt`, add style phrases (or apply `template`), and fit it to the job type's budget.

    `template` contains `{prompt}` once; its phrases replace the default style phrases. A template
    phrase written without a separator next to `{prompt}` ("a photo of {prompt}") becomes part of the
    user's phrase; the others are added phrases. Phrases the prompt already contains are not added.
    """
    user = clean_phrases(prompt)
    if template is None:
        before: list[str] = []
        candidates = list(default_style(job_type))
    else:
        before, candidates = _apply_template(template, user)

    present = f" | {' | '.join(phrase_key(p) for p in user)} | "
    phrases: list[str] = []
    priorities: list[int] = []
    added: list[str] = []

    def add(style: list[str]) -> None:
        for phrase in style:
            key = phrase_key(phrase)
            if key and key not in added_keys and f" {key} " not in present:
                added_keys.add(key)
                phrases.append(phrase)
                priorities.append(_ADDED)
                added.append(phrase)

    added_keys: set[str] = set()
    add(before)
    subject = len(phrases)
    phrases.extend(user)
    priorities.extend([_USER] * len(user))
    add(candidates)

    fitted = fit_prompt(
        JOINER.join(phrases),
        job_type.family,
        job_type.token_budget,
        protected={subject} if user else set(),
        priorities=priorities,
    )
    dropped = set(fitted.dropped)
    return Enhancement(
        prompt=fitted.text,
        strategy=STRATEGY,
        token_count=fitted.token_count,
        budget=fitted.budget,
        compression_applied=fitted.compression_applied,
        original_token_count=count_tokens(prompt, job_type.family),
        added=[phrase for phrase in added if phrase not in dropped],
        dropped=fitted.dropped,
        truncated=fitted.truncated,
    )


def _apply_template(template: str, user: list[str]) -> tuple[list[str], list[str]]:
    """Split a template into its added phrases before and after `{prompt}`, gluing attached text.

    Text between `{prompt}` and the nearest separator is joined onto the user's first/last phrase
    in place (so `user` is updated); the remaining template phrases are returned.
    """
    if template.count(PLACEHOLDER) != 1:
        raise ValueError(f"a prompt template must contain {PLACEHOLDER} exactly once: {template!r}")
    head, tail = template.split(PLACEHOLDER)
    head_parts = _SEPARATOR_AT.split(head)
    tail_parts = _SEPARATOR_AT.split(tail)
    prefix, suffix = head_parts.pop(), tail_parts.pop(0)
    if user:
        user[0] = normalise_whitespace(prefix + user[0])
        user[-1] = normalise_whitespace(user[-1] + suffix)
        prefix = suffix = ""
    before = clean_phrases(JOINER.join([*head_parts, prefix]))
    after = clean_phrases(JOINER.join([suffix, *tail_parts]))
    return before, after
