"""Auto mode's safety check: reading the request, the classifier's prompt and answer, the
`safeguard_results` of messages and streams, and who answers per deployment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tenantgw.gateway import autoreview, safeguards
from tenantgw.gateway.context import RequestContext, Review
from tenantgw.gateway.files import parse_rules

pytestmark = pytest.mark.unit

ENTRY = {
    "type": "dangerous_tool_use",
    "classifier_context": {
        "permission_mode": "auto",
        "live_cwd": "/p",
        "trusted_directories": ["/p"],
        "secret_thing": "not for the classifier",
        "git_state": {"branch": "main", "remote_url": "git@x:y"},
    },
}


def test_requested_finds_the_dangerous_tool_use_entry_only() -> None:
    assert safeguards.requested({"safeguards": [{"type": "other"}, ENTRY]}) == ENTRY
    assert safeguards.requested({"safeguards": [{"type": "other"}]}) is None
    assert safeguards.requested({"safeguards": "dangerous_tool_use"}) is None
    assert safeguards.requested({}) is None


def test_environment_keeps_the_known_keys_only() -> None:
    env = json.loads(safeguards.environment(ENTRY))
    assert env == {
        "permission_mode": "auto",
        "live_cwd": "/p",
        "trusted_directories": ["/p"],
        "git": {"branch": "main"},
    }
    assert safeguards.environment({"classifier_context": "x"}) == "{}"


def test_transcript_has_user_turns_tool_calls_and_clipped_results_without_reminders() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>x"}]},
        {"role": "user", "content": "fix the tests"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"c": "ls"}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "y" * 5000}],
        },
        {"role": "system", "content": "ignored"},
    ]
    lines = safeguards.transcript(messages).split("\n")
    assert json.loads(lines[0]) == {"user": "fix the tests"}
    assert "Bash" in lines[1]
    result = json.loads(lines[2])["tool_result (untrusted)"]
    assert len(result) < safeguards.TOOL_RESULT_LIMIT + 20
    assert len(lines) == 3


def test_a_long_transcript_keeps_the_first_turn_and_the_newest() -> None:
    messages = [{"role": "user", "content": f"turn {i} " + "x" * 900} for i in range(100)]
    text = safeguards.transcript(messages, budget=10_000)
    assert len(text) <= 10_000
    lines = text.split("\n")
    assert lines[0].startswith('{"user":"turn 0 ')
    assert "left out" in lines[1]
    assert lines[-1].startswith('{"user":"turn 99 ')


def test_tool_calls_of_a_message_and_the_one_cut_off_by_max_tokens() -> None:
    message = {
        "stop_reason": "max_tokens",
        "content": [
            {"type": "text", "text": "hi"},
            {"type": "tool_use", "id": "a", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "b", "name": "Bash", "input": {}},
        ],
    }
    assert safeguards.message_tool_calls(message) == [
        safeguards.ToolCall("a", "Bash", {"command": "ls"}),
        safeguards.Truncated("b"),
    ]


def test_the_prompt_lists_each_call_with_its_id() -> None:
    calls = [safeguards.ToolCall("toolu_1", "Bash", {"command": "rm -rf ~"})]
    system, user = safeguards.classifier_messages("{}", "", calls)
    assert system["role"] == "system"
    assert '"verdicts"' in system["content"]
    listed = json.loads(user["content"].split(safeguards.CALLS_HEADING + "\n", 1)[1])
    assert listed == [{"id": "toolu_1", "name": "Bash", "input": {"command": "rm -rf ~"}}]


def test_parse_verdicts_reads_the_answer_and_never_calls_a_bad_answer_safe() -> None:
    text = 'Sure: {"verdicts": {"a": {"flagged": false}, "b": {"flagged": true, "reason": "no"}}}'
    assert safeguards.parse_verdicts(text, ["a", "b", "c"]) == {
        "a": {"type": "evaluated", "outcome": "not_flagged"},
        "b": {"type": "evaluated", "outcome": "flagged", "explanation": "no"},
        "c": {"type": "unavailable", "reason": "error"},
    }
    for bad in ("", "not json", '{"verdicts": []}', '{"verdicts": {"a": {"flagged": "no"}}}'):
        assert safeguards.parse_verdicts(bad, ["a"]) == {
            "a": {"type": "unavailable", "reason": "error"}
        }


def test_results_and_the_ledger_summary() -> None:
    calls: list[safeguards.Pending] = [safeguards.ToolCall("a", "X", {}), safeguards.Truncated("b")]
    verdicts = safeguards.all_verdicts(calls, {"a": safeguards.evaluated(True, "why")})
    results = safeguards.available(verdicts)
    assert results == [
        {
            "type": "dangerous_tool_use",
            "status": {
                "type": "available",
                "tool_uses": {
                    "a": {"type": "evaluated", "outcome": "flagged", "explanation": "why"},
                    "b": {"type": "unavailable", "reason": "truncated"},
                },
            },
        }
    ]
    assert safeguards.ledger_summary(verdicts) == {"a": "flagged", "b": "unavailable:truncated"}
    assert safeguards.status_unavailable("rate_limited")[0]["status"] == {
        "type": "unavailable",
        "reason": "rate_limited",
    }


RULES = parse_rules(
    json.dumps(
        {
            "tenant": "t",
            "aliases": {
                "open": {
                    "fallbacks": ["claude"],
                    "targets": [
                        {"id": "open-0", "provider": "o", "provider_type": "openai", "model": "q"}
                    ],
                },
                "claude": {
                    "targets": [
                        {
                            "id": "claude-0",
                            "provider": "a",
                            "provider_type": "anthropic",
                            "model": "claude-sonnet-4-5",
                        }
                    ]
                },
                "bedrock-open": {
                    "targets": [
                        {
                            "id": "b-0",
                            "provider": "b",
                            "provider_type": "bedrock",
                            "model": "meta.llama3",
                        }
                    ]
                },
            },
            "auto_mode": {"classifier_alias": "open", "timeout_seconds": 5},
        }
    )
)


def test_prepare_strips_safeguards_unless_a_native_deployment_may_serve() -> None:
    data: dict[str, Any] = {"safeguards": [ENTRY], "messages": [{"role": "user", "content": "x"}]}
    review = autoreview.prepare(data, RULES, "bedrock-open")
    assert "safeguards" not in data
    assert review is not None
    assert review.classifier == "open"
    assert review.timeout == 5.0
    kept: dict[str, Any] = {"safeguards": [ENTRY]}
    assert autoreview.prepare(kept, RULES, "open") is not None
    assert "safeguards" in kept  # its fallback is Claude on Anthropic
    unknown: dict[str, Any] = {"safeguards": [{"type": "other"}]}
    assert autoreview.prepare(unknown, RULES, "claude") is None
    assert "safeguards" not in unknown
    assert autoreview.prepare({"messages": []}, RULES, "open") is None


def _kwargs(provider_type: str, model: str) -> dict[str, Any]:
    return {
        "safeguards": [ENTRY],
        "model_info": {"tenantgw": {"provider_type": provider_type, "provider_model": model}},
    }


def test_each_deployment_decides_whether_safeguards_go_upstream() -> None:
    review = Review(classifier="open", timeout=5, environment="{}", transcript="")
    assert autoreview.for_deployment(_kwargs("anthropic", "claude-x"), review) is None
    assert review.native
    assert not autoreview.wants_verdicts(review)
    stripped = autoreview.for_deployment(_kwargs("openai", "gpt"), review)
    assert stripped is not None
    assert "safeguards" not in stripped
    assert not review.native
    assert autoreview.wants_verdicts(review)
    bedrock_llama = autoreview.for_deployment(_kwargs("bedrock", "meta.llama3"), review)
    assert bedrock_llama is not None
    assert "safeguards" not in bedrock_llama
    assert autoreview.for_deployment(_kwargs("vertex", "claude-opus-4"), review) is None
    assert not autoreview.wants_verdicts(
        Review(classifier=None, timeout=5, environment="{}", transcript="")
    )


class _FakeHandler:
    """Stands in for the plugin: `judge` is replaced, so no classifier call is made."""


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def test_a_stream_gets_the_verdicts_in_its_final_delta_whatever_the_chunking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[safeguards.Pending]] = []

    async def judge(_: Any, __: Any, calls: list[safeguards.Pending]) -> safeguards.Results:
        seen.append(calls)
        return safeguards.available({c.id: safeguards.evaluated(False) for c in calls})

    monkeypatch.setattr(autoreview, "judge", judge)
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "m"}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"command": '},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '"ls"}'},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {}},
        {"type": "message_stop"},
    ]
    raw = b"".join(_sse(e) for e in events)

    async def chunks() -> AsyncIterator[Any]:
        for i in range(0, len(raw), 7):  # frames split anywhere
            yield raw[i : i + 7]

    async def collect() -> bytes:
        ctx = RequestContext("t", "k", "r", "m", "a")
        out = [c async for c in autoreview.stamp_stream(_FakeHandler(), ctx, chunks())]  # type: ignore[arg-type]
        return b"".join(out)

    body = asyncio.run(collect())
    parsed = [safeguards.frame_event(f + b"\n\n") for f in body.split(b"\n\n") if f.strip()]
    assert [e["type"] for e in parsed if e] == [e["type"] for e in events]
    final = next(e for e in parsed if e and e["type"] == "message_delta")
    assert final["delta"]["safeguard_results"][0]["status"]["tool_uses"] == {
        "t1": {"type": "evaluated", "outcome": "not_flagged"}
    }
    assert seen == [[safeguards.ToolCall("t1", "Bash", {"command": "ls"})]]
