"""Ages under 18 in the forms people write them, per language, from data files.

Each language's ``ages.toml`` (``ourvidz/vocabularies/ages.toml`` for English, ``<lang>/ages.toml``
beside the other languages' word lists; an operator's file of the same name adds to the shipped one)
holds the number words for 1 to 17 and regular expressions over the folded text (lower case, accents
removed) in which ``{n}`` stands for an age under 18, in digits or words. "21", "2.5" and
"twenty-one" are not ages under 18; 18 and above never match ``{n}``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path

from ourvidz.policy.folding import fold
from ourvidz.policy.tiers import VocabularyError

AGES_FILE = "ages.toml"
_DIGITS = "1[0-7]|0?[1-9]"


def read_ages(path: Path) -> tuple[list[str], list[str]]:
    """(number words, patterns) of one ``ages.toml``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise VocabularyError(f"{path} is not valid TOML: {exc}") from None
    numbers, patterns = data.get("numbers", []), data.get("patterns", [])
    if not all(isinstance(item, str) for item in [*numbers, *patterns]):
        raise VocabularyError(f"{path}: `numbers` and `patterns` must be lists of strings")
    return [fold(word) for word in numbers], list(patterns)


def compile_ages(languages: Iterable[tuple[list[str], list[str]]]) -> re.Pattern[str] | None:
    """One expression for every pattern of every language; in a language's patterns ``{n}`` stands for
    a digit age or one of that language's number words."""
    alternatives: dict[str, None] = {}
    for numbers, patterns in languages:
        words = sorted({re.escape(word) for word in numbers if word}, key=len, reverse=True)
        number = rf"(?<![\w.])(?<!ty[\W_])(?:{_DIGITS}{''.join('|' + w for w in words)})(?!\d)(?![.,]\d)"
        for pattern in patterns:
            source = pattern.replace("{n}", number)
            try:
                re.compile(source)
            except re.error as exc:
                raise VocabularyError(f"age pattern {pattern!r} is not a valid expression: {exc}") from None
            alternatives[f"(?:{source})"] = None
    return re.compile("|".join(alternatives)) if alternatives else None
