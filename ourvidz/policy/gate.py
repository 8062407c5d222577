"""The content gate: every layer behind one `check_prompt` call.

1. lexical (`ourvidz.policy.lexical`): word lists per language, ages in every form, benign senses;
2. semantic (`ourvidz.policy.semantic`): a sentence-embedding model against concept descriptions, for
   texts with sexual context;
3. moderation (`ourvidz.policy.moderation`), optional: the operator's moderation model, for texts with
   sexual context, fail closed.

Prohibited categories (minors, non-consent, real people) are refused at every tier for every user,
and nothing turns layers 1 and 2 off. Refusals are logged with category, layer and a short hash of the
text, never the text.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from ourvidz.policy import lexical, semantic
from ourvidz.policy.moderation import Moderator
from ourvidz.policy.tiers import (
    RANK,
    ContentCheckUnavailable,
    ContentProhibited,
    ContentTier,
    ContentTierNotAllowed,
    Layer,
    ProhibitedCategory,
    VocabularyError,
    sexual_context,
    tier_permitted,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Classification:
    tier: ContentTier  # the lowest tier the text needs
    category: ProhibitedCategory | None  # set when the text is refused for everyone
    layer: Layer | None = None  # the layer that found `category`
    sexual: bool = False  # the text needs, or its request asks for, a tier above artistic


@dataclass(frozen=True, slots=True)
class Verdict:
    tier: ContentTier  # the tier the request runs at: the detected tier, or the requested one if higher
    detected: ContentTier


def _concept_signature(operator_dir: Path | None) -> tuple[tuple[int, int] | None, ...]:
    stats: list[tuple[int, int] | None] = []
    for base in (lexical.SHIPPED_DIR, operator_dir):
        folder = base / semantic.CONCEPTS if base is not None else None
        for path in sorted(folder.glob("*")) if folder is not None and folder.is_dir() else ():
            st = path.stat()
            stats.append((st.st_mtime_ns, st.st_size))
    return tuple(stats)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    signature: tuple[object, ...]
    vocabulary: lexical.Vocabulary


class ContentPolicy:
    """The compiled layers: shipped vocabularies and concepts plus an optional operator directory that
    extends them, and the semantic model (`semantic_model`: a sentence-transformers folder; None, the
    shipped one).

    Checks read one immutable snapshot; ``reload()`` builds a new one and swaps it in with a single
    assignment, so a concurrent check sees the old or the new vocabularies, never a mix.
    """

    def __init__(self, operator_dir: str | Path | None = None, semantic_model: str | None = None) -> None:
        self.operator_dir = Path(operator_dir) if operator_dir is not None else None
        self.semantic_model = semantic_model
        self._lock = threading.Lock()
        self._snapshot = self._load()
        self._semantic: semantic.SemanticLayer | None = None

    def _signature(self) -> tuple[object, ...]:
        return lexical.signature(self.operator_dir), _concept_signature(self.operator_dir)

    def _load(self) -> _Snapshot:
        signature = self._signature()  # taken first: an edit during the read shows up next time
        return _Snapshot(signature, lexical.Vocabulary.load(self.operator_dir))

    def reload(self) -> None:
        """Re-read every file. On error the exception propagates and the previous vocabularies stay."""
        with self._lock:
            self._snapshot = self._load()
            self._semantic = None

    def reload_if_changed(self) -> bool:
        """Reload when a file's mtime or size changed, or one appeared or vanished; True if reloaded.

        Cheap (stat calls). A file that cannot be read is logged and the previous vocabularies stay;
        it is retried on the next call.
        """
        if self._signature() == self._snapshot.signature:
            return False
        with self._lock:
            if self._signature() == self._snapshot.signature:
                return False
            try:
                self._snapshot = self._load()
                if self._semantic is not None:
                    self._semantic = semantic.SemanticLayer(self.operator_dir, self.semantic_model)
            except (OSError, ValueError, VocabularyError):
                log.exception("content vocabularies changed but could not be reloaded; keeping the old ones")
                return False
        return True

    def semantic_layer(self) -> semantic.SemanticLayer:
        """The semantic layer, built on first use (ContentCheckUnavailable if its model cannot load)."""
        layer = self._semantic
        if layer is None:
            with self._lock:
                if self._semantic is None:
                    self._semantic = semantic.SemanticLayer(self.operator_dir, self.semantic_model)
                layer = self._semantic
        return layer

    def classify(self, text: str, requested: ContentTier | None = None) -> Classification:
        """The tier the text needs and its prohibited category, if any, from layers 1 and 2.

        ``requested`` is the tier the request asks for: when above artistic it is sexual context too.
        """
        found = lexical.scan(self._snapshot.vocabulary, text, requested)
        sexual = sexual_context(found.tier, requested)
        if found.category is not None:
            return Classification(found.tier, found.category, Layer.LEXICAL, sexual)
        if sexual:
            category = self.semantic_layer().refused(found.folded, found.tier_spans)
            if category is not None:
                return Classification(found.tier, category, Layer.SEMANTIC, sexual)
        return Classification(found.tier, None, None, sexual)

    def findings(
        self, text: str, requested: ContentTier | None = None
    ) -> dict[Layer, ProhibitedCategory | None]:
        """What layers 1 and 2 each find, both run (for the development set and operators' reviews);
        the semantic layer only on texts with sexual context, as in `classify`."""
        found = lexical.scan(self._snapshot.vocabulary, text, requested)
        meaning = None
        if sexual_context(found.tier, requested):
            meaning = self.semantic_layer().refused(found.folded, found.tier_spans)
        return {Layer.LEXICAL: found.category, Layer.SEMANTIC: meaning}

    def detect_tier(self, text: str) -> ContentTier:
        return lexical.scan(self._snapshot.vocabulary, text).tier


def warm_up(policy: ContentPolicy) -> None:
    """Load the semantic layer now (at a process's start) rather than on the first text that needs it;
    a model that cannot load is logged, and texts that need it are refused until it can."""
    try:
        policy.semantic_layer()
    except ContentCheckUnavailable:
        log.exception("the semantic content check is unavailable: texts above artistic are refused")


def check_prompt(
    policy: ContentPolicy,
    text: str,
    allowed_tier: ContentTier,
    age_verified: bool,
    *,
    requested_tier: ContentTier | None = None,
    moderator: Moderator | None = None,
) -> Verdict:
    """Refuse prohibited content (first, for everyone), then a tier the profile may not use.

    `moderator`: the registered moderation model, asked about texts with sexual context (raises
    ContentCheckUnavailable when it cannot answer). Returns the tier the request runs at.
    """
    result = policy.classify(text, requested_tier)
    asked = result.category is None and result.sexual and moderator is not None
    if asked and (category := moderator.verdict(text)) is not None:  # type: ignore[union-attr]
        result = Classification(result.tier, category, Layer.MODERATION, True)
    if result.category is not None:
        layer = result.layer or Layer.LEXICAL
        raise ContentProhibited(result.category, log_prohibited(result.category, text, layer=layer), layer)
    tier = result.tier
    if requested_tier is not None and RANK[requested_tier] > RANK[tier]:
        tier = requested_tier
    if not tier_permitted(tier, allowed_tier, age_verified):
        raise ContentTierNotAllowed(tier, allowed_tier, age_verified)
    return Verdict(tier, result.tier)


def text_hash(text: str) -> str:
    """A short, stable fingerprint of a text, to correlate log lines without logging the text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def log_prohibited(
    category: ProhibitedCategory,
    text: str,
    *,
    logger: logging.Logger | None = None,
    layer: Layer = Layer.LEXICAL,
) -> str:
    """Log a refusal as its category, layer and the text's short hash (never the text); returns the hash."""
    digest = text_hash(text)
    (logger or log).warning(
        "content prohibited: category=%s layer=%s text_sha256=%s", category.value, layer.value, digest
    )
    return digest


_policies: dict[tuple[Path | None, str | None], ContentPolicy] = {}
_policies_lock = threading.Lock()


def get_policy(operator_dir: str | Path | None = None, semantic_model: str | None = None) -> ContentPolicy:
    """One shared policy per operator directory and model (the app passes ``<data dir>/vocabularies``)."""
    key = (Path(operator_dir).expanduser().resolve() if operator_dir is not None else None, semantic_model)
    with _policies_lock:
        if key not in _policies:
            _policies[key] = ContentPolicy(*key)
        return _policies[key]
