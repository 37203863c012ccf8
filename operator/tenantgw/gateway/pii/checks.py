"""Checksums and heuristics the PII detectors validate their matches with."""

from __future__ import annotations

import math
import re
from collections import Counter


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only) is valid."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# Lengths of IBANs by country (ISO 13616 registry); others are checked by mod-97 alone.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_ok(iban: str) -> bool:
    """ISO 7064 mod-97 check of an IBAN (letters and digits only, upper case)."""
    if not 15 <= len(iban) <= 34:
        return False
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def shannon_entropy(text: str) -> float:
    """Bits per character of `text`."""
    counts = Counter(text)
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


PLACEHOLDER_VALUE = re.compile(
    r"^(?:\$\{?[A-Za-z_]|%\(|\{\{|<[^>]*>$|os\.|process\.env|env\.|getenv|secrets\.|"
    r"(?:x+|\*+|\.+|-+|changeme|password|secret|your[-_a-z]*|example[-_a-z]*|"
    r"none|null|nil|true|false|undefined|redacted)$)",
    re.IGNORECASE,
)


_HAS_DIGIT = re.compile(r"\d").search
_HAS_LETTER = re.compile(r"[^\W\d_]").search
_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+").fullmatch


def looks_random(value: str) -> bool:
    """A value that looks like a credential rather than a word or an identifier in code."""
    if len(value) < 12 or not _HAS_DIGIT(value) or not _HAS_LETTER(value):
        return False
    if PLACEHOLDER_VALUE.search(value) or "[REDACTED_" in value:
        return False
    if _DOTTED_NAME(value):
        return False  # a dotted name in code: config.api_token
    return shannon_entropy(value) >= 3.0
