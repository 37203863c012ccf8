"""Logs a platform team ships to Loki: JSON lines, one access line per request, no secrets.

The gateway runs from exactly what the operator renders (`TENANTGW_LOG_FORMAT=json` is the
rendered default) and is driven by the anthropic and openai SDKs: plain and streamed requests
whose prompt holds a fake credential and personal data, a session, a request with a bad key
and a /v1/models listing. Every line the process writes on stdout and stderr must parse as a
JSON object with tenantgw's fields; each request has exactly one access line with its tenant,
key name, alias, provider, model, status, latency and tokens; and none of the prompt, the
credential, the personal data, the answers, the tenant key, the bad key, the master key or the
provider key appears anywhere in the log. The operator's log is checked the same way while it
reconciles a Tenant (its Secrets' values must not appear).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest
from kubernetes.client import ApiClient

from e2e.fixtures import Cluster, Services
from e2e.helpers import K8s, alias_body, eventually, secret_body, tenant_body
from e2e.operator_fixture import RunningOperator, start_operator, stop_operator
from e2e.provider_sim import SimulatorHandle
from e2e.rendered_gateway import Gateway, run_rendered_gateway
from e2e.test_anthropic_provider import NATIVE, OTHER, PROVIDER_KEY, TENANT, tenant_inputs
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SESSION = str(uuid.uuid4())


def logged_inputs(masters: list[str]) -> Callable[..., RenderInputs]:
    """The anthropic provider tests' Tenant with PII redaction on (so the detector sees the
    prompt); each master key drawn is appended to `masters` (the test looks for it)."""

    def inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
        rendered = tenant_inputs(sim, storage, key)
        spec = rendered.tenant.spec
        compliance = spec.compliance.model_copy(
            update={
                "pii_redaction": spec.compliance.pii_redaction.model_copy(update={"mode": "redact"})
            }
        )
        tenant = rendered.tenant.model_copy(
            update={"spec": spec.model_copy(update={"compliance": compliance})}
        )
        masters.append(rendered.master_key)
        return dataclasses.replace(rendered, tenant=tenant)

    return inputs


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as a JSON object with tenantgw's fields; fails on the first other."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line[:300]!r}", pytrace=False)
        assert isinstance(entry, dict), f"line {number} is not a JSON object: {line[:300]!r}"
        for field in ("timestamp", "level", "logger", "message"):
            assert field in entry, f"line {number} has no {field}: {line[:300]!r}"
        assert RFC3339_UTC.match(entry["timestamp"]), f"line {number}: {entry['timestamp']!r}"
        entries.append(entry)
    assert entries, "the log is empty"
    return entries


def access_lines(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["logger"] == "tenantgw.access"]


def assert_absent(text: str, **secrets_: str) -> None:
    for what, value in secrets_.items():
        assert value not in text, f"the log holds the {what}"


@pytest.fixture(scope="module")
def logged(services: Services, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A rendered gateway's whole log (it has stopped), and what was sent through it."""
    masters: list[str] = []
    sent: dict[str, Any] = {}
    with run_rendered_gateway(
        services,
        tmp_path_factory.mktemp("logs"),
        role_prefix="tg_logs",
        inputs=logged_inputs(masters),
        provider_secrets={
            "anthropic": {"apiKey": PROVIDER_KEY},
            "compat": {"apiKey": PROVIDER_KEY},
        },
        simulator_kwargs={"api_key": PROVIDER_KEY},
    ) as gateway:
        sent.update(drive(gateway))
        sent["key"] = gateway.key
        log = gateway.log
    sent["master_key"] = masters[-1]
    sent["text"] = log.read_text(errors="replace")
    return sent


def drive(gateway: Gateway) -> dict[str, Any]:
    """The requests of the test, each different; returns what they carried and answered."""
    since = time.time()
    token = secrets.token_hex(6)
    credential = "AKIA" + secrets.token_hex(8).upper()
    email = f"jane.{token}@example.com"
    prompt = f"deploy note {token}: use {credential} and mail {email} when done"
    answers: list[str] = []
    client = gateway.anthropic()
    msg = client.messages.create(
        model=NATIVE, max_tokens=64, messages=[{"role": "user", "content": prompt + " one"}]
    )
    answers.append(msg.content[0].text)  # type: ignore[union-attr]
    with client.messages.stream(
        model=NATIVE,
        max_tokens=64,
        messages=[{"role": "user", "content": prompt + " two"}],
        extra_headers={"X-Claude-Code-Session-Id": SESSION},
    ) as events:
        answers.append(events.get_final_text())
    chat = gateway.openai().chat.completions.create(
        model=OTHER, messages=[{"role": "user", "content": prompt + " three"}]
    )
    answers.append(chat.choices[0].message.content or "")
    chunks = gateway.openai().chat.completions.create(
        model=OTHER, messages=[{"role": "user", "content": prompt + " four"}], stream=True
    )
    answers.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
    bad_key = "sk-tgw-" + secrets.token_hex(20)
    bad = anthropic.Anthropic(base_url=gateway.url, api_key=bad_key, max_retries=0, timeout=60)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(
            model=NATIVE, max_tokens=64, messages=[{"role": "user", "content": prompt + " bad"}]
        )
    listed = gateway.openai().models.list()
    assert {m.id for m in listed.data} >= {NATIVE, OTHER}

    def five_rows() -> list[dict[str, Any]] | None:
        rows = gateway.rows(since, ("request_id", "alias"))
        return rows if len(rows) >= 4 else None

    rows = eventually(five_rows, what="the ledger rows of the four metered requests")
    return {
        "rows": rows,
        "prompt": prompt,
        "credential": credential,
        "email": email,
        "answers": [a for a in answers if a],
        "bad_key": bad_key,
    }


def test_every_gateway_line_is_json_with_the_schema(logged: dict[str, Any]) -> None:
    """A collector parses every line the gateway writes, LiteLLM's and uvicorn's included."""
    entries = json_lines(logged["text"])
    loggers = {e["logger"] for e in entries}
    assert "tenantgw.access" in loggers
    assert any(name.startswith("uvicorn") for name in loggers), loggers


def test_one_access_line_per_request_with_its_fields(logged: dict[str, Any]) -> None:
    """Each request has exactly one access line: metered ones with tenant, key, alias,
    provider, model, status, latency and tokens; the others with method, path and status."""
    lines = [
        e for e in access_lines(json_lines(logged["text"])) if e.get("path") != "/health/readiness"
    ]
    rows = logged["rows"]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_id.setdefault(line.get("request_id", ""), []).append(line)
    for row in rows:
        (line,) = by_id.pop(row["request_id"], [])
        assert line["tenant"] == TENANT
        assert line["key"] == "alice"
        assert line["alias"] == row["alias"]
        assert isinstance(line["latency_ms"], int)
        assert line["latency_ms"] >= 0
    served = [line for line in lines if line.get("outcome") == "success"]
    assert len(served) == 4, served
    for line in served:
        assert line["status"] == 200
        assert line["provider"] in ("anthropic", "compat")
        assert line["model"] in ("claude-sonnet-4-5", "sim-fast")
        assert line["input_tokens"] > 0
        assert line["output_tokens"] > 0
    assert sorted(line["stream"] for line in served) == [False, False, True, True]
    assert [line.get("session_id") for line in served if line.get("session_id")] == [SESSION]
    # Not metered: the bad key and the listing; their line comes from the middleware.
    rest = by_id.pop("", [])
    assert not by_id, f"access lines of requests the ledger does not know: {by_id}"
    assert sorted((line["method"], line["path"], line["status"]) for line in rest) == [
        ("GET", "/v1/models", 200),
        ("POST", "/v1/messages", 401),
    ], rest
    assert all(line["tenant"] == TENANT for line in rest)
    (refused,) = [line for line in rest if line["status"] == 401]
    assert "key" not in refused, "a key that authenticated nobody has no name"
    assert all(line["latency_ms"] >= 0 for line in rest)


def test_no_prompt_answer_or_secret_in_the_gateway_log(logged: dict[str, Any]) -> None:
    """Neither bodies nor credentials reach the log: prompt, personal data, answers, keys."""
    text = logged["text"]
    assert_absent(
        text,
        prompt=logged["prompt"],
        credential=logged["credential"],
        email=logged["email"],
        tenant_key=logged["key"],
        bad_key=logged["bad_key"],
        master_key=logged["master_key"],
        provider_key=PROVIDER_KEY,
    )
    token = logged["prompt"].split()[2].rstrip(":")
    assert token not in text, "a word of the prompt is in the log"
    for answer in logged["answers"]:
        assert answer not in text, f"an answer is in the log: {answer!r}"


# --------------------------------------------------------------------------- the operator


@pytest.fixture(scope="module")
def json_operator(
    cluster: Cluster, services: Services, operator: RunningOperator
) -> Iterator[RunningOperator]:
    """The operator as the manifests run it (JSON logs), in place of the session's one."""
    env = {"TENANTGW_POSTGRES_DSN": services.postgres_dsn, "TENANTGW_REDIS_URL": services.redis_url}
    stop_operator(operator)
    json_op = start_operator(
        cluster,
        resync_seconds=5,
        extra_env={**env, "TENANTGW_LOG_FORMAT": "json"},
        args=("--log-format=json",),
    )
    try:
        yield json_op
    finally:
        stop_operator(json_op)
        kept = json_op.log_file.parent / "operator-json.log"
        kept.write_text(json_op.log())
        again = start_operator(cluster, resync_seconds=5, extra_env=env)
        operator.process, operator.log_file = again.process, again.log_file


def _decoded(secret: Any) -> list[str]:
    return [base64.b64decode(v).decode() for v in (secret.data or {}).values()]


def test_operator_logs_are_json_without_secret_values(
    kube: ApiClient, json_operator: RunningOperator, services: Services
) -> None:
    """The operator reconciles a Tenant (keys, master key, storage role) and logs it all as
    JSON lines, naming objects but never a Secret's value."""
    k8s = K8s(kube)
    name = "logs-op-" + secrets.token_hex(3)
    ns = f"tenant-{name}"
    provider_key = "sk-sim-provider-" + secrets.token_hex(10)
    k8s.apply(
        tenant_body(
            name,
            providers=[
                {
                    "name": "sim",
                    "type": "openai-compatible",
                    "apiBase": "http://127.0.0.1:9/v1",
                    "region": "us-east-1",
                    "credentialsSecretRef": {"name": "sim", "key": "apiKey"},
                }
            ],
            catalog=[{"provider": "sim", "model": "*", "costTier": "medium"}],
            keys=[{"name": "alice"}, {"name": "bob"}],
            routing={"defaultAlias": "fast"},
            gateway={"replicas": 1},
        )
    )
    try:
        eventually(lambda: k8s.namespace_exists(ns), 30, f"namespace {ns}")
        k8s.apply(secret_body(ns, "sim", {"apiKey": provider_key}))
        k8s.apply(alias_body(ns, "fast", targets=[{"provider": "sim", "model": "sim-fast"}]))

        def ready() -> bool:
            cond = k8s.condition(k8s.tenant(name), "Ready")
            return bool(cond and cond["status"] == "True")

        eventually(ready, 90, f"Tenant {name} Ready")
        values = [v for s in k8s.core.list_namespaced_secret(ns).items for v in _decoded(s)]
        assert len(values) >= 4, "no key, master key or storage Secrets to look for"
        # Deleting the Tenant runs its cleanup handler, whose kopf line names the Tenant.
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)
        eventually(lambda: not k8s.tenant_exists(name), 60, f"Tenant {name} deleted")
        text = json_operator.log()
        entries = json_lines(text)
        objects = {
            (e["object"].get("kind"), e["object"].get("name")) for e in entries if "object" in e
        }
        assert ("Tenant", name) in objects, f"no kopf line names the Tenant: {objects}"
        assert any(name in e["message"] for e in entries if e["logger"].startswith("tenantgw."))
        # No line per event of a child object: the reconcile's own line says what it did.
        assert not [e for e in entries if "owned_object_event" in e["message"]]
        secret_values = [*values, services.postgres_dsn, services.redis_url]
        for value in secret_values:
            for part in _sensitive_parts(value):
                assert part not in text, f"a Secret value is in the operator's log: {part[:6]}..."
    finally:
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)


def _sensitive_parts(value: str) -> list[str]:
    """The value itself and, for a DSN or URL, its password."""
    parts = [value] if len(value) >= 8 else []
    match = re.match(r"^[a-z+]+://[^:/@]*:([^@]+)@", value)
    if match and len(match.group(1)) >= 8:
        parts.append(match.group(1))
    for line in value.splitlines():  # keys.json and friends: each value on its own
        for found in re.findall(r'"([A-Za-z0-9_\-]{16,})"', line):
            parts.append(found)
    return parts
