"""The PII benchmark's matching rule (e2e/bench/pii_bench.py), without presidio installed."""

from __future__ import annotations

import pytest

from e2e.bench.pii_bench import Entity, Sample, score

pytestmark = pytest.mark.unit

TEXT = "call 0712 345 678 or mail a@b.io"
SAMPLE = Sample(
    TEXT,
    (
        Entity("PHONE_NUMBER", 5, 17, "0712 345 678"),
        Entity("EMAIL_ADDRESS", 26, 32, "a@b.io"),
    ),
)


def test_overlap_finds_and_partial_cover_does_not_redact() -> None:
    # the phone overlapped but only half covered; the e-mail missed; one wrong phone span
    predictions = [[("PHONE_NUMBER", 10, 17), ("PHONE_NUMBER", 0, 4)]]
    result = score([SAMPLE], predictions, ["PHONE_NUMBER", "EMAIL_ADDRESS"])
    phone, email = result["PHONE_NUMBER"], result["EMAIL_ADDRESS"]
    assert (phone.gold, phone.found, phone.redacted) == (1, 1, 0)
    assert (phone.predicted, phone.correct, phone.false_positives) == (2, 1, ["call"])
    assert phone.recall == 1.0
    assert phone.precision == 0.5
    assert (email.found, email.misses, email.precision) == (0, ["a@b.io"], None)


def test_a_span_of_another_type_redacts_but_does_not_count_as_found() -> None:
    predictions = [[("CREDIT_CARD", 5, 17), ("EMAIL_ADDRESS", 26, 32)]]
    result = score([SAMPLE], predictions, ["PHONE_NUMBER", "EMAIL_ADDRESS"])
    assert (result["PHONE_NUMBER"].found, result["PHONE_NUMBER"].redacted) == (0, 1)
    assert result["EMAIL_ADDRESS"].redacted_share == 1.0
