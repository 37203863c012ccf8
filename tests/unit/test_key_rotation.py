"""Key rotation decisions, without waiting days."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from tenantgw.reconcile.material import next_key_state

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
GRACE = timedelta(hours=24)


def test_a_missing_key_is_generated_and_stamped() -> None:
    value, state, rotated = next_key_state(None, {}, None, 30, GRACE, NOW)
    assert value.startswith("sk-tgw-")
    assert len(value) > 40
    assert state.issued_at == NOW
    assert not rotated


def test_a_young_key_is_kept() -> None:
    notes = {"tenantgw.io/issued-at": "2026-11-20T00:00:00Z"}
    value, state, rotated = next_key_state("sk-tgw-old", notes, None, 30, GRACE, NOW)
    assert value == "sk-tgw-old"
    assert state.issued_at == datetime(2026, 11, 20, tzinfo=UTC)
    assert not rotated


def test_a_key_past_rotate_after_days_is_replaced_and_the_old_one_gets_a_grace_period() -> None:
    notes = {"tenantgw.io/issued-at": "2026-10-01T00:00:00Z"}
    value, state, rotated = next_key_state("sk-tgw-old", notes, None, 30, GRACE, NOW)
    assert rotated
    assert value != "sk-tgw-old"
    assert state.issued_at == NOW
    assert state.previous_sha256 == hashlib.sha256(b"sk-tgw-old").hexdigest()
    assert state.previous_valid_until == NOW + GRACE


def test_the_previous_value_is_retired_when_its_grace_period_ends() -> None:
    notes = {
        "tenantgw.io/issued-at": "2026-11-26T00:00:00Z",
        "tenantgw.io/previous-sha256": "ab" * 32,
        "tenantgw.io/previous-valid-until": "2026-11-27T00:00:00Z",
    }
    _, state, rotated = next_key_state("sk-tgw-new", notes, None, 30, GRACE, NOW)
    assert not rotated
    assert state.previous_sha256 is None
    assert state.previous_valid_until is None


def test_a_key_without_rotate_after_days_never_rotates() -> None:
    notes = {"tenantgw.io/issued-at": "2000-01-01T00:00:00Z"}
    value, _, rotated = next_key_state("sk-tgw-old", notes, None, None, GRACE, NOW)
    assert value == "sk-tgw-old"
    assert not rotated
