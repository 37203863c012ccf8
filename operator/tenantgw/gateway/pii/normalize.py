"""The text the detectors read: invisible characters dropped, look-alike digits made ASCII.

A prompt can hide a card number from an ASCII regex without hiding it from a model: zero-width
joiners between its digits (4111 U+200B 1111...), full-width digits (U+FF14 U+FF11...), digits
of other scripts (Arabic-Indic U+0664 U+0661...), no-break or thin spaces and Unicode dashes
as separators. The detectors run on a normalized copy and the spans they find are mapped back
to the original text, so the redaction covers the invisible characters too. ASCII text (nearly
every prompt) is returned as it is, at the cost of one `str.isascii()`.

Not normalized (documented in docs/benchmarks.md): letters that look like digits (O for 0,
l for 1), spelled-out numbers, circled or super-script digits, and any encoding (base64, hex).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from functools import cache

# Format characters that render as nothing: zero-width space/joiners, word joiner, BOM, soft
# hyphen, bidirectional marks and isolates, invisible operators, Mongolian vowel separator.
INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e"
    "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\u3164\ufeff\uffa0"
)
_INVISIBLE_RUN = re.compile(f"[{INVISIBLE}]+")
SPACES = (
    "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u3000"
)
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"


@cache
def table() -> dict[int, int | None]:
    """The translation table: built on first use (it walks the Unicode digit ranges)."""
    mapping: dict[int, int | None] = {ord(c): None for c in INVISIBLE}
    mapping.update({ord(c): ord(" ") for c in SPACES})
    mapping.update({ord(c): ord("-") for c in DASHES})
    for code in range(0xFF01, 0xFF5F):  # full-width ASCII: U+FF01 to U+FF5E
        mapping[code] = code - 0xFF01 + 0x21
    for code in range(0x80, 0x20000):  # no decimal digits above plane 1
        char = chr(code)
        if unicodedata.category(char) == "Nd":  # every script's decimal digits
            mapping[code] = ord("0") + unicodedata.decimal(char)
    return mapping


class Normalized:
    """A normalized copy of a text, and the way back to the original's offsets."""

    __slots__ = ("_breaks", "_shifts", "text")

    def __init__(self, original: str) -> None:
        self.text = original if original.isascii() else original.translate(table())
        # Where characters were dropped: for each normalized offset at which a run of
        # dropped characters was, the number of original characters dropped before it.
        self._breaks: list[int] = []
        self._shifts: list[int] = []
        if len(self.text) != len(original):
            dropped = 0
            for run in _INVISIBLE_RUN.finditer(original):
                dropped += run.end() - run.start()
                self._breaks.append(run.end() - dropped)
                self._shifts.append(dropped)

    def original(self, position: int, *, end: bool = False) -> int:
        """The original offset of normalized `position` (of a span's end when `end`)."""
        if not self._breaks:
            return position
        # a start moves past the invisible characters before it; an end does not take them
        index = bisect.bisect_right(self._breaks, position - 1 if end else position)
        return position + (self._shifts[index - 1] if index else 0)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of normalized [start, end)."""
        return self.original(start), self.original(end, end=True)
