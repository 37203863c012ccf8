"""What the gateway knows about one request, shared by the pre-call hook and the callbacks.

The pre-call hook fills a `RequestContext` and stores it in LiteLLM's request metadata under
`METADATA_KEY` as a plain dict (LiteLLM deep-copies metadata on its way to the callbacks, so
only plain data survives). The success and failure callbacks read it back with
`RequestContext.from_metadata(kwargs["litellm_params"]["metadata"])`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

METADATA_KEY = "tenantgw"
"""Key of the context in the request metadata (`data["metadata"]` / `data["litellm_metadata"]`)."""


@dataclass
class RequestContext:
    """One request as the tenantgw plugins see it.

    `requested_model` is what the client sent, `alias` the ModelAlias the routing chose (after a
    budget downgrade: the alias actually called, and `downgraded_from` the one routing chose).
    `started_at` is `time.monotonic()` when the pre-call hook ran.
    """

    tenant: str
    key_name: str
    request_id: str
    requested_model: str
    alias: str
    cost_tier: str | None = None
    call_type: str = ""
    started_at: float = field(default_factory=time.monotonic)
    stream: bool = False
    pii_counts: dict[str, int] = field(default_factory=dict)
    downgraded_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the request metadata (a shallow copy: asdict's deep copy costs more
        than the rest of the pre-call hook, and pii_counts is the only container)."""
        data = {f.name: getattr(self, f.name) for f in _FIELDS}
        data["pii_counts"] = dict(self.pii_counts)
        return data

    def store(self, metadata: dict[str, Any]) -> None:
        """Write this context into a request's metadata dict (replacing an older copy)."""
        metadata[METADATA_KEY] = self.to_dict()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RequestContext:
        """The context back from `to_dict()`; unknown keys are ignored, missing ones defaulted."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {name: raw[name] for name in names if name in raw}
        counts = values.get("pii_counts")
        values["pii_counts"] = dict(counts) if isinstance(counts, Mapping) else {}
        for required in ("tenant", "key_name", "request_id", "requested_model", "alias"):
            values[required] = str(values.get(required) or "")
        return cls(**values)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> RequestContext | None:
        """The context stored in request metadata, or None when the pre-call hook did not run."""
        if not metadata:
            return None
        raw = metadata.get(METADATA_KEY)
        if isinstance(raw, RequestContext):
            return raw
        if not isinstance(raw, Mapping):
            return None
        return cls.from_dict(raw)


def metadata_key(data: Mapping[str, Any], call_type: str | None = None) -> str:
    """Which key of LiteLLM's request `data` holds its metadata dict.

    `/v1/messages` (call type `anthropic_messages`) uses `litellm_metadata`, because `metadata`
    is an Anthropic request parameter there; chat and the rest use `metadata`.
    """
    if "litellm_metadata" in data or call_type == "anthropic_messages":
        return "litellm_metadata"
    return "metadata"


def request_metadata(data: dict[str, Any], call_type: str | None = None) -> dict[str, Any]:
    """LiteLLM's metadata dict of a request, created when absent."""
    key = metadata_key(data, call_type)
    metadata = data.get(key)
    if not isinstance(metadata, dict):
        metadata = {}
        data[key] = metadata
    return metadata


def metadata_from_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The request metadata as a success/failure callback receives it."""
    params = kwargs.get("litellm_params")
    if isinstance(params, Mapping):
        metadata = params.get("metadata")
        if isinstance(metadata, dict):
            return metadata
    return {}


def context_from_kwargs(kwargs: Mapping[str, Any]) -> RequestContext | None:
    """The RequestContext of the request a success/failure callback is about, if any."""
    return RequestContext.from_metadata(metadata_from_kwargs(kwargs))


_FIELDS = dataclasses.fields(RequestContext)
