"""PII and secret redaction in prompts, in Anthropic and OpenAI request shapes."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tenantgw.gateway import pii
from tenantgw.gateway.errors import InvalidRequestError

pytestmark = pytest.mark.unit

ALL = list(pii.ALL_ENTITIES)


@pytest.mark.parametrize(
    ("entity", "text", "value"),
    [
        (
            "EMAIL",
            "write to jane.doe+dev@mail.example.co.uk today",
            "jane.doe+dev@mail.example.co.uk",
        ),
        ("PHONE", "call +1 415 555 2671 now", "+1 415 555 2671"),
        ("PHONE", "call (415) 555-2671 now", "(415) 555-2671"),
        ("PHONE", "ring +44 20 7946 0958", "+44 20 7946 0958"),
        ("CREDIT_CARD", "card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
        ("CREDIT_CARD", "amex 3782-822463-10005.", "3782-822463-10005"),
        ("CREDIT_CARD", "mc 5555555555554444", "5555555555554444"),
        ("US_SSN", "ssn 123-45-6789", "123-45-6789"),
        ("IBAN", "iban DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
        ("IBAN", "GB82WEST12345698765432", "GB82WEST12345698765432"),
        ("IP_ADDRESS", "host 192.168.10.4.", "192.168.10.4"),
        ("IP_ADDRESS", "v6 2001:db8:85a3::8a2e:370:7334 up", "2001:db8:85a3::8a2e:370:7334"),
        ("IP_ADDRESS", "link-local fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"),
        (
            "SECRET",
            "key sk-ant-api03-Zx9fLq2mN8vR4tY6uI0pA1sD",
            "sk-ant-api03-Zx9fLq2mN8vR4tY6uI0pA1sD",
        ),
        ("SECRET", "OPENAI_API_KEY=sk-proj-abcDEF1234567890xyz", "sk-proj-abcDEF1234567890xyz"),
        ("SECRET", "aws AKIAIOSFODNN7EXAMPLE creds", "AKIAIOSFODNN7EXAMPLE"),
        ("SECRET", "gh ghp_" + "a1B2" * 9, "ghp_" + "a1B2" * 9),
        ("SECRET", "slack xoxb-2400-11223-abcDEFghi", "xoxb-2400-11223-abcDEFghi"),
        (
            "SECRET",
            "Authorization: Bearer eyJhbGciOi.J9eyJzdWIi.Mn0abc",
            "eyJhbGciOi.J9eyJzdWIi.Mn0abc",
        ),
        ("SECRET", 'db_password = "hunter2!"', "hunter2!"),
        ("SECRET", "client_secret: Qm9vWx7Lp2Rt5Zk8", "Qm9vWx7Lp2Rt5Zk8"),
    ],
)
def test_each_entity_is_found_and_redacted(entity: str, text: str, value: str) -> None:
    redacted = pii.redact_text(text)
    assert value not in redacted
    assert f"[REDACTED_{entity}]" in redacted
    assert pii.scan_text(text) == {entity: 1}


def test_pem_private_key_block_is_one_secret() -> None:
    pem = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\nAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----"
    )
    assert pii.redact_text(f"key:\n{pem}\nend") == "key:\n[REDACTED_SECRET]\nend"


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # Luhn fails
        "order 1234567890123456",  # Luhn fails
        "iban DE89 3704 0044 0532 0130 01",  # mod-97 fails
        "GB82WEST12345698765431",  # mod-97 fails
        "ssn 000-12-3456",  # area 000 is never issued
        "ssn 666-12-3456",
        "version 1.2.3 and 1.2.3.4.5",
        "a[1::2] and std::vector and 12:30:45",
        "def login(password):\n    token = get_token()\n    return config.api_token",
        "password = os.environ['DB_PASSWORD']",
        "api_key: ${API_KEY}",
        "the sky is blue",
        "port 8080, pid 31337, id 1234567890",
    ],
)
def test_lookalikes_are_left_alone(text: str) -> None:
    assert pii.scan_text(text) == {}
    assert pii.redact_text(text) == text


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # An address inside a file name: the address goes, the extension stays.
        ("/home/jane.doe@example.com.txt/notes", "/home/[REDACTED_EMAIL].txt/notes"),
        ("attached jane.doe@example.com.txt", "attached [REDACTED_EMAIL].txt"),
        ("backup/jane@example.com.tar.gz ok", "backup/[REDACTED_EMAIL].tar.gz ok"),
        ("JANE@EXAMPLE.COM.PDF", "[REDACTED_EMAIL].PDF"),
        # A domain that would be shorter than two labels keeps its last label: it is the TLD.
        ("mail jane@example.zip", "mail [REDACTED_EMAIL]"),
        ("mail jane@example.py", "mail [REDACTED_EMAIL]"),
        # Real TLDs and multi-label domains are never cut.
        ("mail jane@mail.example.co.uk now", "mail [REDACTED_EMAIL] now"),
        ("mail jane@example.com.au", "mail [REDACTED_EMAIL]"),
        ("mail jane@example.com.", "mail [REDACTED_EMAIL]."),
    ],
)
def test_an_address_in_a_file_name_is_redacted_without_the_extension(
    text: str, redacted: str
) -> None:
    assert pii.redact_text(text, ["EMAIL"]) == redacted
    assert pii.scan_text(text) == {"EMAIL": 1}


def test_only_the_configured_entities_are_redacted() -> None:
    text = "mail a@b.io from 10.0.0.1"
    assert pii.redact_text(text, ["EMAIL"]) == "mail [REDACTED_EMAIL] from 10.0.0.1"


def test_unknown_entity_is_refused() -> None:
    with pytest.raises(ValueError, match="NAME"):
        pii.Scanner(["NAME"])


ANTHROPIC_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "Support bot for ops@corp.example"}],
    "messages": [
        {"role": "user", "content": "my SSN is 123-45-6789"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "user wrote 123-45-6789", "signature": "sig"},
                {"type": "text", "text": "Let me look up 10.1.2.3"},
                {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"ip": "10.1.2.3"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "owner: bob@corp.example"}],
                },
                {"type": "text", "text": "card 4111-1111-1111-1111"},
                {"type": "image", "source": {"type": "base64", "data": "QUJD"}},
            ],
        },
    ],
}

OPENAI_BODY: dict[str, Any] = {
    "model": "fast-code",
    "messages": [
        {"role": "system", "content": "Support bot for ops@corp.example"},
        {"role": "user", "content": [{"type": "text", "text": "my SSN is 123-45-6789"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"ip": "10.1.2.3"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "owner: bob@corp.example"},
        {"role": "user", "content": "card 4111-1111-1111-1111"},
    ],
}


def test_anthropic_request_is_redacted_everywhere_but_thinking() -> None:
    data = copy.deepcopy(ANTHROPIC_BODY)
    counts = pii.apply_pii_policy(data, "redact", ALL)
    text = json.dumps(data)
    for value in ("ops@corp.example", "bob@corp.example", "10.1.2.3", "4111-1111-1111-1111"):
        assert value not in text
    assert data["messages"][0]["content"] == "my SSN is [REDACTED_US_SSN]"
    # the signed thinking block is left as the provider wrote it
    assert data["messages"][1]["content"][0]["thinking"] == "user wrote 123-45-6789"
    assert data["messages"][1]["content"][2]["input"] == {"ip": "[REDACTED_IP_ADDRESS]"}
    assert data["messages"][2]["content"][2] == ANTHROPIC_BODY["messages"][2]["content"][2]
    assert counts == {"EMAIL": 2, "US_SSN": 1, "IP_ADDRESS": 2, "CREDIT_CARD": 1}


def test_openai_request_is_redacted_everywhere() -> None:
    data = copy.deepcopy(OPENAI_BODY)
    counts = pii.apply_pii_policy(data, "redact", ALL)
    assert data["messages"][0]["content"] == "Support bot for [REDACTED_EMAIL]"
    assert data["messages"][1]["content"][0]["text"] == "my SSN is [REDACTED_US_SSN]"
    arguments = data["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"ip": "[REDACTED_IP_ADDRESS]"}
    assert data["messages"][3]["content"] == "owner: [REDACTED_EMAIL]"
    assert data["messages"][4]["content"] == "card [REDACTED_CREDIT_CARD]"
    assert counts == {"EMAIL": 2, "US_SSN": 1, "IP_ADDRESS": 1, "CREDIT_CARD": 1}


@pytest.mark.parametrize("body", [ANTHROPIC_BODY, OPENAI_BODY])
def test_block_mode_names_the_types_never_the_values(body: dict[str, Any]) -> None:
    data = copy.deepcopy(body)
    with pytest.raises(InvalidRequestError) as caught:
        pii.apply_pii_policy(data, "block", ALL, tenant="eng")
    message = caught.value.message
    assert caught.value.status == 400
    assert "CREDIT_CARD, EMAIL" in message
    assert "tenant eng" in message
    for value in ("123-45-6789", "bob@corp.example", "4111", "10.1.2.3"):
        assert value not in message
    assert data == body  # nothing was changed


def test_block_mode_lets_clean_requests_through() -> None:
    data = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    assert pii.apply_pii_policy(data, "block", ALL) == {}


def test_off_mode_changes_nothing() -> None:
    data = copy.deepcopy(OPENAI_BODY)
    assert pii.apply_pii_policy(data, "off", ALL) == {}
    assert data == OPENAI_BODY


def test_repeated_long_texts_are_answered_from_the_cache() -> None:
    scanner = pii.Scanner(ALL)
    text = "context " * 200 + "reach me at a@b.io"
    first = scanner.redact(text)
    assert scanner.redact(text) == first
    assert first[1] == {"EMAIL": 1}
    # the cached counts are a copy: callers may change theirs
    first[1]["EMAIL"] = 99
    assert scanner.redact(text)[1] == {"EMAIL": 1}


def test_large_texts_scan_in_linear_time() -> None:
    # pathological inputs for backtracking regexes: long runs of candidate characters
    for text in ("1" * 200_000, "a" * 200_000, "1 " * 100_000, ":a" * 100_000, "@" * 50_000):
        assert pii.Scanner(ALL).find(text) == []


# --------------------------------------------------------------------------- large prompts


@pytest.fixture(scope="module")
def pool() -> Iterator[pii.ScanPool]:
    """A real scan pool (one spawned process), stopped after the module."""
    scan_pool = pii.ScanPool(processes=1)
    yield scan_pool
    scan_pool.close()


def large_body(marker: str) -> dict[str, Any]:
    """A prompt far over the inline limit, with personal data at its end."""
    filler = "".join(f"line {i} of a long log, nothing personal here\n" for i in range(5_000))
    text = f"{filler}contact {marker}@corp.example, card 4111 1111 1111 1111"
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


async def test_async_policy_redacts_small_prompts_like_the_sync_one() -> None:
    for body in (ANTHROPIC_BODY, OPENAI_BODY):
        sync, in_loop = copy.deepcopy(body), copy.deepcopy(body)
        counts = pii.apply_pii_policy(sync, "redact", ALL)
        assert await pii.apply_pii_policy_async(in_loop, "redact", ALL) == counts
        assert in_loop == sync


async def test_large_prompts_are_redacted_in_the_pool(pool: pii.ScanPool) -> None:
    data = large_body("pooled")
    counts = await pii.apply_pii_policy_async(data, "redact", ALL, pool=pool)
    text = data["messages"][0]["content"]
    assert counts == {"EMAIL": 1, "CREDIT_CARD": 1}
    assert text.endswith("contact [REDACTED_EMAIL], card [REDACTED_CREDIT_CARD]")
    assert "pooled@corp.example" not in text


async def test_block_mode_refuses_large_prompts_from_the_pool(pool: pii.ScanPool) -> None:
    data = large_body("blocked")
    with pytest.raises(InvalidRequestError, match="CREDIT_CARD, EMAIL"):
        await pii.apply_pii_policy_async(data, "block", ALL, pool=pool)


@pytest.mark.parametrize("mode", ["redact", "block"])
async def test_a_scan_past_its_deadline_refuses_the_request(mode: str, pool: pii.ScanPool) -> None:
    data = large_body(f"late-{mode}")
    original = copy.deepcopy(data)
    with pytest.raises(pii.ScanUnavailableError) as caught:
        await pii.apply_pii_policy_async(data, mode, ALL, pool=pool, seconds=0.000_1)
    assert caught.value.status == 503
    assert caught.value.retry_after is not None
    assert "was not sent" in caught.value.message
    assert data == original  # nothing unscanned was let through, nothing half-redacted
    # the stuck pool was replaced: the next large prompt is scanned again
    retry = large_body(f"again-{mode}")
    if mode == "redact":
        assert await pii.apply_pii_policy_async(retry, mode, ALL, pool=pool) == {
            "EMAIL": 1,
            "CREDIT_CARD": 1,
        }
    else:
        with pytest.raises(InvalidRequestError):
            await pii.apply_pii_policy_async(retry, mode, ALL, pool=pool)


def test_tool_inputs_nested_deeper_than_the_stack_are_walked() -> None:
    value: Any = "mail deep@corp.example"
    for _ in range(5_000):
        value = {"k": value}
    data = {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "input": value}]}]}
    assert pii.apply_pii_policy(data, "redact", ALL) == {"EMAIL": 1}
