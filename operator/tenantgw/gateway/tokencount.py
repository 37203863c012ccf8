"""`/v1/messages/count_tokens`, answered by the gateway itself: no prompt leaves the pod.

LiteLLM would send the prompt, unredacted, to Anthropic, Bedrock or Gemini to count it,
outside the routing rules and residency. Claude Code calls the route constantly (it decides
when to compact on the answer), so the gateway counts locally instead, with a real BPE
tokenizer: tiktoken's `o200k_base` or `cl100k_base`, read from the files LiteLLM bundles
(`litellm/litellm_core_utils/tokenizers`). Nothing is downloaded: an encoding whose bundled
file is missing or altered is an error (503), never a fetch.

The request still needs a valid tenant key (401 otherwise) and a model the tenant serves
(the routing rules decide, as for `/v1/messages`: 404 otherwise). The tokenizer is the one of
the alias's main target: `cl100k_base` for GPT-4 / GPT-3.5 models, `o200k_base` for every
other model (GPT-4o and later, Claude, and open models, whose tokenizers are closest to
it). Anthropic's tokenizer for Claude 3 and later is not public: Claude models are counted
with `o200k_base` plus Anthropic's documented framing (the tool-use system prompt).
docs/benchmarks.md records the error against reference counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenantgw.gateway import auth, files, routing
from tenantgw.gateway.errors import ServiceUnavailableError

if TYPE_CHECKING:
    import tiktoken

# Files of the encodings as tiktoken caches them (name: sha1 of the download URL) and the
# SHA-256 tiktoken expects of them.
_ENCODING_FILES: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "fb374d419588a4632f3f557e76b4b70aebbca790",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
DEFAULT_ENCODING = "o200k_base"
_CL100K_MODELS = re.compile(r"(^|/)(gpt-4(?!o|\.|-o)|gpt-3\.5|text-embedding-(ada|3))", re.I)
_CLAUDE_MODELS = re.compile(r"claude|anthropic", re.I)

IMAGE_TOKENS = 1_600
"""An image or document block: Anthropic's cost of an image at its largest size (no pixels
are decoded here)."""
CLAUDE_REQUEST_TOKENS = 3
CLAUDE_MESSAGE_TOKENS = 4
"""Framing per request and per message: Anthropic's documented example (system "You are a
scientist", user "Hello, Claude") counts 14 tokens for 7 tokens of text."""
CLAUDE_TOOLS_AUTO_TOKENS = 346
CLAUDE_TOOLS_FORCED_TOKENS = 313
"""Anthropic's tool-use system prompt, added when tools are offered (`tool_choice` auto or
none; any or tool)."""
OPENAI_MESSAGE_TOKENS = 3
OPENAI_REPLY_TOKENS = 3
"""OpenAI's chat framing: 3 tokens per message, 3 to prime the reply (OpenAI cookbook)."""
INLINE_CHARS = 64 * 1024
"""Prompts with more text than this are counted in a worker thread (tiktoken releases the
GIL while it encodes)."""
CACHE_MIN_CHARS = 1_024
CACHE_MAX_CHARS = 16 * 1024 * 1024
"""Counts of long texts are remembered: clients resend the whole conversation each turn."""


def bundled_tokenizers_dir() -> Path:
    """LiteLLM's directory of tokenizer files, found without importing LiteLLM."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceUnavailableError(
            "the gateway cannot count tokens: LiteLLM's tokenizer files are not installed"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"


@cache
def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding `name`, from LiteLLM's bundled file only (never downloaded)."""
    file_name, sha256 = _ENCODING_FILES[name]
    directory = bundled_tokenizers_dir()
    path = directory / file_name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ServiceUnavailableError(
            f"the gateway cannot count tokens: tokenizer file {path} is unreadable ({exc})"
        ) from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ServiceUnavailableError(
            f"the gateway cannot count tokens: tokenizer file {path} is not {name}"
        )
    # tiktoken reads its cache directory before it would download: point it at the checked
    # file, so that the lookup below can only read it.
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    import tiktoken

    return tiktoken.get_encoding(name)


def encoding_name(model: str) -> str:
    """The encoding that counts for `model` (a provider's model name)."""
    return "cl100k_base" if _CL100K_MODELS.search(model) else DEFAULT_ENCODING


def is_claude(model: str) -> bool:
    """Whether `model` names a Claude model (Anthropic's framing applies)."""
    return bool(_CLAUDE_MODELS.search(model))


def main_target(targets: Iterable[files.AliasTarget]) -> files.AliasTarget | None:
    """The target that serves most of an alias's traffic (first of the heaviest)."""
    best: files.AliasTarget | None = None
    for target in targets:
        if best is None or target.weight > best.weight:
            best = target
    return best


# --------------------------------------------------------------------------- counting


class _Counts:
    """Token counts of long texts per encoding, bounded by their total size."""

    def __init__(self) -> None:
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def count(self, name: str, text: str) -> int:
        if len(text) < CACHE_MIN_CHARS:
            return len(encoding(name).encode_ordinary(text))
        key = (name, text)
        with self._lock:
            hit = self._counts.get(key)
            if hit is not None:
                self._counts.move_to_end(key)
                return hit
        tokens = len(encoding(name).encode_ordinary(text))
        if len(text) <= CACHE_MAX_CHARS // 4:
            with self._lock:
                if key not in self._counts:
                    self._counts[key] = tokens
                    self._chars += len(text)
                while self._chars > CACHE_MAX_CHARS and self._counts:
                    (_, old), _ = self._counts.popitem(last=False)
                    self._chars -= len(old)
        return tokens


_counts = _Counts()


class _Pieces:
    """What a request asks the model to read: texts to tokenize, and fixed costs."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.fixed = 0

    def add_content(self, content: Any) -> None:
        if isinstance(content, str):
            self.texts.append(content)
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, str):
                    self.texts.append(block)
                elif isinstance(block, Mapping):
                    self.add_block(block)

    def add_block(self, block: Mapping[str, Any]) -> None:
        kind = block.get("type")
        if kind in ("text", "input_text") and isinstance(block.get("text"), str):
            self.texts.append(block["text"])
        elif kind in ("tool_use", "server_tool_use"):
            self.texts.append(str(block.get("name") or ""))
            self.texts.append(json.dumps(block.get("input"), ensure_ascii=False))
        elif kind in ("tool_result", "web_search_tool_result"):
            self.add_content(block.get("content"))
        elif kind in ("image", "image_url"):
            self.fixed += IMAGE_TOKENS
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, Mapping) and isinstance(source.get("data"), str):
                if source.get("type") == "text":
                    self.texts.append(source["data"])
                else:
                    self.fixed += IMAGE_TOKENS
            elif isinstance(source, Mapping):
                self.add_content(source.get("content"))
        # thinking blocks of earlier turns do not count (Anthropic); others carry no text

    def chars(self) -> int:
        return sum(len(text) for text in self.texts)


def _pieces(body: Mapping[str, Any]) -> tuple[_Pieces, int]:
    """The texts of a Messages API body, and how many messages it has (system excluded)."""
    pieces = _Pieces()
    messages = body.get("messages")
    count = 0
    if body.get("system"):
        pieces.add_content(body["system"])
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                pieces.add_content(message.get("content"))
                count += 1
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, Mapping):
                pieces.texts.append(json.dumps(tool, ensure_ascii=False, sort_keys=True))
    return pieces, count


def _framing(body: Mapping[str, Any], model: str, messages: int) -> int:
    """Tokens the chat format adds around the texts."""
    if is_claude(model):
        fixed = CLAUDE_REQUEST_TOKENS + CLAUDE_MESSAGE_TOKENS * messages
        tools = body.get("tools")
        if isinstance(tools, list) and tools:
            choice = body.get("tool_choice")
            forced = isinstance(choice, Mapping) and choice.get("type") in ("any", "tool")
            fixed += CLAUDE_TOOLS_FORCED_TOKENS if forced else CLAUDE_TOOLS_AUTO_TOKENS
        return fixed
    # OpenAI sends the system prompt as a message; role names are one token each
    messages += 1 if body.get("system") else 0
    return (OPENAI_MESSAGE_TOKENS + 1) * messages + OPENAI_REPLY_TOKENS


def count_request_tokens(body: Mapping[str, Any], model: str) -> int:
    """Input tokens of a Messages API request body, as `model` would count them."""
    pieces, messages = _pieces(body)
    name = encoding_name(model)
    tokens = sum(_counts.count(name, text) for text in pieces.texts if text)
    return tokens + pieces.fixed + _framing(body, model, messages)


async def count_request_tokens_async(body: Mapping[str, Any], model: str) -> int:
    """`count_request_tokens`, off the event loop for long prompts."""
    encoding(encoding_name(model))  # load errors surface here, not in a thread
    pieces, _ = _pieces(body)
    if pieces.chars() <= INLINE_CHARS:
        return count_request_tokens(body, model)
    return await asyncio.to_thread(count_request_tokens, body, model)


# --------------------------------------------------------------------------- the route


async def answer(api_key: str | None, body: dict[str, Any]) -> int:
    """The `input_tokens` of a count_tokens request with `api_key`; raises a GatewayError.

    The key must be the tenant's (or its master key) and the model one the tenant serves,
    chosen by the routing rules as for `/v1/messages`. Nothing is sent anywhere.
    """
    auth.identify(api_key)
    try:
        rules = files.current_rules()
    except files.FileError as exc:
        raise ServiceUnavailableError(
            f"the gateway's routing rules are not loaded ({exc}): ask your platform team"
        ) from None
    route = routing.route_request(body, rules)
    alias = rules.aliases[route.alias]
    target = main_target(alias.targets)
    model = target.model if target is not None else route.requested_model
    return await count_request_tokens_async(body, model)
