"""The ledger as a FOCUS 1.0 cost and usage dataset (`tenantctl report --format focus`).

FOCUS (the FinOps Foundation's FinOps Open Cost and Usage Specification) is the open format
FinOps tools ingest. One FOCUS row is one charge: here the requests of one hour with the same
tenant, key, alias, provider model and labels. Columns:

- BilledCost = EffectiveCost = ContractedCost = ListCost: what the gateway metered
  (`cost_usd`: the catalog's price, else LiteLLM's list price of the model served); there is no
  negotiated discount or amortization the gateway knows of. FOCUS's ListCost is the list price
  of the SKU consumed, so the counterfactual of the savings (the Claude list price,
  `list_cost_usd`) is NOT ListCost: it is the custom column `x_ClaudeListCost`, with
  `x_Savings` and `x_ClaudeListModel` (custom columns are `x_`-prefixed, as FOCUS requires).
- BillingAccountId/Name: the tenant; SubAccountId/Name: the key; ResourceId/Name/Type: the
  ModelAlias; SkuId: the provider model; ServiceName/ProviderName/PublisherName/
  InvoiceIssuerName: the provider account of the tenant (its spec.providers name).
- ChargePeriodStart/End: the hour; BillingPeriodStart/End: its calendar month (UTC).
- ConsumedQuantity/PricingQuantity: tokens (input, output and cache), unit `Tokens`.
- Tags: the cost labels (user-defined, unprefixed) and `tenantgw/alias`, `tenantgw/key`
  (provider-defined: prefixed, as FOCUS requires).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from tenantgw.cli.ledger_rows import Row

FOCUS_VERSION = "1.0"
COLUMNS = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_ClaudeListCost",
    "x_ClaudeListModel",
    "x_Requests",
    "x_Savings",
)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month(when: datetime) -> tuple[datetime, datetime]:
    start = when.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def _decimal(value: float) -> str:
    return f"{value:.10f}".rstrip("0").rstrip(".") or "0"


def focus_rows(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """FOCUS charges: one per hour, tenant, key, alias, provider model, labels."""
    charges: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in rows:
        hour = row.ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        labels = tuple(sorted(row.labels.items()))
        key = (row.tenant, hour, row.key, row.alias, row.provider, row.model, labels)
        charges[key].append(row)
    out = []
    for (tenant, hour, key, alias, provider, model, labels), group in sorted(
        charges.items(), key=lambda item: (item[0][1], *[str(x) for x in item[0][2:]])
    ):
        cost = sum(r.cost for r in group)
        listed = [r.list_cost for r in group if r.list_cost is not None]
        list_models = sorted({r.list_model for r in group if r.list_model})
        tokens = sum(r.tokens for r in group)
        month_start, month_end = _month(hour)
        tags: dict[str, str] = dict(labels)
        tags["tenantgw/alias"] = alias
        tags["tenantgw/key"] = key
        provider_name = provider or "tenantgw"
        sku = model or alias
        out.append(
            {
                "BilledCost": _decimal(cost),
                "BillingAccountId": tenant,
                "BillingAccountName": tenant,
                "BillingCurrency": "USD",
                "BillingPeriodEnd": _iso(month_end),
                "BillingPeriodStart": _iso(month_start),
                "ChargeCategory": "Usage",
                "ChargeClass": None,
                "ChargeDescription": (
                    f"{len(group)} requests to {sku} through alias {alias} ({tokens} tokens)"
                ),
                "ChargeFrequency": "Usage-Based",
                "ChargePeriodEnd": _iso(hour + timedelta(hours=1)),
                "ChargePeriodStart": _iso(hour),
                "ConsumedQuantity": str(tokens),
                "ConsumedUnit": "Tokens",
                "ContractedCost": _decimal(cost),
                "EffectiveCost": _decimal(cost),
                "InvoiceIssuerName": provider_name,
                "ListCost": _decimal(cost),
                "PricingCategory": "Standard",
                "PricingQuantity": str(tokens),
                "PricingUnit": "Tokens",
                "ProviderName": provider_name,
                "PublisherName": provider_name,
                "RegionId": None,
                "RegionName": None,
                "ResourceId": f"{tenant}/{alias}",
                "ResourceName": alias,
                "ResourceType": "ModelAlias",
                "ServiceCategory": "AI and Machine Learning",
                "ServiceName": provider_name,
                "SkuId": sku,
                "SubAccountId": f"{tenant}/{key}",
                "SubAccountName": key,
                "Tags": json.dumps(tags, sort_keys=True),
                "x_ClaudeListCost": _decimal(sum(listed)) if listed else None,
                "x_ClaudeListModel": ",".join(list_models) or None,
                "x_Requests": str(len(group)),
                "x_Savings": _decimal(sum(listed) - cost) if listed else None,
            }
        )
    return out


def write_focus(rows: Iterable[Row], out: TextIO) -> int:
    """Write the FOCUS CSV (empty cells for nulls); how many charges."""
    charges = focus_rows(rows)
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for charge in charges:
        writer.writerow({k: "" if v is None else v for k, v in charge.items()})
    return len(charges)
