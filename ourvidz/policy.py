"""Content policy: which tier a text needs, what is never allowed, and who may use which tier.

The platform serves adults, but this code base never carries explicit text: the vocabularies are data
files. Neutral placeholders ship in ``ourvidz/vocabularies/``; operators extend them with files of the
same names in ``<data dir>/vocabularies/`` (one term or phrase per line, ``#`` comments).

Matching folds text and terms the same way (NFKD, accents and invisible characters removed, look-alike
Cyrillic/Greek letters, case, leetspeak, and ``l``/``1``/``i`` into one letter), splits it into word
tokens and looks up runs of consecutive tokens whose concatenation is a term. So a term matches only
whole words, never inside a longer word ("zorblax" is not found in "zorblaxian"), yet a term spelled
across separators ("z.o.r.b.l.a.x", "zor-blax") or a phrase across any separators still matches.
Letters repeated three or more times ("zorrrblax") are squeezed only within the words that have them.

Prohibited categories (minors, non-consent, real people) are refused at every tier for every user:
their shipped files are always read from this package, operator files only add terms, and nothing
turns the check off. A category term counts when the text needs a tier above artistic (sexual
context); terms in a category's ``.always`` file count in any text. Refusals never carry the text.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).with_name("vocabularies")


class ContentTier(StrEnum):
    ARTISTIC = "artistic"
    EXPLICIT = "explicit"
    UNRESTRICTED = "unrestricted"


class ProhibitedCategory(StrEnum):
    MINORS = "minors"
    NON_CONSENT = "non_consent"
    REAL_PEOPLE = "real_people"


_RANK = {tier: rank for rank, tier in enumerate(ContentTier)}
# Label (what a match means) -> vocabulary file, relative to a vocabularies directory.
_FILES = {tier.value: f"{tier.value}.txt" for tier in ContentTier if tier is not ContentTier.ARTISTIC} | {
    f"{cat.value}{kind}": f"prohibited/{cat.value}{kind}.txt"
    for cat in ProhibitedCategory
    for kind in ("", ".always")
}
# A broken install must fail loudly rather than silently allow everything.
_MUST_HAVE_TERMS = (ProhibitedCategory.MINORS.value, ProhibitedCategory.NON_CONSENT.value)


class PolicyError(Exception):
    code = "CONTENT_POLICY"


class ContentTierNotAllowed(PolicyError):
    """The text needs (or the request asks for) a tier this profile may not use."""

    code = "CONTENT_TIER_NOT_ALLOWED"

    def __init__(self, requested: ContentTier, allowed: ContentTier, age_verified: bool) -> None:
        self.requested, self.allowed, self.age_verified = requested, allowed, age_verified
        if _RANK[requested] > _RANK[allowed]:
            reason = f"is above the allowed tier '{allowed}'"
        else:
            reason = "requires age verification"
        super().__init__(f"content tier '{requested}' {reason}")


class ContentProhibited(PolicyError):
    """Refused at every tier for every user. Carries the category and a short hash, never the text."""

    code = "CONTENT_PROHIBITED"

    def __init__(self, category: ProhibitedCategory, text_hash: str) -> None:
        self.category, self.text_hash = category, text_hash
        super().__init__(f"content refused: prohibited category '{category}'")


class VocabularyError(RuntimeError):
    """A shipped vocabulary file is missing or empty: the install is broken."""


# --- normalisation ---------------------------------------------------------------------------------

_INVISIBLE_OR_MARK = re.compile(
    "[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"  # combining marks (accents)
    "\u00ad\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f\U000e0100-\U000e01ef]"  # zero-width, format
)
# Cyrillic and Greek letters (either case) that look like a Latin letter; applied before casefolding.
_LOOKALIKES = {
    "a": "\u0430\u0410\u03b1\u0391\u0251",
    "b": "\u0412\u0392",
    "c": "\u0441\u0421\u03f2",
    "d": "\u0501",
    "e": "\u0435\u0415\u03b5\u0395",
    "h": "\u04bb\u041d\u0397",
    "i": "\u0456\u0406\u03b9\u0399\u0131",
    "j": "\u0458\u0408\u03f3",
    "k": "\u043a\u041a\u03ba\u039a",
    "l": "\u04cf",
    "m": "\u041c\u039c",
    "n": "\u03b7\u039d",
    "o": "\u043e\u041e\u03bf\u039f",
    "p": "\u0440\u0420\u03c1\u03a1",
    "q": "\u051b",
    "s": "\u0455\u0405",
    "t": "\u0422\u03c4\u03a4",
    "u": "\u03c5",
    "v": "\u03bd",
    "w": "\u051d",
    "x": "\u0445\u0425\u03c7\u03a7",
    "y": "\u0443\u0423\u03a5",
    "z": "\u0396",
}
_CONFUSABLES = str.maketrans({char: latin for latin, chars in _LOOKALIKES.items() for char in chars})
# Leetspeak. "1" reads as "i" or "l", so "l" and "i" fold into one letter on both sides.
_LEET = str.maketrans("013457@$l", "oieastasi")
_TOKEN = re.compile(r"[^\W_]+")
_TRIPLE = re.compile(r"([^\W_])\1\1")
_REPEATS = re.compile(r"([^\W_])(?=\1)")  # all but the last of a run
_UNDER_18 = (
    "[1-9]|1[0-7]|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen"
    "|sixteen|seventeen"
)
# "12 year old", "12-year-old", "12yo", "12 y/o", "twelve years old"; not "21", "2.5" or "twenty-one".
_MINOR_AGE = re.compile(
    rf"(?<![\w.])(?<!ty[\W_])(?:{_UNDER_18})[\W_]*(?:years?|yrs?|y)[\W_]*(?:olds?|o)(?![^\W_])"
)


def _fold(text: str) -> str:
    """Compatibility forms, accents, invisible characters, look-alike letters and case folded away."""
    if text.isascii():
        return text.lower()
    text = _INVISIBLE_OR_MARK.sub("", unicodedata.normalize("NFKD", text))
    return text.translate(_CONFUSABLES).casefold()


def _key(term: str) -> str:
    return "".join(_TOKEN.findall(_fold(term).translate(_LEET)))


# --- compiled vocabularies -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Matcher:
    terms: dict[str, frozenset[str]]  # folded, concatenated term -> labels
    prefixes: frozenset[str]  # proper prefixes of the terms: when to keep joining tokens

    @classmethod
    def build(cls, entries: dict[str, set[str]]) -> _Matcher:
        prefixes = {key[:end] for key in entries for end in range(1, len(key))}
        return cls({key: frozenset(labels) for key, labels in entries.items()}, frozenset(prefixes))

    def scan(self, tokens: list[str], found: set[str], marked: list[bool] | None = None) -> None:
        """Add the labels of every run of tokens that joins into a term (only runs with a marked token)."""
        terms, prefixes, count = self.terms, self.prefixes, len(tokens)
        for start in range(count):
            chunk, end = tokens[start], start
            hot = marked is None or marked[start]
            while True:
                labels = terms.get(chunk)
                if labels is not None and hot:
                    found.update(labels)
                end += 1
                if end == count or chunk not in prefixes:
                    break
                chunk += tokens[end]
                hot = hot or (marked is not None and marked[end])


@dataclass(frozen=True, slots=True)
class _Vocabulary:
    signature: tuple[tuple[int, int] | None, ...]
    exact: _Matcher
    squeezed: _Matcher


def _signature(operator_dir: Path | None) -> tuple[tuple[int, int] | None, ...]:
    stats: list[tuple[int, int] | None] = []
    for base in (SHIPPED_DIR, operator_dir):
        for rel in _FILES.values() if base is not None else ():
            try:
                st = (base / rel).stat()
            except OSError:
                stats.append(None)
            else:
                stats.append((st.st_mtime_ns, st.st_size))
    return tuple(stats)


def _read_terms(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [term for line in lines if (term := line.split("#", 1)[0].strip())]


def _load(operator_dir: Path | None) -> _Vocabulary:
    signature = _signature(operator_dir)  # taken first: an edit during the read shows up next time
    exact: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for label, rel in _FILES.items():
        try:
            terms = _read_terms(SHIPPED_DIR / rel)
        except FileNotFoundError as exc:
            raise VocabularyError(f"shipped vocabulary {rel} is missing") from exc
        if not terms and label in _MUST_HAVE_TERMS:
            raise VocabularyError(f"shipped vocabulary {rel} is empty")
        if operator_dir is not None and (operator_dir / rel).is_file():
            terms += _read_terms(operator_dir / rel)
        for term in terms:
            if key := _key(term):
                exact.setdefault(key, set()).add(label)
        counts[label] = len(terms)
    if operator_dir is not None and operator_dir.is_dir():
        for path in sorted(operator_dir.rglob("*.txt")):
            if path.relative_to(operator_dir).as_posix() not in _FILES.values():
                log.warning("ignoring unknown vocabulary file %s", path)
    squeezed: dict[str, set[str]] = {}
    for key, labels in exact.items():
        squeezed.setdefault(_REPEATS.sub("", key), set()).update(labels)
    log.info("content vocabularies loaded (operator dir %s): %s", operator_dir, counts)
    return _Vocabulary(signature, _Matcher.build(exact), _Matcher.build(squeezed))


# --- the policy ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Classification:
    tier: ContentTier  # the lowest tier the text needs
    category: ProhibitedCategory | None  # set when the text is refused for everyone


@dataclass(frozen=True, slots=True)
class Verdict:
    tier: ContentTier  # the tier the request runs at: the detected tier, or the requested one if higher
    detected: ContentTier


class ContentPolicy:
    """The compiled vocabularies: shipped ones plus an optional operator directory that extends them.

    Checks read one immutable snapshot; ``reload()`` builds a new one and swaps it in with a single
    assignment, so a concurrent check sees the old or the new vocabularies, never a mix.
    """

    def __init__(self, operator_dir: str | Path | None = None) -> None:
        self.operator_dir = Path(operator_dir) if operator_dir is not None else None
        self._lock = threading.Lock()
        self._vocabulary = _load(self.operator_dir)

    def reload(self) -> None:
        """Re-read every file. On error the exception propagates and the previous vocabularies stay."""
        with self._lock:
            self._vocabulary = _load(self.operator_dir)

    def reload_if_changed(self) -> bool:
        """Reload when a file's mtime or size changed, or one appeared or vanished; True if reloaded.

        Cheap (a few stat calls). A file that cannot be read is logged and the previous vocabularies
        stay; it is retried on the next call.
        """
        if _signature(self.operator_dir) == self._vocabulary.signature:
            return False
        with self._lock:
            if _signature(self.operator_dir) == self._vocabulary.signature:
                return False
            try:
                self._vocabulary = _load(self.operator_dir)
            except (OSError, ValueError, VocabularyError):
                log.exception("content vocabularies changed but could not be reloaded; keeping the old ones")
                return False
        return True

    def classify(self, text: str, requested: ContentTier | None = None) -> Classification:
        """The tier the text needs and its prohibited category, if any.

        ``requested`` is the tier the request asks for: when above artistic it is sexual context too.
        """
        vocabulary = self._vocabulary  # one snapshot for the whole check
        folded = _fold(text)
        mapped = folded.translate(_LEET)
        tokens = _TOKEN.findall(mapped)
        found: set[str] = set()
        vocabulary.exact.scan(tokens, found)
        triples = [m.start() for m in _TRIPLE.finditer(folded)]  # before leetspeak, which makes "ill" one
        if triples:
            # Leetspeak maps one character to one, so positions in both strings line up.
            starts = [m.start() for m in _TOKEN.finditer(mapped)]
            marked = [False] * len(starts)
            for position in triples:
                marked[bisect_right(starts, position) - 1] = True
            vocabulary.squeezed.scan(_TOKEN.findall(_REPEATS.sub("", mapped)), found, marked)
        if _MINOR_AGE.search(folded):
            found.add(ProhibitedCategory.MINORS.value)
        tiers = [t for t in ContentTier if t.value in found]  # in rank order: the last one is needed
        tier = tiers[-1] if tiers else ContentTier.ARTISTIC
        sexual = tier is not ContentTier.ARTISTIC or requested not in (None, ContentTier.ARTISTIC)
        hits = [c for c in ProhibitedCategory if f"{c}.always" in found or (sexual and c.value in found)]
        category = hits[0] if hits else None
        return Classification(tier, category)

    def detect_tier(self, text: str) -> ContentTier:
        return self.classify(text).tier


def tier_permitted(requested: ContentTier, allowed: ContentTier, age_verified: bool) -> bool:
    """A profile may use tiers up to its ``content_tier_allowed``; above artistic only once age-verified."""
    return _RANK[requested] <= _RANK[allowed] and (requested is ContentTier.ARTISTIC or age_verified)


def check_prompt(
    policy: ContentPolicy,
    text: str,
    allowed_tier: ContentTier,
    age_verified: bool,
    *,
    requested_tier: ContentTier | None = None,
) -> Verdict:
    """Refuse prohibited content (first, for everyone), then a tier the profile may not use.

    Logs a refusal with its category and a short hash only. Returns the tier the request runs at.
    """
    result = policy.classify(text, requested_tier)
    if result.category is not None:
        raise ContentProhibited(result.category, log_prohibited(result.category, text))
    tier = result.tier
    if requested_tier is not None and _RANK[requested_tier] > _RANK[tier]:
        tier = requested_tier
    if not tier_permitted(tier, allowed_tier, age_verified):
        raise ContentTierNotAllowed(tier, allowed_tier, age_verified)
    return Verdict(tier, result.tier)


def text_hash(text: str) -> str:
    """A short, stable fingerprint of a text, to correlate log lines without logging the text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def log_prohibited(category: ProhibitedCategory, text: str, *, logger: logging.Logger | None = None) -> str:
    """Log a refusal as its category and the text's short hash (never the text); returns the hash."""
    digest = text_hash(text)
    (logger or log).warning("content prohibited: category=%s text_sha256=%s", category.value, digest)
    return digest


_policies: dict[Path | None, ContentPolicy] = {}
_policies_lock = threading.Lock()


def get_policy(operator_dir: str | Path | None = None) -> ContentPolicy:
    """One shared policy per operator directory (the app passes ``<data dir>/vocabularies``)."""
    key = Path(operator_dir).expanduser().resolve() if operator_dir is not None else None
    with _policies_lock:
        if key not in _policies:
            _policies[key] = ContentPolicy(key)
        return _policies[key]
