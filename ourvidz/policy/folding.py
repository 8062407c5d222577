"""How texts and terms are folded before matching, so spelling tricks do not get past the word lists.

NFKD, accents and invisible characters removed, look-alike Cyrillic/Greek letters mapped to Latin,
case folded; then leetspeak (with ``l``/``1``/``i`` as one letter) for word matching.
"""

from __future__ import annotations

import re
import unicodedata

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
LEET = str.maketrans("013457@$l", "oieastasi")
TOKEN = re.compile(r"[^\W_]+")
TRIPLE = re.compile(r"([^\W_])\1\1")
REPEATS = re.compile(r"([^\W_])(?=\1)")  # all but the last of a run


def fold(text: str) -> str:
    """Compatibility forms, accents, invisible characters, look-alike letters and case folded away."""
    if text.isascii():
        return text.lower()
    text = _INVISIBLE_OR_MARK.sub("", unicodedata.normalize("NFKD", text))
    return text.translate(_CONFUSABLES).casefold()


def key(term: str) -> str:
    """A term as the matcher looks it up: folded, leetspeak mapped, its words joined."""
    return "".join(TOKEN.findall(fold(term).translate(LEET)))
