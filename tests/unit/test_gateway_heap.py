"""The gateway's garbage collector (`tenantgw.gateway.heap`): a worker started through
`create_app` has frozen its start-up heap and raised generation 0's threshold before it
serves; in a fresh interpreter, since both change the process's collector."""

from __future__ import annotations

import gc
import json
import logging
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantgw.gateway import heap

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# Drives the ASGI lifespan of the app uvicorn would serve (LiteLLM's start-up included) up to
# "startup complete", reads the collector's state, then shuts the app down.
STARTED_WORKER = """
    import asyncio, gc, json

    before = {"frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold()}

    from tenantgw.gateway.app import create_app

    async def main():
        app = create_app()
        inbox = asyncio.Queue()
        started = asyncio.Event()
        sent = []

        async def send(message):
            sent.append(message["type"])
            if message["type"].startswith("lifespan.startup."):
                started.set()

        await inbox.put({"type": "lifespan.startup"})
        serving = asyncio.create_task(
            app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send)
        )
        await asyncio.wait_for(started.wait(), 180)
        after = {"frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold()}
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(serving, 60)
        print(json.dumps({"before": before, "after": after, "sent": sent}))

    asyncio.run(main())
"""


def start_worker(tmp_path: Path, **env: str) -> dict[str, Any]:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "fast",
                        "litellm_params": {
                            "model": "openai/sim-model",
                            "api_base": "http://127.0.0.1:9/v1",
                            "api_key": "sk-unused",
                        },
                    }
                ]
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STARTED_WORKER)],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TENANTGW_")},
            "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
            "TENANTGW_LITELLM_CONFIG": str(config),
            "TENANTGW_TENANT": "heap-test",
            "LITELLM_MASTER_KEY": "sk-" + secrets.token_hex(24),
            "HOME": str(tmp_path),
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sent"][0] == "lifespan.startup.complete", result
    return result


def test_a_started_worker_has_frozen_its_heap_and_raised_the_young_threshold(
    tmp_path: Path,
) -> None:
    result = start_worker(tmp_path)
    assert result["before"]["frozen"] == 0
    assert result["before"]["thresholds"][0] == 700  # Python's default until the start-up
    # LiteLLM's started proxy: hundreds of thousands of objects, now out of every collection.
    assert result["after"]["frozen"] > 100_000
    assert result["after"]["thresholds"] == [
        heap.DEFAULT_THRESHOLD,
        *result["before"]["thresholds"][1:],
    ]


def test_zero_keeps_pythons_collector_as_it_is(tmp_path: Path) -> None:
    result = start_worker(tmp_path, TENANTGW_GC_THRESHOLD="0")
    assert result["after"] == result["before"]


def test_the_threshold_setting(caplog: pytest.LogCaptureFixture) -> None:
    assert heap.gc_threshold({}) == heap.DEFAULT_THRESHOLD
    assert heap.gc_threshold({heap.THRESHOLD_ENV: " 20000 "}) == 20_000
    assert heap.gc_threshold({heap.THRESHOLD_ENV: "0"}) == 0
    with caplog.at_level(logging.ERROR, logger="tenantgw.gateway"):
        for bad in ("lots", "-5", "1.5"):
            assert heap.gc_threshold({heap.THRESHOLD_ENV: bad}) == heap.DEFAULT_THRESHOLD
    assert caplog.text.count(heap.THRESHOLD_ENV) == 3


def test_tuning_in_this_process_freezes_and_sets_generation_zero() -> None:
    saved = gc.get_threshold()
    try:
        tuned = heap.tune_after_startup({heap.THRESHOLD_ENV: "12345"})
        assert tuned.frozen == gc.get_freeze_count() > 0
        assert tuned.thresholds == gc.get_threshold() == (12345, *saved[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
