"""BudgetPolicy spend status: what the gateways have spent, read from their Redis counters.

The gateways count spend per policy and period (micro-USD, `t:{<tenant>}:budget:<policy>:<day>`);
the operator turns it into `spentUSD`, `utilization`, `state`, `firedThresholds` and
`periodStart`, and posts an Event the first time each threshold is crossed in a period.

This is a sibling of the tenant reconcile, not part of it (like cert-manager's controllers that
each own a slice of a Certificate's status): one loop for every policy of every tenant reads
the policies from the operator's watch cache (no API read), all counters in a few MGETs, and
server-side applies only the spend fields under its own field manager, only when a value
changed. The tenant reconcile owns `conditions` (Accepted) and `observedGeneration`.
Spend that only grew is written at most once per `refresh` seconds per policy; a new state,
a fired threshold or a new period is written at the next pass.

A Session policy caps each session, so its spend is per session (a sorted set per period,
`<counter>:sessions`, scores in micro-USD): its status describes the session that spent most
(`spentUSD`, `utilization`, `state` and thresholds are that session's, `topSession` its id),
with `sessions` (how many spent this period) and `sessionsOverLimit`. Still one write per
policy, never one per session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tenantgw.api import API_VERSION, BudgetPolicy
from tenantgw.api.periods import budget_counter_key, period_start, session_spend_key
from tenantgw.kube.client import JSON, Kube, KubeError
from tenantgw.reconcile.events import post_event
from tenantgw.reconcile.notify import Crossing, Notifier, NotifyTarget, notification_points
from tenantgw.reconcile.settings import Settings
from tenantgw.tenancy import Provisioner, StorageError

log = logging.getLogger(__name__)

MICRO = 1_000_000
BUDGET_FIELD_MANAGER = "tenantgw-budget-status"
SPEND_FIELDS = ("periodStart", "spentUSD", "utilization", "state", "firedThresholds")
SESSION_FIELDS = ("sessions", "sessionsOverLimit", "topSession")
"""Status fields of Session policies only."""
STATUS_FIELDS = SPEND_FIELDS + SESSION_FIELDS
# Changes a reader must see at the next pass; spend alone waits for the refresh period.
PROMPT_FIELDS = ("periodStart", "state", "firedThresholds", "sessionsOverLimit")
MGET_BATCH = 500
PERIOD_NOUN = {"daily": "day", "weekly": "week", "monthly": "month"}


@dataclass(frozen=True)
class PolicyEntry:
    """What the spend loop needs of one BudgetPolicy, kept in the operator's index."""

    namespace: str
    name: str
    uid: str
    period: str
    limit_usd: float
    thresholds: tuple[int, ...]
    accepted: bool
    spend: tuple[tuple[str, Any], ...]  # the live STATUS_FIELDS, as (field, value)
    per_session: bool = False
    """scope.kind Session: the limit applies to each session's spend."""
    notify: NotifyTarget | None = None
    scope: tuple[tuple[str, str], ...] = ()
    on_exceeded: str = "block"

    @classmethod
    def from_body(cls, body: JSON) -> PolicyEntry | None:
        """From a watched body; None when the spec does not parse (the reconcile says why)."""
        try:
            policy = BudgetPolicy.model_validate(body)
        except ValidationError:
            return None
        status = body.get("status") or {}
        accepted = any(
            c.get("type") == "Accepted" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        meta = body.get("metadata") or {}
        notify = policy.spec.notify
        target = None
        if notify is not None:
            signing = notify.signing_secret_ref
            target = NotifyTarget(
                webhook=(notify.webhook_secret_ref.name, notify.webhook_secret_ref.key),
                signing=(signing.name, signing.key) if signing is not None else None,
                format=notify.format,
            )
        scope = policy.spec.scope
        return cls(
            namespace=meta.get("namespace") or "",
            name=meta.get("name") or "",
            uid=meta.get("uid") or "",
            period=policy.spec.period,
            limit_usd=policy.spec.limit_usd,
            thresholds=tuple(policy.spec.alert_thresholds),
            accepted=accepted,
            spend=tuple((k, status[k]) for k in STATUS_FIELDS if k in status),
            per_session=scope.kind == "Session",
            notify=target,
            scope=(("kind", scope.kind),) + ((("name", scope.name),) if scope.name else ()),
            on_exceeded=policy.spec.on_exceeded.action,
        )

    def live(self) -> dict[str, Any]:
        return dict(self.spend)


@dataclass(frozen=True)
class SessionSpend:
    """What a Session policy's sorted set says for the current period."""

    top_session: str | None
    top_micro: int
    sessions: int
    over_limit: int


def budget_status(
    period: str,
    limit_usd: float,
    thresholds: Iterable[int],
    spent_micro: int,
    now: datetime,
    sessions: SessionSpend | None = None,
) -> dict[str, Any]:
    """The spend fields of one policy for the period containing `now` (pure).

    With `sessions` (a Session policy), the spend is that of the top session.
    """
    if sessions is not None:
        spent_micro = sessions.top_micro
    start = period_start(period, now).strftime("%Y-%m-%dT%H:%M:%SZ")
    spent = spent_micro / MICRO
    utilization = round(100.0 * spent / limit_usd, 2) if limit_usd > 0 else 100.0
    fired = [t for t in thresholds if utilization >= t]
    if utilization >= 100:
        state = "Exceeded"
    elif fired:
        state = "Warning"
    else:
        state = "Ok"
    status: dict[str, Any] = {
        "periodStart": start,
        "spentUSD": round(spent, 6),
        "utilization": utilization,
        "state": state,
        "firedThresholds": fired,
    }
    if sessions is not None:
        status["sessions"] = sessions.sessions
        status["sessionsOverLimit"] = sessions.over_limit
        status["topSession"] = sessions.top_session
    return status


def newly_fired(old: dict[str, Any], new: dict[str, Any]) -> list[int]:
    """Thresholds in `new` that had not fired yet in the same period."""
    same_period = old.get("periodStart") == new["periodStart"]
    before = set(old.get("firedThresholds") or []) if same_period else set()
    return [t for t in new["firedThresholds"] if t not in before]


def differs(old: dict[str, Any], new: dict[str, Any], fields: Iterable[str]) -> bool:
    return any(old.get(k) != new.get(k) for k in fields)


def needs_write(
    old: dict[str, Any], new: dict[str, Any], since_last_write: float | None, refresh: float
) -> bool:
    """Whether to write `new` now: a state, threshold or period change at once; spend that only
    moved when our last write of this policy is `refresh` seconds old (or unknown)."""
    if not differs(old, new, STATUS_FIELDS):
        return False
    if not old or differs(old, new, PROMPT_FIELDS):
        return True
    return since_last_write is None or since_last_write >= refresh


@dataclass
class _Written:
    """Our last write of one policy, until the watch shows it (the index may lag behind)."""

    seen: dict[str, Any]  # what the index said when we wrote
    wrote: dict[str, Any]
    at: float  # monotonic


@dataclass
class SyncResult:
    """What one pass did, for logs and tests."""

    policies: int = 0
    written: list[str] = field(default_factory=list)
    deferred: int = 0
    events: int = 0
    notifications: int = 0
    """Webhook messages put in the outbox (spec.notify)."""
    failed: str | None = None


class BudgetStatusSync:
    """Refreshes the spend fields of every accepted BudgetPolicy; one instance per operator."""

    def __init__(
        self,
        kube: Kube,
        provisioner: Provisioner,
        settings: Settings,
        *,
        refresh: float,
        notifier: Notifier | None = None,
    ) -> None:
        self._kube = kube
        self._notifier = notifier
        self._provisioner = provisioner
        self._settings = settings
        self._refresh = refresh
        self._written: dict[str, _Written] = {}

    def _current(self, entry: PolicyEntry) -> dict[str, Any]:
        """The policy's spend as far as we know: the index, or our write it has not shown yet."""
        live = entry.live()
        mine = self._written.get(entry.uid)
        if mine is not None and live == mine.seen and live != mine.wrote:
            return mine.wrote
        return live

    async def sync(
        self,
        entries: Iterable[PolicyEntry],
        tenant_of: Callable[[str], str | None],
        now: datetime | None = None,
    ) -> SyncResult:
        """One pass over `entries`; `tenant_of(namespace)` names the tenant of a namespace."""
        now = now or datetime.now(UTC)
        work: list[tuple[PolicyEntry, str]] = []
        session_work: list[tuple[PolicyEntry, str]] = []
        for entry in entries:
            tenant = tenant_of(entry.namespace)
            if entry.accepted and tenant:
                key = budget_counter_key(tenant, entry.name, entry.period, now)
                if entry.per_session:
                    session_work.append((entry, session_spend_key(key)))
                else:
                    work.append((entry, key))
        result = SyncResult(policies=len(work) + len(session_work))
        try:
            counters: list[int] = []
            for i in range(0, len(work), MGET_BATCH):
                batch = [key for _, key in work[i : i + MGET_BATCH]]
                counters += await self._provisioner.read_counters(batch)
            session_sets: list[tuple[str | None, int, int, int]] = []
            for i in range(0, len(session_work), MGET_BATCH):
                sets = [
                    (key, round(entry.limit_usd * MICRO))
                    for entry, key in session_work[i : i + MGET_BATCH]
                ]
                session_sets += await self._provisioner.read_session_spend(sets)
        except StorageError as err:
            result.failed = str(err)  # StorageReady says what is wrong; spend waits a pass
            return result
        present = {entry.uid for entry, _ in work + session_work}
        gone = [u for u in self._written if u not in present]
        for uid in gone:
            del self._written[uid]
        crossings: list[Crossing] = []
        for (entry, _), spent in zip(work, counters, strict=True):
            new = await self._one(entry, spent, now, result)
            crossings += self._crossings(entry, tenant_of, new)
        for (entry, _), found in zip(session_work, session_sets, strict=True):
            new = await self._one(entry, 0, now, result, SessionSpend(*found))
            crossings += self._crossings(entry, tenant_of, new)
        if self._notifier is not None:
            self._notifier.forget(gone)
            try:
                result.notifications = await self._notifier.queue(crossings, now)
            except StorageError as err:  # queued again at the next pass
                result.failed = str(err)
        return result

    @staticmethod
    def _crossings(
        entry: PolicyEntry, tenant_of: Callable[[str], str | None], new: dict[str, Any]
    ) -> list[Crossing]:
        """The notifications `new` calls for (spec.notify only); the notifier drops repeats."""
        tenant = tenant_of(entry.namespace)
        if entry.notify is None or tenant is None:
            return []
        return [
            Crossing(
                tenant=tenant,
                namespace=entry.namespace,
                policy=entry.name,
                uid=entry.uid,
                period=entry.period,
                threshold=threshold,
                status=new,
                limit_usd=entry.limit_usd,
                scope=dict(entry.scope),
                on_exceeded=entry.on_exceeded,
            )
            for threshold in notification_points(entry.thresholds, new["utilization"])
        ]

    async def _one(
        self,
        entry: PolicyEntry,
        spent: int,
        now: datetime,
        result: SyncResult,
        sessions: SessionSpend | None = None,
    ) -> dict[str, Any]:
        """Write the policy's spend fields when they changed; returns them."""
        old = self._current(entry)
        new = budget_status(entry.period, entry.limit_usd, entry.thresholds, spent, now, sessions)
        mine = self._written.get(entry.uid)
        since = time.monotonic() - mine.at if mine is not None else None
        if not needs_write(old, new, since, self._refresh):
            if differs(old, new, STATUS_FIELDS):
                result.deferred += 1
            return new
        body = {
            "apiVersion": API_VERSION,
            "kind": "BudgetPolicy",
            "metadata": {"name": entry.name, "namespace": entry.namespace, "uid": entry.uid},
            "status": new,
        }
        try:
            await self._kube.apply_status(body, field_manager=BUDGET_FIELD_MANAGER)
        except KubeError as exc:
            if exc.status in (404, 409):  # deleted, or re-created under the same name
                return new
            raise
        self._written[entry.uid] = _Written(seen=entry.live(), wrote=new, at=time.monotonic())
        result.written.append(f"{entry.namespace}/{entry.name}")
        who = f" by session {sessions.top_session}" if sessions is not None else ""
        for threshold in newly_fired(old, new):
            result.events += 1
            await post_event(
                self._kube,
                self._settings,
                body,
                "Warning" if threshold >= 100 else "Normal",
                "BudgetThresholdCrossed",
                f"{entry.name}: {new['utilization']:.1f}% of {entry.limit_usd:g} USD "
                f"spent{who} this {PERIOD_NOUN.get(entry.period, entry.period)} "
                f"(threshold {threshold}%, period from {new['periodStart']})",
            )
        return new


async def run_budget_loop(
    sync: BudgetStatusSync,
    entries: Callable[[], list[PolicyEntry]],
    tenant_of: Callable[[str], str | None],
    interval: float,
) -> None:
    """Run `sync` every `interval` seconds until cancelled; a failed pass is logged, not fatal."""
    while True:
        await asyncio.sleep(interval)
        try:
            result = await sync.sync(entries(), tenant_of)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("budget status: the pass failed; retrying in %g s", interval)
            continue
        if result.failed:
            log.warning("budget status: counters unreadable: %s", result.failed)
        elif result.written:
            log.info(
                "budget status: wrote %d of %d policies (%d deferred): %s",
                len(result.written),
                result.policies,
                result.deferred,
                ", ".join(result.written[:10]),
            )
