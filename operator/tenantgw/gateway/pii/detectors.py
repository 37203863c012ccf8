"""The PII detectors: one regex per way an entity is written, each with its validator.

Entities: EMAIL, PHONE, CREDIT_CARD (Luhn-checked), US_SSN, IBAN (mod-97 checked),
IP_ADDRESS (v4 and v6), SECRET (provider API keys, cloud and chat tokens, bearer tokens, PEM
private keys, `password=...`-style assignments of random-looking values). Regexes are
compiled once at import; each detector has a cheap substring pre-check.
"""

from __future__ import annotations

import base64
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
    if start == 0 or text[start - 1] not in forbidden:
        return True
    # "\n", "\t", "\r" written out, as in JSON strings and code quoted in a prompt
    return start >= 2 and text[start - 2] == "\\" and text[start - 1] in "ntr"


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
    """A Luhn-valid number of an issuer's length; the longest one when the match runs on."""
    text, start = match.string, match.start()
    if not _free_before(text, start, _DIGIT_DOT_DASH):
        return None
    raw = match.group(0)
    positions = [i for i, c in enumerate(raw) if c in _DIGITS]
    digits = "".join(raw[i] for i in positions)
    for length in sorted(_card_lengths(digits), reverse=True):
        if length <= len(digits) and luhn_ok(digits[:length]):
            end = start + positions[length - 1] + 1
            return (start, end) if _free_after(text, end, _DIGITS) else None
    return None


_MAESTRO_SHORT = ("5018", "5020", "5038", "5893", "6304", "6390", "6759", "6761", "6762", "6763")


def _card_lengths(digits: str) -> range | tuple[int, ...]:
    """Lengths card numbers starting with these digits have (by issuer prefix)."""
    first, two, four = digits[0], digits[:2], digits[:4]
    if first == "4":  # Visa
        return (13, 16, 19)
    if four.startswith(_MAESTRO_SHORT) or two in ("56", "57", "58") or four == "0604":
        return range(12, 20)  # Maestro
    if "51" <= two <= "55" or "22" <= two <= "27":  # Mastercard, Mir (2200-2204)
        return (16,) if two != "22" or four > "2204" else range(16, 20)
    if two in ("34", "37"):  # American Express
        return (15,)
    if four in ("2131", "1800"):  # JCB, 15 digits
        return (15,)
    if two == "35" or first == "6":  # JCB, Discover, UnionPay, Maestro
        return range(16, 20)
    if two in ("30", "36", "38", "39"):  # Diners Club
        return range(14, 20)
    return ()


def _jwt(match: re.Match[str]) -> Span | None:
    """A JSON Web Token: its header is base64url JSON naming an algorithm ("alg")."""
    header = match.group(0).split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
    except ValueError:
        return None
    return _jwt_bounds(match) if b'"alg"' in decoded else None


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


def _ipv4(match: re.Match[str]) -> Span | None:
    text, (start, end) = match.string, match.span()
    if not _free_before(text, start, _DIGIT_DOT) or not _free_after(text, end, _DIGITS):
        return None
    if end + 1 < len(text) and text[end] == "." and text[end + 1].isdigit():
        return None  # 1.2.3.4.5 is not an address
    parts = match.groups()
    if any((len(part) > 1 and part[0] == "0") or int(part) > 255 for part in parts):
        return None
    if parts[0] in ("127", "0") or _is_netmask(parts):
        return None  # loopback, "this network" (0.0.0.0), netmasks and broadcast: not a person's
    return match.span()


def _is_netmask(parts: tuple[str, ...]) -> bool:
    """255.255.255.0 and the like: ones then zeros, starting with 255."""
    if parts[0] != "255":
        return False
    value = 0
    for part in parts:
        value = value << 8 | int(part)
    inverted = ~value & 0xFFFFFFFF
    return inverted & (inverted + 1) == 0


def _ipv6(match: re.Match[str]) -> Span | None:
    text, (start, end) = match.string, match.span()
    if not _free_before(text, start, _WORD_COLON) or not _free_after(text, end, _WORD_COLON):
        return None
    candidate = match.group(0)
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    mapped = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified or (mapped and mapped.is_loopback):
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
_jwt_bounds = _bounded(_TOKEN_CHARS, _TOKEN_CHARS)

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


# File name extensions that end a domain only when the address is part of a file name
# (`jane.doe@example.com.txt`): such a label is dropped while the domain still has two labels
# without it, so the address is redacted and the extension kept. `jane@example.zip` keeps its
# one-label domain whole: `.zip` is a real TLD and the domain cannot be shorter.
_FILE_EXTENSIONS = frozenset((
    "txt", "md", "rst", "pdf", "json", "jsonl", "csv", "tsv", "log", "py", "js", "ts", "tsx",
    "jsx", "html", "htm", "xml", "yaml", "yml", "toml", "ini", "cfg", "conf", "env", "doc",
    "docx", "odt", "rtf", "xls", "xlsx", "ods", "ppt", "pptx", "png", "jpg", "jpeg", "gif",
    "svg", "webp", "bmp", "tif", "tiff", "mp3", "mp4", "wav", "zip", "gz", "tgz", "tar", "bz2",
    "xz", "rar", "eml", "msg", "mbox", "vcf", "ics", "bak", "tmp", "old", "orig", "swp", "sh",
    "bash", "rs", "go", "java", "kt", "rb", "php", "sql", "db", "sqlite", "key", "pem", "crt",
    "cer", "asc", "gpg", "sig", "lock", "out", "err", "pub",
))  # fmt: skip


def _strip_file_extensions(text: str, at: int, end: int) -> int:
    """The end of the address in `text[at:end]` ("@domain") once file extensions are dropped."""
    while True:
        dot = text.rfind(".", at, end)
        if text[dot + 1 : end].lower() not in _FILE_EXTENSIONS or text.count(".", at, dot) < 1:
            return end
        end = dot


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
                yield local.start(), _strip_file_extensions(text, at, end)


# --------------------------------------------------------------------------- phone numbers

# Digit groups, some in parentheses, joined by up to two of " .-/" (or nothing), with an
# optional extension: every way the numbers of the world are written, and many numbers that
# are not phone numbers; `_PhoneDetector` decides which are.
_PHONE = re.compile(
    r"(?=[+(\d][\d ()./+-]{5})\+?(?:\(\d{1,5}\)|\d{1,8})(?:[ ./-]{0,2}(?:\(\d{1,5}\)|\d{1,8})){0,7}"
    r"(?P<ext> ?(?:x|ext\.?|#) ?\d{1,6})?"
)
_PHONE_BEFORE = _WORD | {"+", ".", "-", "/", "(", ")"}
_DATE = re.compile(
    r"(?:\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2(?:\d{4}|\d{2}))"
    r"(?: \d{1,2}(?:[.]\d{2}){0,2})?"
).fullmatch
_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}").fullmatch
_NANP = re.compile(r"(?:\(\d{3}\) ?|\d{3}([-. ]))\d{3}(?(1)\1|[-. ])\d{4}").fullmatch
# Words that say the next number is a phone number (searched in the lower-cased 48 characters
# before it), or after it ("555 0134 office").
_PHONE_CONTEXT = re.compile(
    r"phone|\btel\b|\btel\.|\btelefon|\bmobile?\b|\bmob\.|\bcell|\bfax|\bcall(?:s|ed|ing)?\b|\bring\b|"
    r"\bdial|\bsms\b|\btext|messag|whatsapp|signal|contact|\breach|answer|\boffice\b|\bdesk\b|"
    r"landline|hotline|voicemail|\bph\b|\bph\.|\btlf|\bt:|\bm:"
)
_PHONE_AFTER = re.compile(
    r"\s{0,2}[-(/,]?\s{0,2}(?:office|fax|mobile|cell|home|work|tel|phone|direct|desk|landline)"
)
_CONTEXT_CHARS = 48


def _long_groups(groups: list[str]) -> bool:
    """Groups of two digits or more (single digits are lists, matrices, counters)."""
    return all(len(group) >= 2 for group in groups)


_DIGIT_RUN = re.compile(r"\d+")
_NEXT_GROUP = re.compile(r"[^\d+(]+")
_ESCAPE = re.compile(r"\\[ntr]")


class _PhoneDetector(Detector):
    """Phone numbers, international (+ or 00 and a country code) and national.

    Without a word that says "phone" near it, a number must look like one: international
    form, a North American (555) 555-0134, an area code in parentheses, or a trunk prefix 0
    followed by groups of two or more digits (07700 900 123, 06-12345678, 05.06.52.16.25).
    With such a word (phone, tel, mobile, fax, call, text, contact...) in the 48 characters
    before it or "office"/"fax"/"mobile" right after, any run of 6 to 15 digits is one.
    Dates, US SSN shapes and version-like dotted numbers never are.
    """

    def spans(self, text: str) -> Iterable[Span]:
        search, position, rejected = self.regex.search, 0, 0
        while (match := search(text, position)) is not None:
            start, end = match.span()
            if end - start < 6 or not self._bounded(text, start, end):
                verdict = False
            else:
                verdict = self._is_phone(match, text)
            if verdict:
                yield start, end
                position = end
                continue
            # A phone number starts at a group, not inside one: go on from the next group.
            rejected += 1
            group = _NEXT_GROUP.search(text, start, end) if rejected <= MAX_RETRIES else None
            position = group.end() if group is not None else end

    @staticmethod
    def _bounded(text: str, start: int, end: int) -> bool:
        if not _free_before(text, start, _PHONE_BEFORE) or not _free_after(text, end, _WORD):
            return False
        # 1.2.3.4.5 or 1-2-3: a match that stopped in the middle of a longer run of numbers
        return not (end + 1 < len(text) and text[end] in ".-/" and text[end + 1].isdigit())

    @staticmethod
    def _is_phone(match: re.Match[str], text: str) -> bool:
        start, end = match.span()
        core_end = match.start("ext") if match.group("ext") else end
        core = text[start:core_end]
        groups = _DIGIT_RUN.findall(core)
        digits = sum(map(len, groups))
        if not 6 <= digits <= 15 or _DATE(core) or _SSN_SHAPE(core):
            return False
        if core[0] == "+":
            return digits >= 8
        # the tail of a longer run of numbers (an IBAN, a table row): only with a phone word
        tail = start >= 2 and text[start - 1] in " ./-" and text[start - 2].isdigit()
        dotted = "." in core and not any(c in core for c in " -/()")
        if not tail and core[:2] == "00" and core[2:3].isdigit() and core[2] != "0":
            return digits >= 8  # 0044 20 7946 0958: an international call prefix
        if not tail and not (dotted and len(groups) <= 4):  # versions, decimals
            if _NANP(core):
                return True  # (555) 555-0134
            if core[0] == "(" and core.count("(") == 1 and digits >= 7 and _long_groups(groups[1:]):
                return True  # an area code: (020) 7946 0958, (73) 4746-3459
            if (
                core[0] == "0"
                and core[1] != "0"
                and len(groups) >= 2
                and _long_groups(groups)
                and 9 <= digits <= 12
            ):
                return True  # a trunk prefix: 07700 900 123, 06-12345678, 05.06.52.16.25
        before = text[max(0, start - _CONTEXT_CHARS) : start].lower()
        after = text[end : end + _CONTEXT_CHARS // 2].lower()
        if "\\" in before or "\\" in after:  # "\n" written out: a line break, not a letter n
            before, after = _ESCAPE.sub("  ", before), _ESCAPE.sub("  ", after)
        return bool(_PHONE_CONTEXT.search(before) or _PHONE_AFTER.match(after))


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
        needles=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Detector(  # Stripe secret and restricted keys, webhook secrets (not publishable pk_ keys)
        "SECRET",
        re.compile(r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,255}|whsec_[A-Za-z0-9+/=]{24,255}"),
        _bounded(_ALNUM, frozenset()),
        needles=("k_live_", "k_test_", "whsec_"),
    ),
    Detector(  # GitLab personal, deploy and runner tokens
        "SECRET",
        re.compile(r"gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_-]{20,255}"),
        _bounded(_ALNUM, frozenset()),
        needles=("glpat-", "gldt-", "glrt-", "glptt-"),
    ),
    Detector(  # a JSON Web Token anywhere: header and claims are base64url JSON objects
        "SECRET",
        re.compile(r"eyJ[A-Za-z0-9_-]{8,4096}\.eyJ[A-Za-z0-9_-]{4,8192}\.[A-Za-z0-9_-]{0,2048}"),
        _jwt,
        needles=("eyJ",),
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
        re.compile(r"\d(?:[ ./-]{0,2}\d){11,18}"),
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
            r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?"
        ),
        _ipv6,
        needles=(":",),
    ),
    _PhoneDetector("PHONE", _PHONE),
)
