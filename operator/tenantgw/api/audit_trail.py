"""The audit trail's contract: names, the hash chain, body encryption, signed checkpoints.

Pure and shared: the gateway appends request records, the operator appends control-plane
records, signs checkpoints and prunes, `tenantctl audit` verifies; all three hash, encrypt
and sign with the functions here, so there is one definition of a valid trail.

Where: schema `ta_<tenant>` (next to the tenant's own `t_<tenant>`), created and owned by the
operator's admin role. The tenant role gets USAGE on it, INSERT and SELECT on `records`, INSERT
and SELECT of `key_id, key_name` on `data_keys`, SELECT on `checkpoints`, and UPDATE of one
column of the one-row `write_lock` (what `SELECT ... FOR UPDATE` needs). It owns nothing there,
so it can neither edit, delete, truncate nor drop a record (an owner of the schema or the table
could, whatever the grants say: that is why the trail is not in `t_<tenant>`).

The chain: records are numbered `seq` = 1, 2, 3, ... without gaps, in the order they were
appended; record n stores `content` (canonical JSON, which names `seq`), `body` (ciphertext or
NULL), `prev_hash` = hash of record n-1 (32 zero bytes for record 1) and
`hash = SHA-256(prev_hash || SHA-256(content) || SHA-256(body or b""))`. Writers serialise on
the row lock of `write_lock` (a table lock would need privileges the tenant must not have; an
advisory lock is database-wide, so another tenant could hold it), read the head, and number
their batch after it: one chain per tenant, well-defined whichever replica or worker writes.

Bodies are encrypted with AES-256-GCM under a data key per tenant key (`data_keys`, the
authenticated data is the record's event id). The chain hashes the ciphertext, so destroying a
data key (`tenantctl audit erase --key NAME`, a GDPR erasure) makes those bodies unreadable and
leaves every hash valid.

Checkpoints: the operator signs `(tenant, kind, seq, hash, ts)` with its Ed25519 key (a Secret
in its own namespace) and stores them in `checkpoints`, which tenant credentials cannot write.
Kind `checkpoint` attests the chain head; kind `anchor` marks a retention cut: records up to
`seq` were pruned on purpose, and record `seq + 1` must link to `hash`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

SCHEMA_PREFIX = "ta_"
RECORDS = "records"
DATA_KEYS = "data_keys"
CHECKPOINTS = "checkpoints"
WRITE_LOCK = "write_lock"
GENESIS = bytes(32)
"""The `prev_hash` of the first record ever written."""
FORMAT_VERSION = 1

SIGNING_SECRET = "tenantgw-audit-signing"  # noqa: S105 (a Secret's name)
"""Secret (operator namespace) holding the Ed25519 private key, key `ed25519.key` (raw, base64)."""
SIGNING_PUBLIC = "tenantgw-audit-signing"
"""ConfigMap (operator namespace) holding the public key, key `ed25519.pub` (raw, base64)."""
PRIVATE_KEY_FIELD = "ed25519.key"
PUBLIC_KEY_FIELD = "ed25519.pub"

BodyMode = Literal["none", "redacted", "full"]
CheckpointKind = Literal["checkpoint", "anchor"]


def audit_schema(tenant: str) -> str:
    """Schema of a tenant's audit trail: `ta_<tenant>` with '-' → '_' (tenant names are DNS
    labels, so it never collides with a tenant schema `t_<name>`)."""
    return SCHEMA_PREFIX + tenant.replace("-", "_")


def canonical(content: Mapping[str, Any]) -> str:
    """The one text of a record's content that is hashed and stored (sorted keys, no spaces)."""
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def record_hash(prev_hash: bytes, content: str, body: bytes | None) -> bytes:
    """SHA-256(prev_hash || SHA-256(content) || SHA-256(body or b""))."""
    return chain_hash(prev_hash, content, hashlib.sha256(body or b"").digest())


def chain_hash(prev_hash: bytes, content: str, body_sha256: bytes) -> bytes:
    """`record_hash` from the body's SHA-256 (verification reads digests, not bodies)."""
    return hashlib.sha256(
        prev_hash + hashlib.sha256(content.encode()).digest() + body_sha256
    ).digest()


def digest(value: Any) -> str:
    """Hex SHA-256 of a JSON value's canonical text (the request digest of a record)."""
    return hashlib.sha256(canonical(value).encode()).hexdigest()


# --------------------------------------------------------------------------- bodies


def new_data_key() -> bytes:
    return os.urandom(32)


def encrypt_body(key: bytes, plaintext: bytes, event_id: str) -> bytes:
    """nonce (12 bytes) || AES-256-GCM ciphertext, bound to the record's event id."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, event_id.encode())


def decrypt_body(key: bytes, blob: bytes, event_id: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key).decrypt(blob[:12], blob[12:], event_id.encode())


# --------------------------------------------------------------------------- checkpoints


def checkpoint_message(tenant: str, kind: str, seq: int, hash_: bytes, ts: datetime) -> bytes:
    """What the operator signs: the tenant, the kind, the head and when."""
    return canonical(
        {"tenant": tenant, "kind": kind, "seq": seq, "hash": hash_.hex(), "ts": ts.isoformat()}
    ).encode()


def key_id(public_key: bytes) -> str:
    """A short name of a public key (in checkpoints, so a verifier knows which key signed)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def generate_signing_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair, (private, public), raw bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    private = Ed25519PrivateKey.generate()
    return (
        private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )


def public_key_of(private_key: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = Ed25519PrivateKey.from_private_bytes(private_key)
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(private_key: bytes, message: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(private_key).sign(message)


def signature_ok(public_key: bytes, message: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def unb64(value: str) -> bytes:
    return base64.b64decode(value.encode(), validate=True)


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class ChainRow:
    """One stored record, as verification reads it."""

    seq: int
    content: str
    body_sha256: bytes
    """SHA-256 of the stored body (of b"" when none)."""
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint or retention anchor."""

    kind: str
    seq: int
    hash: bytes
    ts: datetime
    key_id: str
    signature: bytes


@dataclass
class Verdict:
    """What `verify_trail` found: ok, or the first bad record and why."""

    ok: bool = True
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int = 0
    first_bad: int | None = None
    """The seq of the first record that is not what the chain or a checkpoint says."""
    problem: str = ""
    notes: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str) -> Verdict:
        if self.ok:
            self.ok, self.first_bad, self.problem = False, seq, problem
        return self


def _checkpoints_ok(
    tenant: str, checkpoints: Iterable[Checkpoint], public_keys: Mapping[str, bytes], v: Verdict
) -> list[Checkpoint]:
    good: list[Checkpoint] = []
    for cp in checkpoints:
        key = public_keys.get(cp.key_id)
        message = checkpoint_message(tenant, cp.kind, cp.seq, cp.hash, cp.ts)
        if key is None:
            v.fail(cp.seq, f"{cp.kind} at seq {cp.seq} is signed by unknown key {cp.key_id}")
        elif not signature_ok(key, message, cp.signature):
            v.fail(cp.seq, f"{cp.kind} at seq {cp.seq} has a bad signature (forged or edited)")
        else:
            good.append(cp)
    return good


class TrailVerifier:
    """Checks a chain one record at a time, in constant memory (what `verify_trail` does for
    an iterable; `tenantctl audit verify` feeds it from a server-side cursor).

    `add(row)` for each record in seq order while it returns True (False: the first bad record
    is found, stop reading), then `finish()` for the verdict. Only the checkpoints are held.
    """

    def __init__(
        self, tenant: str, checkpoints: Iterable[Checkpoint], public_keys: Mapping[str, bytes]
    ) -> None:
        v = self.verdict = Verdict()
        signed = _checkpoints_ok(tenant, checkpoints, public_keys, v)
        v.checkpoints = len(signed)
        anchors = [cp for cp in signed if cp.kind == "anchor"]
        anchor = max(anchors, key=lambda cp: cp.seq) if anchors else None
        self._expected = anchor.seq + 1 if anchor else 1
        self._prev = anchor.hash if anchor else GENESIS
        self._heads = {cp.seq: cp for cp in signed if cp.kind == "checkpoint"}
        if anchor is not None:
            v.notes.append(
                f"records up to seq {anchor.seq} were pruned by retention (signed anchor)"
            )
        self._last_good_checkpoint = anchor.seq if anchor else 0
        self._done = not v.ok

    def _fail(self, seq: int | None, problem: str) -> bool:
        self.verdict.fail(seq, problem)
        self._done = True
        return False

    def add(self, row: ChainRow) -> bool:
        """Check the next record; False once the trail is known to be bad."""
        if self._done:
            return False
        expected, prev = self._expected, self._prev
        if row.seq < expected:
            return self._fail(row.seq, f"record {row.seq} is out of order (expected {expected})")
        if row.seq > expected:
            missing = (
                f"record {expected} is missing"
                if row.seq == expected + 1
                else f"records {expected}..{row.seq - 1} are missing"
            )
            return self._fail(expected, f"{missing} (deleted); the trail resumes at {row.seq}")
        try:
            named = json.loads(row.content).get("seq")
        except ValueError:
            return self._fail(row.seq, f"record {row.seq}: content is not JSON (edited)")
        if named != row.seq:
            return self._fail(
                row.seq, f"record {row.seq} holds the content of record {named} (reordered)"
            )
        if row.prev_hash != prev:
            return self._fail(
                row.seq,
                f"record {row.seq} does not link to record {row.seq - 1} "
                "(the record before it was edited, deleted or reordered)",
            )
        computed = chain_hash(prev, row.content, row.body_sha256)
        if computed != row.hash:
            return self._fail(row.seq, f"record {row.seq} was edited (its hash does not match)")
        head = self._heads.get(row.seq)
        if head is not None:
            if head.hash != computed:
                return self._fail(
                    self._last_good_checkpoint + 1,
                    f"the chain up to record {row.seq} differs from the checkpoint signed at "
                    f"{head.ts.isoformat()}: a record after {self._last_good_checkpoint} was "
                    "rewritten and the chain recomputed",
                )
            self._last_good_checkpoint = row.seq
        v = self.verdict
        v.records += 1
        v.first_seq = row.seq if v.first_seq is None else v.first_seq
        v.last_seq = row.seq
        self._prev, self._expected = computed, row.seq + 1
        return True

    def finish(self) -> Verdict:
        """The verdict, once every record was added (or `add` returned False)."""
        if self._done:
            return self.verdict
        self._done = True
        beyond = [cp for cp in self._heads.values() if cp.seq >= self._expected]
        if beyond:
            cp = max(beyond, key=lambda c: c.seq)
            self.verdict.fail(
                self._expected,
                f"the trail ends at record {self._expected - 1} but a checkpoint signed at "
                f"{cp.ts.isoformat()} attests {cp.seq} records: truncated",
            )
        return self.verdict


def verify_trail(
    tenant: str,
    rows: Iterable[ChainRow],
    checkpoints: Iterable[Checkpoint],
    public_keys: Mapping[str, bytes],
) -> Verdict:
    """Check the chain of `rows` (in seq order, streamed) against the signed checkpoints.

    Names the first bad record: edited (its hash or a later link breaks), deleted (a gap in
    seq), reordered (a record whose content names another seq), truncated after a checkpoint
    (the trail ends before a signed head), or rewritten with recomputed hashes (the chain holds
    but disagrees with a signed checkpoint).
    """
    verifier = TrailVerifier(tenant, checkpoints, public_keys)
    for row in rows:
        if not verifier.add(row):
            break
    return verifier.finish()


CHAIN_COLUMNS = "seq, content, sha256(coalesce(body, ''::bytea)), prev_hash, hash"
"""What verification selects: the body's digest is computed by the server."""


def parse_rows(raw: Iterable[tuple[Any, ...]]) -> Iterator[ChainRow]:
    """ChainRows from `SELECT {CHAIN_COLUMNS}` rows."""
    for seq, content, body_sha256, prev_hash, hash_ in raw:
        yield ChainRow(int(seq), content, bytes(body_sha256), bytes(prev_hash), bytes(hash_))


# --------------------------------------------------------------------------- appending


@dataclass(frozen=True)
class Entry:
    """A record to append: its content without `seq` (the writer numbers it), and its body."""

    event_id: str
    ts: datetime
    kind: str
    """request | control"""
    key_name: str | None
    content: Mapping[str, Any]
    body: bytes | None = None
    """Ciphertext (`encrypt_body`), or None."""
    body_key_id: str | None = None


def _qualified(schema: str, table: str) -> str:
    # Schema names come from `audit_schema()` of a validated DNS label: [a-z0-9_] only.
    if not schema.replace("_", "").isalnum() or not schema.islower():
        raise ValueError(f"not an audit schema name: {schema!r}")
    return f'"{schema}"."{table}"'


def insert_sql(schema: str) -> str:
    return (
        f"INSERT INTO {_qualified(schema, RECORDS)} "  # noqa: S608 (identifiers checked above)
        "(seq, event_id, ts, kind, key_name, content, body, body_key_id, prev_hash, hash) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    )


async def append(conn: Any, schema: str, entries: Iterable[Entry]) -> int:
    """Append entries to the chain in one transaction; returns how many were new.

    `conn` is a psycopg AsyncConnection (autocommit). Writers serialise on the row lock of
    `write_lock`, so replicas and workers extend one chain; an entry whose event id the trail
    already holds (a replay from the spool) is skipped.
    """
    batch = list(entries)
    if not batch:
        return 0
    records = _qualified(schema, RECORDS)
    async with conn.transaction():
        await conn.execute(f"SELECT 1 FROM {_qualified(schema, WRITE_LOCK)} FOR UPDATE")  # noqa: S608
        cur = await conn.execute(
            f"SELECT event_id FROM {records} WHERE event_id = ANY(%s)",  # noqa: S608
            [[e.event_id for e in batch]],
        )
        seen = {row[0] for row in await cur.fetchall()}
        cur = await conn.execute(
            f"SELECT seq, hash FROM {records} ORDER BY seq DESC LIMIT 1"  # noqa: S608
        )
        head = await cur.fetchone()
        seq, prev = (int(head[0]), bytes(head[1])) if head else (0, GENESIS)
        rows = []
        for entry in batch:
            if entry.event_id in seen:
                continue
            seen.add(entry.event_id)
            seq += 1
            content = canonical({**entry.content, "seq": seq, "v": FORMAT_VERSION})
            hash_ = record_hash(prev, content, entry.body)
            rows.append(
                (
                    seq,
                    entry.event_id,
                    entry.ts,
                    entry.kind,
                    entry.key_name,
                    content,
                    entry.body,
                    entry.body_key_id,
                    prev,
                    hash_,
                )
            )
            prev = hash_
        if rows:
            async with conn.cursor() as c:
                await c.executemany(insert_sql(schema), rows)
    return len(rows)
