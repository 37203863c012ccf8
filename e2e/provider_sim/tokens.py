"""How many tokens a provider counts in a request, and the context windows it enforces.

OpenAI-family requests (chat completions) are counted with OpenAI's public tokenizer,
tiktoken, the way the OpenAI API reports `usage.prompt_tokens`: the encoding of the model
(`cl100k_base` for GPT-4 / GPT-3.5, `o200k_base` otherwise) and the chat framing and tool
rules of OpenAI's cookbook ("How to count tokens with tiktoken"): 3 tokens per message plus
its role, 1 per name, 3 to prime the reply; per function 7 (10 for GPT-4 / GPT-3.5) plus
`name:description`, 3 to open the properties, per property 3 plus `name:type:description`,
enums -3 plus 3 and the value per item, 12 at the end. The cookbook's rules cover flat
properties only: a property whose type is an object or array is counted as `name:type:` plus
the JSON of its schema (an approximation of OpenAI's rendering, which it does not publish).
The encodings come from the files LiteLLM bundles, checked by SHA-256 and never downloaded
(`tenantgw.gateway.tokencount.encoding`).

Anthropic has not published the tokenizer of Claude 3 and later: Anthropic-protocol requests
keep the simulator's estimate (one token per four characters plus one, over the text of the
system prompt, the messages and the JSON of the tools). It is an estimate, not Anthropic's
count.

Context windows: `SimConfig.context_windows` maps a model to its window; a request whose
prompt (or prompt plus `max_tokens`) exceeds it is refused in the provider's own words.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tenantgw.gateway.tokencount import encoding, encoding_name


def tiktoken_count(text: str, model: str) -> int:
    """Tokens of `text` in the encoding OpenAI uses for `model`."""
    if not text:
        return 0
    return len(encoding(encoding_name(model)).encode_ordinary(text))


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return json.dumps(content)


def _images(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(
        1 for p in content if isinstance(p, Mapping) and p.get("type") in ("image_url", "image")
    )


IMAGE_TOKENS = 765
"""A high-detail 1024x1024 image on GPT-4o (85 + 4 tiles of 170): no pixels are decoded."""


def openai_message_tokens(messages: list[Any], model: str) -> int:
    """Tokens of chat messages with OpenAI's framing, including the 3 that prime the reply."""
    total = 3
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        total += 3
        total += tiktoken_count(str(message.get("role") or ""), model)
        total += tiktoken_count(_text(message.get("content")), model)
        total += IMAGE_TOKENS * _images(message.get("content"))
        if message.get("name"):
            total += 1 + tiktoken_count(str(message["name"]), model)
        for call in message.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(fn, Mapping):
                total += tiktoken_count(str(fn.get("name") or ""), model)
                total += tiktoken_count(str(fn.get("arguments") or ""), model)
    return total


def openai_tool_tokens(tools: list[Any], model: str) -> int:
    """Tokens OpenAI adds for function definitions (the cookbook's rules, see above)."""
    functions = [
        t["function"]
        for t in tools
        if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
    ]
    if not functions:
        return 0
    old = encoding_name(model) == "cl100k_base"  # GPT-4 and GPT-3.5
    func_init, prop_init, prop_key, enum_init, enum_item, func_end = (
        (10, 3, 3, -3, 3, 12) if old else (7, 3, 3, -3, 3, 12)
    )
    total = 0
    for fn in functions:
        total += func_init
        description = str(fn.get("description") or "").removesuffix(".")
        total += tiktoken_count(f"{fn.get('name', '')}:{description}", model)
        parameters = fn.get("parameters") if isinstance(fn.get("parameters"), Mapping) else {}
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        if not isinstance(properties, Mapping) or not properties:
            continue
        total += prop_init
        for key, schema in properties.items():
            total += prop_key
            schema = schema if isinstance(schema, Mapping) else {}
            kind = schema.get("type")
            if isinstance(schema.get("enum"), list):
                total += enum_init
                for item in schema["enum"]:
                    total += enum_item + tiktoken_count(str(item), model)
            p_desc = str(schema.get("description") or "").removesuffix(".")
            if kind in ("object", "array") or not isinstance(kind, str):
                rest = {k: v for k, v in schema.items() if k not in ("description", "enum")}
                line = f"{key}:{kind or ''}:{p_desc}{json.dumps(rest, ensure_ascii=False)}"
            else:
                line = f"{key}:{kind}:{p_desc}"
            total += tiktoken_count(line, model)
    return total + func_end


def openai_prompt_tokens(body: Mapping[str, Any], model: str) -> int:
    """`usage.prompt_tokens` OpenAI would report for a chat completions request body."""
    messages, tools = body.get("messages"), body.get("tools")
    messages = messages if isinstance(messages, list) else []
    tools = tools if isinstance(tools, list) else []
    return openai_message_tokens(messages, model) + openai_tool_tokens(tools, model)


# --------------------------------------------------------------------------- context windows


def window_of(windows: Mapping[str, int], model: str) -> int | None:
    """The configured context window of `model` (also matched without a provider prefix)."""
    if model in windows:
        return windows[model]
    short = model.split("/", 1)[-1]
    return windows.get(short)


def openai_context_error(window: int, prompt: int, max_tokens: int | None) -> str | None:
    """OpenAI's message when a request does not fit `window`, else None."""
    if max_tokens and prompt + max_tokens > window:
        return (
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion."
        )
    if prompt > window:
        return (
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {prompt} tokens. Please reduce the length of the messages."
        )
    return None


def anthropic_context_error(window: int, prompt: int, max_tokens: int | None) -> str | None:
    """Anthropic's message when a request does not fit `window`, else None."""
    if prompt > window:
        return f"prompt is too long: {prompt} tokens > {window} maximum"
    if max_tokens and prompt + max_tokens > window:
        return (
            f"input length and `max_tokens` exceed context limit: {prompt} + {max_tokens} > "
            f"{window}, decrease input length or `max_tokens` and try again"
        )
    return None
