"""The lexical layer: word lists per language, ages in every form, benign senses of listed words.

The code base never carries explicit text: vocabularies are data files. Neutral placeholders ship in
``ourvidz/vocabularies/`` (English at its top, other languages in ``<lang>/`` beside it); operators
extend them with files of the same names in ``<data dir>/vocabularies/`` (one term or phrase per line,
``#`` comments) and add languages by adding ``<lang>/`` folders. Every language's lists apply to every
text: a word that is something else in another language ("kind" is German for child) is listed only
in phrases that are unambiguous ("ein kind").

Matching folds text and terms the same way (`ourvidz.policy.folding`), splits the text into word
tokens and looks up runs of consecutive tokens whose concatenation is a term. So a term matches only
whole words, never inside a longer word ("zorblax" is not found in "zorblaxian"), yet a term spelled
across separators ("z.o.r.b.l.a.x", "zor-blax") or a phrase across any separators still matches.
Letters repeated three or more times ("zorrrblax") are squeezed only within the words that have them.

Prohibited categories: their shipped files are always read from this package, operator files only add
terms. A category term counts when the text needs a tier above artistic (sexual context); terms in a
category's ``.always`` file count in any text. A ``.senses`` file lists benign phrases that contain a
category term ("minor chord"): a term inside such a phrase does not count there (kept conservative,
since a miss costs more than a refusal).
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from ourvidz.policy.ages import AGES_FILE, compile_ages, read_ages
from ourvidz.policy.folding import LEET, REPEATS, TOKEN, TRIPLE, fold, key
from ourvidz.policy.tiers import ContentTier, ProhibitedCategory, VocabularyError, sexual_context

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent.parent / "vocabularies"
SENSE = ".sense"
# Label (what a match means) -> vocabulary file, relative to a language's directory.
_FILES = (
    {tier.value: f"{tier.value}.txt" for tier in ContentTier if tier is not ContentTier.ARTISTIC}
    | {
        f"{cat.value}{kind}": f"prohibited/{cat.value}{kind}.txt"
        for cat in ProhibitedCategory
        for kind in ("", ".always")
    }
    | {f"{cat.value}{SENSE}": f"prohibited/{cat.value}.senses.txt" for cat in ProhibitedCategory}
)
_TIER_LABELS = frozenset(tier.value for tier in ContentTier)
# A broken install must fail loudly rather than silently allow everything.
_MUST_HAVE_TERMS = (ProhibitedCategory.MINORS.value, ProhibitedCategory.NON_CONSENT.value)
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})?")
_NOT_LANGUAGES = {"prohibited", "concepts"}


def languages(base: Path | None) -> list[str]:
    """The language folders of a vocabularies directory ("" is its top level, English)."""
    if base is None or not base.is_dir():
        return []
    found = [p.name for p in base.iterdir() if p.is_dir() and _LANGUAGE.fullmatch(p.name)]
    return ["", *sorted(name for name in found if name not in _NOT_LANGUAGES)]


def _files(lang: str) -> dict[str, str]:
    prefix = f"{lang}/" if lang else ""
    return {label: prefix + rel for label, rel in _FILES.items()} | {"ages": prefix + AGES_FILE}


def signature(operator_dir: Path | None) -> tuple[tuple[int, int] | None, ...]:
    """mtimes and sizes of every file the vocabularies are read from (None where one is missing)."""
    stats: list[tuple[int, int] | None] = []
    for base in (SHIPPED_DIR, operator_dir):
        for lang in languages(base) if base is not None else ():
            for rel in _files(lang).values():
                try:
                    st = (base / rel).stat()
                except OSError:
                    stats.append(None)
                else:
                    stats.append((st.st_mtime_ns, st.st_size))
    return tuple(stats)


def read_terms(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [term for line in lines if (term := line.split("#", 1)[0].strip())]


@dataclass(frozen=True, slots=True)
class _Matcher:
    terms: dict[str, frozenset[str]]  # folded, concatenated term -> labels
    prefixes: frozenset[str]  # proper prefixes of the terms: when to keep joining tokens

    @classmethod
    def build(cls, entries: dict[str, set[str]]) -> _Matcher:
        prefixes = {key[:end] for key in entries for end in range(1, len(key))}
        return cls({key: frozenset(labels) for key, labels in entries.items()}, frozenset(prefixes))

    def scan(
        self, tokens: list[str], hits: list[tuple[int, int, frozenset[str]]], marked: list[bool] | None = None
    ) -> None:
        """Add (first token, end token, labels) for every run of tokens that joins into a term (only runs
        with a marked token when `marked` is given)."""
        terms, prefixes, count = self.terms, self.prefixes, len(tokens)
        for start in range(count):
            chunk, end = tokens[start], start
            hot = marked is None or marked[start]
            while True:
                labels = terms.get(chunk)
                if labels is not None and hot:
                    hits.append((start, end + 1, labels))
                end += 1
                if end == count or chunk not in prefixes:
                    break
                chunk += tokens[end]
                hot = hot or (marked is not None and marked[end])


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """One immutable snapshot of every language's word lists and age patterns."""

    signature: tuple[tuple[int, int] | None, ...]
    exact: _Matcher
    squeezed: _Matcher
    ages: re.Pattern[str] | None

    @classmethod
    def load(cls, operator_dir: Path | None) -> Vocabulary:
        signature_ = signature(operator_dir)  # taken first: an edit during the read shows up next time
        exact: dict[str, set[str]] = {}
        ages: list[tuple[list[str], list[str]]] = []
        counts: dict[str, int] = {}
        for lang in dict.fromkeys([*languages(SHIPPED_DIR), *languages(operator_dir)]):
            for label, rel in _files(lang).items():
                paths = [SHIPPED_DIR / rel, *([operator_dir / rel] if operator_dir is not None else [])]
                if label == "ages":
                    read = [read_ages(path) for path in paths if path.is_file()]
                    ages.append(([w for words, _ in read for w in words], [p for _, ps in read for p in ps]))
                    continue
                if not lang and not paths[0].is_file():
                    raise VocabularyError(f"shipped vocabulary {rel} is missing")
                terms = [term for path in paths if path.is_file() for term in read_terms(path)]
                if not lang and label in _MUST_HAVE_TERMS and not read_terms(paths[0]):
                    raise VocabularyError(f"shipped vocabulary {rel} is empty")
                for term in terms:
                    if key_ := key(term):
                        exact.setdefault(key_, set()).add(label)
                if terms:
                    counts[rel] = len(terms)
        _warn_unknown(operator_dir)
        squeezed: dict[str, set[str]] = {}
        for key_, labels in exact.items():
            squeezed.setdefault(REPEATS.sub("", key_), set()).update(labels)
        log.info("content vocabularies loaded (operator dir %s): %s", operator_dir, counts)
        return cls(signature_, _Matcher.build(exact), _Matcher.build(squeezed), compile_ages(ages))


def _warn_unknown(operator_dir: Path | None) -> None:
    if operator_dir is None or not operator_dir.is_dir():
        return
    known = {rel for lang in languages(operator_dir) for rel in _files(lang).values()}
    for path in sorted([*operator_dir.rglob("*.txt"), *operator_dir.rglob("*.toml")]):
        rel = path.relative_to(operator_dir).as_posix()
        if rel not in known and not rel.startswith("concepts/"):
            log.warning("ignoring unknown vocabulary file %s", path)


@dataclass(frozen=True, slots=True)
class LexicalResult:
    tier: ContentTier  # the lowest tier the text needs
    category: ProhibitedCategory | None  # set when the text is refused for everyone
    folded: str  # the text folded, for the next layers
    tier_spans: tuple[tuple[int, int], ...]  # character spans in `folded` of the tier terms found


def scan(vocabulary: Vocabulary, text: str, requested: ContentTier | None = None) -> LexicalResult:
    """What the word lists and age patterns find in `text`.

    ``requested`` is the tier the request asks for: when above artistic it is sexual context too.
    """
    folded = fold(text)
    mapped = folded.translate(LEET)  # one character for one: positions in both strings line up
    spans = [m.span() for m in TOKEN.finditer(mapped)]
    tokens = [mapped[a:b] for a, b in spans]
    hits: list[tuple[int, int, frozenset[str]]] = []
    vocabulary.exact.scan(tokens, hits)
    triples = [m.start() for m in TRIPLE.finditer(folded)]  # before leetspeak, which makes "ill" one
    if triples:
        marked = [False] * len(spans)
        for position in triples:
            marked[bisect_right([a for a, _ in spans], position) - 1] = True
        vocabulary.squeezed.scan([REPEATS.sub("", token) for token in tokens], hits, marked)
    senses = [(a, b, label) for a, b, labels in hits for label in labels if label.endswith(SENSE)]
    found: set[str] = set()
    for start, end, labels in hits:
        for label in labels:
            if any(a <= start and end <= b and label == s.removesuffix(SENSE) for a, b, s in senses):
                continue  # this occurrence is inside a benign phrase of its own category
            found.add(label)
    if vocabulary.ages is not None and vocabulary.ages.search(folded):
        found.add(ProhibitedCategory.MINORS.value)
    tiers = [t for t in ContentTier if t.value in found]  # in rank order: the last one is needed
    tier = tiers[-1] if tiers else ContentTier.ARTISTIC
    sexual = sexual_context(tier, requested)
    hit = [c for c in ProhibitedCategory if f"{c}.always" in found or (sexual and c.value in found)]
    tier_spans = tuple(
        (spans[start][0], spans[end - 1][1]) for start, end, labels in hits if labels & _TIER_LABELS
    )
    return LexicalResult(tier, hit[0] if hit else None, folded, tier_spans)
