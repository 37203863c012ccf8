"""The html report opens in a real headless browser (Debian's chromium-headless-shell)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tenantgw.cli.ledger_rows import Row
from tenantgw.cli.report import Report, render

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 9, tzinfo=UTC)


def rows() -> list[Row]:
    out = []
    for n in range(40):
        out.append(
            Row(
                tenant="engineering-team",
                ts=T0 + timedelta(hours=5 * n),
                key="alice" if n % 2 else "ci",
                requested="claude-opus-5-5",
                alias="fast-code" if n % 3 else "reasoning",
                provider="openrouter" if n % 4 else "openai",
                model="qwen/qwen3-coder" if n % 4 else "gpt-4o-mini",
                cost=0.0002 * (1 + n % 5),
                list_cost=0.004 * (1 + n % 5),
                list_model="claude-opus-5-5",
                input_tokens=900,
                output_tokens=120,
                cache_read_tokens=0,
                cache_write_tokens=0,
                latency_ms=300 + 7 * n,
                ttft_ms=90,
                ok=n % 9 != 0,
                session=None,
                labels={"project": "checkout" if n % 2 else "search"},
            )
        )
    return out


def test_html_report_screenshot_in_headless_chromium(tmp_path: Path) -> None:
    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium-headless-shell is not installed: run make setup")
    page = tmp_path / "report.html"
    with page.open("w", encoding="utf-8") as out:
        render(Report("engineering-team", rows(), ["alias"], None, None), "html", out)
    shot = tmp_path / "report.png"
    dom = subprocess.run(
        [browser, "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    # the browser parsed the page: the four plots and the totals are in its DOM
    assert dom.stdout.count("<img") == 4
    assert 'id="total-savings"' in dom.stdout
    subprocess.run(
        [browser, "--no-sandbox", "--disable-gpu", "--window-size=1400,1800",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 50_000  # four plots, not a blank page
