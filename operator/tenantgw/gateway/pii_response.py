"""The tenant's PII policy on the answer: redacted (or withheld) before the client sees it.

The same `compliance.piiRedaction` (mode and entities) as the request, applied to what the model
answers: text, tool-call input (Anthropic `tool_use.input`, OpenAI `tool_calls[].arguments`),
non-streamed (`redact_response`) and streamed (`redact_stream`, the state machines of
`pii_stream`). In "redact" mode each entity becomes `[REDACTED_<ENTITY>]`; placeholders are
never restored to the caller (docs/compliance.md says why). In "block" mode an answer that
contains an entity is withheld: a non-streamed one is answered with a 400 naming the entity
types; a stream stops before the entity (the look-behind window holds it back) with an error
event in the client's shape, after the rest of the answer was read from the provider so that
the request is metered like any other.

What was found is counted per entity type on the request's context (`response_pii_counts`,
the audit record's `pii_response`), and the texts rewritten are kept (`response_pii_texts`,
original -> as sent) so that the audit trail stores the answer without scanning it again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from tenantgw.gateway import pii, safeguards
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.errors import InvalidRequestError
from tenantgw.gateway.files import Rules
from tenantgw.gateway.pii_stream import (
    AnthropicEvents,
    ChatChunks,
    Redaction,
    field_of,
    redact_message_content,
    set_field,
)

log = logging.getLogger("tenantgw.gateway.pii")


class ResponseWithheldError(InvalidRequestError):
    """The answer held an entity the tenant's PII policy blocks."""


def active(rules: Rules) -> bool:
    """Whether answers of this tenant are scanned at all."""
    return rules.compliance.pii_redaction.mode != "off"


def withheld(counts: Mapping[str, int], tenant: str) -> ResponseWithheldError:
    kinds = ", ".join(sorted(counts))
    return ResponseWithheldError(
        f"the model's answer was withheld by tenant {tenant}'s PII policy: it contains {kinds}; "
        "rephrase the request so that the answer does not need that data"
    )


def _record(ctx: RequestContext, redaction: Redaction) -> None:
    for entity, n in redaction.counts.items():
        ctx.response_pii_counts[entity] = ctx.response_pii_counts.get(entity, 0) + n
    ctx.response_pii_texts.update(redaction.texts)


# --------------------------------------------------------------------------- not streamed


def redact_response(ctx: RequestContext, rules: Rules, response: Any) -> Any:
    """A non-streamed answer with its PII redacted in place; ResponseWithheldError in block mode."""
    policy = rules.compliance.pii_redaction
    if policy.mode == "off":
        return response
    scanner = pii.scanner_for(policy.entities)
    redaction = Redaction()
    if isinstance(response, dict) and isinstance(response.get("content"), list | str):
        redact_message_content(response, scanner, redaction)  # Anthropic message
    else:
        for choice in field_of(response, "choices") or ():
            message = field_of(choice, "message")
            if message is not None:
                _redact_chat_message(message, scanner, redaction)
    _record(ctx, redaction)
    if policy.mode == "block" and redaction.counts:
        ctx.response_withheld = True
        raise withheld(redaction.counts, rules.tenant)
    return response


def _redact_chat_message(message: Any, scanner: pii.Scanner, redaction: Redaction) -> None:
    content = field_of(message, "content")
    if isinstance(content, str):
        set_field(message, "content", redaction.text(scanner, content))
    for call in field_of(message, "tool_calls") or ():
        function = field_of(call, "function")
        arguments = field_of(function, "arguments") if function is not None else None
        if isinstance(arguments, str):
            set_field(function, "arguments", redaction.json_text(scanner, arguments))


# --------------------------------------------------------------------------- streamed


class _BlockedError(Exception):
    pass


async def redact_stream(
    ctx: RequestContext, rules: Rules, stream: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """The stream with its PII redacted; in block mode it ends with an error before the entity.

    Anthropic events come as dicts or as SSE bytes (split into whole frames here, re-framed
    after); chat chunks as dicts or LiteLLM's chunk objects. Anything else passes unchanged.
    """
    policy = rules.compliance.pii_redaction
    scanner = pii.scanner_for(policy.entities)
    block = policy.mode == "block"
    events = AnthropicEvents(scanner)
    chunks = ChatChunks(scanner)
    frames = safeguards.SseFrames()
    saw_bytes = False

    def check() -> None:
        if block and (events.counts or chunks.counts):
            raise _BlockedError

    try:
        async for chunk in stream:
            if isinstance(chunk, str | bytes | bytearray):
                saw_bytes = True
                raw = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                out: list[bytes] = []
                for frame in frames.feed(raw):
                    event = safeguards.frame_event(frame)
                    if event is None or "type" not in event:
                        out.append(frame)
                        continue
                    sent = events.feed(event)
                    check()
                    out.extend(safeguards.event_frame(e) for e in sent)
                if out:
                    yield b"".join(out)
            elif _is_chat_chunk(chunk):
                sent_chunks = chunks.feed(chunk)
                check()
                for item in sent_chunks:
                    yield item
            elif isinstance(chunk, dict) and "type" in chunk:
                sent = events.feed(chunk)
                check()
                for event in sent:
                    yield event
            else:
                yield chunk
        tail = events.close()
        late = chunks.close()
        check()
        if saw_bytes:
            rest = frames.rest()
            data = b"".join(safeguards.event_frame(e) for e in tail) + rest
            if data:
                yield data
        else:
            for event in tail:
                yield event
        for item in late:
            yield item
    except _BlockedError:
        # The entity is still held back: nothing of it was sent. Read the rest of the answer
        # (the provider bills it, the request is metered as usual), then end with the error.
        # Marked first: LiteLLM logs the success of a stream as soon as it is read to the end,
        # and that record must say the answer was withheld.
        ctx.response_withheld = True
        async for _ in stream:
            pass
        raise withheld({**events.counts, **chunks.counts}, rules.tenant) from None
    finally:
        _record(ctx, events.redaction)
        _record(ctx, chunks.redaction)


def _is_chat_chunk(chunk: Any) -> bool:
    if isinstance(chunk, dict):
        return "choices" in chunk
    return field_of(chunk, "choices") is not None and not isinstance(chunk, str | bytes)
