"""Cost attribution of one request: its labels and the Claude model it is compared with.

Labels come from the authenticated key (`Tenant.spec.keys[].labels`, platform-set), and at
most one from a request header the platform names in `spec.costLabels`, whose value must be one
of the listed ones: a client can pick among the platform's projects, never mint a new one, so
the ledger's label values stay bounded. A value outside the list is refused with 400 naming the
header (a silent fallback would charge the wrong project). Labels never become Prometheus
labels: they are on ledger rows only, where reports group by them.

The list model is the counterfactual of the request's savings: the Claude model the client
named (Claude Code sends real Claude names), else the Tenant's `spec.costBaseline` for the
alias routing chose (by alias name or the client name used), else its default; None when the
platform set no baseline (the row then has no list cost and counts in no saving).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tenantgw.api.list_prices import claude_family
from tenantgw.gateway.errors import InvalidRequestError
from tenantgw.gateway.files import Rules
from tenantgw.gateway.sessions import request_headers


def _header(headers: Mapping[str, Any], name: str) -> Any:
    value = headers.get(name)
    if value is None:  # ASGI servers lower-case names; a test client might not
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return value


def request_labels(rules: Rules, key_name: str, data: Mapping[str, Any]) -> dict[str, str]:
    """The cost labels of a request by key `key_name`; InvalidRequestError for a bad header."""
    key = rules.key(key_name)
    labels = dict(key.labels) if key is not None else {}
    spec = rules.cost.label_header
    if spec is None:
        return labels
    value = _header(request_headers(data), spec.header)
    if value is None:
        return labels
    if not isinstance(value, str) or value not in spec.allowed_values:
        shown = value if isinstance(value, str) and len(value) <= 64 else "(too long)"
        allowed = ", ".join(spec.allowed_values[:20])
        more = ", ..." if len(spec.allowed_values) > 20 else ""
        raise InvalidRequestError(
            f"header {spec.header}: {shown!r} is not a {spec.label} this tenant accepts "
            f"(one of: {allowed}{more}); send one of them or leave the header out"
        )
    labels[spec.label] = value
    return labels


def labels_json(labels: Mapping[str, str] | None) -> str | None:
    """The ledger's `labels` value: JSON with sorted keys, None when there is none."""
    return json.dumps(dict(labels), sort_keys=True) if labels else None


def list_model(rules: Rules, requested_model: str, alias: str) -> str | None:
    """The Claude model whose list price the request is compared with (None: none)."""
    if claude_family(requested_model) is not None:
        return requested_model
    baseline = rules.cost.baseline
    return baseline.aliases.get(alias) or baseline.aliases.get(requested_model) or baseline.default
