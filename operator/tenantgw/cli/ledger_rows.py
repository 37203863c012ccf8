"""A tenant's usage ledger as the reports read it: rows, groups, savings and A/B arms.

Rows are read with the admin DSN (like `tenantctl audit`) from `t_<tenant>.usage`, each as
`to_jsonb(row)`, so a ledger written by an older gateway (without `labels` or `list_model`)
reads too. Everything past `load_rows` is pure.

Savings (docs/money.md): the counterfactual is the sum of `list_cost_usd` (what each request
would have cost at Anthropic's list price of the Claude model it asked for, or of the Tenant's
`spec.costBaseline`), the actual is every USD spent (`cost_usd` of all rows, those without a
list cost too: a spend nothing is compared with never counts as saved). savings = list - cost,
savings % = savings / list.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from tenantgw.tenancy.naming import SCHEMA_PREFIX, schema_name

DIMENSIONS = ("key", "project", "alias", "provider", "model", "day", "session", "requested")
"""What `--by` accepts, besides `label:<name>` for any cost label."""


@dataclass(frozen=True)
class Row:
    """One ledger row, the fields the reports use."""

    tenant: str
    ts: datetime
    key: str
    requested: str
    alias: str
    provider: str | None
    model: str | None
    cost: float
    list_cost: float | None
    list_model: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    latency_ms: int | None
    ttft_ms: int | None
    ok: bool
    session: str | None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def dimension(self, name: str) -> str:
        """The row's value of a `--by` dimension ('-' when it has none)."""
        if name.startswith("label:"):
            return self.labels.get(name[len("label:") :], "-")
        value = {
            "tenant": self.tenant,
            "key": self.key,
            "project": self.labels.get("project"),
            "alias": self.alias,
            "provider": self.provider,
            "model": self.model,
            "day": self.ts.date().isoformat(),
            "session": self.session,
            "requested": self.requested,
        }.get(name)
        return value or "-"


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float | str) and value != "" else 0.0


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def row_from_json(tenant: str, raw: Mapping[str, Any]) -> Row:
    """A Row from `to_jsonb(usage)` (numbers as JSON numbers, ts as an ISO string)."""
    ts = raw["ts"]
    when = ts if isinstance(ts, datetime) else datetime.fromisoformat(str(ts))
    labels = raw.get("labels")
    if isinstance(labels, str):
        labels = json.loads(labels)
    list_cost = raw.get("list_cost_usd")
    return Row(
        tenant=tenant,
        ts=when.astimezone(UTC),
        key=str(raw.get("key_name") or "-"),
        requested=str(raw.get("requested_model") or "-"),
        alias=str(raw.get("alias") or "-"),
        provider=raw.get("provider"),
        model=raw.get("provider_model"),
        cost=_num(raw.get("cost_usd")),
        list_cost=None if list_cost is None else _num(list_cost),
        list_model=raw.get("list_model"),
        input_tokens=_int(raw.get("input_tokens")),
        output_tokens=_int(raw.get("output_tokens")),
        cache_read_tokens=_int(raw.get("cache_read_tokens")),
        cache_write_tokens=_int(raw.get("cache_write_tokens")),
        latency_ms=raw.get("latency_ms"),
        ttft_ms=raw.get("ttft_ms"),
        ok=raw.get("status") == "success",
        session=raw.get("session_id"),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
    )


# --------------------------------------------------------------------------- reading


def tenants_with_ledgers(conn: Any) -> list[str]:
    """Tenants whose schema holds a usage table (schema t_<name>, '_' for '-')."""
    cur = conn.execute(
        "SELECT table_schema FROM information_schema.tables"
        " WHERE table_name = 'usage' AND table_schema LIKE %s ORDER BY 1",
        [SCHEMA_PREFIX.replace("_", "\\_") + "%"],
    )
    return [schema[len(SCHEMA_PREFIX) :].replace("_", "-") for (schema,) in cur.fetchall()]


def load_rows(conn: Any, tenant: str, since: datetime | None, until: datetime | None) -> list[Row]:
    """The tenant's ledger rows with since <= ts < until, oldest first."""
    schema = schema_name(tenant)  # validates the name: it goes into the SQL as an identifier
    sql = f'SELECT to_jsonb(u) FROM "{schema}".usage u WHERE ts >= %s AND ts < %s ORDER BY ts'  # noqa: S608
    low = since or datetime(1970, 1, 1, tzinfo=UTC)
    high = until or datetime(9999, 1, 1, tzinfo=UTC)
    return [row_from_json(tenant, raw) for (raw,) in conn.execute(sql, [low, high]).fetchall()]


# --------------------------------------------------------------------------- totals


@dataclass
class Totals:
    """Sums over a set of rows."""

    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    list_cost_usd: float = 0.0
    unpriced_cost_usd: float = 0.0
    """Spend of rows without a list cost (no Claude model asked for, no baseline)."""

    def add(self, row: Row) -> None:
        self.requests += 1
        self.errors += 0 if row.ok else 1
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cache_read_tokens += row.cache_read_tokens
        self.cache_write_tokens += row.cache_write_tokens
        self.cost_usd += row.cost
        if row.list_cost is None:
            self.unpriced_cost_usd += row.cost
        else:
            self.list_cost_usd += row.list_cost

    @property
    def savings_usd(self) -> float:
        return self.list_cost_usd - self.cost_usd

    @property
    def savings_pct(self) -> float | None:
        if self.list_cost_usd <= 0:
            return None
        return 100.0 * self.savings_usd / self.list_cost_usd

    def as_dict(self) -> dict[str, Any]:
        pct = self.savings_pct
        return {
            "requests": self.requests,
            "errors": self.errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": round(self.cost_usd, 10),
            "list_cost_usd": round(self.list_cost_usd, 10),
            "savings_usd": round(self.savings_usd, 10),
            "savings_pct": None if pct is None else round(pct, 2),
            "unpriced_cost_usd": round(self.unpriced_cost_usd, 10),
        }


def totals(rows: Iterable[Row]) -> Totals:
    result = Totals()
    for row in rows:
        result.add(row)
    return result


def check_dimensions(by: Sequence[str]) -> list[str]:
    for name in by:
        if name not in (*DIMENSIONS, "tenant") and not (
            name.startswith("label:") and len(name) > len("label:")
        ):
            raise ValueError(
                f"--by {name}: expected one of {', '.join(DIMENSIONS)} or label:<name>"
            )
    return list(by)


def group(rows: Iterable[Row], by: Sequence[str]) -> list[tuple[tuple[str, ...], Totals]]:
    """Totals per combination of the `by` dimensions, dearest first."""
    groups: dict[tuple[str, ...], Totals] = defaultdict(Totals)
    for row in rows:
        groups[tuple(row.dimension(name) for name in by)].add(row)
    return sorted(groups.items(), key=lambda item: (-item[1].cost_usd, item[0]))


def daily(rows: Iterable[Row], of: Callable[[Row], str]) -> dict[str, dict[date, float]]:
    """USD per day per `of(row)` (e.g. the alias), for the spend-over-time plot."""
    result: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        result[of(row)][row.ts.date()] += row.cost
    return result


# --------------------------------------------------------------------------- A/B arms


@dataclass
class Arm:
    """One target of an alias (provider, model) with its requests."""

    provider: str
    model: str
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def cost_per_request(self) -> float:
        return self.cost_usd / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "latency_p50_ms": percentile(self.latencies, 50),
            "latency_p95_ms": percentile(self.latencies, 95),
            "ttft_p50_ms": percentile(self.ttfts, 50),
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 10),
            "cost_per_request_usd": round(self.cost_per_request, 10),
        }


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The `pct` percentile (linear interpolation, like numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100
    low, high = math.floor(position), math.ceil(position)
    value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return round(value, 1)


@dataclass
class Comparison:
    """The arms of one alias and whether they differ (p-values; None: not enough data)."""

    alias: str
    arms: list[Arm]
    error_test: str | None = None
    error_p: float | None = None
    latency_test: str | None = None
    latency_p: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "arms": [arm.as_dict() for arm in self.arms],
            "error_rate_test": self.error_test,
            "error_rate_p": self.error_p,
            "latency_test": self.latency_test,
            "latency_p": self.latency_p,
        }


def arms_of(rows: Iterable[Row]) -> dict[str, list[Arm]]:
    """Per alias, its arms: the (provider, model) pairs that served it, by requests."""
    found: dict[str, dict[tuple[str, str], Arm]] = defaultdict(dict)
    for row in rows:
        if row.provider is None or row.model is None:
            continue  # refused before any provider: no arm to blame
        arm = found[row.alias].get((row.provider, row.model))
        if arm is None:
            arm = found[row.alias][(row.provider, row.model)] = Arm(row.provider, row.model)
        arm.requests += 1
        arm.errors += 0 if row.ok else 1
        arm.tokens += row.tokens
        arm.cost_usd += row.cost
        if row.ok and row.latency_ms is not None:
            arm.latencies.append(float(row.latency_ms))
        if row.ok and row.ttft_ms is not None:
            arm.ttfts.append(float(row.ttft_ms))
    return {
        alias: sorted(arms.values(), key=lambda a: (-a.requests, a.provider, a.model))
        for alias, arms in found.items()
    }


def compare(alias: str, arms: list[Arm]) -> Comparison:
    """Significance of the arms' differences: error rate by Fisher's exact test (two arms) or
    chi-square (more), latency by Mann-Whitney U (two arms) or Kruskal-Wallis (more)."""
    from scipy import stats

    result = Comparison(alias, arms)
    if len(arms) < 2:
        return result
    table = [[arm.errors, arm.requests - arm.errors] for arm in arms]
    if sum(row[0] for row in table) > 0 and all(arm.requests for arm in arms):
        if len(arms) == 2:
            result.error_test = "fisher-exact"
            result.error_p = float(stats.fisher_exact(table).pvalue)
        else:
            result.error_test = "chi-square"
            result.error_p = float(stats.chi2_contingency(table).pvalue)
    samples = [arm.latencies for arm in arms if len(arm.latencies) >= 3]
    if len(samples) == len(arms):
        if len(arms) == 2:
            result.latency_test = "mann-whitney-u"
            test = stats.mannwhitneyu(samples[0], samples[1], alternative="two-sided")
        else:
            result.latency_test = "kruskal-wallis"
            test = stats.kruskal(*samples)
        result.latency_p = float(test.pvalue)
    return result


def comparisons(rows: Iterable[Row]) -> list[Comparison]:
    """A comparison for each alias that more than one target served."""
    return [compare(alias, arms) for alias, arms in sorted(arms_of(rows).items()) if len(arms) > 1]


def mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None
