"""Savings arithmetic, cost labels, FOCUS columns and the A/B tests of `tenantctl report`."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tenantgw.api import Tenant
from tenantgw.api.list_prices import ANTHROPIC_LIST_PRICES, claude_family
from tenantgw.cli import focus
from tenantgw.cli.ledger_rows import Arm, Row, compare, comparisons, percentile, totals
from tenantgw.cli.report import Report, render
from tenantgw.gateway import costlabels
from tenantgw.gateway.errors import InvalidRequestError
from tenantgw.gateway.files import parse_rules
from tenantgw.gateway.pricing import TokenUsage, anthropic_list_cost

pytestmark = pytest.mark.unit


def litellm_cost_map() -> dict[str, Any]:
    """LiteLLM's own cost map as shipped with the pinned release (no network)."""
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return dict(litellm.model_cost)


# --------------------------------------------------------------------------- list prices


def test_list_prices_are_litellms_for_every_claude_model_it_prices() -> None:
    checked = set()
    for name, entry in litellm_cost_map().items():
        if entry.get("litellm_provider") != "anthropic" or not name.startswith("claude"):
            continue
        family = claude_family(name)
        if family is None:
            continue  # a model our table does not name (claude-fable-5...): no counterfactual
        price = ANTHROPIC_LIST_PRICES[family]
        assert entry["input_cost_per_token"] * 1e6 == pytest.approx(price.input), name
        assert entry["output_cost_per_token"] * 1e6 == pytest.approx(price.output), name
        assert entry["cache_creation_input_token_cost"] * 1e6 == pytest.approx(price.cache_write), (
            name
        )
        assert entry["cache_read_input_token_cost"] * 1e6 == pytest.approx(price.cache_read), name
        checked.add(family)
    # the models Claude Code asks for today are among them
    assert {"claude-opus-5-5", "claude-sonnet-5-5", "claude-sonnet-4-5", "claude-haiku-4-5"} <= (
        checked
    )


@pytest.mark.parametrize("model", ["claude-opus-5-5", "claude-sonnet-4-5", "claude-haiku-4-5"])
def test_savings_to_the_cent_with_litellms_list_prices(model: str) -> None:
    entry = litellm_cost_map()[model]
    # A prompt under 200k tokens (no long-context rates), cache reads and writes included,
    # repeated over a month of requests: 250 such requests.
    one = TokenUsage(
        input_tokens=12_345, output_tokens=3_456, cache_read_tokens=98_765, cache_write_tokens=4_567
    )
    tokens = TokenUsage(
        input_tokens=one.input_tokens * 250,
        output_tokens=one.output_tokens * 250,
        cache_read_tokens=one.cache_read_tokens * 250,
        cache_write_tokens=one.cache_write_tokens * 250,
    )
    expected = (
        Decimal(str(entry["input_cost_per_token"])) * tokens.input_tokens
        + Decimal(str(entry["output_cost_per_token"])) * tokens.output_tokens
        + Decimal(str(entry["cache_read_input_token_cost"])) * tokens.cache_read_tokens
        + Decimal(str(entry["cache_creation_input_token_cost"])) * tokens.cache_write_tokens
    )
    per_request = anthropic_list_cost(model, one)
    assert per_request is not None
    listed = per_request * 250
    assert round(Decimal(listed), 2) == round(expected, 2)
    actual = 1.37  # what the cheaper alias cost
    saved = listed - actual
    assert round(Decimal(saved), 2) == round(expected - Decimal("1.37"), 2)


# --------------------------------------------------------------------------- cost labels


RULES = {
    "tenant": "t1",
    "aliases": {"fast-code": {}, "reasoning": {}},
    "keys": [
        {"name": "alice", "labels": {"team": "payments", "project": "checkout"}},
        {"name": "ci", "labels": {}},
    ],
    "cost": {
        "baseline": {"default": "claude-sonnet-4-5", "aliases": {"reasoning": "claude-opus-4-1"}},
        "label_header": {
            "header": "x-project",
            "label": "project",
            "allowed_values": ["checkout", "search"],
        },
    },
}


def request(headers: dict[str, str]) -> dict[str, Any]:
    return {"proxy_server_request": {"headers": headers}}


def test_labels_come_from_the_key_and_an_allowed_header() -> None:
    rules = parse_rules(json.dumps(RULES))
    assert costlabels.request_labels(rules, "alice", request({})) == {
        "team": "payments",
        "project": "checkout",
    }
    assert costlabels.request_labels(rules, "alice", request({"x-project": "search"})) == {
        "team": "payments",
        "project": "search",
    }
    assert costlabels.request_labels(rules, "ci", request({"X-Project": "search"})) == {
        "project": "search"
    }


@pytest.mark.parametrize("value", ["billing", "", "checkout ", "x" * 500, "SEARCH"])
def test_a_header_value_outside_the_list_is_refused_naming_the_header(value: str) -> None:
    rules = parse_rules(json.dumps(RULES))
    with pytest.raises(InvalidRequestError) as err:
        costlabels.request_labels(rules, "alice", request({"x-project": value}))
    assert err.value.status == 400
    assert "header x-project" in str(err.value)
    assert "checkout, search" in str(err.value)
    assert "x" * 100 not in str(err.value)  # a huge value is not echoed back


def test_without_a_label_header_the_header_changes_nothing() -> None:
    rules = parse_rules(json.dumps({**RULES, "cost": {"label_header": None}}))
    assert costlabels.request_labels(rules, "ci", request({"x-project": "anything"})) == {}


def test_the_list_model_is_the_claude_model_asked_for_else_the_baseline() -> None:
    rules = parse_rules(json.dumps(RULES))
    assert costlabels.list_model(rules, "claude-opus-5-5", "fast-code") == "claude-opus-5-5"
    assert costlabels.list_model(rules, "reasoning", "reasoning") == "claude-opus-4-1"
    assert costlabels.list_model(rules, "fast-code", "fast-code") == "claude-sonnet-4-5"
    bare = parse_rules(json.dumps({"tenant": "t1"}))
    assert costlabels.list_model(bare, "fast-code", "fast-code") is None


def test_tenant_cost_settings_are_validated() -> None:
    def spec(**fields: Any) -> dict[str, Any]:
        return {"metadata": {"name": "t1"}, "spec": fields}

    Tenant.model_validate(spec(costBaseline={"default": "claude-sonnet-4-5-20250929"}))
    bad = [
        (spec(costBaseline={"default": "claude-foo-9"}), "costBaseline.default"),
        (spec(costBaseline={"aliases": {"r": "gpt-4o"}}), "costBaseline.aliases"),
        (spec(keys=[{"name": "a", "labels": {"Project": "x"}}]), "label key 'Project'"),
        (spec(keys=[{"name": "a", "labels": {f"k{i}": "v" for i in range(9)}}]), "labels"),
        (spec(keys=[{"name": "a", "labels": {"p": "a b"}}]), "labels.p"),
        (
            spec(costLabels={"header": "Authorization", "label": "p", "allowedValues": ["a"]}),
            "costLabels.header",
        ),
        (spec(costLabels={"header": "X-P", "label": "p", "allowedValues": []}), "allowedValues"),
    ]
    for body, field in bad:
        with pytest.raises(ValueError, match=re.escape(field)):
            Tenant.model_validate(body)


# --------------------------------------------------------------------------- rows


T0 = datetime(2025, 3, 1, 10, 15, tzinfo=UTC)


def row(**changes: Any) -> Row:
    values: dict[str, Any] = {
        "tenant": "t1",
        "ts": T0,
        "key": "alice",
        "requested": "claude-opus-4-1",
        "alias": "fast-code",
        "provider": "openrouter",
        "model": "qwen/qwen3-coder",
        "cost": 0.001,
        "list_cost": 0.01,
        "list_model": "claude-opus-4-1",
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "latency_ms": 500,
        "ttft_ms": 100,
        "ok": True,
        "session": None,
        "labels": {"project": "checkout"},
    }
    values.update(changes)
    return Row(**values)


def test_savings_count_unpriced_spend_against_the_saving() -> None:
    t = totals([row(), row(cost=0.002, list_cost=None, list_model=None)])
    assert t.cost_usd == pytest.approx(0.003)
    assert t.list_cost_usd == pytest.approx(0.01)
    assert t.unpriced_cost_usd == pytest.approx(0.002)
    assert t.savings_usd == pytest.approx(0.007)
    assert t.savings_pct == pytest.approx(70.0)
    assert totals([row(list_cost=None)]).savings_pct is None


# --------------------------------------------------------------------------- FOCUS

# From the FOCUS 1.0 column definitions (focus.finops.org, FOCUS_Spec specification/columns):
# data type, whether nulls are allowed, allowed values where the spec lists them.
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
FOCUS_SCHEMA: dict[str, dict[str, Any]] = {
    "BilledCost": {"type": "decimal", "nulls": False},
    "BillingAccountId": {"type": "string", "nulls": False},
    "BillingAccountName": {"type": "string", "nulls": True},
    "BillingCurrency": {"type": "string", "nulls": False, "pattern": r"^[A-Z]{3}$"},
    "BillingPeriodEnd": {"type": "datetime", "nulls": False},
    "BillingPeriodStart": {"type": "datetime", "nulls": False},
    "ChargeCategory": {
        "type": "string",
        "nulls": False,
        "values": {"Usage", "Purchase", "Tax", "Credit", "Adjustment"},
    },
    "ChargeClass": {"type": "string", "nulls": True, "values": {"Correction"}},
    "ChargeDescription": {"type": "string", "nulls": True},
    "ChargeFrequency": {
        "type": "string",
        "nulls": True,
        "values": {"One-Time", "Recurring", "Usage-Based"},
    },
    "ChargePeriodEnd": {"type": "datetime", "nulls": False},
    "ChargePeriodStart": {"type": "datetime", "nulls": False},
    "ConsumedQuantity": {"type": "decimal", "nulls": True},
    "ConsumedUnit": {"type": "string", "nulls": True},
    "ContractedCost": {"type": "decimal", "nulls": False},
    "EffectiveCost": {"type": "decimal", "nulls": False},
    "InvoiceIssuerName": {"type": "string", "nulls": False},
    "ListCost": {"type": "decimal", "nulls": False},
    "PricingCategory": {
        "type": "string",
        "nulls": True,
        "values": {"Standard", "Dynamic", "Committed", "Other"},
    },
    "PricingQuantity": {"type": "decimal", "nulls": True},
    "PricingUnit": {"type": "string", "nulls": True},
    "ProviderName": {"type": "string", "nulls": False},
    "PublisherName": {"type": "string", "nulls": False},
    "RegionId": {"type": "string", "nulls": True},
    "RegionName": {"type": "string", "nulls": True},
    "ResourceId": {"type": "string", "nulls": True},
    "ResourceName": {"type": "string", "nulls": True},
    "ResourceType": {"type": "string", "nulls": True},
    "ServiceCategory": {
        "type": "string",
        "nulls": False,
        "values": {
            "AI and Machine Learning",
            "Analytics",
            "Business Applications",
            "Compute",
            "Databases",
            "Developer Tools",
            "Multicloud",
            "Identity",
            "Integration",
            "Internet of Things",
            "Management and Governance",
            "Media",
            "Migration",
            "Mobile",
            "Networking",
            "Security",
            "Storage",
            "Web",
            "Other",
        },
    },
    "ServiceName": {"type": "string", "nulls": False},
    "SkuId": {"type": "string", "nulls": True},
    "SubAccountId": {"type": "string", "nulls": True},
    "SubAccountName": {"type": "string", "nulls": True},
    "Tags": {"type": "json", "nulls": True},
}
MANDATORY = [name for name, c in FOCUS_SCHEMA.items() if not c["nulls"]]


def check_focus(header: list[str], charges: list[dict[str, str]]) -> None:
    """The FOCUS schema check: columns present, types, nulls, allowed values, custom prefix."""
    for name in header:
        assert name in FOCUS_SCHEMA or name.startswith("x_"), f"{name}: not FOCUS, not x_"
    for name in MANDATORY:
        assert name in header, f"mandatory column {name} missing"
    for charge in charges:
        for name, spec in FOCUS_SCHEMA.items():
            if name not in charge:
                continue
            value = charge[name]
            if value == "":
                assert spec["nulls"], f"{name} must not be null"
                continue
            if spec["type"] == "decimal":
                Decimal(value)
            elif spec["type"] == "datetime":
                assert DATETIME.match(value), f"{name}={value!r}: not YYYY-MM-DDTHH:mm:ssZ"
            elif spec["type"] == "json":
                tags = json.loads(value)
                assert isinstance(tags, dict)
                assert all(isinstance(v, str | bool) for v in tags.values())
            if "values" in spec:
                assert value in spec["values"], f"{name}={value!r}: not an allowed value"
            if "pattern" in spec:
                assert re.match(spec["pattern"], value), f"{name}={value!r}"
        assert charge["ChargePeriodStart"] < charge["ChargePeriodEnd"]
        assert charge["BillingPeriodStart"] <= charge["ChargePeriodStart"]
        assert charge["ChargePeriodEnd"] <= charge["BillingPeriodEnd"]
        # provider-defined tags carry a prefix, user-defined (the cost labels) none
        tags = json.loads(charge["Tags"])
        assert {k for k in tags if "/" in k} == {"tenantgw/alias", "tenantgw/key"}


def test_focus_export_passes_the_schema_check_and_keeps_the_money() -> None:
    rows = [
        row(),
        row(ts=T0 + timedelta(minutes=20), cost=0.002),
        row(ts=T0 + timedelta(hours=1), key="ci", labels={}),
        row(provider=None, model=None, ok=False, cost=0.0, list_cost=None, list_model=None),
        row(ts=datetime(2025, 12, 31, 23, 59, tzinfo=UTC)),  # the year's last month
    ]
    out = io.StringIO()
    assert focus.write_focus(rows, out) == 4
    reader = csv.DictReader(io.StringIO(out.getvalue()))
    charges = list(reader)
    check_focus(list(reader.fieldnames or []), charges)
    assert sum(Decimal(c["BilledCost"]) for c in charges) == Decimal("0.005")
    first = next(
        c for c in charges if c["SubAccountName"] == "alice" and c["SkuId"] == "qwen/qwen3-coder"
    )
    assert first["x_Requests"] == "2"
    assert Decimal(first["x_ClaudeListCost"]) == Decimal("0.02")
    assert Decimal(first["x_Savings"]) == Decimal("0.017")
    assert first["ChargePeriodStart"] == "2025-03-01T10:00:00Z"
    assert first["BillingPeriodEnd"] == "2025-04-01T00:00:00Z"
    assert charges[-1]["BillingPeriodEnd"] == "2026-01-01T00:00:00Z"


def test_the_schema_check_catches_a_broken_export() -> None:
    out = io.StringIO()
    focus.write_focus([row()], out)
    charge = next(csv.DictReader(io.StringIO(out.getvalue())))
    for name, value in [
        ("ChargeCategory", "Tokens"),
        ("BilledCost", ""),
        ("ChargePeriodStart", "2025-03-01 10:00"),
        ("ServiceCategory", "AI"),
    ]:
        with pytest.raises((AssertionError, ArithmeticError)):
            check_focus(list(charge), [{**charge, name: value}])


# --------------------------------------------------------------------------- A/B


def test_fisher_exact_on_error_rates_matches_the_known_value() -> None:
    # Fisher's tea-tasting table [[3, 1], [1, 3]]: two-sided p = 34/70.
    arms = [Arm("p", "a", requests=4, errors=3), Arm("p", "b", requests=4, errors=1)]
    arms[0].latencies, arms[1].latencies = [1.0, 2.0], [3.0, 4.0]
    result = compare("x", arms)
    assert result.error_test == "fisher-exact"
    assert result.error_p == pytest.approx(34 / 70)
    assert result.latency_p is None  # fewer than 3 latencies per arm: no test


def test_mann_whitney_on_latencies_matches_the_known_value() -> None:
    # SciPy's documented example: U = 17, exact two-sided p = 0.1111.
    a = Arm("p", "a", requests=5, latencies=[19, 22, 16, 29, 24])
    b = Arm("p", "b", requests=4, latencies=[20, 11, 17, 12])
    result = compare("x", [a, b])
    assert result.latency_test == "mann-whitney-u"
    assert result.latency_p == pytest.approx(0.1111, abs=1e-4)
    assert result.error_test is None  # no error anywhere: nothing to test


def test_three_arms_use_chi_square_and_kruskal_wallis() -> None:
    arms = [
        Arm("p", "a", requests=100, errors=10, latencies=[1, 2, 3, 4]),
        Arm("p", "b", requests=100, errors=30, latencies=[10, 20, 30, 40]),
        Arm("p", "c", requests=100, errors=20, latencies=[5, 6, 7, 8]),
    ]
    result = compare("x", arms)
    assert result.error_test == "chi-square"
    # expected 20 errors and 80 successes per arm: chi2 = 200/20 + 200/80 = 12.5 on 2 degrees
    # of freedom, p = exp(-12.5 / 2)
    assert result.error_p == pytest.approx(math.exp(-6.25), rel=1e-9)
    assert result.latency_test == "kruskal-wallis"
    assert result.latency_p is not None
    assert result.latency_p < 0.05


def test_arms_are_the_targets_that_served_an_alias() -> None:
    rows = [row(latency_ms=100 + i) for i in range(5)]
    rows += [row(model="gpt-4o-mini", provider="openai", latency_ms=900 + i) for i in range(5)]
    rows += [row(model="gpt-4o-mini", provider="openai", ok=False, cost=0.0)]
    rows += [row(alias="solo")]
    (only,) = comparisons(rows)
    assert only.alias == "fast-code"
    assert [(a.model, a.requests, a.errors) for a in only.arms] == [
        ("gpt-4o-mini", 6, 1),
        ("qwen/qwen3-coder", 5, 0),
    ]
    assert only.arms[1].as_dict()["latency_p50_ms"] == 102
    assert only.latency_p is not None
    assert only.latency_p < 0.05


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 95) == 48.0
    assert percentile([], 50) is None


# --------------------------------------------------------------------------- html


def test_html_report_carries_four_plots_and_the_totals() -> None:
    rows = [row(ts=T0 + timedelta(days=d), cost=0.001 * (d + 1)) for d in range(3)]
    report = Report("t1", rows, ["alias", "day"], None, None)
    out = io.StringIO()
    render(report, "html", out)
    page = out.getvalue()
    assert page.count("data:image/png;base64,") == 4
    for figure in ("spend-over-time", "spend-by-model", "budget-burn-down", "savings"):
        assert f'id="{figure}"' in page
    assert '<b id="total-cost">0.006000</b>' in page
    assert '<b id="total-savings">0.024000</b>' in page
