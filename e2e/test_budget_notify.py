"""BudgetPolicy spec.notify reaches a real HTTP receiver: signed, once per threshold, retried.

The real operator (with a 1 s first retry, budget sync every 2 s) against the local control
plane and the real Redis; spend is written into the counters the way gateways do it, by two
"replicas" adding to the same counter. The receiver (e2e/webhook_receiver.py) verifies each
Standard Webhooks signature with its own copy of the secret and records every request.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from kubernetes.client import ApiClient

from e2e.fixtures import Cluster, Services
from e2e.gateway_launch import free_port
from e2e.helpers import K8s, eventually, secret_body
from e2e.operator_fixture import RunningOperator, start_operator, stop_operator
from e2e.test_budget_status import budget_body, counter, get_budget
from e2e.test_operator import fast_code, make_tenant
from e2e.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e

GROUP, VERSION = "tenantgw.io", "v1alpha1"


def whsec() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Operators:
    """The operator of this module, restartable; the session's is back afterwards."""

    cluster: Cluster
    env: dict[str, str]
    current: RunningOperator

    def restart(self) -> None:
        self.stop()
        self.current = start_operator(self.cluster, resync_seconds=5, extra_env=self.env)

    def stop(self) -> None:
        """Stop it, keeping its log (the next start overwrites the file)."""
        stop_operator(self.current)
        with (self.current.log_file.parent / "operator-notify.log").open("a") as kept:
            kept.write(self.current.log_file.read_text())


@pytest.fixture(scope="module")
def k8s(kube: ApiClient) -> K8s:
    return K8s(kube)


@pytest.fixture(scope="module")
def operators(
    cluster: Cluster, services: Services, operator: RunningOperator
) -> Iterator[Operators]:
    """The session operator, stopped for this module, in favour of one retrying after 1 s."""
    storage = {
        "TENANTGW_POSTGRES_DSN": services.postgres_dsn,
        "TENANTGW_REDIS_URL": services.redis_url,
    }
    env = {**storage, "TENANTGW_NOTIFY_RETRY_SECONDS": "1", "TENANTGW_BUDGET_SYNC_SECONDS": "2"}
    stop_operator(operator)
    (operator.log_file.parent / "operator-notify.log").unlink(missing_ok=True)
    ops = Operators(cluster, env, start_operator(cluster, resync_seconds=5, extra_env=env))
    try:
        yield ops
    finally:
        ops.stop()
        again = start_operator(cluster, resync_seconds=5, extra_env=storage)
        operator.process, operator.log_file = again.process, again.log_file


@pytest.fixture
def spend(services: Services) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(services.redis_url)
    yield client
    client.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(port=free_port(), secret=whsec())
    r.start()
    yield r
    r.stop()


def notified_tenant(k8s: K8s, receiver: Receiver, signing: str | None) -> tuple[str, str, str]:
    """A tenant whose policy `daily` (10 USD, thresholds 50 and 80) notifies the receiver.

    Returns (tenant, namespace, the webhook URL: a secret, with a token in its path)."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = make_tenant(k8s, name, access={"admins": [{"kind": "User", "name": f"admin-{name}"}]})
    k8s.apply(fast_code(ns))
    url = f"{receiver.url}/hooks/{secrets.token_hex(12)}"
    k8s.apply(secret_body(ns, "alerts", {"url": url, "signing": signing or whsec()}))
    body = budget_body(ns, limit=10)
    body["spec"]["alertThresholds"] = [50, 80]
    body["spec"]["notify"] = {
        "webhookSecretRef": {"name": "alerts", "key": "url"},
        "signingSecretRef": {"name": "alerts", "key": "signing"},
    }
    k8s.apply(body)
    k8s.wait_condition(lambda: get_budget(k8s, ns), "Accepted", "True")
    return name, ns, url


def notification(k8s: K8s, ns: str, name: str = "daily") -> dict[str, Any]:
    last: dict[str, Any] = (get_budget(k8s, ns, name).get("status") or {}).get(
        "lastNotification"
    ) or {}
    return last


def accepted_thresholds(receiver: Receiver, path: str | None = None) -> list[int]:
    return sorted(d.json()["data"]["threshold"] for d in receiver.accepted(path))


def test_each_crossing_reaches_the_receiver_once_signed_and_the_url_stays_secret(
    k8s: K8s, cluster: Cluster, operators: Operators, receiver: Receiver, spend: redis.Redis
) -> None:
    """US: a team lead's channel hears 50 %, 80 % and the exceedance once each, whoever counts."""
    name, ns, url = notified_tenant(k8s, receiver, receiver.secret)
    path = url.removeprefix(receiver.url)
    try:
        spend.incrby(counter(name), 3_000_000)  # two gateway replicas add to one counter
        spend.incrby(counter(name), 3_500_000)
        eventually(lambda: accepted_thresholds(receiver) == [50], 30, "the 50 % message")
        spend.incrby(counter(name), 2_000_000)
        eventually(lambda: accepted_thresholds(receiver) == [50, 80], 30, "the 80 % message")
        spend.incrby(counter(name), 1_000_000)
        spend.incrby(counter(name), 1_000_000)
        eventually(lambda: accepted_thresholds(receiver) == [50, 80, 100], 30, "the exceedance")
        # More passes, more spend, a restart: nothing is sent again this period.
        spend.incrby(counter(name), 500_000)
        operators.restart()
        eventually(lambda: (get_budget(k8s, ns).get("status") or {}).get("spentUSD") == 11.0, 30,
                   "the restarted operator's pass")  # fmt: skip

        def exceedance_shown() -> dict[str, Any] | None:
            last = notification(k8s, ns)
            return last if last.get("threshold") == 100 else None

        try:
            last = eventually(exceedance_shown, 30, "the exceedance in status")
        except BaseException:
            print("STATUS", json.dumps(get_budget(k8s, ns).get("status"), indent=1))
            print("LOG", operators.current.log_file.read_text()[-6000:])
            raise
        assert last["state"] == "Delivered"
        assert last["type"] == "budget.exceeded"
        assert last["attempts"] == 1
        assert "lastError" not in last
        deliveries = receiver.accepted()
        assert len(deliveries) == 3, [d.headers for d in deliveries]
        assert len({d.id for d in deliveries}) == 3
        assert {d.path for d in deliveries} == {path}
        assert last["id"] == deliveries[-1].id
        exceeded = deliveries[-1].json()
        assert exceeded["type"] == "budget.exceeded"
        assert exceeded["data"]["budgetPolicy"] == "daily"
        assert exceeded["data"]["tenant"] == name
        assert exceeded["data"]["utilization"] >= 100
        assert receiver.rejected() == []

        # The URL (its token) is in no status, Event or log line.
        status = json.dumps(get_budget(k8s, ns)["status"])
        events = cluster.run_kubectl("-n", ns, "get", "events", "-o", "json").stdout
        assert path not in status
        assert path not in events
        assert path not in operators.current.log_file.read_text()
        # The tenant admin sees the delivery state, never the Secrets behind it.
        admin = f"admin-{name}"
        seen = cluster.run_kubectl("--as", admin, "-n", ns, "get", "budgetpolicy", "daily",
                                   "-o", "json", check=False)  # fmt: skip
        assert seen.returncode == 0, seen.stderr
        assert json.loads(seen.stdout)["status"]["lastNotification"]["state"] == "Delivered"
        for verb in (("get", "secret", "alerts"), ("get", "secrets")):
            denied = cluster.run_kubectl("--as", admin, "-n", ns, *verb, check=False)
            assert denied.returncode != 0
            assert "forbidden" in denied.stderr.lower(), denied.stderr
    finally:
        k8s.delete(f"{GROUP}/{VERSION}", "Tenant", name)


def test_a_receiver_that_is_down_gets_the_message_once_after_retries_and_a_restart(
    k8s: K8s, operators: Operators, receiver: Receiver, spend: redis.Redis
) -> None:
    """US: an alert sent while the team's endpoint is down arrives when it is back, once."""
    name, ns, _ = notified_tenant(k8s, receiver, receiver.secret)
    receiver.stop()
    try:
        spend.incrby(counter(name), 6_000_000)

        def failing() -> dict[str, Any] | None:
            last = notification(k8s, ns)
            return last if last.get("state") == "Retrying" and last["attempts"] >= 2 else None

        last = eventually(failing, 60, "two failed attempts in status")
        assert last["threshold"] == 50
        assert last["lastError"] == "could not connect to the receiver (Connection refused)"
        failures = get_budget(k8s, ns)["status"]["notificationFailures"]
        assert failures >= 2

        operators.restart()  # the message outlives the operator that was retrying it
        receiver.start()
        eventually(lambda: notification(k8s, ns).get("state") == "Delivered", 60, "delivery")
        operators.restart()
        spend.incrby(counter(name), 10_000)
        eventually(lambda: get_budget(k8s, ns)["status"].get("spentUSD") == 6.01, 30, "a pass")
        assert accepted_thresholds(receiver) == [50]
        delivered = notification(k8s, ns)
        assert delivered["id"] == receiver.accepted()[0].id
        assert delivered["attempts"] > last["attempts"]
        assert get_budget(k8s, ns)["status"]["notificationFailures"] >= failures
    finally:
        k8s.delete(f"{GROUP}/{VERSION}", "Tenant", name)


def test_a_wrong_signing_secret_is_refused_by_the_receiver_and_shown_in_status(
    k8s: K8s, operators: Operators, receiver: Receiver, spend: redis.Redis
) -> None:
    """US: a platform engineer sees why alerts do not arrive, and the fix makes them arrive."""
    name, ns, url = notified_tenant(k8s, receiver, whsec())  # not the receiver's secret
    try:
        spend.incrby(counter(name), 5_000_000)

        def refused() -> dict[str, Any] | None:
            last = notification(k8s, ns)
            return last if last.get("lastError") else None

        last = eventually(refused, 30, "a refused attempt in status")
        assert last["state"] == "Retrying"
        assert last["lastError"] == "the receiver answered HTTP 401"
        assert receiver.rejected()
        assert receiver.accepted() == []

        secret = secret_body(ns, "alerts", {"url": url, "signing": receiver.secret or ""})
        k8s.apply(secret)  # the platform fixes the secret: the next retry verifies
        eventually(lambda: notification(k8s, ns).get("state") == "Delivered", 60, "delivery")
        assert accepted_thresholds(receiver) == [50]
    finally:
        k8s.delete(f"{GROUP}/{VERSION}", "Tenant", name)


def test_the_slack_format_posts_one_text(
    k8s: K8s, operators: Operators, spend: redis.Redis
) -> None:
    """US: a team without a webhook service gets the alert as a Slack message."""
    slack = Receiver(port=free_port(), secret=None)
    slack.start()
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = make_tenant(k8s, name)
    try:
        k8s.apply(fast_code(ns))
        k8s.apply(secret_body(ns, "slack", {"url": f"{slack.url}/services/T0/B0/x"}))
        body = budget_body(ns, limit=4)
        body["spec"]["notify"] = {
            "webhookSecretRef": {"name": "slack", "key": "url"},
            "format": "slack",
        }
        k8s.apply(body)
        k8s.wait_condition(lambda: get_budget(k8s, ns), "Accepted", "True")
        spend.incrby(counter(name), 2_200_000)
        eventually(lambda: slack.accepted(), 30, "the Slack message")
        (message,) = slack.accepted()
        assert list(message.json()) == ["text"]
        assert f"Budget daily of tenant {name} (Tenant) crossed 50%" in message.json()["text"]
        assert "$2.20 of $4.00 spent this day" in message.json()["text"]
        assert "webhook-signature" not in message.headers  # no signing secret: unsigned
        assert message.headers["webhook-id"].startswith("msg_")
    finally:
        slack.stop()
        k8s.delete(f"{GROUP}/{VERSION}", "Tenant", name)
