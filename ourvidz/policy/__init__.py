"""Content policy: which tier a text needs, what is never allowed, and who may use which tier.

The gate (`gate.check_prompt`) runs its layers in order: lexical word lists and age patterns, a
semantic model against concept descriptions, and an optional moderation model. See `gate`.
"""

from ourvidz.policy.gate import (
    Classification,
    ContentPolicy,
    Verdict,
    check_prompt,
    get_policy,
    log_prohibited,
    text_hash,
    warm_up,
)
from ourvidz.policy.lexical import SHIPPED_DIR
from ourvidz.policy.moderation import MODERATION, Moderator
from ourvidz.policy.tiers import (
    ContentCheckUnavailable,
    ContentProhibited,
    ContentTier,
    ContentTierNotAllowed,
    Layer,
    PolicyError,
    ProhibitedCategory,
    VocabularyError,
    tier_permitted,
)

__all__ = [
    "MODERATION",
    "SHIPPED_DIR",
    "Classification",
    "ContentCheckUnavailable",
    "ContentPolicy",
    "ContentProhibited",
    "ContentTier",
    "ContentTierNotAllowed",
    "Layer",
    "Moderator",
    "PolicyError",
    "ProhibitedCategory",
    "Verdict",
    "VocabularyError",
    "check_prompt",
    "get_policy",
    "log_prohibited",
    "text_hash",
    "tier_permitted",
    "warm_up",
]  # fmt: skip
