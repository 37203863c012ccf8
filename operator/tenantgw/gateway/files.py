"""The files the operator mounts into a gateway pod: the rules file and the keys file.

Both are reloaded when they change on disk (checked at most once a second), so a rotated key or
an edited rule takes effect without a restart. Kubernetes updates a mounted ConfigMap or Secret
by swapping a symlink, so a change shows as a new inode, size or mtime of the resolved file.

The rules file (`TENANTGW_RULES_FILE`, `tenantgw.json`) is written by
`tenantgw.render.rules.render_rules`: snake_case keys, unset values as null. The models below
mirror it field for field. The keys file (`TENANTGW_KEYS_FILE`, `keys.json`) is a list of
`{"name", "sha256", "expires_at"?}` written by `tenantgw.render.config.keys_json`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("tenantgw.gateway")

RULES_FILE_ENV = "TENANTGW_RULES_FILE"
KEYS_FILE_ENV = "TENANTGW_KEYS_FILE"
TENANT_ENV = "TENANTGW_TENANT"
DEFAULT_RULES_FILE = "/etc/tenantgw/config/tenantgw.json"
DEFAULT_KEYS_FILE = "/etc/tenantgw/secret/keys.json"
CHECK_INTERVAL = 1.0
"""Seconds between two looks at a file's modification time."""

T = TypeVar("T")


class FileError(Exception):
    """A mounted file is missing or unreadable and no earlier good copy exists."""


# --------------------------------------------------------------------------- rules file


class _Model(BaseModel):
    # Unknown fields are ignored so that a newer operator can add fields before gateways know them.
    model_config = ConfigDict(frozen=True, extra="ignore")


Task = Literal["background", "thinking", "long-context", "web-search"]


class RuleMatch(_Model):
    """Conditions of a routing rule; every one that is set must hold."""

    model: str | None = None
    prompt_prefix: str | None = None
    task: Task | None = None


class RoutingRule(_Model):
    """Send requests matching `match` to ModelAlias `alias`."""

    match: RuleMatch
    alias: str


class TargetPricing(_Model):
    """A catalog price, USD per million tokens (Tenant spec.catalog[].pricing)."""

    input_per_million: float
    output_per_million: float


class AliasTarget(_Model):
    """One provider model behind an alias (one LiteLLM deployment, `id` = model_info.id)."""

    id: str
    provider: str
    provider_type: str | None = None
    model: str
    region: str | None = None
    weight: int = 1
    max_tokens: int | None = None
    litellm_model: str | None = None
    """The model as LiteLLM names it (`openrouter/qwen/qwen3-coder`), for its model map."""
    context_window: int | None = None
    """The platform's catalog window of this model; None: LiteLLM's model map decides."""
    pricing: TargetPricing | None = None
    """The platform's catalog price of this model; None: LiteLLM's cost map, if it has one."""
    litellm_route: str | None = None
    """The model LiteLLM's router calls: what its cost map prices (`openai/command-r` for
    Cohere, otherwise `litellm_model`)."""


class AliasRules(_Model):
    """A ModelAlias as the gateway sees it."""

    display_name: str | None = None
    description: str | None = None
    created_at: str | None = None
    """When the ModelAlias was created (RFC 3339), for model listings."""
    cost_tier: str | None = None
    client_names: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    targets: tuple[AliasTarget, ...] = ()


class KeyRules(_Model):
    """Limits of one tenant key (its hash is in the keys file, not here)."""

    name: str
    rpm: int | None = None
    tpm: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    """Cost labels of the key's requests (Tenant spec.keys[].labels)."""


class Limits(_Model):
    """Limits of the whole tenant."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel_requests: int | None = None


class PiiRedaction(_Model):
    mode: Literal["off", "redact", "block"] = "off"
    entities: tuple[str, ...] = ()


class Audit(_Model):
    enabled: bool = True
    bodies: Literal["none", "redacted", "full"] = "none"
    retention_days: int = 90


class DataResidency(_Model):
    allowed_regions: tuple[str, ...] = ()


class Compliance(_Model):
    pii_redaction: PiiRedaction = Field(default_factory=PiiRedaction)
    audit: Audit = Field(default_factory=Audit)
    data_residency: DataResidency | None = None


class BudgetScope(_Model):
    kind: Literal["Tenant", "Key", "ModelAlias", "Session"] = "Tenant"
    name: str | None = None


class OnExceeded(_Model):
    action: Literal["block", "downgrade"] = "block"
    to_cost_tier: str | None = None


class Unenforceable(_Model):
    """Why the operator could not apply a BudgetPolicy (its Accepted condition's reason)."""

    reason: str
    message: str = ""


class Budget(_Model):
    """One BudgetPolicy of the tenant; one set `unenforceable` refuses every request it covers."""

    name: str | None = None
    scope: BudgetScope = Field(default_factory=BudgetScope)
    period: Literal["daily", "weekly", "monthly"] = "monthly"
    limit_usd: float
    alert_thresholds: tuple[int, ...] = ()
    on_exceeded: OnExceeded = Field(default_factory=OnExceeded)
    unenforceable: Unenforceable | None = None


StoreMode = Literal["Closed", "Open"]
UnpricedMode = Literal["Closed", "ClosedWhenBudgeted", "Open"]


class Enforcement(_Model):
    """Tenant.spec.enforcement: what to do when Redis (limits, budgets) does not answer, and
    with a request a model without a price would serve."""

    on_store_unavailable: StoreMode = "Closed"
    on_unpriced_model: UnpricedMode = "ClosedWhenBudgeted"


class AutoMode(_Model):
    """Tenant.spec.autoMode: the alias that judges Claude Code's tool calls (None: nobody)."""

    classifier_alias: str | None = None
    timeout_seconds: float = 30.0


class CostBaseline(_Model):
    """Tenant.spec.costBaseline: the Claude model a request naming an alias is priced at."""

    default: str | None = None
    aliases: dict[str, str] = Field(default_factory=dict)


class LabelHeader(_Model):
    """Tenant.spec.costLabels: a request header (lower case) that may set one cost label."""

    header: str
    label: str
    allowed_values: tuple[str, ...] = ()


class Cost(_Model):
    baseline: CostBaseline = Field(default_factory=CostBaseline)
    label_header: LabelHeader | None = None


class Rules(_Model):
    """The whole rules file of a tenant."""

    tenant: str
    namespace: str | None = None
    default_alias: str | None = None
    rules: tuple[RoutingRule, ...] = ()
    aliases: dict[str, AliasRules] = Field(default_factory=dict)
    keys: tuple[KeyRules, ...] = ()
    limits: Limits = Field(default_factory=Limits)
    compliance: Compliance = Field(default_factory=Compliance)
    budgets: tuple[Budget, ...] = ()
    enforcement: Enforcement = Field(default_factory=Enforcement)
    auto_mode: AutoMode = Field(default_factory=AutoMode)
    cost: Cost = Field(default_factory=Cost)

    def key(self, name: str) -> KeyRules | None:
        """Limits of key `name`, None when the rules file does not list it."""
        return next((key for key in self.keys if key.name == name), None)

    def namespace_name(self) -> str:
        """The tenant's namespace (where its key Secrets live)."""
        return self.namespace or f"tenant-{self.tenant}"


def parse_rules(text: str) -> Rules:
    """The rules file from its JSON text; ValueError says what is wrong."""
    try:
        return Rules.model_validate_json(text)
    except ValidationError as exc:
        raise ValueError(f"invalid rules file: {exc}") from exc


# --------------------------------------------------------------------------- keys file


@dataclass(frozen=True)
class KeyEntry:
    """One tenant key: its name, the hex SHA-256 of its value, and when it stops working."""

    name: str
    sha256: str
    expires_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or datetime.now(UTC)) >= self.expires_at


_EXPIRY_FIELDS = ("expires_at", "expiresAt", "not_after", "notAfter")


def _parse_time(value: Any, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected an RFC 3339 time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{where}: expected an RFC 3339 time, got {value!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_keys(text: str) -> tuple[KeyEntry, ...]:
    """The keys file from its JSON text; ValueError says which entry is wrong."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"keys file is not JSON: {exc}") from exc
    if isinstance(raw, dict) and isinstance(raw.get("keys"), list):
        raw = raw["keys"]
    if not isinstance(raw, list):
        raise ValueError("keys file must be a JSON list of {name, sha256} objects")
    entries: list[KeyEntry] = []
    for index, item in enumerate(raw):
        where = f"keys[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        name, digest = item.get("name"), item.get("sha256")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.name: expected a non-empty string")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"{where}.sha256: expected 64 hex digits")
        expiry = next((item[f] for f in _EXPIRY_FIELDS if item.get(f) is not None), None)
        entries.append(
            KeyEntry(
                name=name,
                sha256=digest.lower(),
                expires_at=_parse_time(expiry, f"{where}.expires_at"),
            )
        )
    return tuple(entries)


# --------------------------------------------------------------------------- reloading


class ReloadingFile(Generic[T]):
    """A parsed file that is re-read when it changes, looked at no more than once a second.

    A change that does not parse is logged and the previous good value is kept, so a bad edit
    never takes a serving gateway down; without any good value, `get()` raises FileError.
    """

    def __init__(
        self,
        path: Path | str,
        parse: Callable[[str], T],
        what: str,
        *,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self._parse = parse
        self._interval = interval
        self._clock = clock or (lambda: time.monotonic())
        self._lock = threading.Lock()
        self._value: T | None = None
        self._signature: tuple[int, int, int] | None = None
        self._checked_at: float | None = None
        self._error: str | None = None

    def get(self) -> T:
        """The current value; re-reads the file if it changed since the last look."""
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._interval:
            with self._lock:
                if self._checked_at is None or now - self._checked_at >= self._interval:
                    self._checked_at = now
                    self._refresh()
        if self._value is None:
            raise FileError(self._error or f"{self.what} {self.path} is not loaded")
        return self._value

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            self._fail(f"cannot read {self.what} {self.path}: {exc.strerror or exc}")
            return
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if signature == self._signature and self._value is not None:
            return
        try:
            value = self._parse(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self._signature = signature  # do not re-parse (and re-log) the same bad file
            self._fail(f"{self.what} {self.path}: {exc}")
            return
        if self._value is not None:
            log.info("reloaded %s %s", self.what, self.path)
        self._value, self._signature, self._error = value, signature, None

    def _fail(self, message: str) -> None:
        if message != self._error:
            suffix = "; keeping the previous version" if self._value is not None else ""
            log.error("%s%s", message, suffix)
        self._error = message


# --------------------------------------------------------------------------- process-wide files

_rules: ReloadingFile[Rules] | None = None
_keys: ReloadingFile[tuple[KeyEntry, ...]] | None = None
_init_lock = threading.Lock()


def rules_file() -> ReloadingFile[Rules]:
    """The tenant's rules file ($TENANTGW_RULES_FILE), loaded on first use."""
    global _rules
    if _rules is None:
        with _init_lock:
            if _rules is None:
                path = os.environ.get(RULES_FILE_ENV) or DEFAULT_RULES_FILE
                _rules = ReloadingFile(path, parse_rules, "rules file")
    return _rules


def keys_file() -> ReloadingFile[tuple[KeyEntry, ...]]:
    """The tenant's keys file ($TENANTGW_KEYS_FILE), loaded on first use."""
    global _keys
    if _keys is None:
        with _init_lock:
            if _keys is None:
                path = os.environ.get(KEYS_FILE_ENV) or DEFAULT_KEYS_FILE
                _keys = ReloadingFile(path, parse_keys, "keys file")
    return _keys


def current_rules() -> Rules:
    """The tenant's rules as of now; raises FileError when they cannot be loaded."""
    return rules_file().get()


def current_keys() -> tuple[KeyEntry, ...]:
    """The tenant's key hashes as of now; raises FileError when they cannot be loaded."""
    return keys_file().get()


def tenant_name() -> str:
    """The tenant this gateway serves: $TENANTGW_TENANT, else the rules file's, else 'unknown'."""
    name = os.environ.get(TENANT_ENV)
    if name:
        return name
    try:
        return current_rules().tenant
    except FileError:
        return "unknown"


def reset() -> None:
    """Forget the loaded files (tests point the env at other files afterwards)."""
    global _rules, _keys
    with _init_lock:
        _rules = None
        _keys = None
