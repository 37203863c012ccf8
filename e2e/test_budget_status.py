"""BudgetPolicy spend status runs on its own loop, beside the tenant reconcile, end to end.

The real operator (the session's, resync and budget sync every 5 s) against the local control
plane and the real Redis: spend is written into the counters the way the gateways do it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
import redis
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from e2e.fixtures import Services
from e2e.helpers import K8s, eventually
from e2e.operator_fixture import RunningOperator, audit_events
from e2e.test_operator import fast_code, make_tenant
from tenantgw.api.periods import budget_counter_key, session_spend_key

pytestmark = pytest.mark.e2e

GROUP, VERSION = "tenantgw.io", "v1alpha1"
BUDGET_MANAGER = "tenantgw-budget-status"
OLD_FINALIZER = "tenantgw.io/finalizer"


@pytest.fixture(scope="module")
def k8s(kube: ApiClient) -> K8s:
    return K8s(kube)


@pytest.fixture
def spend(services: Services) -> Iterator[redis.Redis]:
    """The Redis the gateways count spend in, as the admin."""
    client = redis.Redis.from_url(services.redis_url)
    yield client
    client.close()


def budget_body(ns: str, name: str = "daily", limit: float = 10, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BudgetPolicy",
        "metadata": {"name": name, "namespace": ns, **meta},
        "spec": {
            "scope": {"kind": "Tenant"},
            "period": "daily",
            "limitUSD": limit,
            "alertThresholds": [50, 80, 100],
        },
    }


def get_budget(k8s: K8s, ns: str, name: str = "daily") -> dict[str, Any]:
    obj: dict[str, Any] = k8s.custom.get_namespaced_custom_object(
        GROUP, VERSION, ns, "budgetpolicies", name
    )
    return obj


def counter(tenant: str, policy: str = "daily") -> str:
    return budget_counter_key(tenant, policy, "daily", datetime.now(UTC))


def wait_spent(k8s: K8s, ns: str, usd: float, timeout: float = 30) -> dict[str, Any]:
    def shown() -> dict[str, Any] | None:
        status = get_budget(k8s, ns).get("status") or {}
        return status if status.get("spentUSD") == usd else None

    result: dict[str, Any] = eventually(shown, timeout, f"spentUSD {usd} in {ns}")
    return result


def budgeted_tenant(k8s: K8s, limit: float = 10) -> tuple[str, str]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = make_tenant(k8s, name)
    k8s.apply(fast_code(ns))
    k8s.apply(budget_body(ns, limit=limit))
    return name, ns


def requests(
    op: RunningOperator, since: float, until: float, verbs: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    """The operator's requests in [since, until), from the API server's audit log."""
    events: list[dict[str, Any]] = []
    found = audit_events(op.username, since, verbs) if verbs else audit_events(op.username, since)
    for event in found:
        stamp = str(event["requestReceivedTimestamp"]).replace("Z", "+00:00")
        if datetime.fromisoformat(stamp).timestamp() < until:
            events.append(dict(event))
    return events


def threshold_events(k8s: K8s, ns: str) -> list[Any]:
    return [
        e
        for e in k8s.core.list_namespaced_event(ns).items
        if e.reason == "BudgetThresholdCrossed" and e.involved_object.name == "daily"
    ]


def test_spend_reaches_status_without_reconciling_the_tenant(
    k8s: K8s, operator: RunningOperator, spend: redis.Redis
) -> None:
    """Operators at scale: a spend refresh is one status patch, not a tenant reconcile."""
    busy, busy_ns = budgeted_tenant(k8s, limit=1000)
    calm, calm_ns = budgeted_tenant(k8s, limit=1000)
    try:
        for tenant, ns in ((busy, busy_ns), (calm, calm_ns)):
            k8s.wait_condition(partial(k8s.tenant, tenant), "Ready", "True", timeout=60)
            k8s.wait_condition(partial(get_budget, k8s, ns), "Accepted", "True")
            wait_spent(k8s, ns, 0.0)

        since = time.time()
        for usd in (1, 2, 3, 4):
            spend.incrby(counter(busy), 1_000_000)  # what a gateway adds after 1 USD of requests
            wait_spent(k8s, busy_ns, float(usd))
        until = time.time()

        mine = [
            e
            for e in requests(operator, since, until)
            if busy_ns in e["requestURI"] or busy in e["requestURI"]
        ]
        shapes = [(e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("subresource"))
                  for e in mine]  # fmt: skip
        assert shapes.count(("patch", "budgetpolicies", "status")) == 4, shapes
        assert set(shapes) == {("patch", "budgetpolicies", "status")}, shapes

        # Whatever the spend woke, no tenant reconcile asked the API server for anything: they
        # read the watch caches (the only requests of the window are the four patches above).
        tenant_gets = [
            e["objectRef"].get("name")
            for e in requests(operator, since, until, frozenset({"get"}))
            if e["objectRef"].get("resource") == "tenants"
        ]
        assert busy not in tenant_gets, tenant_gets
        assert calm not in tenant_gets, tenant_gets

        # The spend fields are the budget loop's; the Accepted condition is the reconcile's.
        fields = {
            m["manager"]: m["fieldsV1"].get("f:status", {})
            for m in get_budget(k8s, busy_ns)["metadata"]["managedFields"]
            if m.get("subresource") == "status"
        }
        assert set(fields[BUDGET_MANAGER]) == {
            "f:periodStart", "f:spentUSD", "f:utilization", "f:state", "f:firedThresholds",
        }  # fmt: skip
        others = [f for manager, f in fields.items() if manager != BUDGET_MANAGER]
        assert any("f:conditions" in f for f in others), fields
        assert not any("f:spentUSD" in f for f in others), fields
    finally:
        k8s.delete(f"{GROUP}/{VERSION}", "Tenant", busy)
        k8s.delete(f"{GROUP}/{VERSION}", "Tenant", calm)


def test_budget_policies_carry_no_finalizer_and_old_ones_are_released(
    k8s: K8s, operator: RunningOperator
) -> None:
    """Upgrades: a BudgetPolicy is never held by the operator; older versions' holds go away."""
    name, ns = budgeted_tenant(k8s)
    try:
        k8s.wait_condition(lambda: get_budget(k8s, ns), "Accepted", "True")
        wait_spent(k8s, ns, 0.0)
        assert not get_budget(k8s, ns)["metadata"].get("finalizers")

        # What an older operator left on every policy it timed.
        k8s.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, "budgetpolicies",
            budget_body(ns, "legacy", finalizers=[OLD_FINALIZER]),
        )  # fmt: skip
        eventually(
            lambda: not get_budget(k8s, ns, "legacy")["metadata"].get("finalizers"),
            30,
            "the old finalizer to be removed",
        )
        k8s.delete(f"{GROUP}/{VERSION}", "BudgetPolicy", "legacy", ns)

        def gone() -> bool:
            names = k8s.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "budgetpolicies")
            return "legacy" not in {i["metadata"]["name"] for i in names["items"]}

        eventually(gone, 30, "the released policy to be deleted")
    finally:
        k8s.delete(f"{GROUP}/{VERSION}", "Tenant", name)


def test_each_threshold_fires_one_event_per_period(
    k8s: K8s, operator: RunningOperator, spend: redis.Redis
) -> None:
    """US-003: an engineering manager sees spend, utilization and one alert per threshold."""
    name, ns = budgeted_tenant(k8s, limit=10)
    try:
        k8s.wait_condition(lambda: get_budget(k8s, ns), "Accepted", "True")
        spend.set(counter(name), 6_500_000)  # 6.50 USD of requests today
        status = wait_spent(k8s, ns, 6.5)
        assert (status["utilization"], status["state"]) == (65.0, "Warning")
        assert status["firedThresholds"] == [50]

        spend.incrby(counter(name), 2_000_000)
        status = wait_spent(k8s, ns, 8.5)
        assert status["firedThresholds"] == [50, 80]

        spend.incrby(counter(name), 2_000_000)
        status = wait_spent(k8s, ns, 10.5)
        assert (status["state"], status["firedThresholds"]) == ("Exceeded", [50, 80, 100])

        # More passes over the same spend, and a small rise: no threshold fires again.
        time.sleep(12)
        spend.incrby(counter(name), 10_000)
        wait_spent(k8s, ns, 10.51)
        time.sleep(6)
        events = threshold_events(k8s, ns)
        fired = sorted(int(e.message.split("threshold ")[1].split("%")[0]) for e in events)
        assert fired == [50, 80, 100], [e.message for e in events]
        by_threshold = {int(e.message.split("threshold ")[1].split("%")[0]): e for e in events}
        assert by_threshold[100].type == "Warning"
        assert by_threshold[50].type == "Normal"
        assert "65.0% of 10 USD spent this day" in by_threshold[50].message
    finally:
        k8s.delete(f"{GROUP}/{VERSION}", "Tenant", name)


def test_a_session_policys_status_shows_its_top_session_and_sessions_over_the_limit(
    k8s: K8s, operator: RunningOperator, spend: redis.Redis
) -> None:
    """Session caps: the manager sees the session that spent most and how many hit the cap."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = make_tenant(k8s, name)
    try:
        k8s.apply(fast_code(ns))
        body = budget_body(ns, limit=2)
        body["spec"]["scope"] = {"kind": "Session", "name": "nobody"}
        with pytest.raises(ApiException) as refused:  # CEL: a Session scope takes no name
            k8s.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "budgetpolicies", body)
        assert refused.value.status == 422
        assert "omitted for Tenant and Session" in str(refused.value.body)
        body["spec"]["scope"] = {"kind": "Session"}
        k8s.apply(body)
        k8s.wait_condition(lambda: get_budget(k8s, ns), "Accepted", "True")
        sessions = session_spend_key(counter(name))
        # What gateways add after requests of three sessions (micro-USD per session).
        spend.zincrby(sessions, 500_000, "s-small")
        spend.zincrby(sessions, 2_500_000, "s-runaway")
        spend.zincrby(sessions, 1_700_000, "s-busy")
        status = wait_spent(k8s, ns, 2.5)
        assert status["topSession"] == "s-runaway"
        assert (status["sessions"], status["sessionsOverLimit"]) == (3, 1)
        assert (status["utilization"], status["state"]) == (125.0, "Exceeded")

        def event_names_the_session() -> list[Any]:
            return [e for e in threshold_events(k8s, ns) if "by session s-runaway" in e.message]

        eventually(event_names_the_session, 30, "a threshold Event naming the session")
    finally:
        k8s.delete(f"{GROUP}/{VERSION}", "Tenant", name)
