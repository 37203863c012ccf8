"""The soak harness (`make soak`, e2e/bench/soak.py) in a short run, so that it cannot rot.

Ninety seconds of the same traffic as the 30-minute soak: two tenants' rendered gateways, mixed
Anthropic/OpenAI, streamed and not, a Redis stop and a PostgreSQL stop of the run's own stores
(never the shared ones), each for 5 s. What must hold is what the soak's verdicts say, except
memory growth (a run this short says nothing about it) and anything timed: every request the
clients saw served has exactly one ledger row, errors stay under 1 %, the Redis outage is
seen as 503 refusals and only then, each budget counter equals its ledger's costs, and the
small budget of key `capped` ends Exceeded and refuses every request after its first refusal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e.bench import soak

pytestmark = pytest.mark.e2e


def test_a_short_soak_loses_no_ledger_row_through_both_restarts(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    soak.main(
        ["--minutes", "1.5", "--outage-s", "5", "--capped-usd", "0.003", "--no-report",
         "--keep-outcomes", "--json", str(out)]
    )  # fmt: skip
    res = json.loads(out.read_text())
    kinds = res["kinds"]
    assert [name for name, _, _ in res["outages"]] == ["Redis", "PostgreSQL"]
    assert kinds.get("ok", 0) > 0
    assert kinds.get("store_refused", 0) > 0, "the Redis outage refused nothing"
    served = {o["session"] for o in res["outcomes"] if o["kind"] == "ok"}
    combos = {(o["api"], o["alias"], o["stream"]) for o in res["outcomes"] if o["kind"] == "ok"}
    assert len(combos) == len(soak.COMBOS), f"not every kind of request was served: {combos}"
    for tenant, check in res["per_tenant"].items():
        assert check["lost"] == 0, f"{tenant}: served requests without a ledger row"
        assert check["duplicated"] == 0, f"{tenant}: requests with two ledger rows"
        assert check["rows_without_a_client_request"] == 0
        assert check["client_ok"] > 0
        assert abs(check["tenant_counter_minus_ledger_usd"]) <= 1e-6 * check["rows"]
        assert abs(check["capped_counter_minus_ledger_usd"]) <= 1e-6 * check["rows"]
        # Per daily period (a run that crosses midnight UTC has two): spent when refused.
        refused_in = [p for p in check["capped_periods"] if p["refused"]]
        assert refused_in, f"{tenant}: the capped key was never refused"
        assert all(p["state"] == "Exceeded" for p in refused_in), check["capped_periods"]
        assert check["capped_refused"] > 0
        assert check["capped_served_after_first_refusal"] == 0
    assert sum(t["client_ok"] for t in res["per_tenant"].values()) == len(served)
    assert res["error_rate"] < soak.ERROR_RATE_BOUND, res["errors"]
    assert res["store_refused_outside_outage"] == 0
    assert all(n == 0 for n in res["spool_left"].values())
