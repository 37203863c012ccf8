"""BudgetPolicy spec.notify: what a webhook message says, how it is signed, when it is retried."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tenantgw.reconcile.budgets import PolicyEntry
from tenantgw.reconcile.notify import (
    BACKOFF_CAP,
    Crossing,
    NotifyTarget,
    backoff,
    decode_signing_secret,
    message_id,
    new_record,
    notification_points,
    render_body,
    sign,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 15, 4, 5, tzinfo=UTC)


def crossing(threshold: int = 80, **status: Any) -> Crossing:
    return Crossing(
        tenant="engineering-team",
        namespace="tenant-engineering-team",
        policy="daily",
        uid="u-1",
        period="daily",
        threshold=threshold,
        status={
            "periodStart": "2026-11-28T00:00:00Z",
            "spentUSD": 8.5,
            "utilization": 85.0,
            "state": "Warning",
            **status,
        },
        limit_usd=10,
        scope={"kind": "Tenant"},
        on_exceeded="block",
    )


def test_the_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The reference vector of the Standard Webhooks libraries (svix-webhooks TestWebhookSign).
    key = decode_signing_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"),
        ("whsec_not base64!", "base64"),
        ("whsec_c2hvcnQ=", "24 to 64"),
    ],
)
def test_a_signing_secret_that_is_not_whsec_base64_is_refused(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as err:
        decode_signing_secret(value)
    assert value not in str(err.value)


def test_each_threshold_below_100_and_the_exceedance_are_announced() -> None:
    assert notification_points([50, 80, 100], 49.9) == []
    assert notification_points([50, 80, 100], 85) == [50, 80]
    assert notification_points([50, 80, 100], 100) == [50, 80, 100]
    # The exceedance is announced even when 100 is not a threshold; 120 is never reached.
    assert notification_points([50, 80], 130) == [50, 80, 100]


def test_a_message_id_is_stable_per_policy_period_and_threshold() -> None:
    first = message_id("u-1", "2026-11-28", 80)
    assert first == message_id("u-1", "2026-11-28", 80)
    assert first.startswith("msg_")
    assert "." not in first
    assert len({first, message_id("u-1", "2026-11-29", 80), message_id("u-2", "2026-11-28", 80),
                message_id("u-1", "2026-11-28", 50)}) == 4  # fmt: skip


def test_the_standard_body_is_an_event_with_the_policy_state() -> None:
    body = json.loads(render_body(crossing(), "standard", NOW))
    assert body["type"] == "budget.threshold_crossed"
    assert body["timestamp"] == "2026-11-28T15:04:05Z"
    assert body["data"]["budgetPolicy"] == "daily"
    assert body["data"]["threshold"] == 80
    assert body["data"]["spentUSD"] == 8.5
    assert json.loads(render_body(crossing(100), "standard", NOW))["type"] == "budget.exceeded"


def test_the_slack_body_is_one_text_naming_policy_spend_and_session() -> None:
    text = json.loads(render_body(crossing(topSession="3f0c-abc"), "slack", NOW))
    assert list(text) == ["text"]
    assert "Budget daily of tenant engineering-team" in text["text"]
    assert "crossed 80%" in text["text"]
    assert "$8.50 of $10.00" in text["text"]
    assert "session 3f0c-abc" in text["text"]
    over = json.loads(render_body(crossing(100), "slack", NOW))["text"]
    assert "has reached its limit: requests in its scope now block" in over


def test_a_record_keeps_the_body_every_attempt_sends() -> None:
    target = NotifyTarget(webhook=("alerts", "url"), signing=None, format="standard")
    record = new_record(crossing(), target, NOW)
    assert record["id"] == message_id("u-1", "2026-11-28", 80)
    assert record["period"] == "2026-11-28"
    assert record["state"] == "Pending"
    assert record["attempts"] == 0
    assert json.loads(record["body"])["data"]["threshold"] == 80


def test_backoff_doubles_from_the_base_and_stops_at_an_hour() -> None:
    delays = [backoff(n, 30) for n in range(1, 12)]
    assert 30 <= delays[0] <= 33
    assert 60 <= delays[1] <= 66
    assert 120 <= delays[2] <= 132
    assert all(BACKOFF_CAP <= d <= BACKOFF_CAP * 1.1 for d in delays[8:])


def test_the_index_entry_carries_spec_notify_as_secret_references() -> None:
    body: dict[str, Any] = {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": "BudgetPolicy",
        "metadata": {"name": "daily", "namespace": "tenant-a", "uid": "u-1"},
        "spec": {
            "scope": {"kind": "Key", "name": "alice"},
            "limitUSD": 10,
            "onExceeded": {"action": "downgrade", "toCostTier": "low"},
            "notify": {
                "webhookSecretRef": {"name": "alerts", "key": "url"},
                "signingSecretRef": {"name": "alerts", "key": "signing"},
                "format": "slack",
            },
        },
    }
    entry = PolicyEntry.from_body(body)
    assert entry is not None
    assert entry.notify == NotifyTarget(("alerts", "url"), ("alerts", "signing"), "slack")
    assert dict(entry.scope) == {"kind": "Key", "name": "alice"}
    assert entry.on_exceeded == "downgrade"
    del body["spec"]["notify"]
    assert PolicyEntry.from_body(body).notify is None  # type: ignore[union-attr]
