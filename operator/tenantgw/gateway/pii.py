"""Detection and redaction of personal data and secrets in prompts, before they leave the gateway.

Entities: EMAIL, PHONE, CREDIT_CARD (Luhn-checked), US_SSN, IBAN (mod-97 checked),
IP_ADDRESS (v4 and v6), SECRET (provider API keys, cloud and chat tokens, bearer tokens, PEM
private keys, `password=...`-style assignments of random-looking values). A match becomes
`[REDACTED_<ENTITY>]`; in "block" mode the request is refused naming the entity types found,
never the values.

Every text the model would read is scanned: system prompt, message text, tool results and
tool-call arguments, in Anthropic and OpenAI shapes. Thinking blocks are left alone (their
signature covers the text). Regexes are compiled once at import; each detector has a cheap
substring pre-check, and results for long texts are cached, because clients resend the whole
conversation on every turn.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tenantgw.api import PiiEntity
from tenantgw.gateway.errors import InvalidRequestError

ALL_ENTITIES: tuple[str, ...] = tuple(entity.value for entity in PiiEntity)

# Which detector wins when two matches overlap (lower first).
_PRIORITY = {
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


# --------------------------------------------------------------------------- validators


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


_PLACEHOLDER_VALUE = re.compile(
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
    if _PLACEHOLDER_VALUE.search(value) or "[REDACTED_" in value:
        return False
    if _DOTTED_NAME(value):
        return False  # a dotted name in code: config.api_token
    return shannon_entropy(value) >= 3.0


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
                and not _PLACEHOLDER_VALUE.search(value)
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


# --------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class Finding:
    entity: str
    start: int
    end: int


class Scanner:
    """Finds and redacts a fixed set of entity types; safe to share between requests."""

    CACHE_MIN_CHARS = 512
    CACHE_MAX_CHARS = 32 * 1024 * 1024

    def __init__(self, entities: Iterable[str]) -> None:
        wanted = {entity.upper() for entity in entities}
        unknown = wanted - set(ALL_ENTITIES)
        if unknown:
            raise ValueError(f"unknown PII entities: {', '.join(sorted(unknown))}")
        self.entities = frozenset(wanted)
        self.detectors = tuple(d for d in DETECTORS if d.entity in wanted)
        self._cache: OrderedDict[str, tuple[str, dict[str, int]]] = OrderedDict()
        self._cached_chars = 0
        self._lock = threading.Lock()

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings in `text`, in order; overlaps go to the stronger entity."""
        found: list[tuple[int, int, int, str]] = []
        for detector in self.detectors:
            for start, end in detector.spans(text):
                found.append((start, -(end - start), _PRIORITY[detector.entity], detector.entity))
        if not found:
            return []
        found.sort(key=lambda f: (f[0], f[2], f[1]))
        result: list[Finding] = []
        for start, negative_length, _, entity in found:
            end = start - negative_length
            if result and start < result[-1].end:
                last = result[-1]
                # keep the earlier match unless this one is stronger and covers it
                if _PRIORITY[entity] < _PRIORITY[last.entity] and end >= last.end:
                    result[-1] = Finding(entity, min(start, last.start), end)
                continue
            result.append(Finding(entity, start, end))
        return result

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """`text` with every finding replaced by its placeholder, and the counts per entity."""
        if not text or not self.detectors:
            return text, {}
        cacheable = len(text) >= self.CACHE_MIN_CHARS
        if cacheable:
            with self._lock:
                hit = self._cache.get(text)
                if hit is not None:
                    self._cache.move_to_end(text)
                    return hit[0], dict(hit[1])
        findings = self.find(text)
        counts: dict[str, int] = {}
        if findings:
            parts: list[str] = []
            position = 0
            for finding in findings:
                parts.append(text[position : finding.start])
                parts.append(placeholder(finding.entity))
                counts[finding.entity] = counts.get(finding.entity, 0) + 1
                position = finding.end
            parts.append(text[position:])
            redacted = "".join(parts)
        else:
            redacted = text
        if cacheable:
            self._remember(text, redacted, counts)
        return redacted, counts

    def _remember(self, text: str, redacted: str, counts: dict[str, int]) -> None:
        size = len(text) + (len(redacted) if redacted is not text else 0)
        if size > self.CACHE_MAX_CHARS // 4:
            return
        with self._lock:
            if text in self._cache:
                return
            self._cache[text] = (redacted, dict(counts))
            self._cached_chars += size
            while self._cached_chars > self.CACHE_MAX_CHARS and self._cache:
                old_text, (old_redacted, _) = self._cache.popitem(last=False)
                self._cached_chars -= len(old_text) + (
                    len(old_redacted) if old_redacted is not old_text else 0
                )


_scanners: dict[frozenset[str], Scanner] = {}
_scanners_lock = threading.Lock()


def scanner_for(entities: Iterable[str]) -> Scanner:
    """The shared Scanner of an entity set (an empty set means every entity)."""
    key = frozenset(e.upper() for e in entities) or frozenset(ALL_ENTITIES)
    scanner = _scanners.get(key)
    if scanner is None:
        with _scanners_lock:
            scanner = _scanners.get(key)
            if scanner is None:
                scanner = Scanner(key)
                _scanners[key] = scanner
    return scanner


# --------------------------------------------------------------------------- request bodies

TextEdit = Callable[[str], str]


def _edit_content(content: Any, edit: TextEdit) -> Any:
    """Message content (string or blocks/parts) with every text run through `edit`."""
    if isinstance(content, str):
        return edit(content)
    if not isinstance(content, list):
        return content
    for index, part in enumerate(content):
        if isinstance(part, str):
            content[index] = edit(part)
        elif isinstance(part, dict):
            _edit_block(part, edit)
    return content


def _edit_value(value: Any, edit: TextEdit) -> Any:
    """Every string inside a JSON value (tool inputs)."""
    if isinstance(value, str):
        return edit(value)
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = _edit_value(item, edit)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _edit_value(item, edit)
    return value


def _edit_block(block: dict[str, Any], edit: TextEdit) -> None:
    kind = block.get("type")
    if kind in ("text", "input_text", "output_text") and isinstance(block.get("text"), str):
        block["text"] = edit(block["text"])
    elif kind in ("tool_result", "function_call_output"):
        key = "content" if kind == "tool_result" else "output"
        if key in block:
            block[key] = _edit_content(block[key], edit)
    elif kind == "tool_use" and "input" in block:
        block["input"] = _edit_value(block["input"], edit)
    elif kind == "function_call" and isinstance(block.get("arguments"), str):
        block["arguments"] = edit(block["arguments"])
    elif kind == "document":
        source = block.get("source")
        if (
            isinstance(source, dict)
            and source.get("type") == "text"
            and isinstance(source.get("data"), str)
        ):
            source["data"] = edit(source["data"])
    elif kind == "message" and "content" in block:  # Responses API input items
        block["content"] = _edit_content(block["content"], edit)
    # thinking / redacted_thinking: signed by the provider, left untouched; images: no text


def _edit_message(message: dict[str, Any], edit: TextEdit) -> None:
    if "content" in message:
        message["content"] = _edit_content(message["content"], edit)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                function["arguments"] = edit(function["arguments"])


def edit_request_texts(data: dict[str, Any], edit: TextEdit) -> None:
    """Run `edit` on every text of a request body a model would read, in place."""
    if "system" in data:
        data["system"] = _edit_content(data["system"], edit)
    messages = data.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                _edit_message(message, edit)
    for field in ("prompt", "input", "instructions"):
        value = data.get(field)
        if isinstance(value, str):
            data[field] = edit(value)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, str):
                    value[index] = edit(item)
                elif isinstance(item, dict):
                    if "role" in item:
                        _edit_message(item, edit)
                    else:
                        _edit_block(item, edit)


def apply_pii_policy(
    data: dict[str, Any], mode: str, entities: Iterable[str], *, tenant: str = ""
) -> dict[str, int]:
    """Redact (mode "redact") or refuse (mode "block") personal data in a request body.

    Returns the counts per entity type found. "block" raises InvalidRequestError naming the types
    found, never the values; "off" does nothing.
    """
    if mode == "off":
        return {}
    scanner = scanner_for(entities)
    totals: dict[str, int] = {}

    def edit(text: str) -> str:
        redacted, counts = scanner.redact(text)
        for entity, count in counts.items():
            totals[entity] = totals.get(entity, 0) + count
        return redacted if mode == "redact" else text

    edit_request_texts(data, edit)
    if mode == "block" and totals:
        kinds = ", ".join(sorted(totals))
        who = f"tenant {tenant}'s" if tenant else "the tenant's"
        raise InvalidRequestError(
            f"request refused by {who} PII policy: it contains {kinds}; "
            "remove that data from the prompt and retry",
        )
    return totals


def scan_text(text: str, entities: Iterable[str] = ALL_ENTITIES) -> dict[str, int]:
    """Counts per entity type in one text (nothing is changed)."""
    return scanner_for(entities).redact(text)[1]


def redact_text(text: str, entities: Iterable[str] = ALL_ENTITIES) -> str:
    """One text with every finding replaced by its placeholder."""
    return scanner_for(entities).redact(text)[0]
