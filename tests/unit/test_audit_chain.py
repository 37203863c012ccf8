"""The audit trail's pure contract: the chain, verification's verdicts, control-plane records."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tenantgw.api.audit_trail import (
    GENESIS,
    ChainRow,
    Checkpoint,
    TrailVerifier,
    audit_schema,
    canonical,
    checkpoint_message,
    decrypt_body,
    encrypt_body,
    generate_signing_key,
    key_id,
    new_data_key,
    record_hash,
    sign,
    verify_trail,
)
from tenantgw.reconcile.audit import change_record
from tenantgw.tenancy.naming import schema_name

pytestmark = pytest.mark.unit
T = "team-a"


def _chain(n: int) -> list[ChainRow]:
    rows, prev = [], GENESIS
    for seq in range(1, n + 1):
        content = canonical({"seq": seq, "key": "alice"})
        body = f"body {seq}".encode()
        h = record_hash(prev, content, body)
        rows.append(ChainRow(seq, content, hashlib.sha256(body).digest(), prev, h))
        prev = h
    return rows


def _checkpoint(
    private: bytes, public: bytes, row: ChainRow, kind: str = "checkpoint"
) -> Checkpoint:
    ts = datetime(2025, 1, 1, tzinfo=UTC)
    sig = sign(private, checkpoint_message(T, kind, row.seq, row.hash, ts))
    return Checkpoint(kind, row.seq, row.hash, ts, key_id(public), sig)


def test_a_clean_chain_verifies_and_each_tampering_names_its_record() -> None:
    private, public = generate_signing_key()
    keys = {key_id(public): public}
    rows = _chain(6)
    cps = [_checkpoint(private, public, rows[5])]
    assert verify_trail(T, rows, cps, keys).ok
    edited = [*rows[:2], dataclasses.replace(rows[2], content=canonical({"seq": 3})), *rows[3:]]
    assert verify_trail(T, edited, cps, keys).first_bad == 3
    assert verify_trail(T, rows[:3] + rows[4:], cps, keys).first_bad == 4
    truncated = verify_trail(T, rows[:4], cps, keys)
    assert truncated.first_bad == 5
    assert "truncated" in truncated.problem
    swapped = [rows[0], rows[2], rows[1], *rows[3:]]
    assert not verify_trail(T, swapped, cps, keys).ok
    forged = dataclasses.replace(cps[0], seq=5)
    assert "bad signature" in verify_trail(T, rows, [forged], keys).problem


def test_verification_reads_records_one_at_a_time_and_stops_at_the_first_bad_one() -> None:
    """Verify holds no records: it consumes a stream, and stops reading where the trail breaks."""
    private, public = generate_signing_key()
    keys = {key_id(public): public}
    rows = _chain(50)
    read: list[int] = []

    def stream(rows: list[ChainRow]) -> Iterator[ChainRow]:
        for row in rows:
            read.append(row.seq)
            yield row

    verdict = verify_trail(T, stream(rows), [_checkpoint(private, public, rows[-1])], keys)
    assert (verdict.ok, verdict.records, read[-1]) == (True, 50, 50)
    read.clear()
    edited = [*rows[:9], dataclasses.replace(rows[9], content=canonical({"seq": 10})), *rows[10:]]
    assert verify_trail(T, stream(edited), [], keys).first_bad == 10
    assert read == list(range(1, 11))
    # The incremental form gives the same verdicts, record by record.
    verifier = TrailVerifier(T, [_checkpoint(private, public, rows[-1])], keys)
    assert all(verifier.add(row) for row in rows[:40])
    truncated = verifier.finish()
    assert (truncated.first_bad, "truncated" in truncated.problem) == (41, True)


def test_an_anchor_lets_pruned_records_go() -> None:
    private, public = generate_signing_key()
    rows = _chain(6)
    anchor = _checkpoint(private, public, rows[2], "anchor")
    verdict = verify_trail(T, rows[3:], [anchor], {key_id(public): public})
    assert verdict.ok
    assert verdict.first_seq == 4
    assert not verify_trail(T, rows[3:], [], {key_id(public): public}).ok


def test_bodies_decrypt_only_with_their_key_and_event() -> None:
    key = new_data_key()
    blob = encrypt_body(key, b"secret", "request:1")
    assert decrypt_body(key, blob, "request:1") == b"secret"
    with pytest.raises(Exception):  # noqa: B017, PT011
        decrypt_body(key, blob, "request:2")
    with pytest.raises(Exception):  # noqa: B017, PT011
        decrypt_body(new_data_key(), blob, "request:1")


def test_the_audit_schema_never_collides_with_a_tenant_schema() -> None:
    assert audit_schema("a-b") == "ta_a_b" != schema_name("a-b")
    assert audit_schema("x") != schema_name("a-x")


def test_a_control_record_names_changes_and_keys_never_secrets() -> None:
    body = {
        "metadata": {"generation": 4},
        "spec": {"keys": [{"name": "alice", "rpm": 10}], "limits": {"rpm": 100}},
        "status": {"keys": [{"name": "bob", "secretName": "gateway-key-bob"}]},
    }
    objects = [
        {"kind": "ConfigMap", "metadata": {"name": "gateway-config"}, "data": {"a": "b"}},
        {"kind": "Secret", "metadata": {"name": "gateway"}, "data": {"key": "c2VjcmV0"}},
    ]
    status = {"keys": [{"name": "alice", "secretName": "gateway-key-alice"}]}
    record = change_record(body, objects, ["Secret/gateway-key-alice"], [], status)
    assert record["generation"] == 4
    assert record["keys_issued"] == ["alice"]
    assert record["keys_retired"] == ["bob"]
    assert record["config_digest"]
    assert "c2VjcmV0" not in json.dumps(record)


def test_a_control_record_names_a_rotated_key() -> None:
    """A rotation keeps the key's Secret and issues a new value: a new issuedAt in status."""
    key = {"name": "alice", "secretName": "gateway-key-alice", "issuedAt": "2025-01-01T00:00:00Z"}
    body = {"metadata": {"generation": 2}, "spec": {}, "status": {"keys": [key]}}
    same = change_record(body, [], ["Secret/gateway-key-alice"], [], {"keys": [key]})
    assert (same["keys_issued"], same["keys_rotated"], same["keys_retired"]) == ([], [], [])
    rotated = {**key, "issuedAt": "2025-02-01T00:00:00Z"}
    record = change_record(body, [], ["Secret/gateway-key-alice"], [], {"keys": [rotated]})
    assert (record["keys_issued"], record["keys_rotated"]) == ([], ["alice"])
