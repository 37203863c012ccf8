"""BudgetPolicy `spec.notify`: each threshold crossing, and the exceedance, POSTed once per period.

The budget status loop sees a policy's thresholds fire; for a policy with `spec.notify` it puts
one message per fired threshold of the period in the outbox (`tenancy/notify_outbox.py`,
created with SET NX: a message exists once, whichever operator, restart or pass creates it).
The delivery loop here sends what is due, signed by the Standard Webhooks scheme
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`), retries failures with exponential backoff, and writes the latest
message's delivery state to the policy's status under its own field manager.

Exactly once, and where it stops: a message's id is derived from (policy uid, period,
threshold), so every attempt of it, by any operator, carries the same `webhook-id`, and the
schedule's lease lets one operator at a time send it. A receiver that answers 2xx gets no more
attempts. Only an operator that dies after the receiver's 2xx and before recording it (one
Redis write) makes the next lease holder send the same message again, under the same id:
receivers that drop a `webhook-id` they have seen (as the specification asks) see it once.

The webhook URL and the signing secret come from Secrets in the policy's namespace at each
attempt; neither is logged, put in status or Events (errors name the Secret, never its value).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tenantgw.api import API_VERSION
from tenantgw.api.periods import period_end, period_label
from tenantgw.kube.client import JSON, Kube, KubeError
from tenantgw.tenancy import StorageError
from tenantgw.tenancy.notify_outbox import Outbox, Taken, failures_key, record_key

log = logging.getLogger(__name__)

NOTIFY_FIELD_MANAGER = "tenantgw-budget-notify"
EXCEEDED = 100
SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix, not a secret)
SEND_TIMEOUT = 10.0
LEASE_SECONDS = 120.0
"""How long a taken message is this operator's: well above one attempt (secret reads, send)."""
TAKE_LIMIT = 20
BACKOFF_CAP = 3600.0
GIVE_UP_AFTER = 24 * 3600.0
"""A message still undelivered this long after the crossing is abandoned (state Failed)."""
KEEP_AFTER_PERIOD = 7 * 24 * 3600
PERIOD_NOUN = {"daily": "day", "weekly": "week", "monthly": "month"}


@dataclass(frozen=True)
class NotifyTarget:
    """A policy's spec.notify: Secret references only, never their values."""

    webhook: tuple[str, str]  # (Secret name, key)
    signing: tuple[str, str] | None
    format: str


@dataclass(frozen=True)
class Crossing:
    """A fired threshold of a policy in a period, as the status loop saw it."""

    tenant: str
    namespace: str
    policy: str
    uid: str
    period: str
    threshold: int
    status: dict[str, Any]  # the policy's spend fields at that pass
    limit_usd: float
    scope: dict[str, str]
    on_exceeded: str


def notification_points(thresholds: Iterable[int], utilization: float) -> list[int]:
    """What to announce at `utilization`: each threshold below 100 reached, and 100 (the
    exceedance) once the limit is reached, whether or not 100 is a threshold."""
    points = [t for t in thresholds if t < EXCEEDED and utilization >= t]
    if utilization >= EXCEEDED:
        points.append(EXCEEDED)
    return points


def message_id(uid: str, label: str, threshold: int) -> str:
    """`msg_<hex>`: the same for every attempt of one threshold of one policy's period."""
    digest = hashlib.sha256(f"{uid}:{label}:{threshold}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def event_type(threshold: int) -> str:
    return "budget.exceeded" if threshold >= EXCEEDED else "budget.threshold_crossed"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_data(c: Crossing) -> dict[str, Any]:
    data: dict[str, Any] = {
        "tenant": c.tenant,
        "namespace": c.namespace,
        "budgetPolicy": c.policy,
        "scope": c.scope,
        "period": c.period,
        "periodStart": c.status["periodStart"],
        "threshold": c.threshold,
        "limitUSD": c.limit_usd,
        "spentUSD": c.status["spentUSD"],
        "utilization": c.status["utilization"],
        "state": c.status["state"],
        "onExceeded": c.on_exceeded,
    }
    if "topSession" in c.status:
        data["session"] = c.status["topSession"]
    return data


def slack_text(c: Crossing) -> str:
    scope = c.scope["kind"] + (f" {c.scope['name']}" if "name" in c.scope else "")
    who = f" by session {c.status['topSession']}" if c.status.get("topSession") else ""
    noun = PERIOD_NOUN.get(c.period, c.period)
    what = (
        f"has reached its limit: requests in its scope now {c.on_exceeded}"
        if c.threshold >= EXCEEDED
        else f"crossed {c.threshold}%"
    )
    return (
        f"Budget {c.policy} of tenant {c.tenant} ({scope}) {what}: "
        f"${c.status['spentUSD']:.2f} of ${c.limit_usd:.2f} spent{who} this {noun} "
        f"({c.status['utilization']:g}%, period from {c.status['periodStart']})."
    )


def render_body(c: Crossing, fmt: str, now: datetime) -> str:
    """The request body, frozen when the message is created: every attempt sends these bytes."""
    if fmt == "slack":
        payload: dict[str, Any] = {"text": slack_text(c)}
    else:
        payload = {"type": event_type(c.threshold), "timestamp": _iso(now), "data": event_data(c)}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def decode_signing_secret(value: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError when it is not one."""
    value = value.strip()
    if not value.startswith(SECRET_PREFIX):
        raise ValueError("is not a Standard Webhooks secret (whsec_<base64>)")
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("is not valid base64 after whsec_") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("must hold 24 to 64 random bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` (Standard Webhooks, symmetric)."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def backoff(attempts: int, base: float) -> float:
    """Seconds before attempt `attempts + 1`: base, 2 base, 4 base ... at most an hour, with
    up to 10 % jitter so that receivers coming back are not hit by every message at once."""
    delay: float = min(base * 2.0 ** max(attempts - 1, 0), BACKOFF_CAP)
    return delay * (1 + random.random() / 10)  # noqa: S311 (jitter, not a secret)


def new_record(c: Crossing, target: NotifyTarget, now: datetime) -> dict[str, Any]:
    label = period_label(c.period, datetime.fromisoformat(c.status["periodStart"]))
    return {
        "id": message_id(c.uid, label, c.threshold),
        "tenant": c.tenant,
        "namespace": c.namespace,
        "policy": c.policy,
        "uid": c.uid,
        "period": label,
        "periodStart": c.status["periodStart"],
        "threshold": c.threshold,
        "type": event_type(c.threshold),
        "body": render_body(c, target.format, now),
        "created": now.timestamp(),
        "attempts": 0,
        "state": "Pending",
    }


class DeliveryError(Exception):
    """An attempt that failed; the message is safe to show (no URL, no secret)."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


def _secret_value(secret: JSON | None, ref: tuple[str, str], what: str) -> str:
    name, key = ref
    if secret is None:
        raise DeliveryError(f"{what}: Secret {name} does not exist")
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        raise DeliveryError(f"{what}: Secret {name} has no key {key}")
    try:
        return base64.b64decode(raw).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise DeliveryError(f"{what}: key {key} of Secret {name} is not text") from None


@dataclass
class DeliveryResult:
    """What one delivery pass did, for logs and tests."""

    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Notifier:
    """Queues crossings of policies with spec.notify and delivers them; one per operator."""

    def __init__(
        self,
        kube: Kube,
        outbox: Outbox,
        targets: Callable[[], dict[tuple[str, str], NotifyTarget]],
        *,
        retry_seconds: float,
    ) -> None:
        self._kube = kube
        self._outbox = outbox
        self._targets = targets  # (namespace, policy) -> its spec.notify, from the watch cache
        self._retry = retry_seconds
        self._queued: dict[str, tuple[str, frozenset[int]]] = {}  # uid -> (period, queued)

    async def queue(self, crossings: list[Crossing], now: datetime | None = None) -> int:
        """Put a message in the outbox for each crossing not queued yet; how many were new.

        The operator remembers what it queued, so an unchanged policy costs no Redis call;
        after a restart it queues the period's fired thresholds again, and SET NX keeps the
        messages that exist (sent or not) as they are."""
        now = now or datetime.now(UTC)
        targets = self._targets()
        items: list[tuple[str, JSON, int, float]] = []
        todo: dict[str, tuple[str, set[int]]] = {}
        for c in crossings:
            target = targets.get((c.namespace, c.policy))
            period, done = self._queued.get(c.uid, ("", frozenset()))
            if target is None or (period == c.status["periodStart"] and c.threshold in done):
                continue
            record = new_record(c, target, now)
            key = record_key(c.tenant, c.policy, record["period"], c.threshold)
            start = datetime.fromisoformat(c.status["periodStart"])
            expire_at = int(period_end(c.period, start).timestamp()) + KEEP_AFTER_PERIOD
            items.append((key, record, expire_at, now.timestamp()))
            todo.setdefault(c.uid, (c.status["periodStart"], set()))[1].add(c.threshold)
        if not items:
            return 0
        created = await self._outbox.enqueue(items)
        for uid, (period, thresholds) in todo.items():
            before = self._queued.get(uid)
            kept = before[1] if before is not None and before[0] == period else frozenset()
            self._queued[uid] = (period, kept | thresholds)
        return created

    def forget(self, uids: Iterable[str]) -> None:
        """Drop what is remembered of policies that are gone."""
        for uid in uids:
            self._queued.pop(uid, None)

    async def deliver_due(self, now: float | None = None) -> DeliveryResult:
        """Send every message that is due (at most TAKE_LIMIT), concurrently."""
        now = time.time() if now is None else now
        taken = await self._outbox.take(now, LEASE_SECONDS, TAKE_LIMIT)
        result = DeliveryResult()
        if not taken:
            return result
        targets = self._targets()
        secrets: dict[tuple[str, str], asyncio.Task[JSON | None]] = {}
        timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            outcomes = await asyncio.gather(
                *(self._deliver(t, targets, secrets, http, now, result) for t in taken),
                return_exceptions=True,
            )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:  # the lease runs out and the message is taken again
            raise errors[0]
        return result

    async def _secret(
        self, namespace: str, name: str, cache: dict[tuple[str, str], asyncio.Task[JSON | None]]
    ) -> JSON | None:
        if (namespace, name) not in cache:
            cache[namespace, name] = asyncio.ensure_future(
                self._kube.get("v1", "Secret", name, namespace)
            )
        return await cache[namespace, name]

    async def _deliver(
        self,
        taken: Taken,
        targets: dict[tuple[str, str], NotifyTarget],
        secrets: dict[tuple[str, str], asyncio.Task[JSON | None]],
        http: aiohttp.ClientSession,
        now: float,
        result: DeliveryResult,
    ) -> None:
        record = taken.record
        if record is None or record.get("state") in ("Delivered", "Failed"):
            await self._outbox.settle(taken.key, None, None, None)  # expired or settled
            return
        target = targets.get((record["namespace"], record["policy"]))
        if target is None:  # the policy, or its spec.notify, is gone: nobody to tell
            await self._outbox.settle(taken.key, None, None, None)
            return
        record["attempts"] = int(record.get("attempts", 0)) + 1
        record["lastAttempt"] = now
        try:
            try:
                await self._send(record, target, secrets, http, now)
            except (DeliveryError, asyncio.CancelledError):
                raise
            except Exception as exc:  # e.g. the API server's connection reset: retry, no stall
                log.exception("budget notification %s: the attempt failed", record["id"])
                raise DeliveryError(f"the attempt failed ({type(exc).__name__})") from None
        except DeliveryError as err:
            record["lastError"] = str(err)
            given_up = err.final or now - float(record["created"]) >= GIVE_UP_AFTER
            record["state"] = "Failed" if given_up else "Retrying"
            next_due = None if given_up else now + backoff(record["attempts"], self._retry)
            counter = failures_key(record["tenant"], record["policy"], record["period"])
            failures = await self._outbox.settle(taken.key, record, next_due, counter)
            result.failed.append(record["id"])
            log.warning(
                "budget notification %s of %s/%s (attempt %d) failed: %s%s",
                record["id"],
                record["namespace"],
                record["policy"],
                record["attempts"],
                err,
                "; giving up" if given_up else "",
            )
        else:
            record["state"] = "Delivered"
            record.pop("lastError", None)
            await self._outbox.settle(taken.key, record, None, None)
            failures = await self._outbox.failures(
                failures_key(record["tenant"], record["policy"], record["period"])
            )
            result.delivered.append(record["id"])
            log.info(
                "budget notification %s of %s/%s delivered (attempt %d)",
                record["id"],
                record["namespace"],
                record["policy"],
                record["attempts"],
            )
        await self._write_status(record, failures)

    async def _send(
        self,
        record: JSON,
        target: NotifyTarget,
        secrets: dict[tuple[str, str], asyncio.Task[JSON | None]],
        http: aiohttp.ClientSession,
        now: float,
    ) -> None:
        namespace = record["namespace"]
        try:
            secret = await self._secret(namespace, target.webhook[0], secrets)
            url = _secret_value(secret, target.webhook, "spec.notify.webhookSecretRef").strip()
            key: bytes | None = None
            if target.signing is not None:
                signing = await self._secret(namespace, target.signing[0], secrets)
                value = _secret_value(signing, target.signing, "spec.notify.signingSecretRef")
                try:
                    key = decode_signing_secret(value)
                except ValueError as err:
                    raise DeliveryError(
                        f"spec.notify.signingSecretRef: key {target.signing[1]} of Secret "
                        f"{target.signing[0]} {err}"
                    ) from None
        except KubeError as exc:
            raise DeliveryError(f"could not read the notify Secrets: HTTP {exc.status}") from None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryError(
                f"spec.notify.webhookSecretRef: key {target.webhook[1]} of Secret "
                f"{target.webhook[0]} is not an http(s) URL"
            )
        timestamp = int(now)
        headers = {
            "content-type": "application/json",
            "user-agent": "tenantgw-operator",
            "webhook-id": record["id"],
            "webhook-timestamp": str(timestamp),
        }
        if key is not None:
            headers["webhook-signature"] = sign(key, record["id"], timestamp, record["body"])
        try:
            async with http.post(
                url, data=record["body"].encode(), headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
        except TimeoutError:
            raise DeliveryError(f"the receiver did not answer within {SEND_TIMEOUT:g} s") from None
        except aiohttp.ClientConnectorError as err:
            # The OSError's own text names the host and port; its errno's does not.
            code = err.os_error.errno
            why = os.strerror(code) if code else type(err.os_error).__name__
            raise DeliveryError(f"could not connect to the receiver ({why})") from None
        except aiohttp.ClientError as err:  # the text of some names the URL: keep the type
            raise DeliveryError(f"the request failed ({type(err).__name__})") from None
        if not 200 <= status < 300:
            # 410 Gone: the receiver asks to stop (Standard Webhooks); redirects are not followed.
            raise DeliveryError(f"the receiver answered HTTP {status}", final=status == 410)

    async def _write_status(self, record: JSON, failures: int | None) -> None:
        last: JSON = {
            "id": record["id"],
            "type": record["type"],
            "threshold": record["threshold"],
            "periodStart": record["periodStart"],
            "state": record["state"],
            "attempts": record["attempts"],
            "lastAttemptTime": _iso(datetime.fromtimestamp(record["lastAttempt"], UTC)),
        }
        if record.get("lastError"):
            last["lastError"] = record["lastError"]
        status: JSON = {"lastNotification": last}
        if failures is not None:
            status["notificationFailures"] = failures
        body = {
            "apiVersion": API_VERSION,
            "kind": "BudgetPolicy",
            "metadata": {
                "name": record["policy"],
                "namespace": record["namespace"],
                "uid": record["uid"],
            },
            "status": status,
        }
        try:
            await self._kube.apply_status(body, field_manager=NOTIFY_FIELD_MANAGER)
        except KubeError as exc:
            if exc.status not in (404, 409):  # deleted, or re-created under the same name
                log.warning(
                    "budget notification status of %s/%s not written: %s",
                    record["namespace"],
                    record["policy"],
                    exc,
                )


async def run_notify_loop(notifier: Notifier, interval: float, stop: asyncio.Event) -> None:
    """Deliver due messages every `interval` seconds until `stop` is set; failures are logged.

    A pass in progress when `stop` is set finishes (its sends, Redis records and status
    writes), so a rolling restart leaves no delivered message without its status."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
            return
        except TimeoutError:
            pass
        try:
            await notifier.deliver_due()
        except StorageError as err:
            log.warning("budget notifications: %s", err)
        except Exception:
            log.exception("budget notifications: the pass failed; retrying in %g s", interval)
