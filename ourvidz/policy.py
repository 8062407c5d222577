"""Content tiers: what a profile may be allowed to generate, from mildest to most permissive."""

from __future__ import annotations

from enum import StrEnum


class ContentTier(StrEnum):
    ARTISTIC = "artistic"
    EXPLICIT = "explicit"
    UNRESTRICTED = "unrestricted"
