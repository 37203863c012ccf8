"""`tenantctl audit verify|export|erase`: what a compliance officer runs against a tenant's trail.

They connect with the admin DSN ($TENANTGW_POSTGRES_DSN, or --dsn): the trail's data keys and
the pruning anchors are the admin's. `verify` checks the signatures with the public key from the
operator's ConfigMap `tenantgw-audit-signing` (or --public-key, base64 of the raw Ed25519 key).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, TextIO

import psycopg

from tenantgw.api.audit_trail import (
    PUBLIC_KEY_FIELD,
    SIGNING_PUBLIC,
    TrailVerifier,
    Verdict,
    decrypt_body,
    key_id,
    unb64,
)
from tenantgw.tenancy.audit import AuditAdmin

CSV_FIELDS = (
    "seq", "ts", "kind", "request_id", "key", "route", "requested_model", "alias",
    "served_alias", "provider", "provider_model", "region", "decision", "status", "reason",
    "outcome", "pii", "pii_response", "downgraded_from", "fallback_from", "failed_attempts",
    "tokens", "cost_usd", "request_digest", "body", "hash",
)  # fmt: skip


def admin_for(dsn: str) -> AuditAdmin:
    """An AuditAdmin on plain connections to `dsn` (one per operation)."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Any]:
        conn = await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name="tenantctl-audit"
        )
        try:
            yield conn
        finally:
            await conn.close()

    return AuditAdmin(connect, note=lambda tenant, what: None)


def public_keys_from(raw: list[str]) -> dict[str, bytes]:
    keys = [unb64(value) for value in raw]
    return {key_id(k): k for k in keys}


def public_key_from_cluster(api: Any, namespace: str) -> dict[str, bytes]:
    """The operator's checkpoint public key(s), from its ConfigMap (readable, not secret)."""
    from kubernetes import client

    cm = client.CoreV1Api(api).read_namespaced_config_map(SIGNING_PUBLIC, namespace)
    values = [v for k, v in (cm.data or {}).items() if k.startswith(PUBLIC_KEY_FIELD)]
    return public_keys_from(values)


async def verify(admin: AuditAdmin, tenant: str, public_keys: Mapping[str, bytes]) -> Verdict:
    """Check the whole chain against the signed checkpoints, in constant memory: records come
    from a server-side cursor in batches and only the checkpoints are held."""
    verifier = TrailVerifier(tenant, await admin.checkpoints(tenant), public_keys)
    async with contextlib.aclosing(admin.chain(tenant)) as rows:
        async for row in rows:
            if not verifier.add(row):
                break
    return verifier.finish()


async def export(
    admin: AuditAdmin,
    tenant: str,
    out: TextIO,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: str = "jsonl",
    bodies: bool = False,
) -> int:
    """Write records in [since, until) to `out` as JSON lines or CSV, streamed; how many.

    With `bodies`, each record's body is decrypted with its data key; a body whose key is not
    in the trail's data keys, read again after the record was, is reported `erased` (its key
    was erased). A record written while the export runs is decrypted like the others."""
    keys = await admin.data_keys(tenant) if bodies else {}
    reread: set[str] = set()
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
    count = 0
    async for _seq, content, kid, body, event_id, hash_ in admin.records(tenant, since, until):
        record: dict[str, Any] = json.loads(content)
        record["hash"] = hash_.hex()
        if bodies and body is not None:
            kid = kid or ""
            if kid not in keys and kid not in reread:
                # A writer's first body under a new data key, appended after the keys were
                # read: read them again (once per key) before calling the body erased.
                reread.add(kid)
                keys = await admin.data_keys(tenant)
            dek = keys.get(kid)
            record["body"] = (
                json.loads(decrypt_body(dek, body, event_id)) if dek is not None else "erased"
            )
        if writer is not None:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in record.items()}
            )
        else:
            out.write(json.dumps(record, sort_keys=True) + "\n")
        count += 1
    return count


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(
            f"{value!r}: expected an ISO 8601 time, e.g. 2025-01-31T00:00:00+00:00"
        ) from None


def run(args: Any, api_factory: Any) -> int:
    """Dispatch `tenantctl audit ...` (args from main's parser)."""
    import os

    dsn = args.dsn or os.environ.get("TENANTGW_POSTGRES_DSN")
    if not dsn:
        raise SystemExit("tenantctl audit needs the admin DSN: --dsn or $TENANTGW_POSTGRES_DSN")
    admin = admin_for(dsn)
    if args.audit_command == "verify":
        if args.public_key:
            keys = public_keys_from(args.public_key)
        else:
            keys = public_key_from_cluster(api_factory(), args.operator_namespace)
        verdict = asyncio.run(verify(admin, args.tenant, keys))
        span = f"records {verdict.first_seq}..{verdict.last_seq}" if verdict.records else "empty"
        for note in verdict.notes:
            print(f"note: {note}")
        if verdict.ok:
            print(
                f"OK: audit trail of {args.tenant} verifies ({verdict.records} records, {span}; "
                f"{verdict.checkpoints} signed checkpoints)"
            )
            return 0
        print(f"FAILED: first bad record {verdict.first_bad}: {verdict.problem}", file=sys.stderr)
        return 1
    if args.audit_command == "export":
        out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
        try:
            n = asyncio.run(
                export(
                    admin,
                    args.tenant,
                    out,
                    since=_when(args.since),
                    until=_when(args.until),
                    fmt=args.format,
                    bodies=args.bodies,
                )
            )
        finally:
            if out is not sys.stdout:
                out.close()
        print(f"{n} records exported", file=sys.stderr)
        return 0
    if args.audit_command == "erase":
        erased = asyncio.run(admin.erase(args.tenant, args.key))
        print(
            f"erased {erased} data keys of key {args.key}: its stored bodies are unreadable; "
            "the chain still verifies"
        )
        return 0
    raise SystemExit(f"unknown audit command {args.audit_command}")


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify, export or erase a tenant's audit trail")
    audit.add_argument("--dsn", default=None, help="admin DSN (default $TENANTGW_POSTGRES_DSN)")
    cmds = audit.add_subparsers(dest="audit_command", required=True)
    v = cmds.add_parser("verify", help="check the hash chain and the signed checkpoints")
    v.add_argument("tenant")
    v.add_argument("--public-key", action="append", default=[], help="base64 Ed25519 key")
    v.add_argument("--operator-namespace", default="tenantgw-system")
    e = cmds.add_parser("export", help="stream records as JSON lines or CSV")
    e.add_argument("tenant")
    e.add_argument("--since", default=None)
    e.add_argument("--until", default=None)
    e.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    e.add_argument("--bodies", action="store_true", help="decrypt stored bodies")
    e.add_argument("--output", "-o", default="-")
    r = cmds.add_parser("erase", help="destroy a key's data keys (GDPR erasure)")
    r.add_argument("tenant")
    r.add_argument("--key", required=True)


_ = io  # csv writes to any text stream
