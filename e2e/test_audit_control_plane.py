"""The audit trail with the running operator: control-plane records, signed checkpoints on the
timer, `tenantctl audit` as a compliance officer runs it, and what a tenant principal cannot do.

User story: a compliance officer answers "who could call which model with which limits when"
from the trail the operator writes for every change it applies, proves with `tenantctl audit
verify` that nothing was rewritten since the operator signed it, exports it for the SIEM and
erases one key's bodies on a GDPR request. A member of the team (its admins and viewers from
`spec.access`, or anyone holding the gateway's own PostgreSQL credentials) can neither reach the
operator's signing key, nor rewrite the public key, nor forge, edit or delete what was written.

The operator is the session's (its ServiceAccount, 5 s resync, checkpoints every 5 s); the
commands run as subprocesses (`python -m tenantgw.cli.main audit ...`) with the admin DSN.
"""

# ruff: noqa: S608  (SQL names the throwaway tenant's audit schema)
from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import io
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import errors as pgerr
from psycopg.conninfo import conninfo_to_dict

from e2e.fixtures import ROOT, Cluster, Services
from e2e.helpers import K8s, alias_body, eventually, secret_body, tenant_body
from e2e.operator_fixture import OPERATOR_NS, RunningOperator
from tenantgw.api.audit_trail import (
    SIGNING_PUBLIC,
    SIGNING_SECRET,
    audit_schema,
    b64,
    decrypt_body,
    generate_signing_key,
)
from tenantgw.cli.audit import CSV_FIELDS

pytestmark = pytest.mark.e2e

TENANT_API = "tenantgw.io/v1alpha1"
SETTLE = 7.0
"""Seconds after a change during which no second record may appear (more than one resync)."""


@pytest.fixture(scope="module")
def k8s(kube: Any) -> K8s:
    return K8s(kube)


@dataclass(frozen=True)
class Principal:
    user: str
    group: str

    def flags(self) -> list[str]:
        return [f"--as={self.user}", f"--as-group={self.group}"]


@dataclass(frozen=True)
class Team:
    name: str
    ns: str
    admin: Principal
    viewer: Principal
    admin_dsn: str

    @property
    def schema(self) -> str:
        return audit_schema(self.name)

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            cur = conn.execute(statement.encode(), params)
            return cur.fetchall() if cur.description else []

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        where = "WHERE kind = %s" if kind else ""
        rows = self.sql(
            f"SELECT content FROM {self.schema}.records {where} ORDER BY seq",
            *([kind] if kind else []),
        )
        return [json.loads(r[0]) for r in rows]

    def head(self) -> int:
        return int(self.sql(f"SELECT coalesce(max(seq), 0) FROM {self.schema}.records")[0][0])

    def signed_head(self) -> int:
        return int(
            self.sql(
                f"SELECT coalesce(max(seq), 0) FROM {self.schema}.checkpoints "
                "WHERE kind = 'checkpoint'"
            )[0][0]
        )


def _spec(tag: str, **overrides: Any) -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": "sim",
                "type": "openai-compatible",
                "apiBase": "http://127.0.0.1:9/v1",  # no traffic here
                "region": "us-east-1",
                "credentialsSecretRef": {"name": "sim", "key": "apiKey"},
            }
        ],
        "catalog": [{"provider": "sim", "model": "*", "costTier": "medium"}],
        "keys": [{"name": "alice", "rotateAfterDays": 30}],
        "limits": {"rpm": 100},
        "routing": {"defaultAlias": "fast-code"},
        "gateway": {"replicas": 1},
        "compliance": {"audit": {"enabled": True, "bodies": "redacted", "retentionDays": 365}},
        "access": {
            "admins": [{"kind": "Group", "name": f"{tag}-admins"}],
            "viewers": [{"kind": "Group", "name": f"{tag}-viewers"}],
        },
        **overrides,
    }


def _alias(ns: str, name: str) -> dict[str, Any]:
    return alias_body(
        ns, name, aliases=[f"{name}-model"],
        targets=[{"provider": "sim", "model": "qwen3-coder", "weight": 1}],
    )  # fmt: skip


@pytest.fixture(scope="module")
def team(k8s: K8s, operator: RunningOperator, services: Services) -> Iterator[Team]:
    """A Ready, audited tenant whose spec.access names an admin group and a viewer group."""
    tag = f"e2e-aud-{uuid.uuid4().hex[:6]}"
    ns = f"tenant-{tag}"
    k8s.apply(tenant_body(tag, **_spec(tag)))
    eventually(lambda: k8s.namespace_exists(ns), 30, f"namespace {ns}")
    k8s.apply(secret_body(ns, "sim", {"apiKey": "sim-provider-credential-" + tag}))
    k8s.apply(_alias(ns, "fast-code"))
    k8s.wait_condition(lambda: k8s.tenant(tag), "Ready", "True", timeout=60)
    yield Team(
        name=tag,
        ns=ns,
        admin=Principal(f"{tag}-alice", f"{tag}-admins"),
        viewer=Principal(f"{tag}-victor", f"{tag}-viewers"),
        admin_dsn=services.postgres_dsn,
    )
    k8s.delete(TENANT_API, "Tenant", tag)


def tenantctl(
    cluster: Cluster, services: Services, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`tenantctl ...` as a compliance officer runs it: the admin DSN and kubeconfig."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}",
        "TENANTGW_POSTGRES_DSN": services.postgres_dsn,
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tenantgw.cli.main", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, f"tenantctl {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


def _settled(k8s: K8s, team: Team) -> None:
    def observed() -> bool:
        tenant = k8s.tenant(team.name)
        cond = k8s.condition(tenant, "Ready") or {}
        return bool(
            tenant.get("status", {}).get("observedGeneration") == tenant["metadata"]["generation"]
            and cond.get("status") == "True"
        )

    eventually(observed, 60, f"Tenant {team.name} Ready at its generation")


def _one_new_record(k8s: K8s, team: Team, before: int, what: str) -> dict[str, Any]:
    """The change left a control record, and exactly one: none from the passes after it."""
    eventually(lambda: len(team.records("control")) > before, 60, f"a control record for {what}")
    _settled(k8s, team)
    time.sleep(SETTLE)
    new = team.records("control")[before:]
    assert len(new) == 1, f"{what}: {len(new)} control records: {json.dumps(new, indent=1)}"
    return new[0]


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, str):
        yield value


def _secret_values(k8s: K8s, ns: str) -> set[str]:
    """Every value of every Secret in the tenant namespace (keys, master key, DSN and its
    password, Redis URL, key hashes, provider credential)."""
    values = set()
    for secret in k8s.core.list_namespaced_secret(ns).items:
        for raw in (secret.data or {}).values():
            value = base64.b64decode(raw).decode(errors="replace")
            values.add(value)
            if "://" in value:
                values.add(urlsplit(value).password or "")
            with contextlib.suppress(ValueError):
                values.update(_leaves(json.loads(value)))
    # Names and times are not secret (a key's name is in the record on purpose).
    return {v for v in values if len(v) >= 16 and not v[:4].isdigit()}


# ----------------------------------------------------------------------------- control plane


def test_each_applied_change_is_one_control_record_naming_it_and_never_a_secret(
    k8s: K8s, team: Team
) -> None:
    _settled(k8s, team)
    eventually(lambda: team.records("control"), 30, "the creation's control record")
    # Idle resyncs (every 5 s) write nothing.
    idle = len(team.records("control"))
    time.sleep(2 * SETTLE)
    assert len(team.records("control")) == idle, "an idle resync wrote a control record"

    # An alias added: the rendered config changed.
    before = len(team.records("control"))
    digest = team.records("control")[-1]["config_digest"]
    k8s.apply(_alias(team.ns, "reasoning"))
    record = _one_new_record(k8s, team, before, "ModelAlias reasoning added")
    assert any(a.startswith("ConfigMap") and "gateway-config" in a for a in record["applied"])
    assert record["config_digest"] != digest
    assert (record["keys_issued"], record["keys_rotated"], record["keys_retired"]) == ([], [], [])

    # A key added: issued, by name, with its limits.
    before = len(team.records("control"))
    keys = [{"name": "alice", "rotateAfterDays": 30}, {"name": "bob", "rpm": 7}]
    k8s.apply(tenant_body(team.name, **_spec(team.name, keys=keys)))
    record = _one_new_record(k8s, team, before, "key bob added")
    assert record["keys_issued"] == ["bob"]
    assert {"name": "bob", "rpm": 7} in record["key_limits"]
    assert record["generation"] == k8s.tenant(team.name)["metadata"]["generation"]

    # A limit changed.
    before = len(team.records("control"))
    k8s.apply(tenant_body(team.name, **_spec(team.name, keys=keys, limits={"rpm": 250})))
    record = _one_new_record(k8s, team, before, "spec.limits.rpm 100 -> 250")
    assert record["limits"] == {"rpm": 250}
    assert record["keys_issued"] == []

    # A key rotated: alice was issued long ago as far as the operator can tell.
    old_alice = k8s.secret_value(team.ns, "gateway-key-alice", "apiKey")
    backdated = {"metadata": {"annotations": {"tenantgw.io/issued-at": "2020-01-01T00:00:00Z"}}}

    def rotated() -> bool:
        if k8s.secret_value(team.ns, "gateway-key-alice", "apiKey") != old_alice:
            return True
        k8s.core.patch_namespaced_secret("gateway-key-alice", team.ns, backdated)
        return False

    eventually(rotated, 60, "a new value of key alice")
    eventually(
        lambda: [r for r in team.records("control") if r["keys_rotated"]], 30, "a rotation record"
    )
    _settled(k8s, team)
    time.sleep(SETTLE)
    rotations = [r for r in team.records("control") if r["keys_rotated"]]
    assert [r["keys_rotated"] for r in rotations] == [["alice"]]

    # Never a secret value: no key (old or new), master key, DSN password or provider key.
    trail = json.dumps(team.records())
    leaked = [v for v in _secret_values(k8s, team.ns) | {old_alice} if v in trail]
    assert leaked == []
    # And every record is one of the operator's: no request was made.
    assert {r["kind"] for r in team.records()} == {"control"}


def test_the_operator_signs_the_head_on_its_timer_and_verify_passes(
    cluster: Cluster, services: Services, k8s: K8s, team: Team
) -> None:
    _settled(k8s, team)
    eventually(
        lambda: team.head() and team.signed_head() == team.head(),
        45,
        "a signed checkpoint at the chain head",
    )
    out = tenantctl(cluster, services, "audit", "verify", team.name).stdout
    assert out.startswith(f"OK: audit trail of {team.name} verifies"), out
    assert " 0 signed checkpoints" not in out
    # A checkpoint is only worth its key: with another public key nothing verifies.
    _, stranger = generate_signing_key()
    proc = tenantctl(
        cluster, services, "audit", "verify", team.name, "--public-key", b64(stranger), check=False
    )
    assert proc.returncode == 1
    assert "unknown key" in proc.stderr


# ----------------------------------------------------------------------------- export, erase


def _gateway_dsn(k8s: K8s, team: Team) -> str:
    return k8s.secret_value(team.ns, "gateway", "postgresDsn")


def _write_requests(k8s: K8s, team: Team, tmp: Path, keys: list[str]) -> None:
    """Request records with bodies, by the gateway's own writer with the gateway's DSN."""
    from tenantgw.gateway.audit import AuditTrail
    from tenantgw.gateway.context import RequestContext
    from tenantgw.gateway.files import Rules
    from tenantgw.gateway.usage import UsageRecord

    rules = Rules.model_validate(
        {"tenant": team.name, "compliance": {"audit": {"enabled": True, "bodies": "redacted"}}}
    )

    async def write() -> None:
        trail = AuditTrail(
            _gateway_dsn(k8s, team), team.name, lambda: rules, tmp, flush_interval=0.01
        )
        await trail.start()
        for i, key in enumerate(keys):
            ctx = RequestContext(
                tenant=team.name, key_name=key, request_id=secrets.token_hex(16),
                requested_model="fast-code", alias="fast-code", call_type="anthropic_messages",
            )  # fmt: skip
            prompt = {"role": "user", "content": f"plan of {key} number {i}"}
            data = {"model": "fast-code", "max_tokens": 50, "messages": [prompt]}
            trail.admitted(ctx, data, None)
            rec = UsageRecord(
                request_id=ctx.request_id, ts=datetime.now(UTC), tenant=team.name, key_name=key,
                requested_model="fast-code", alias="fast-code", provider="sim",
                provider_model="qwen3-coder", region="us-east-1", input_tokens=10,
                output_tokens=5, cache_read_tokens=0, cache_write_tokens=0, cost_usd=0.001,
                list_cost_usd=None, latency_ms=5, ttft_ms=5, status="success", http_status=200,
                error_type=None, downgraded_from=None, stream=False,
            )  # fmt: skip
            answer = {"role": "assistant", "content": [{"type": "text", "text": f"ok {key} {i}"}]}
            trail.finished(ctx, rec, answer)
            await trail.drain()  # one record at a time: distinct timestamps
        await trail.stop()
        assert trail.written == len(keys), trail.last_error

    asyncio.run(write())


def _export(cluster: Cluster, services: Services, team: Team, *args: str) -> str:
    return tenantctl(cluster, services, "audit", "export", team.name, *args).stdout


def test_export_round_trips_and_erase_makes_one_keys_bodies_unreadable(
    cluster: Cluster, services: Services, k8s: K8s, team: Team, tmp_path: Path
) -> None:
    _write_requests(k8s, team, tmp_path, ["alice", "bob", "alice", "bob", "alice"])
    stored = team.sql(f"SELECT seq, ts, content, hash FROM {team.schema}.records ORDER BY seq")
    requests = [(seq, ts) for seq, ts, content, _ in stored if '"kind":"request"' in content]
    assert len(requests) == 5

    # The whole trail, as JSON lines and as CSV: the stored records, field for field.
    lines = [json.loads(line) for line in _export(cluster, services, team).splitlines()]
    assert lines == [{**json.loads(c), "hash": bytes(h).hex()} for _, _, c, h in stored]
    rows = list(csv.DictReader(io.StringIO(_export(cluster, services, team, "--format", "csv"))))
    assert [int(r["seq"]) for r in rows] == [r["seq"] for r in lines]
    for row, line in zip(rows, lines, strict=True):
        for field in CSV_FIELDS:
            value = line.get(field)
            if isinstance(value, dict | list):
                assert json.loads(row[field]) == value, field
            else:
                assert row[field] == ("" if value is None else str(value)), field

    # --since is inclusive, --until exclusive: [since, until).
    (s2, since), (s4, until) = requests[1], requests[3]
    window = ["--since", since.isoformat(), "--until", until.isoformat()]
    expected = [seq for seq, ts, _, _ in stored if since <= ts < until]
    assert expected[0] == s2
    assert s4 not in expected
    got = [
        json.loads(line)["seq"] for line in _export(cluster, services, team, *window).splitlines()
    ]
    assert got == expected
    got_csv = list(
        csv.DictReader(io.StringIO(_export(cluster, services, team, *window, "--format", "csv")))
    )
    assert [int(r["seq"]) for r in got_csv] == expected

    # Bodies decrypt with the admin's data keys; then alice's are erased.
    def bodies() -> dict[int, Any]:
        out = _export(cluster, services, team, "--bodies")
        return {r["seq"]: (r["key"], r.get("body")) for r in map(json.loads, out.splitlines())
                if r["kind"] == "request"}  # fmt: skip

    before = bodies()
    assert all(key in json.dumps(body) for key, body in before.values()), before
    alice = team.sql(
        f"SELECT event_id, body, body_key_id FROM {team.schema}.records WHERE key_name = 'alice'"
    )
    bob_dek = team.sql(f"SELECT dek FROM {team.schema}.data_keys WHERE key_name = 'bob'")[0][0]
    out = tenantctl(cluster, services, "audit", "erase", team.name, "--key", "alice").stdout
    assert out.startswith("erased 1 data keys of key alice"), out
    after = bodies()
    assert {seq: body for seq, (key, body) in after.items() if key == "alice"} == {
        seq: "erased" for seq, (key, _) in after.items() if key == "alice"
    }
    assert {seq: v for seq, v in after.items() if v[0] == "bob"} == {
        seq: v for seq, v in before.items() if v[0] == "bob"
    }
    # The ciphertext is still there, its key is not: nothing the database holds opens it.
    kids = {kid for _, _, kid in alice}
    assert team.sql(
        f"SELECT count(*) FROM {team.schema}.data_keys WHERE key_id = ANY(%s)", list(kids)
    ) == [(0,)]
    from cryptography.exceptions import InvalidTag

    for event_id, body, _ in alice:
        with pytest.raises(InvalidTag):
            decrypt_body(bytes(bob_dek), bytes(body), event_id)
    # The chain hashes the ciphertext: it still verifies, once the timer signed the new head.
    eventually(lambda: team.signed_head() == team.head(), 45, "a checkpoint at the new head")
    out = tenantctl(cluster, services, "audit", "verify", team.name).stdout
    assert out.startswith("OK"), out


# ----------------------------------------------------------------------------- access


def _kubectl_as(cluster: Cluster, who: Principal, *args: str) -> tuple[bool, str]:
    proc = cluster.run_kubectl(*who.flags(), *args, check=False)
    return proc.returncode == 0, proc.stdout + proc.stderr


def test_tenant_principals_cannot_reach_the_signing_key_the_public_key_or_the_database(
    cluster: Cluster, k8s: K8s, team: Team
) -> None:
    n = ("-n", OPERATOR_NS)
    cm_patch = json.dumps({"data": {"ed25519.pub": b64(generate_signing_key()[1])}})
    for who in (team.admin, team.viewer):
        attempts = [
            ("get", "secret", SIGNING_SECRET, *n, "-o", "json"),
            ("get", "secrets", *n),
            ("patch", "secret", SIGNING_SECRET, *n, "-p", '{"data":{"ed25519.key":""}}'),
            ("delete", "secret", SIGNING_SECRET, *n),
            ("patch", "configmap", SIGNING_PUBLIC, *n, "-p", cm_patch),
            ("delete", "configmap", SIGNING_PUBLIC, *n),
            ("create", "configmap", "tenantgw-audit-signing-2", "--from-literal=ed25519.pub=x", *n),
            ("create", "token", "tenantgw-operator", *n),
            # The way to the trail's database: the gateway Secret's DSN.
            ("get", "secret", "gateway", "-n", team.ns, "-o", "json"),
        ]
        for attempt in attempts:
            ok, out = _kubectl_as(cluster, who, *attempt)
            assert not ok, f"{who.user} was allowed: kubectl {' '.join(attempt)}"
            assert "forbidden" in out.lower(), f"kubectl {' '.join(attempt)}: {out}"
    cm = k8s.core.read_namespaced_config_map(SIGNING_PUBLIC, OPERATOR_NS)
    assert json.loads(cm_patch)["data"]["ed25519.pub"] != (cm.data or {}).get("ed25519.pub")


def test_the_gateways_own_credentials_cannot_rewrite_the_trail_or_read_its_keys(
    cluster: Cluster, services: Services, k8s: K8s, team: Team
) -> None:
    """Whoever holds the gateway's DSN (a compromised gateway pod) appends; nothing more."""
    eventually(lambda: team.head(), 30, "records in the trail")
    s = team.schema
    head = team.head()
    admin_role = conninfo_to_dict(services.postgres_dsn).get("user") or "postgres"
    attacks = [
        f"UPDATE {s}.records SET content = '{{}}' WHERE seq = 1",
        f"DELETE FROM {s}.records WHERE seq = {head}",
        f"TRUNCATE {s}.records",
        f"ALTER TABLE {s}.records OWNER TO CURRENT_USER",
        f"UPDATE {s}.checkpoints SET seq = 1",
        f"TRUNCATE {s}.checkpoints",
        f"INSERT INTO {s}.checkpoints VALUES ('anchor', {head}, '\\x00', now(), 'k', '\\x00')",
        f"SELECT * FROM {s}.data_keys",
        f"UPDATE {s}.data_keys SET dek = '\\x00'",
        f"DELETE FROM {s}.data_keys",
        f"CREATE FUNCTION {s}.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        f"SET ROLE {admin_role}",
    ]
    with psycopg.connect(_gateway_dsn(k8s, team), autocommit=True) as conn:
        for attack in attacks:
            with pytest.raises(pgerr.InsufficientPrivilege):
                conn.execute(attack.encode())
        with (
            pytest.raises(pgerr.InsufficientPrivilege),
            conn.cursor().copy(f"COPY {s}.data_keys TO STDOUT".encode()),
        ):
            pass
    assert team.head() == head
    assert tenantctl(cluster, services, "audit", "verify", team.name).stdout.startswith("OK")
