"""count_tokens answered in the gateway: bundled tokenizers, the tenant's key and models."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tenantgw.gateway import files, tokencount
from tenantgw.gateway.errors import AuthenticationError, ModelNotFoundError

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent.parent / "golden" / "engineering-team" / "tenantgw.json"
KEY = "sk-tgw-unit-count-5d1e"

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {
                "type": "string",
                "description": "The city and state, e.g. San Francisco, CA",
            }
        },
        "required": ["location"],
    },
}
# OpenAI cookbook, "How to count tokens with tiktoken": 129 prompt tokens for GPT-4 and 124 for
# GPT-4o, as counted by the OpenAI API. Names are not part of the Messages API; their tokens
# (1 + the name's) are added by the test.
COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


@pytest.mark.parametrize(("model", "expected"), [("gpt-4", 129), ("gpt-4o", 124)])
def test_openai_models_count_as_the_openai_api_does(model: str, expected: int) -> None:
    enc = tokencount.encoding(tokencount.encoding_name(model))
    names = sum(1 + len(enc.encode_ordinary(m["name"])) for m in COOKBOOK if "name" in m)
    assert tokencount.count_request_tokens({"messages": COOKBOOK}, model) + names == expected


def test_claude_counts_with_anthropics_framing() -> None:
    # Anthropic's token-counting guide: this request is 14 input tokens.
    body = {
        "system": "You are a scientist",
        "messages": [{"role": "user", "content": "Hello, Claude"}],
    }
    assert tokencount.count_request_tokens(body, "claude-sonnet-4-5") == 14
    # offering tools adds Anthropic's tool-use system prompt (the guide's example: 403)
    with_tools = {
        "tools": [WEATHER_TOOL],
        "messages": [{"role": "user", "content": "What's the weather like in San Francisco?"}],
    }
    counted = tokencount.count_request_tokens(with_tools, "claude-sonnet-4-5")
    assert 0.9 * 403 <= counted <= 1.1 * 403


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("qwen/qwen3-coder", "o200k_base"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "o200k_base"),
    ],
)
def test_encoding_by_model(model: str, encoding: str) -> None:
    assert tokencount.encoding_name(model) == encoding


def test_blocks_images_and_tool_turns_all_count() -> None:
    plain = {"messages": [{"role": "user", "content": "describe it"}]}
    with_image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                    {"type": "text", "text": "describe it"},
                ],
            }
        ]
    }
    tool_turn = {
        "messages": [
            {"role": "user", "content": "describe it"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "long thoughts " * 100, "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "read", "input": {"path": "/a"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "file text"}],
            },
        ]
    }
    base = tokencount.count_request_tokens(plain, "claude-x")
    assert tokencount.count_request_tokens(with_image, "claude-x") == base + tokencount.IMAGE_TOKENS
    with_tools = tokencount.count_request_tokens(tool_turn, "claude-x")
    assert base < with_tools < base + 40  # earlier thinking does not count


def test_tokenizers_come_from_litellms_bundled_files() -> None:
    directory = tokencount.bundled_tokenizers_dir()
    for name, (file_name, sha256) in tokencount._ENCODING_FILES.items():
        data = (directory / file_name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256, name
        assert tokencount.encoding(name).name == name


# --------------------------------------------------------------------------- the route


@pytest.fixture
def tenant_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    rules = tmp_path / "tenantgw.json"
    rules.write_text(GOLDEN.read_text())
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps([{"name": "alice", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}])
    )
    monkeypatch.setenv(files.RULES_FILE_ENV, str(rules))
    monkeypatch.setenv(files.KEYS_FILE_ENV, str(keys))
    monkeypatch.setenv(files.TENANT_ENV, "engineering-team")
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    files.reset()
    yield rules
    files.reset()


def edit_rules(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))
    files.reset()


BODY = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello, Claude"}]}


async def test_the_tenants_key_gets_a_count(tenant_files: Path) -> None:
    tokens = await tokencount.answer(KEY, dict(BODY))
    # claude-sonnet-4-5 is fast-code, served mostly by qwen: OpenAI-style framing
    assert tokens == tokencount.count_request_tokens(BODY, "qwen/qwen3-coder")


@pytest.mark.parametrize("key", [None, "", "sk-someone-else"])
async def test_without_the_tenants_key_there_is_no_count(
    tenant_files: Path, key: str | None
) -> None:
    with pytest.raises(AuthenticationError):
        await tokencount.answer(key, dict(BODY))


async def test_a_model_the_tenant_does_not_serve_is_a_404(tenant_files: Path) -> None:
    edit_rules(tenant_files, lambda raw: raw.update(default_alias=None))
    with pytest.raises(ModelNotFoundError) as caught:
        await tokencount.answer(KEY, {**BODY, "model": "gpt-nonexistent"})
    assert "fast-code" in caught.value.message
