"""Fit prompts into a model's text-encoder token budget, counted with the model's real tokenizer.

SDXL's CLIP encoders read 75 content tokens (77 with BOS/EOS) and Wan's UMT5 gets a per-quality budget;
whatever is beyond is silently cut by the encoder, usually mid-phrase. Fitting here instead drops
duplicate phrases first, then the least important ones, and truncates only as a last resort, so the
subject of a prompt always survives and callers learn what was removed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import get_args

from tokenizers import Tokenizer

from ourvidz.catalog import Family
from ourvidz.prompts.tokenizers import shipped_tokenizer

FAMILIES: tuple[str, ...] = get_args(Family)
JOINER = ", "
_SEPARATORS = re.compile(r"[,;\r\n]+")
_NOT_WORD = re.compile(r"[^\w\s]+")
_TRAILING_SEPARATORS = " ,;"


@dataclass(frozen=True, slots=True)
class Fitted:
    """A prompt fitted to a token budget, with what was done to make it fit."""

    text: str
    token_count: int
    original_token_count: int
    budget: int
    compression_applied: bool
    truncated: bool
    dropped: list[str]


TOKENIZERS = {"sdxl": "clip", "wan": "umt5"}


def tokenizer_for(family: str) -> Tokenizer:
    """The (shared) tokenizer of a model family: CLIP BPE for SDXL (both encoders), UMT5 for Wan."""
    try:
        return shipped_tokenizer(TOKENIZERS[family])
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}") from None


def _encode(family: str, texts: list[str]) -> list[list[int]]:
    """Content token ids of each text (no BOS/EOS/padding), in one tokenizer call."""
    if not texts:
        return []
    return [
        list(encoding.ids) for encoding in tokenizer_for(family).encode_batch(texts, add_special_tokens=False)
    ]


def count_tokens(text: str, family: str) -> int:
    """Content tokens of `text` for the family's text encoder, without BOS/EOS/padding."""
    return len(_encode(family, [text])[0])


def normalise_whitespace(text: str) -> str:
    return " ".join(text.split())


def split_phrases(text: str) -> list[str]:
    """Comma/semicolon/newline-separated phrases, whitespace-normalised, empty ones left out.

    `fit_prompt` splits the same way, so callers can align `priorities` with these phrases.
    """
    return [phrase for phrase in (normalise_whitespace(s) for s in _SEPARATORS.split(text)) if phrase]


def phrase_key(phrase: str) -> str:
    """What makes two phrases duplicates: ignoring case, whitespace and punctuation."""
    return normalise_whitespace(_NOT_WORD.sub(" ", phrase.casefold()))


def fit_prompt(
    text: str,
    family: str,
    budget: int,
    *,
    protected: int | Collection[int] = 1,
    priorities: Sequence[int] | None = None,
) -> Fitted:
    """Fit `text` into `budget` content tokens of the family's tokenizer.

    Under budget the text comes back with whitespace normalised only. Over budget, in this order and
    stopping as soon as it fits: duplicate phrases are dropped (the first one kept), then the
    lowest-priority phrases (lower `priorities` first, later phrases first among equals), never the
    protected ones nor the last one left, and only then is the rest truncated at the token level.
    A compressed result is its phrases joined with ", ".

    `protected` is either a count (the first phrases: the subject) or a collection of phrase indices;
    `priorities`, when given, has one entry per phrase of `split_phrases(text)`.
    """
    if budget < 0:
        raise ValueError(f"token budget must be >= 0, got {budget}")
    normalised = normalise_whitespace(text)
    original = count_tokens(normalised, family)
    if original <= budget:
        return Fitted(normalised, original, original, budget, False, False, [])

    phrases = split_phrases(text)
    count = len(phrases)
    ranks = _ranks(priorities, count)
    keep = _protected_indices(protected, count)

    # Both tokenizers split on whitespace before anything else, so "p1, p2, p3" is exactly the tokens
    # of "p1," + "p2," + "p3": two batched tokenisations give every phrase's cost with or without
    # its separator, and the total of any subset is a sum (checked by one real count afterwards).
    encoded = _encode(family, [p + JOINER.strip() for p in phrases] + phrases)
    with_separator = [len(ids) for ids in encoded[:count]]
    bare = [len(ids) for ids in encoded[count:]]

    kept: list[int] = []
    dropped: list[str] = []
    first_of: dict[str, int] = {}
    for index, phrase in enumerate(phrases):
        key = phrase_key(phrase)
        first = first_of.setdefault(key, index)
        if first == index:
            kept.append(index)
            continue
        ranks[first] = max(ranks[first], ranks[index])
        if index in keep:
            keep.add(first)
        dropped.append(phrase)

    def estimate() -> int:
        if not kept:
            return 0
        return sum(with_separator[i] for i in kept) - with_separator[kept[-1]] + bare[kept[-1]]

    def measure() -> tuple[str, int]:
        """The kept phrases as text and their tokens: counted for real only when they might fit."""
        text = JOINER.join(phrases[i] for i in kept)
        expected = estimate()
        return text, count_tokens(text, family) if expected <= budget else expected

    order = iter(sorted((i for i in kept if i not in keep), key=lambda i: (ranks[i], -i)))
    fitted, tokens = measure()
    while tokens > budget:
        progressed = False
        for index in order:
            if len(kept) == 1:
                break  # truncating the last phrase keeps more than dropping it
            kept.remove(index)
            dropped.append(phrases[index])
            progressed = True
            if estimate() <= budget:
                break
        if not progressed:
            break
        fitted, tokens = measure()

    truncated = tokens > budget
    if truncated:
        fitted, tokens = _truncate(fitted, family, budget)
    return Fitted(fitted, tokens, original, budget, True, truncated, dropped)


def _ranks(priorities: Sequence[int] | None, count: int) -> list[int]:
    if priorities is None:
        return [0] * count
    if len(priorities) != count:
        raise ValueError(f"got {len(priorities)} priorities for {count} phrases")
    return list(priorities)


def _protected_indices(protected: int | Collection[int], count: int) -> set[int]:
    if isinstance(protected, int):
        if protected < 0:
            raise ValueError(f"protected must be >= 0, got {protected}")
        return set(range(min(protected, count)))
    return {index for index in protected if 0 <= index < count}


def _truncate(text: str, family: str, budget: int) -> tuple[str, int]:
    """The longest prefix of `text` within `budget` tokens, cut at a token boundary, as clean text."""
    for target in range(budget, -1, -1):
        candidate = _cut(text, family, target)
        tokens = count_tokens(candidate, family)
        if tokens <= budget:
            return candidate, tokens
    return "", 0  # pragma: no cover - target 0 always yields ""


def _cut(text: str, family: str, target: int) -> str:
    """Whole words while they fit, then as many tokens of the next word as fit, decoded cleanly."""
    words = text.split(" ")
    out: list[str] = []
    used = 0
    for word, ids in zip(words, _encode(family, words), strict=True):
        if used + len(ids) <= target:
            out.append(word)
            used += len(ids)
            continue
        if used < target:
            out.append(_fragment(word, ids[: target - used], family))
        break
    return " ".join(out).rstrip(_TRAILING_SEPARATORS)


def _fragment(word: str, ids: list[int], family: str) -> str:
    """The text of a word's first tokens, in the word's own spelling where it can be recovered."""
    decoded = tokenizer_for(family).decode(ids, skip_special_tokens=True)
    fragment = decoded.replace(" ", "").replace("\ufffd", "")  # a word has no spaces; drop cut bytes
    for spelling in (word, word.lower()):
        if len(spelling) == len(word) and spelling.startswith(fragment):
            return word[: len(fragment)]
    return fragment
