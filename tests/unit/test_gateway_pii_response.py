"""PII in the model's answer: the stream state machines and the non-streamed redaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from tenantgw.gateway import pii, pii_response, safeguards
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.pii_stream import (
    LOOKBEHIND,
    AnthropicEvents,
    ChatChunks,
    TextRedactor,
)

pytestmark = pytest.mark.unit

SCANNER = pii.scanner_for(pii.ALL_ENTITIES)
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"


def stream_text(pieces: Iterable[str], window: int = LOOKBEHIND) -> tuple[str, dict[str, int]]:
    counts: dict[str, int] = {}
    redactor = TextRedactor(SCANNER, counts, window)
    out = "".join(redactor.feed(p) for p in pieces) + redactor.flush()
    return out, counts


def every_split(text: str) -> Iterable[list[str]]:
    for cut in range(1, len(text)):
        yield [text[:cut], text[cut:]]


# --------------------------------------------------------------------------- text


def test_an_email_split_across_two_deltas_at_every_point_is_redacted() -> None:
    text = f"Write to {EMAIL} tomorrow."
    for pieces in every_split(text):
        out, counts = stream_text(pieces)
        assert out == "Write to [REDACTED_EMAIL] tomorrow.", pieces
        assert counts == {"EMAIL": 1}


def test_an_entity_one_character_per_delta_is_redacted() -> None:
    text = f"card {CARD} and mail {EMAIL}; done"
    out, counts = stream_text(list(text))
    assert out == "card [REDACTED_CREDIT_CARD] and mail [REDACTED_EMAIL]; done"
    assert counts == {"CREDIT_CARD": 1, "EMAIL": 1}


def test_nothing_of_an_entity_is_sent_before_it_is_seen_whole() -> None:
    """Held text: no prefix of the address is ever sent, whatever comes before it."""
    prose = "x " * 400
    counts: dict[str, int] = {}
    redactor = TextRedactor(SCANNER, counts)
    sent = redactor.feed(prose + "jane.doe@exa")
    assert "jane" not in sent
    sent += redactor.feed("mple.com is my address")
    sent += redactor.flush()
    assert "jane.doe" not in sent
    assert "example.com" not in sent
    assert sent == prose + "[REDACTED_EMAIL] is my address"


def test_the_look_behind_bound_holds_exactly_the_window() -> None:
    """Text further than the window from the end is sent; the last `window` characters wait."""
    counts: dict[str, int] = {}
    redactor = TextRedactor(SCANNER, counts, window=32)
    assert redactor.feed("a" * 32) == ""
    assert redactor.feed("b") == "a"
    assert redactor.flush() == "a" * 31 + "b"


def test_an_entity_as_long_as_the_window_is_caught_split_anywhere() -> None:
    window = 40
    address = "a" * (window - len("@example.com")) + "@example.com"
    assert len(address) == window
    text = "mail " + address + " now " + "z" * 100
    for pieces in every_split(text):
        out, _ = stream_text(pieces, window)
        assert "@example" not in out, pieces
        assert out.startswith("mail [REDACTED_EMAIL] now "), pieces


def test_an_entity_longer_than_the_window_has_its_remainder_redacted() -> None:
    """Past the bound, a prefix may be sent; what follows is still replaced, never sent."""
    window = 16
    secret = "sk-" + "A1b2C3d4" * 8  # 67 characters, longer than the window
    pieces = ["key ", *[secret[i : i + 4] for i in range(0, len(secret), 4)], " end"]
    out, counts = stream_text(pieces, window)
    assert secret not in out
    assert "[REDACTED_SECRET]" in out
    assert out.endswith(" end")
    assert counts.get("SECRET", 0) >= 1
    # with the default window, the same secret never shows at all
    out, _ = stream_text(pieces)
    assert out == "key [REDACTED_SECRET] end"


def test_text_without_entities_comes_out_unchanged_in_order() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 30
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    out, counts = stream_text(pieces)
    assert out == text
    assert counts == {}


def test_no_match_begins_at_an_artificial_start_of_text() -> None:
    """The scan sees what was already sent, so a number glued to a word stays a word."""
    text = "ab" * 200 + "X4111111111111111Y" + " tail"
    whole, _ = SCANNER.redact(text)
    for cut in (395, 400, 401, 405):
        out, _ = stream_text([text[:cut], text[cut:]])
        assert out == whole


# --------------------------------------------------------------------------- Anthropic events


def anthropic_events(blocks: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "m", "content": [], "role": "assistant"}}
    ]
    for index, (kind, pieces) in enumerate(blocks):
        if kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            delta_kind, key = "text_delta", "text"
        elif kind == "thinking":
            start, delta_kind, key = (
                {"type": "thinking", "thinking": ""},
                "thinking_delta",
                "thinking",
            )
        else:
            start = {"type": "tool_use", "id": f"toolu_{index}", "name": "Bash", "input": {}}
            delta_kind, key = "input_json_delta", "partial_json"
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        for piece in pieces:
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": delta_kind, key: piece},
                }
            )
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}})
    events.append({"type": "message_stop"})
    return events


def run_events(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], AnthropicEvents]:
    machine = AnthropicEvents(SCANNER)
    out: list[dict[str, Any]] = []
    for event in events:
        out.extend(machine.feed(event))
    out.extend(machine.close())
    return out, machine


def texts_of(events: list[dict[str, Any]], index: int, key: str) -> str:
    return "".join(
        e["delta"][key]
        for e in events
        if e["type"] == "content_block_delta" and e["index"] == index and key in e["delta"]
    )


def test_tool_input_split_across_input_json_delta_fragments_is_redacted_and_stays_json() -> None:
    arguments = json.dumps({"command": f"mail {EMAIL} < report.txt", "timeout": 5})
    for cut in range(1, len(arguments)):
        fragments = [arguments[:cut], arguments[cut:]]
        out, machine = run_events(anthropic_events([("tool_use", fragments)]))
        sent = texts_of(out, 0, "partial_json")
        assert json.loads(sent) == {"command": "mail [REDACTED_EMAIL] < report.txt", "timeout": 5}
        assert machine.counts == {"EMAIL": 1}
        # framing: start, one delta, stop, in that order
        kinds = [e["type"] for e in out if e.get("index") == 0]
        assert kinds == ["content_block_start", "content_block_delta", "content_block_stop"]


def test_an_entity_inside_json_escapes_is_found() -> None:
    """`\\u0040` is an @ once parsed: the escape does not hide the address."""
    raw = '{"to": "jane.doe\\u0040example.com", "body": "line1\\nmail me: bob@example.org"}'
    out, machine = run_events(anthropic_events([("tool_use", [raw[:20], raw[20:]])]))
    sent = json.loads(texts_of(out, 0, "partial_json"))
    assert sent == {"to": "[REDACTED_EMAIL]", "body": "line1\nmail me: [REDACTED_EMAIL]"}
    assert machine.counts == {"EMAIL": 2}


def test_tool_input_without_entities_is_sent_as_the_model_wrote_it() -> None:
    raw = '{"command":  "ls -la"}'
    out, machine = run_events(anthropic_events([("tool_use", ['{"comm', 'and":  "ls -la"}'])]))
    assert texts_of(out, 0, "partial_json") == raw
    assert machine.counts == {}


def test_text_and_tool_blocks_in_one_message_keep_their_framing() -> None:
    events = anthropic_events(
        [
            ("thinking", [f"the user is {EMAIL}"]),
            ("text", ["I will mail jane.doe@", "example.com now."]),
            ("tool_use", ['{"to": "jane.d', 'oe@example.com"}']),
        ]
    )
    out, machine = run_events(events)
    assert texts_of(out, 0, "thinking") == f"the user is {EMAIL}"  # signed: unchanged
    assert texts_of(out, 1, "text") == "I will mail [REDACTED_EMAIL] now."
    assert json.loads(texts_of(out, 2, "partial_json")) == {"to": "[REDACTED_EMAIL]"}
    assert machine.counts == {"EMAIL": 2}
    # every delta of a block lies between its start and its stop
    for index in range(3):
        positions = [i for i, e in enumerate(out) if e.get("index") == index]
        assert out[positions[0]]["type"] == "content_block_start"
        assert out[positions[-1]]["type"] == "content_block_stop"
    assert [e["type"] for e in out[-2:]] == ["message_delta", "message_stop"]


def test_sse_bytes_cut_anywhere_are_reframed_and_redacted() -> None:
    events = anthropic_events([("text", ["Contact: jane.doe@exa", "mple.com ok"])])
    raw = b"".join(safeguards.event_frame(e) for e in events)

    async def upstream() -> AsyncIterator[Any]:
        for i in range(0, len(raw), 7):
            yield raw[i : i + 7]

    async def collect() -> bytes:
        ctx = RequestContext("t", "k", "r", "m", "m", call_type="anthropic_messages")
        out = [c async for c in pii_response.redact_stream(ctx, rules("redact"), upstream())]
        assert ctx.response_pii_counts == {"EMAIL": 1}
        return b"".join(out)

    sent = asyncio.run(collect())
    frames = safeguards.SseFrames().feed(sent)
    parsed = [safeguards.frame_event(f) for f in frames]
    assert all(p is not None for p in parsed)
    assert texts_of(parsed, 0, "text") == "Contact: [REDACTED_EMAIL] ok"  # type: ignore[arg-type]
    assert b"jane.doe" not in sent


# --------------------------------------------------------------------------- OpenAI chunks


def chat_chunks(content: list[str], arguments: list[str]) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    for piece in content:
        chunks.append({"choices": [{"index": 0, "delta": {"content": piece}}]})
    if arguments:
        first = {"index": 0, "id": "call_1", "type": "function"}
        chunks.append(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{**first, "function": {"name": "send", "arguments": ""}}]
                        },
                    }
                ]
            }
        )
        for piece in arguments:
            call = {"index": 0, "function": {"arguments": piece}}
            chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return chunks


def run_chat(chunks: list[dict[str, Any]]) -> tuple[str, str, ChatChunks]:
    machine = ChatChunks(SCANNER)
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        out.extend(machine.feed(chunk))
    out.extend(machine.close())
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in out)
    arguments = "".join(
        call["function"].get("arguments") or ""
        for c in out
        for call in c["choices"][0]["delta"].get("tool_calls") or ()
    )
    assert out[-1]["choices"][0]["finish_reason"] == "stop"
    return content, arguments, machine


def test_chat_content_and_arguments_split_anywhere_are_redacted() -> None:
    arguments = json.dumps({"to": EMAIL, "card": CARD})
    for cut in range(1, len(arguments), 3):
        content, args, machine = run_chat(
            chat_chunks(["Sending to jane.", "doe@example.com"], [arguments[:cut], arguments[cut:]])
        )
        assert content == "Sending to [REDACTED_EMAIL]"
        assert json.loads(args) == {"to": "[REDACTED_EMAIL]", "card": "[REDACTED_CREDIT_CARD]"}
        assert machine.counts == {"EMAIL": 2, "CREDIT_CARD": 1}


# --------------------------------------------------------------------------- whole answers


def rules(mode: str) -> Rules:
    return Rules.model_validate({"tenant": "acme", "compliance": {"pii_redaction": {"mode": mode}}})


def test_a_non_streamed_anthropic_message_is_redacted_and_its_thinking_kept() -> None:
    ctx = RequestContext("acme", "k", "r", "m", "m")
    message = {
        "type": "message",
        "content": [
            {"type": "thinking", "thinking": f"user {EMAIL}", "signature": "sig"},
            {"type": "text", "text": f"Your card {CARD} is on file."},
            {"type": "tool_use", "id": "t", "name": "mail", "input": {"to": [EMAIL]}},
        ],
    }
    out = pii_response.redact_response(ctx, rules("redact"), message)
    assert out["content"][0]["thinking"] == f"user {EMAIL}"
    assert out["content"][1]["text"] == "Your card [REDACTED_CREDIT_CARD] is on file."
    assert out["content"][2]["input"] == {"to": ["[REDACTED_EMAIL]"]}
    assert ctx.response_pii_counts == {"CREDIT_CARD": 1, "EMAIL": 1}


def test_block_mode_withholds_an_answer_that_contains_an_entity() -> None:
    ctx = RequestContext("acme", "k", "r", "m", "m")
    message = {"type": "message", "content": [{"type": "text", "text": f"mail {EMAIL}"}]}
    with pytest.raises(pii_response.ResponseWithheldError) as caught:
        pii_response.redact_response(ctx, rules("block"), message)
    assert "EMAIL" in caught.value.message
    assert EMAIL not in caught.value.message
    assert caught.value.status == 400
    assert ctx.response_withheld  # the audit record says the answer was withheld


def test_block_mode_ends_a_stream_before_the_entity_and_reads_the_rest() -> None:
    events = anthropic_events([("text", ["Hello there, ", "write to jane.doe@", "example.com"])])
    read: list[dict[str, Any]] = []

    async def upstream() -> AsyncIterator[Any]:
        for event in events:
            read.append(event)
            yield event

    async def collect() -> list[Any]:
        ctx = RequestContext("acme", "k", "r", "m", "m", call_type="anthropic_messages")
        out: list[Any] = []

        async def consume() -> None:
            async for item in pii_response.redact_stream(ctx, rules("block"), upstream()):
                out.append(item)

        with pytest.raises(pii_response.ResponseWithheldError):
            await consume()
        assert ctx.response_withheld
        assert ctx.response_pii_counts == {"EMAIL": 1}
        return out

    sent = asyncio.run(collect())
    assert "jane.doe" not in json.dumps(sent)
    assert len(read) == len(events)  # the rest of the answer was read (and is metered)


# --------------------------------------------------------------------------- the audit's copy


def test_the_audit_copy_reuses_what_the_policy_scanned_and_scans_the_rest() -> None:
    from tenantgw.gateway.audit import BodyRedactor, covers_everything

    redactor = BodyRedactor()
    # A text the policy rewrote is taken as the policy left it (it is not scanned again).
    known = {f"mail {EMAIL}": "mail [REDACTED_EMAIL]"}
    assert redactor.value({"text": f"mail {EMAIL}"}, known) == {"text": "mail [REDACTED_EMAIL]"}
    # Anything the policy did not scan is scanned: values, and keys too.
    body = {"tools": [{"description": f"card {CARD}"}], EMAIL: "x"}
    assert redactor.value(body, {}) == {
        "tools": [{"description": "card [REDACTED_CREDIT_CARD]"}],
        "[REDACTED_EMAIL]": "x",
    }
    # Short texts found clean are remembered; a remembered clean text stays clean.
    assert redactor.value(["object", "object"], {}) == ["object", "object"]
    assert covers_everything(rules("redact"))
    assert not covers_everything(rules("off"))
    narrow = Rules.model_validate(
        {"tenant": "t", "compliance": {"pii_redaction": {"mode": "redact", "entities": ["EMAIL"]}}}
    )
    assert not covers_everything(narrow)
