"""`tenantctl report <tenant>`: spend, savings, projects and A/B arms from a tenant's ledger.

Reads the usage ledger with the admin DSN ($TENANTGW_POSTGRES_DSN or --dsn), like
`tenantctl audit`, and the tenant's BudgetPolicies from the cluster (for the burn-down).
Formats: table (default), csv, json, html (tables and the four plots), focus (FOCUS 1.0 CSV).
`--plot DIR` writes the plots as PNG files. `--all-tenants`: every tenant with a ledger.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from tenantgw.api import BudgetPolicy, Tenant
from tenantgw.api.common import GROUP, VERSION
from tenantgw.api.periods import period_bounds
from tenantgw.cli import plots
from tenantgw.cli.focus import write_focus
from tenantgw.cli.ledger_rows import (
    Comparison,
    Row,
    Totals,
    check_dimensions,
    comparisons,
    group,
    load_rows,
    tenants_with_ledgers,
    totals,
)

FORMATS = ("table", "csv", "json", "html", "focus")
DEFAULT_BY = "alias"


def _when(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(
            f"--{name} {value!r}: expected an ISO 8601 date or time, e.g. 2025-01-31"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- budgets


def budget_policies(api: Any, tenant: str) -> list[BudgetPolicy]:
    """The tenant's BudgetPolicies, from its namespace (the Tenant names it)."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    raw = custom.get_cluster_custom_object(GROUP, VERSION, "tenants", tenant)
    namespace = Tenant.model_validate(raw).namespace_name()
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "budgetpolicies")
    policies = []
    for item in items.get("items", []):
        try:
            policies.append(BudgetPolicy.model_validate(item))
        except ValueError as exc:
            name = item.get("metadata", {}).get("name")
            print(f"warning: BudgetPolicy {name} skipped: {exc}", file=sys.stderr)
    return policies


def _in_scope(policy: BudgetPolicy, row: Row) -> bool:
    scope = policy.spec.scope
    if scope.kind == "Key":
        return row.key == scope.name
    if scope.kind == "ModelAlias":
        return row.alias == scope.name
    return True


def burns(policies: Sequence[BudgetPolicy], rows: Sequence[Row], now: datetime) -> list[plots.Burn]:
    """Each policy's current period: its cumulative spend (Session policies: the top session)."""
    result = []
    for policy in sorted(policies, key=lambda p: p.metadata.name or ""):
        spec = policy.spec
        start, end = period_bounds(spec.period, now)
        in_period = [r for r in rows if start <= r.ts < end and _in_scope(policy, r)]
        scope = spec.scope.kind + (f" {spec.scope.name}" if spec.scope.name else "")
        if spec.scope.kind == "Session":
            per_session = group(in_period, ["session"])
            top = next((s for (s,), _ in per_session if s != "-"), None)
            in_period = [r for r in in_period if r.session == top]
            scope = f"Session {top}" if top else "Session"
        points, spent = [], 0.0
        for row in in_period:
            spent += row.cost
            points.append((row.ts, spent))
        result.append(
            plots.Burn(
                name=policy.metadata.name or "-",
                scope=scope,
                period=spec.period,
                limit_usd=spec.limit_usd,
                thresholds=tuple(spec.alert_thresholds),
                start=start,
                end=end,
                points=tuple(points),
            )
        )
    return result


# --------------------------------------------------------------------------- the report


class Report:
    """What one `tenantctl report` computes; the formats render it."""

    def __init__(
        self,
        title: str,
        rows: Sequence[Row],
        by: Sequence[str],
        since: datetime | None,
        until: datetime | None,
        budget_burns: Sequence[plots.Burn] = (),
    ) -> None:
        self.title = title
        self.rows = rows
        self.by = list(by)
        self.since, self.until = since, until
        self.total: Totals = totals(rows)
        self.groups = group(rows, self.by)
        self.ab: list[Comparison] = comparisons(rows)
        self.burns = list(budget_burns)

    def group_dicts(self) -> list[dict[str, Any]]:
        return [
            {**dict(zip(self.by, values, strict=True)), **t.as_dict()} for values, t in self.groups
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "by": self.by,
            "total": self.total.as_dict(),
            "groups": self.group_dicts(),
            "ab": [c.as_dict() for c in self.ab],
            "budgets": [
                {
                    "name": b.name,
                    "scope": b.scope,
                    "period": b.period,
                    "limit_usd": b.limit_usd,
                    "spent_usd": round(b.spent, 10),
                    "thresholds": list(b.thresholds),
                    "period_start": b.start.isoformat(),
                    "period_end": b.end.isoformat(),
                }
                for b in self.burns
            ],
        }

    def plots(self) -> dict[str, bytes]:
        return {
            "spend-over-time.png": plots.spend_over_time(self.rows, self.title),
            "spend-by-model.png": plots.spend_by_model(self.rows, self.title),
            "budget-burn-down.png": plots.burn_down(self.burns, self.title),
            "savings.png": plots.savings(self.rows, self.title),
        }


def _money(value: float) -> str:
    return f"${value:,.6f}"


TABLE_COLUMNS = (
    ("requests", "requests", str),
    ("errors", "errors", str),
    ("tokens", "tokens", str),
    ("cost", "cost_usd", _money),
    ("list price", "list_cost_usd", _money),
    ("saved", "savings_usd", _money),
    ("saved %", "savings_pct", lambda v: "-" if v is None else f"{v:.1f}%"),
)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _group_cells(values: dict[str, Any]) -> list[str]:
    tokens = sum(
        values[k]
        for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    )
    cells = []
    for _, key, fmt in TABLE_COLUMNS:
        cells.append(str(tokens) if key == "tokens" else fmt(values[key]))
    return cells


def write_table(report: Report, out: TextIO) -> None:
    t = report.total.as_dict()
    span = f"{report.since.isoformat() if report.since else 'start'} .. " + (
        report.until.isoformat() if report.until else "now"
    )
    out.write(f"{report.title}: {span}\n")
    pct = "-" if t["savings_pct"] is None else f"{t['savings_pct']:.1f}%"
    out.write(
        f"{t['requests']} requests ({t['errors']} errors), spent {_money(t['cost_usd'])}, "
        f"Claude list price {_money(t['list_cost_usd'])}, saved {_money(t['savings_usd'])} "
        f"({pct}); spend without a list price {_money(t['unpriced_cost_usd'])}\n\n"
    )
    headers = [*report.by, *(name for name, _, _ in TABLE_COLUMNS)]
    rows = [[str(g[d]) for d in report.by] + _group_cells(g) for g in report.group_dicts()]
    if rows:
        out.write(_table(headers, rows) + "\n")
    write_ab(report, out)
    for burn in report.burns:
        out.write(
            f"\nbudget {burn.name} ({burn.scope}, {burn.period}): {_money(burn.spent)} of "
            f"${burn.limit_usd:g} ({100 * burn.spent / burn.limit_usd:.1f}%), thresholds "
            f"{', '.join(f'{p}%' for p in burn.thresholds)}\n"
        )


def write_ab(report: Report, out: TextIO) -> None:
    """The arms of each alias served by several targets, side by side, with the tests."""
    for comparison in report.ab:
        out.write(f"\nA/B: alias {comparison.alias}\n")
        arm_rows = []
        for arm in comparison.arms:
            a = arm.as_dict()
            arm_rows.append(
                [
                    f"{a['provider']}/{a['model']}",
                    str(a["requests"]),
                    f"{100 * a['error_rate']:.1f}%",
                    str(a["latency_p50_ms"]),
                    str(a["latency_p95_ms"]),
                    str(a["ttft_p50_ms"]),
                    str(a["tokens"]),
                    _money(a["cost_per_request_usd"]),
                ]
            )
        out.write(
            _table(
                ["arm", "requests", "errors", "p50 ms", "p95 ms", "ttft p50", "tokens", "$/req"],
                arm_rows,
            )
            + "\n"
        )
        out.write(f"  error rate: {_p(comparison.error_test, comparison.error_p)}\n")
        out.write(f"  latency:    {_p(comparison.latency_test, comparison.latency_p)}\n")


def _p(test: str | None, p: float | None) -> str:
    if test is None or p is None:
        return "not enough data for a test"
    verdict = "differ (p < 0.05)" if p < 0.05 else "no significant difference"
    return f"{test} p = {p:.4g}: {verdict}"


def write_csv(report: Report, out: TextIO) -> None:
    dicts = report.group_dicts()
    fields = [*report.by, *Totals().as_dict().keys()]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for values in dicts:
        writer.writerow({k: "" if v is None else v for k, v in values.items()})


def write_html(report: Report, out: TextIO) -> None:
    esc = html.escape
    images = report.plots()
    table = io_table(report)
    figures = "\n".join(
        f'<figure id="{esc(name[:-4])}"><img alt="{esc(name[:-4])}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}"></figure>'
        for name, png in images.items()
    )
    t = report.total.as_dict()
    out.write(
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>tenantgw report: {esc(report.title)}</title>"
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}"
        "figure{display:inline-block;margin:4px}img{width:640px}</style></head><body>\n"
        f"<h1>{esc(report.title)}</h1>\n"
        f'<p id="summary">{t["requests"]} requests, spent <b id="total-cost">'
        f'{t["cost_usd"]:.6f}</b> USD, Claude list price <b id="total-list">'
        f'{t["list_cost_usd"]:.6f}</b> USD, saved <b id="total-savings">'
        f"{t['savings_usd']:.6f}</b> USD"
        + (f" ({t['savings_pct']:.1f}%)" if t["savings_pct"] is not None else "")
        + "</p>\n"
        + figures
        + "\n<h2>By "
        + esc(", ".join(report.by))
        + "</h2>\n"
        + table
        + "\n<h2>A/B comparisons</h2>\n<pre>"
        + esc(_ab_text(report))
        + "</pre>\n</body></html>\n"
    )


def _ab_text(report: Report) -> str:
    import io

    buf = io.StringIO()
    write_ab(report, buf)
    return buf.getvalue() or "no alias served by more than one target"


def io_table(report: Report) -> str:
    esc = html.escape
    headers = [*report.by, *(name for name, _, _ in TABLE_COLUMNS)]
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{esc(c)}</td>" for c in [str(g[d]) for d in report.by] + _group_cells(g))
        + "</tr>"
        for g in report.group_dicts()
    )
    return f'<table id="groups"><tr>{head}</tr>{body}</table>'


def render(report: Report, fmt: str, out: TextIO) -> None:
    if fmt == "table":
        write_table(report, out)
    elif fmt == "csv":
        write_csv(report, out)
    elif fmt == "json":
        out.write(json.dumps(report.as_json(), indent=2, sort_keys=True) + "\n")
    elif fmt == "html":
        write_html(report, out)
    elif fmt == "focus":
        write_focus(report.rows, out)
    else:
        raise SystemExit(f"--format {fmt}: expected one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- command line


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="spend, savings, projects and A/B arms of a tenant")
    p.add_argument("tenant", nargs="?", help="the tenant (omit with --all-tenants)")
    p.add_argument("--all-tenants", action="store_true", help="every tenant with a ledger")
    p.add_argument("--dsn", default=None, help="admin DSN (default $TENANTGW_POSTGRES_DSN)")
    p.add_argument("--since", default=None, help="ISO 8601 date or time (default: 30 days ago)")
    p.add_argument("--until", default=None, help="ISO 8601 date or time, exclusive (default: now)")
    p.add_argument(
        "--by",
        default=None,
        help="comma-separated: key, project, alias, provider, model, day, session, requested, "
        "label:<name> (default: alias; tenant,alias with --all-tenants)",
    )
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    p.add_argument("--plot", default=None, metavar="DIR", help="also write the plots as PNGs")
    p.add_argument(
        "--no-budgets", action="store_true", help="do not read BudgetPolicies from the cluster"
    )


def run(args: Any, api_factory: Callable[[], Any]) -> int:
    import psycopg

    dsn = args.dsn or os.environ.get("TENANTGW_POSTGRES_DSN")
    if not dsn:
        raise SystemExit("tenantctl report needs the admin DSN: --dsn or $TENANTGW_POSTGRES_DSN")
    if bool(args.tenant) == bool(args.all_tenants):
        raise SystemExit("tenantctl report: name a tenant or pass --all-tenants (not both)")
    now = datetime.now(UTC)
    until = _when(args.until, "until")
    since = _when(args.since, "since") or (until or now) - timedelta(days=30)
    default_by = "tenant,alias" if args.all_tenants else DEFAULT_BY
    try:
        by = check_dimensions([b.strip() for b in (args.by or default_by).split(",") if b])
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    with psycopg.connect(dsn, autocommit=True, application_name="tenantctl-report") as conn:
        names = tenants_with_ledgers(conn) if args.all_tenants else [args.tenant]
        if args.tenant and args.tenant not in tenants_with_ledgers(conn):
            raise SystemExit(f"tenant {args.tenant}: no usage ledger in this database")
        rows = [row for name in names for row in load_rows(conn, name, since, until)]
        budget_burns: list[plots.Burn] = []
        if args.tenant and not args.no_budgets:
            try:
                policies = budget_policies(api_factory(), args.tenant)
            except Exception as exc:  # no cluster: the report goes on without burn-down
                print(f"warning: BudgetPolicies not read ({exc})", file=sys.stderr)
                policies = []
            if policies:
                at = until or now
                earliest = min(period_bounds(p.spec.period, at)[0] for p in policies)
                period_rows = load_rows(conn, args.tenant, earliest, at)
                budget_burns = burns(policies, period_rows, at)
    title = "all tenants" if args.all_tenants else args.tenant
    report = Report(title, rows, by, since, until, budget_burns)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    try:
        render(report, args.format, out)
    finally:
        if out is not sys.stdout:
            out.close()
    if args.plot:
        directory = Path(args.plot)
        directory.mkdir(parents=True, exist_ok=True)
        for name, png in report.plots().items():
            (directory / name).write_bytes(png)
        print(f"plots written to {directory}", file=sys.stderr)
    return 0
