"""The report's four plots (matplotlib, Agg backend: no display needed), as PNG bytes.

1. spend over time: USD per day, stacked by alias;
2. spend by model: USD per provider/model;
3. budget burn-down: cumulative spend of each BudgetPolicy's current period against its limit,
   its alert thresholds as dashed lines;
4. savings: actual spend against the Claude list-price counterfactual, per alias.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from tenantgw.cli.ledger_rows import Row, daily, group


@dataclass(frozen=True)
class Burn:
    """One BudgetPolicy's current period: cumulative spend points against its limit."""

    name: str
    scope: str
    period: str
    limit_usd: float
    thresholds: tuple[int, ...]
    start: datetime
    end: datetime
    points: tuple[tuple[datetime, float], ...]

    @property
    def spent(self) -> float:
        return self.points[-1][1] if self.points else 0.0


def _figure(width: float = 8.0, height: float = 4.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return fig, ax


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def spend_over_time(rows: Sequence[Row], title: str) -> bytes:
    fig, ax = _figure()
    series = daily(rows, lambda r: r.alias)
    days: list[date] = sorted({d for per_day in series.values() for d in per_day})
    bottom = [0.0] * len(days)
    for alias in sorted(series, key=lambda a: -sum(series[a].values())):
        values = [series[alias].get(d, 0.0) for d in days]
        ax.bar([d.isoformat() for d in days], values, bottom=bottom, label=alias)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for x, total in enumerate(bottom):
        ax.annotate(f"${total:.4f}", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_title(f"Spend over time: {title}")
    ax.set_ylabel("USD per day")
    if series:
        ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def spend_by_model(rows: Sequence[Row], title: str) -> bytes:
    fig, ax = _figure()
    groups = group(rows, ["provider", "model"])
    names = [f"{provider}/{model}" for (provider, model), _ in groups]
    values = [t.cost_usd for _, t in groups]
    bars = ax.barh(names[::-1], values[::-1])
    ax.bar_label(bars, labels=[f"${v:.4f}" for v in values[::-1]], fontsize=8)
    ax.set_title(f"Spend by provider/model: {title}")
    ax.set_xlabel("USD")
    return _png(fig)


def burn_down(burns: Sequence[Burn], title: str) -> bytes:
    fig, ax = _figure()
    for burn in burns:
        xs = [burn.start, *[when for when, _ in burn.points]]
        ys = [0.0, *[spent for _, spent in burn.points]]
        line = ax.step(xs, ys, where="post", label=f"{burn.name} (${burn.spent:.4f})")[0]
        color = line.get_color()
        ax.axhline(burn.limit_usd, color=color, linewidth=1.5)
        ax.annotate(
            f"{burn.name} limit ${burn.limit_usd:g}/{burn.period}",
            (burn.start, burn.limit_usd),
            fontsize=7,
            va="bottom",
        )
        for pct in burn.thresholds:
            ax.axhline(burn.limit_usd * pct / 100, color=color, linestyle="--", linewidth=0.8)
    ax.set_title(f"Budget burn-down (current period): {title}")
    ax.set_ylabel("USD spent")
    if burns:
        ax.legend(fontsize=7, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no BudgetPolicy", ha="center", transform=ax.transAxes)
    fig.autofmt_xdate()
    return _png(fig)


def savings(rows: Sequence[Row], title: str) -> bytes:
    fig, ax = _figure()
    groups = group(rows, ["alias"])
    names = [alias for (alias,), _ in groups]
    actual = [t.cost_usd for _, t in groups]
    listed = [t.list_cost_usd for _, t in groups]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], listed, width=0.4, label="Claude list price")
    bars = ax.bar([x + 0.2 for x in xs], actual, width=0.4, label="actual")
    pcts = [t.savings_pct for _, t in groups]
    ax.bar_label(bars, labels=["" if p is None else f"-{p:.0f}%" for p in pcts], fontsize=8)
    ax.set_xticks(list(xs), names, rotation=20, fontsize=8)
    total = sum(listed)
    saved = total - sum(actual)
    pct = f" ({100 * saved / total:.1f}%)" if total > 0 else ""
    ax.set_title(f"Savings against list price: ${saved:.4f}{pct} - {title}")
    ax.set_ylabel("USD")
    ax.legend(fontsize=7)
    return _png(fig)
