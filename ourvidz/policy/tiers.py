"""Content tiers, the prohibited categories and the errors of the content gate."""

from __future__ import annotations

from enum import StrEnum


class ContentTier(StrEnum):
    ARTISTIC = "artistic"
    EXPLICIT = "explicit"
    UNRESTRICTED = "unrestricted"


class ProhibitedCategory(StrEnum):
    MINORS = "minors"
    NON_CONSENT = "non_consent"
    REAL_PEOPLE = "real_people"


class Layer(StrEnum):
    """The layer of the gate that refused a text (reported in logs and metrics, never the text)."""

    LEXICAL = "lexical"
    SEMANTIC = "semantic"
    MODERATION = "moderation"


RANK = {tier: rank for rank, tier in enumerate(ContentTier)}


def tier_permitted(requested: ContentTier, allowed: ContentTier, age_verified: bool) -> bool:
    """A profile may use tiers up to its ``content_tier_allowed``; above artistic only once age-verified."""
    return RANK[requested] <= RANK[allowed] and (requested is ContentTier.ARTISTIC or age_verified)


def sexual_context(tier: ContentTier, requested: ContentTier | None) -> bool:
    """A text needs a tier above artistic, or its request asks for one."""
    return tier is not ContentTier.ARTISTIC or requested not in (None, ContentTier.ARTISTIC)


class PolicyError(Exception):
    code = "CONTENT_POLICY"


class ContentTierNotAllowed(PolicyError):
    """The text needs (or the request asks for) a tier this profile may not use."""

    code = "CONTENT_TIER_NOT_ALLOWED"

    def __init__(self, requested: ContentTier, allowed: ContentTier, age_verified: bool) -> None:
        self.requested, self.allowed, self.age_verified = requested, allowed, age_verified
        if RANK[requested] > RANK[allowed]:
            reason = f"is above the allowed tier '{allowed}'"
        else:
            reason = "requires age verification"
        super().__init__(f"content tier '{requested}' {reason}")


class ContentProhibited(PolicyError):
    """Refused at every tier for every user. Carries the category, the layer and a short hash, never the
    text."""

    code = "CONTENT_PROHIBITED"

    def __init__(self, category: ProhibitedCategory, text_hash: str, layer: Layer = Layer.LEXICAL) -> None:
        self.category, self.text_hash, self.layer = category, text_hash, layer
        self.user_id: object = None  # whose text it was, where the caller knows (for the record)
        super().__init__(f"content refused: prohibited category '{category}'")


class ContentCheckUnavailable(RuntimeError):
    """A layer the text needs cannot answer (the semantic model failed to load, the moderation model is
    configured but unreachable): texts above artistic are refused until it can (fail closed)."""

    code = "CONTENT_CHECK_UNAVAILABLE"


class VocabularyError(RuntimeError):
    """A shipped vocabulary file is missing or empty: the install is broken."""
