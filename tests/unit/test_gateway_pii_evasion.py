"""A tenant's user trying to get personal data past the redactor, and what must be left alone.

In scope: one text (a message, a system prompt, one string of a tool input) with the value
written with any separators, invisible characters, full-width or other scripts' digits.
Out of scope (docs/benchmarks.md): a value split across two texts, spelled out, or encoded.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from tenantgw.gateway import pii

pytestmark = pytest.mark.unit

CARD = "4111111111111111"
ZWSP, ZWJ, WJ, BOM, NBSP = "\u200b", "\u200d", "\u2060", "\ufeff", "\u00a0"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) - 0x30 + 0xFF10) if c.isdigit() else c for c in text)


def arabic_indic(text: str) -> str:
    return "".join(chr(ord(c) - 0x30 + 0x0660) if c.isdigit() else c for c in text)


def digits_left(text: str) -> str:
    """Every digit of any script still in `text`, as ASCII."""
    return "".join(str(int(c)) for c in text if c.isdecimal())


@pytest.mark.parametrize(
    "written",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111.1111.1111.1111",
        "4111/1111/1111/1111",
        "4111 1111-1111.1111",  # mixed separators
        "4111  1111  1111  1111",  # two spaces
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        fullwidth("4111 1111 1111 1111"),
        fullwidth(CARD),
        arabic_indic(CARD),
        ZWSP.join(CARD),  # a zero-width space between every digit
        ZWJ.join(["4111", "1111", "1111", "1111"]),
        WJ + "4111" + BOM + "1111" + ZWSP + ZWJ + "1111" + "\u00ad" + "1111",
        NBSP.join(["4111", "1111", "1111", "1111"]),
        "\u2009".join(["4111", "1111", "1111", "1111"]),  # thin space
        "\u2013".join(["4111", "1111", "1111", "1111"]),  # en dash
        "\uff0d".join(fullwidth(g) for g in ["4111", "1111", "1111", "1111"]),
    ],
)
def test_a_card_number_is_redacted_however_it_is_written(written: str) -> None:
    text = f"pay with {written} please"
    redacted = pii.redact_text(text)
    # invisible characters before the first digit stay, harmlessly, outside the placeholder
    assert redacted.replace(WJ, "") == "pay with [REDACTED_CREDIT_CARD] please"
    assert pii.scan_text(text) == {"CREDIT_CARD": 1}


def test_invisible_characters_inside_a_value_are_redacted_with_it() -> None:
    text = f"a{ZWSP}b mail jane{ZWSP}.doe@corp{ZWJ}.example{ZWSP} end"
    assert pii.redact_text(text) == f"a{ZWSP}b mail [REDACTED_EMAIL]{ZWSP} end"
    assert pii.redact_text("ssn 123\u201345\u20136789.") == "ssn [REDACTED_US_SSN]."
    assert pii.redact_text("mail jane\uff20corp.example") == "mail [REDACTED_EMAIL]"


def test_digits_after_a_card_number_do_not_hide_it() -> None:
    for text in (f"card {CARD} 12/29", "card 4111 1111 1111 1111 12 29", f"9 {CARD} 1"):
        redacted = pii.redact_text(text)
        assert "[REDACTED_CREDIT_CARD]" in redacted
        assert CARD not in digits_left(redacted)


@pytest.mark.parametrize(
    "number",
    [
        "501803075628",  # Maestro, 12 digits
        "675956263684",
        "587662702899",
        "180092617964050",  # JCB, 15 digits
        "213128569146303",
        "3530111333300000",  # JCB
        "6011111111111117",  # Discover
        "6200000000000005",  # UnionPay
        "2223003122003222",  # Mastercard 2-series
        "36227206271667",  # Diners Club
        "378282246310005",  # American Express
    ],
)
def test_every_issuer_is_a_card(number: str) -> None:
    assert pii.scan_text(f"card {number} ok") == {"CREDIT_CARD": 1}


@pytest.mark.parametrize(
    "secret",
    [
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "rk_test_51H8kLmNopQrStUvWxYz0123",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "glpat-Xy9aB3cD5eF7gH1iJ2kL",
        "github_pat_11ABCDEFG0123456789abc_defGHIjklMNOpqrSTUvwxYZ0123456789abcdefGHIJKLMNOPQRSTUV",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
        ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
)
def test_tokens_without_a_label_are_secrets(secret: str) -> None:
    text = f"it fails with {secret} since today"
    assert pii.redact_text(text) == "it fails with [REDACTED_SECRET] since today"


@pytest.mark.parametrize(
    "text",
    [
        "uvicorn.run(app, host='127.0.0.1', port=8000)",
        "server.listen('0.0.0.0', 8080)",
        "nameserver 127.0.0.53",
        "netmask 255.255.255.0, broadcast 255.255.255.255, mask 255.255.240.0",
        "bind [::1]:8080 and [::]:443",
        "::ffff:127.0.0.1",
    ],
)
def test_loopback_unspecified_and_netmasks_are_not_personal(text: str) -> None:
    assert pii.scan_text(text) == {}


def test_other_addresses_are_still_redacted() -> None:
    text = "from 10.0.0.1 and 192.168.1.20 and 2001:db8::8a2e:370:7334, not 127.0.0.1"
    assert pii.scan_text(text) == {"IP_ADDRESS": 3}
    assert pii.redact_text(text).endswith("not 127.0.0.1")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("ring +44 7700 900123 today", "+44 7700 900123"),
        ("ring +447700900123 today", "+447700900123"),
        ("ring +41 (0)27 240 04 99 today", "+41 (0)27 240 04 99"),
        ("ring 0041 44 668 18 00 today", "0041 44 668 18 00"),
        ("ring 07700 900 123 today", "07700 900 123"),
        ("ring 06-12345678 today", "06-12345678"),
        ("ring 05.06.52.16.25 today", "05.06.52.16.25"),
        ("ring (020) 7946 0958 today", "(020) 7946 0958"),
        ("ring (73) 4746-3459 today", "(73) 4746-3459"),
        ("ring 650-752-7354x549 today", "650-752-7354x549"),
        ("ring 415.555.2671 today", "415.555.2671"),
        ("Phone: 8240084271", "8240084271"),
        ("Mobile: 87 47 98", "87 47 98"),
        ("you can call 439 4166 after six", "439 4166"),
        ("730 064 218 office", "730 064 218"),
        ("Tel.\\n20-33-70-48", "20-33-70-48"),  # a "\n" written out, as in JSON
        ("send an SMS to 96 466712", "96 466712"),
    ],
)
def test_phone_numbers_in_international_and_national_formats(text: str, value: str) -> None:
    redacted = pii.redact_text(text)
    assert redacted == text.replace(value, "[REDACTED_PHONE]")


@pytest.mark.parametrize(
    "text",
    [
        "released 2024-05-01 12:00:00 and 01.05.2024 and 05/01/24",
        "python 3.11.7, numpy 1.26.4, build 20240501.1",
        "id 1234567890, port 8080, pid 31337, ts 1714567890123",
        "revenue 1 000 000 USD, 2 500 000 EUR",
        "ssn 000-12-3456 is not issued",
        "iban DE89 3704 0044 0532 0130 01",  # mod-97 fails: its digits are no phone either
        "matrix = [[0, 1], [1, 0]]; shape (3, 224, 224)",
        "elapsed 00:01:02.345678, at 09:15:00.807271",
        "version 10.15.7 (build 19H2)",
    ],
)
def test_numbers_that_are_not_phone_numbers(text: str) -> None:
    assert pii.scan_text(text) == {}


@pytest.mark.parametrize(
    "text",
    [
        "0 " * 100_000,
        "+1 " * 60_000,
        "(1)" * 60_000,
        "07700 " * 50_000,
        ZWSP.join("1" * 100_000),
        "\uff11 " * 100_000,
        "eyJ" * 60_000,
        "eyJabcdefghij." * 20_000,
    ],
)
def test_crafted_runs_find_nothing(text: str) -> None:
    assert pii.Scanner(pii.ALL_ENTITIES).find(text) == []


def test_obfuscated_values_are_redacted_in_every_request_text() -> None:
    hidden_card = ZWSP.join(CARD)
    body: dict[str, Any] = {
        "model": "m",
        "system": f"billing card {fullwidth(CARD)}",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"card {hidden_card}"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": f'{{"phone": "+44{NBSP}7700{NBSP}900123"}}',
                    },
                ],
            }
        ],
    }
    redacted = copy.deepcopy(body)
    counts = pii.apply_pii_policy(redacted, "redact", pii.ALL_ENTITIES)
    assert counts == {"CREDIT_CARD": 2, "PHONE": 1}
    texts = pii.request_texts(redacted)
    assert all(not re.search(r"(\d\D{0,2}){12}", digits_left(t)) for t in texts)
    assert CARD not in "".join(digits_left(t) for t in texts)
