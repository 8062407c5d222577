"""The enhancer chain's regression check (`validate-enhancement-fix`): a fixed set of neutral prompts
through the chain as the enhance stage runs it, each answer checked, and every failed check said in
words an operator can act on.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from ourvidz.catalog import JobType, get_job_type
from ourvidz.jobs.enhancement import Enhancers, enhance
from ourvidz.policy import ContentPolicy
from ourvidz.prompts import Enhancement
from ourvidz.prompts.chat import STRATEGY as CHAT_STRATEGY
from ourvidz.prompts.templates import Templates

# Neutral prompts that stress the budget and the tidying; one carries a shipped placeholder term, so
# its tier must not change.
REGRESSION_PROMPTS = (
    "a lighthouse at dusk",
    "portrait of an old fisherman, weathered face, soft window light",
    "a red fox, a red fox, in fresh snow, in fresh snow, morning mist",
    ", ".join(f"detail number {n}" for n in range(60)),
    "a zorblax in a quiet gallery",
)
REGRESSION_JOB_TYPES = ("sdxl_image_fast", "sdxl_image_high", "image_fast", "video_fast", "video_high")
KEPT_SHARE = 0.5  # of the prompt's own words an enhancement must keep: a rewrite, not another picture
_WORD = re.compile(r"[^\W\d_]{3,}")
_STOPWORDS = frozenset({"the", "and", "with", "for", "from", "into", "onto", "over", "under", "this", "that"})


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    reason: str  # why it failed, for an operator; empty when it passed


def validate_enhancer(
    policy: ContentPolicy, templates: Templates, enhancers: Enhancers | None = None
) -> list[dict[str, Any]]:
    """Run the regression set through the enhancer chain with `templates` (the rows as they are in the
    table now, before a refresh reaches the processes); one result per (prompt, job type), with each
    check's outcome and, in `failed`, every failed check and its reason."""
    cases = []
    asked_chat = enhancers is not None and enhancers.chat is not None
    chat_failed = False
    for job_type_name in REGRESSION_JOB_TYPES:
        job_type = get_job_type(job_type_name)
        for index, prompt in enumerate(REGRESSION_PROMPTS):
            result = enhance(prompt, job_type, enhancers, policy=policy, templates=templates)
            checks = _checks(policy, prompt, job_type, result)
            if asked_chat:
                checks.append(_chat_answered(result, chat_failed))
            if enhancers is not None and enhancers.chat is not None and result.strategy.endswith("_fallback"):
                enhancers, chat_failed = replace(enhancers, chat=None), True  # one timeout, not 25
            cases.append({
                "case": index, "job_type": job_type.name, "prompt": prompt, "enhanced_prompt": result.prompt,
                "passed": all(check.passed for check in checks),
                **{check.name: check.passed for check in checks},
                "failed": [{"check": c.name, "reason": c.reason} for c in checks if not c.passed],
                "token_count": result.token_count, "token_budget": job_type.token_budget,
                "enhancement_strategy": result.strategy,
            })  # fmt: skip
    return cases


def summary(cases: list[dict[str, Any]]) -> str:
    """`20 of 25 cases passed; failed checks: keeps_subject (5)`."""
    passed = sum(case["passed"] for case in cases)
    text = f"{passed} of {len(cases)} cases passed"
    failed = Counter(failure["check"] for case in cases for failure in case["failed"])
    if failed:
        text += "; failed checks: " + ", ".join(f"{name} ({count})" for name, count in failed.most_common())
    return text


def _checks(policy: ContentPolicy, prompt: str, job_type: JobType, result: Enhancement) -> list[Check]:
    before, after = policy.classify(prompt), policy.classify(result.prompt)
    category = after.category.value if after.category else ""
    words = _words(prompt)
    kept = [word for word in words if word in _words(result.prompt)]
    return [
        Check("non_empty", bool(result.prompt.strip()), "the enhancer answered an empty prompt"),
        Check(
            "within_budget", result.token_count <= job_type.token_budget,
            f"{result.token_count} tokens, over the {job_type.name} budget of {job_type.token_budget}",
        ),
        Check(
            "keeps_subject", len(kept) >= KEPT_SHARE * len(words),
            f"keeps {len(kept)} of the prompt's {len(words)} words ({', '.join(sorted(words))}): the answer "
            "is not a rewrite of this prompt (an enhancer that ignores its input, or a template without "
            "the prompt)",
        ),
        Check(
            "tier_unchanged", after.tier == before.tier,
            f"the answer needs the {after.tier.value} tier, the prompt {before.tier.value}: the template or "
            "the model adds or removes content",
        ),
        Check(
            "not_prohibited", after.category is None,
            f"the answer falls under the prohibited category {category}",
        ),
    ]  # fmt: skip


def _chat_answered(result: Enhancement, chat_failed: bool) -> Check:
    if result.strategy == CHAT_STRATEGY:
        return Check("chat_worker_answered", True, "")
    reason = (
        "not asked: the chat worker failed an earlier case" if chat_failed
        else f"the registered chat worker gave no usable answer ({result.strategy} used): check its URL, "
        "health and model"
    )  # fmt: skip
    return Check("chat_worker_answered", False, reason)


def _words(text: str) -> set[str]:
    return {word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS}
