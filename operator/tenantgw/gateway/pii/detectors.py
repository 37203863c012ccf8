"""The PII detectors: one regex per way an entity is written, each with its validator.

Entities: EMAIL, PHONE, CREDIT_CARD (Luhn-checked), US_SSN, IBAN (mod-97 checked),
IP_ADDRESS (v4 and v6), SECRET (provider API keys, cloud and chat tokens, bearer tokens, PEM
private keys, `password=...`-style assignments of random-looking values). Regexes are
compiled once at import; each detector has a cheap substring pre-check.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tenantgw.api import PiiEntity
from tenantgw.gateway.pii.checks import (
    IBAN_LENGTHS,
    PLACEHOLDER_VALUE,
    iban_ok,
    looks_random,
    luhn_ok,
)

ALL_ENTITIES: tuple[str, ...] = tuple(entity.value for entity in PiiEntity)

# Which detector wins when two matches overlap (lower first).
PRIORITY = {
    "SECRET": 0,
    "EMAIL": 1,
    "IBAN": 2,
    "CREDIT_CARD": 3,
    "US_SSN": 4,
    "IP_ADDRESS": 5,
    "PHONE": 6,
}


def placeholder(entity: str) -> str:
    return f"[REDACTED_{entity}]"


# --------------------------------------------------------------------------- detectors

Span = tuple[int, int]
MAX_RETRIES = 512
"""Rejected matches per detector and text after which the search skips past, not into, them."""
Validator = Callable[[re.Match[str]], Span | None]

_ALNUM = frozenset(string.ascii_letters + string.digits)
_WORD = _ALNUM | {"_"}


def _free_before(text: str, start: int, forbidden: frozenset[str]) -> bool:
    return start == 0 or text[start - 1] not in forbidden


def _free_after(text: str, end: int, forbidden: frozenset[str]) -> bool:
    return end >= len(text) or text[end] not in forbidden


@dataclass(frozen=True)
class Detector:
    """One way of finding an entity: a regex, an optional validator and substring pre-checks.

    The regex is only run when one of `needles` occurs in the text (or `needles` is empty).
    The regexes start with a literal or a character class, never a look-behind, so that the
    regex engine can skip ahead quickly; boundaries are checked by the validator, which returns
    the span to redact or None. After a rejected match the search resumes one character later.
    """

    entity: str
    regex: re.Pattern[str]
    validate: Validator | None = None
    needles: tuple[str, ...] = ()

    def spans(self, text: str) -> Iterable[Span]:
        if self.needles and not any(needle in text for needle in self.needles):
            return
        search, validate, position, rejected = self.regex.search, self.validate, 0, 0
        while (match := search(text, position)) is not None:
            span = validate(match) if validate is not None else match.span()
            if span is None:
                # Retry one character later (a real match may start inside a rejected one),
                # but not forever: crafted text could make that quadratic in Python calls.
                rejected += 1
                position = match.start() + 1 if rejected <= MAX_RETRIES else match.end()
                continue
            yield span
            position = max(span[1], match.start() + 1)


def _bounded(before: frozenset[str], after: frozenset[str], group: int | str = 0) -> Validator:
    """A validator that only checks the characters around the match (or one of its groups)."""

    def validate(match: re.Match[str]) -> Span | None:
        text, (start, end) = match.string, match.span()
        if _free_before(text, start, before) and _free_after(text, end, after):
            return match.span(group)
        return None

    return validate


def _card(match: re.Match[str]) -> Span | None:
    text, (start, end) = match.string, match.span()
    if not _free_before(text, start, _DIGIT_DOT_DASH) or not _free_after(text, end, _DIGITS):
        return None
    raw = match.group(0)
    digits = raw.replace(" ", "").replace("-", "")
    separators = {c for c in raw if c in " -"}
    if len(separators) > 1 or len(digits) not in _card_lengths(digits):
        return None
    return match.span() if luhn_ok(digits) else None


def _card_lengths(digits: str) -> range | tuple[int, ...]:
    """Lengths card numbers starting with these digits have (by issuer prefix)."""
    first, two = digits[0], digits[:2]
    if first == "4":  # Visa
        return (13, 16, 19)
    if "51" <= two <= "55" or "22" <= two <= "27":  # Mastercard
        return (16,)
    if two in ("34", "37"):  # American Express
        return (15,)
    if two == "35" or first == "6":  # JCB, Discover, UnionPay, Maestro
        return range(16, 20)
    if two in ("30", "36", "38", "39"):  # Diners Club
        return range(14, 20)
    return ()


def _iban(match: re.Match[str]) -> Span | None:
    text, start = match.string, match.start()
    if not _free_before(text, start, _ALNUM):
        return None
    raw = match.group(0)
    positions = [i for i, c in enumerate(raw) if c != " "]
    compact = raw.replace(" ", "")
    expected = IBAN_LENGTHS.get(compact[:2])
    lengths = [expected] if expected else range(min(len(compact), 34), 14, -1)
    for length in lengths:
        if length <= len(compact) and iban_ok(compact[:length]):
            end = start + positions[length - 1] + 1
            return (start, end) if _free_after(text, end, _ALNUM) else None
    return None


def _ssn(match: re.Match[str]) -> Span | None:
    text, (start, end) = match.string, match.span()
    if not _free_before(text, start, _DIGIT_DASH) or not _free_after(text, end, _DIGIT_DASH):
        return None
    area, group, serial = match.group("area", "group", "serial")
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return match.span()


def _phone(match: re.Match[str]) -> Span | None:
    text, (start, end) = match.string, match.span()
    if not _free_before(text, start, _WORD_PLUS) or not _free_after(text, end, _WORD):
        return None
    digits = sum(c.isdigit() for c in match.group(0))
    return match.span() if 7 <= digits <= 15 else None


def _ipv4(match: re.Match[str]) -> Span | None:
    text, (start, end) = match.string, match.span()
    if not _free_before(text, start, _DIGIT_DOT) or not _free_after(text, end, _DIGITS):
        return None
    if end + 1 < len(text) and text[end] == "." and text[end + 1].isdigit():
        return None  # 1.2.3.4.5 is not an address
    if any((len(part) > 1 and part[0] == "0") or int(part) > 255 for part in match.groups()):
        return None
    return match.span()


def _ipv6(match: re.Match[str]) -> Span | None:
    text, (start, end) = match.string, match.span()
    if not _free_before(text, start, _WORD_COLON) or not _free_after(text, end, _WORD_COLON):
        return None
    candidate = match.group(0)
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    if "::" in candidate:
        groups = [g for g in re.split(r"[:.]", candidate) if g]
        # Short compressed forms collide with code (Python slices such as a[1::2]).
        if len(groups) < 2 or max(len(g) for g in groups) < 2:
            return None
    return match.span()


_DIGITS = frozenset(string.digits)
_DIGIT_DOT = _DIGITS | {"."}
_DIGIT_DASH = _DIGITS | {"-"}
_DIGIT_DOT_DASH = _DIGITS | {".", "-"}
_WORD_PLUS = _WORD | {"+"}
_WORD_COLON = _WORD | {":"}
_TOKEN_CHARS = _ALNUM | {"_", "-"}
_LOCAL = _ALNUM | set("._%+-")

# Names of credential fields, lower case; found in the lower-cased text, then the assignment
# after the name is matched in the original text.
_SECRET_NAME = re.compile(
    r"pass(?:word|wd)|pwd|secret|api[_-]?key|apikey|access[_-]?key|private[_-]?key|token|"
    r"credentials?"
)
_PASSWORD_NAMES = frozenset({"password", "passwd", "pwd"})
_SECRET_NAME_ANYCASE = re.compile(_SECRET_NAME.pattern, re.IGNORECASE)
_ASSIGNMENT = re.compile(
    r"[A-Za-z0-9_-]{0,24}[\"']?\s*[:=]>?\s*"
    r"(?:(?P<quote>[\"'`])(?P<value>[^\s\"'`]{4,256})(?P=quote)"
    r"|(?P<bare>[^\s\"'`,;()\[\]{}<>]{12,256}))"
)


class _AssignmentDetector(Detector):
    """`password = "..."`, `API_KEY=...`, `"token": "..."` with a credential-looking value.

    Field names are searched case-sensitively in the lower-cased text (several times faster
    than a case-insensitive regex); quoted password values count from 6 characters, other
    values only when they look random (see `looks_random`).
    """

    def spans(self, text: str) -> Iterable[Span]:
        lowered = text.lower()
        names = (
            _SECRET_NAME.finditer(lowered)
            if len(lowered) == len(text)  # lower() kept every offset
            else _SECRET_NAME_ANYCASE.finditer(text)
        )
        last_end, rejected = 0, 0
        for name in names:
            start, end = name.span()
            if start < last_end or not _free_before(text, start, _ALNUM):
                continue
            match = _ASSIGNMENT.match(text, end)
            if match is None:
                continue
            quoted = match.group("value")
            group = "value" if quoted is not None else "bare"
            value = match.group(group)
            password = name.group(0).lower() in _PASSWORD_NAMES
            if (
                quoted is not None
                and password
                and len(value) >= 6
                and not PLACEHOLDER_VALUE.search(value)
                and "[REDACTED_" not in value
            ) or looks_random(value):
                last_end = match.end(group)
                yield match.span(group)
            else:
                rejected += 1
                if rejected > MAX_RETRIES:  # skip names inside rejected values from now on
                    last_end = match.end(group)


class _EmailDetector(Detector):
    """E-mail addresses: the regex finds "@domain.tld", then the local part is matched backwards."""

    _local = re.compile(r"[A-Za-z0-9._%+-]{1,64}\Z")

    def spans(self, text: str) -> Iterable[Span]:
        if "@" not in text:
            return
        last_end = 0
        for domain in self.regex.finditer(text):
            at, end = domain.span()
            if at == 0 or text[at - 1] not in _LOCAL or at < last_end:
                continue  # decorators, @mentions: not an address
            if not _free_after(text, end, _ALNUM | {"-"}):
                continue
            local = self._local.search(text, max(last_end, at - 64), at)
            if local is not None:
                last_end = end
                yield local.start(), end


DETECTORS: tuple[Detector, ...] = (
    Detector(
        "SECRET",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]{0,16384}?"
            r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
        ),
        needles=("-----BEGIN",),
    ),
    Detector(
        "SECRET",
        re.compile(r"sk-(?:[A-Za-z0-9]+-){0,3}[A-Za-z0-9_-]{16,}"),
        _bounded(_TOKEN_CHARS, frozenset()),
        needles=("sk-",),
    ),
    Detector(
        "SECRET",
        re.compile(r"A(?:KIA|SIA|BIA|CCA)[0-9A-Z]{16}"),
        _bounded(_ALNUM, _ALNUM),
        needles=("AKIA", "ASIA", "ABIA", "ACCA"),
    ),
    Detector(
        "SECRET",
        re.compile(r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{22,255}"),
        _bounded(_ALNUM, frozenset()),
        needles=("gh",),
    ),
    Detector(
        "SECRET",
        re.compile(r"xox[abposre]-[A-Za-z0-9-]{10,}"),
        _bounded(_ALNUM, frozenset()),
        needles=("xox",),
    ),
    Detector(
        "SECRET",
        re.compile(r"AIza[0-9A-Za-z_-]{35}"),
        _bounded(_ALNUM, frozenset()),
        needles=("AIza",),
    ),
    Detector(
        "SECRET",
        re.compile(r"[Bb]earer\s+(?P<token>[A-Za-z0-9._~+/-]{16,}=*)"),
        _bounded(_WORD, frozenset(), "token"),
        needles=("earer",),
    ),
    _AssignmentDetector("SECRET", _SECRET_NAME),
    _EmailDetector("EMAIL", re.compile(r"@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,63}")),
    Detector(
        "IBAN",
        re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}"),
        _iban,
    ),
    Detector(
        "CREDIT_CARD",
        re.compile(r"\d(?:[ -]?\d){12,18}"),
        _card,
    ),
    Detector(
        "US_SSN",
        re.compile(r"(?P<area>\d{3})(?P<sep>[- ])(?P<group>\d{2})(?P=sep)(?P<serial>\d{4})"),
        _ssn,
    ),
    Detector(
        "IP_ADDRESS",
        re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})"),
        _ipv4,
        needles=(".",),
    ),
    Detector(
        "IP_ADDRESS",
        re.compile(
            r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:(?:[0-9A-Fa-f]{0,4}:){0,5}"
            r"(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
        ),
        _ipv6,
        needles=(":",),
    ),
    Detector(
        "PHONE",
        re.compile(r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"),
        _phone,
        needles=("+",),
    ),
    Detector(
        "PHONE",
        re.compile(r"(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}"),
        _phone,
    ),
)
