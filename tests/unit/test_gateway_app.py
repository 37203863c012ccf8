"""The gateway entrypoint: `python -m tenantgw.gateway` flags and the environment it prepares."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantgw.gateway import __main__ as entry
from tenantgw.gateway import app as gateway_app
from tenantgw.gateway.context import (
    ContextStore,
    RequestContext,
    drop_client_context,
    metadata_key,
    new_request_id,
    request_metadata,
)

pytestmark = pytest.mark.unit

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (a flag value, nothing listens)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"litellm_settings": {"callbacks": ["x.handler", "prometheus"]}})
    )
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No gateway variables set; whatever the test sets is undone afterwards."""
    for name in (
        gateway_app.CONFIG_ENV,
        "WORKER_CONFIG",
        "NUM_WORKERS",
        entry.PROMETHEUS_DIR_ENV,
        *entry.OFFLINE_DEFAULTS,
    ):
        monkeypatch.setenv(name, "")  # recorded, so that teardown restores the original
        monkeypatch.delenv(name)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    logger = logging.getLogger("tenantgw")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    logger.handlers[:] = handlers
    logger.propagate, logger.level = propagate, level


def test_flags_are_litellms(config: Path) -> None:
    args = entry.parse_args(
        ["--config", str(config), "--host", ALL_INTERFACES, "--port", "4000", "--num_workers", "2"]
    )
    assert (args.config, args.host, args.port, args.num_workers) == (
        str(config),
        ALL_INTERFACES,
        4000,
        2,
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--config", "/nonexistent/config.yaml"],
        ["--num_workers", "0"],
        ["--conf", "x"],  # no abbreviations: exactly litellm's flags
        ["--debug"],
    ],
)
def test_bad_flags_are_refused(argv: list[str], config: Path) -> None:
    if argv[:1] == ["--num_workers"]:
        argv = ["--config", str(config), *argv]
    with pytest.raises(SystemExit):
        entry.parse_args(argv)


@pytest.mark.usefixtures("clean_env")
def test_environment_for_one_worker(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "False")  # explicit settings win
    entry.prepare_environment(str(config), 1)
    assert os.environ[gateway_app.CONFIG_ENV] == str(config.resolve())
    assert os.environ["NUM_WORKERS"] == "1"
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "False"
    assert os.environ["LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS"] == "True"
    assert entry.PROMETHEUS_DIR_ENV not in os.environ


@pytest.mark.usefixtures("clean_env")
def test_several_workers_share_a_fresh_prometheus_directory(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "prom"
    stale.mkdir()
    (stale / "counter_123.db").write_text("old samples")
    monkeypatch.setenv(entry.PROMETHEUS_DIR_ENV, str(stale))
    entry.prepare_environment(str(config), 3)
    assert os.environ[entry.PROMETHEUS_DIR_ENV] == str(stale)
    assert list(stale.iterdir()) == []


@pytest.mark.usefixtures("clean_env")
def test_worker_gets_the_config_as_litellm_cli_passes_it(config: Path) -> None:
    entry.prepare_environment(str(config), 1)
    gateway_app.prepare_worker()
    worker_config = json.loads(os.environ["WORKER_CONFIG"])
    assert worker_config["config"] == str(config.resolve())
    assert worker_config["api_version"]  # the CLI's Azure default
    assert worker_config["drop_params"] is False


def test_uvicorn_serves_the_factory() -> None:
    options = entry._uvicorn_options("127.0.0.1", 4000, 2)
    assert options["factory"] is True
    assert options["workers"] == 2
    assert entry.APP_FACTORY == "tenantgw.gateway.app:create_app"
    # The gateway's lock file carries both: no request is parsed by h11 in pure Python.
    assert (options["loop"], options["http"]) == ("uvloop", "httptools")


# --------------------------------------------------------------------------- request context


def _ctx(**changes: Any) -> RequestContext:
    values: dict[str, Any] = {
        "tenant": "eng",
        "key_name": "alice",
        "request_id": new_request_id(),
        "requested_model": "claude-sonnet-4-5",
        "alias": "fast-code",
        "cost_tier": "medium",
        "call_type": "anthropic_messages",
        "stream": True,
        "pii_counts": {"EMAIL": 2},
    }
    return RequestContext(**{**values, **changes})


def test_context_is_found_by_its_ticket_after_a_round_trip_through_metadata() -> None:
    store = ContextStore()
    ctx = _ctx()
    data: dict[str, Any] = {"messages": []}
    tracked = store.attach(data, "anthropic_messages", ctx)
    copied = json.loads(json.dumps(data["litellm_metadata"]))  # LiteLLM copies metadata
    found = store.find(copied)
    assert found is tracked
    assert found.ctx is ctx
    assert copied == {"tenantgw": tracked.ticket}  # only the ticket travels
    assert len(tracked.ticket) == 32


def test_context_from_metadata_without_one_or_with_a_forged_one() -> None:
    store = ContextStore()
    store.attach({}, "acompletion", _ctx())
    assert store.find(None) is None
    assert store.find({"tenantgw": "junk"}) is None
    assert store.find({"tenantgw": {"tenant": "eng", "key_name": "ci", "request_id": "x"}}) is None


def test_client_context_is_dropped_from_both_metadata_dicts() -> None:
    data: dict[str, Any] = {
        "metadata": {"tenantgw": {"key_name": "ci"}, "user_id": "u"},
        "litellm_metadata": {"tenantgw": "ticket"},
    }
    drop_client_context(data)
    assert data == {"metadata": {"user_id": "u"}, "litellm_metadata": {}}


def test_request_ids_are_drawn_by_the_gateway() -> None:
    assert len({new_request_id() for _ in range(1000)}) == 1000


def test_a_slot_is_taken_once_and_finished_contexts_expire() -> None:
    store = ContextStore(finished_ttl=0.0)
    data: dict[str, Any] = {}
    tracked = store.attach(data, "acompletion", _ctx())
    tracked.holds_slot = True
    assert tracked.take_slot() is True
    assert tracked.take_slot() is False
    store.finish(tracked)
    store.attach({}, "acompletion", _ctx())  # sweeps
    assert store.find(data["metadata"]) is None
    assert len(store) == 1


def test_the_store_is_bounded() -> None:
    store = ContextStore(max_live=3)
    kept = [store.attach({}, "acompletion", _ctx()) for _ in range(5)]
    assert len(store) <= 3
    assert store.find({"tenantgw": kept[-1].ticket}) is kept[-1]
    assert store.find({"tenantgw": kept[0].ticket}) is None


def test_metadata_key_by_route() -> None:
    assert metadata_key({"litellm_metadata": {}}) == "litellm_metadata"
    assert metadata_key({}, "anthropic_messages") == "litellm_metadata"
    assert metadata_key({"metadata": {}}, "acompletion") == "metadata"
    data: dict[str, Any] = {"metadata": "not a dict"}
    request_metadata(data, "acompletion")["x"] = 1
    assert data["metadata"] == {"x": 1}


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        (
            [(b"x-litellm-api-key", b"k"), (b"Authorization", b"Bearer sk-ant-oat01-x")],
            [(b"x-litellm-api-key", b"k")],
        ),
        (
            [(b"x-litellm-api-key", b"k"), (b"x-api-key", b"p"), (b"api-key", b"a")],
            [(b"x-litellm-api-key", b"k")],
        ),
        (
            [(b"authorization", b"Bearer k"), (b"anthropic-beta", b"b")],
            [(b"authorization", b"Bearer k"), (b"anthropic-beta", b"b")],
        ),
    ],
)
def test_a_client_authenticated_by_litellm_key_header_keeps_no_other_credential(
    headers: list[tuple[bytes, bytes]], kept: list[tuple[bytes, bytes]]
) -> None:
    scope: dict[str, Any] = {"headers": headers}
    gateway_app.drop_client_credentials(scope)
    assert scope["headers"] == kept
