"""The rendered config.yaml is one the pinned LiteLLM accepts and routes as intended.

LiteLLM's Router is built in-process from the rendered settings (no proxy, no network:
requests are answered by LiteLLM's mock_response).
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from tenantgw.render import RenderInputs, render_litellm_config

pytestmark = [
    pytest.mark.unit,
    # pydantic's notes on LiteLLM's own TypedDicts, raised while LiteLLM builds its models.
    pytest.mark.filterwarnings("ignore:.*ReadOnly. qualifier:UserWarning"),
]


@pytest.fixture(scope="module")
def litellm() -> Iterator[Any]:
    previous = os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP")
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no cost-map download at import
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*ReadOnly. qualifier", UserWarning)
        import litellm as module

    yield module
    if previous is None:
        os.environ.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
    else:
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = previous


def router(litellm: Any, inputs: RenderInputs, monkeypatch: pytest.MonkeyPatch) -> Any:
    config = render_litellm_config(inputs)
    for entry in config["model_list"]:
        for value in entry["litellm_params"].values():
            if isinstance(value, str) and value.startswith("os.environ/"):
                monkeypatch.setenv(value.removeprefix("os.environ/"), "sk-provider-test")
    settings = config["router_settings"]
    return litellm.Router(
        model_list=config["model_list"],
        routing_strategy=settings["routing_strategy"],
        model_group_alias=settings.get("model_group_alias", {}),
        fallbacks=config["litellm_settings"].get("fallbacks", []),
        num_retries=0,
    )


def test_router_accepts_every_deployment(
    litellm: Any, engineering_team: RenderInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = router(litellm, engineering_team, monkeypatch)
    assert sorted(r.model_names) == ["documentation", "fast-code", "reasoning", "refactoring"]
    assert len(r.model_list) == 6
    assert r.get_model_from_alias("claude-sonnet-4-5") == "fast-code"
    assert r.is_recognized_model("claude-opus-4-1")


def test_exact_client_name_falls_back_like_its_alias(
    litellm: Any, engineering_team: RenderInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = router(litellm, engineering_team, monkeypatch)
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    async def call() -> Any:
        # mock_testing_fallbacks fails the first model group: the answer names the fallback.
        response = await r.aanthropic_messages(
            model="claude-sonnet-4-5",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=16,
            mock_testing_fallbacks=True,
            mock_response="hello",
        )
        # Run LiteLLM's logging now, not in its atexit hook after the session. It is queued
        # by tasks the call spawned, so let those run first.
        for _ in range(3):
            await asyncio.sleep(0)
            await GLOBAL_LOGGING_WORKER.flush()
        await GLOBAL_LOGGING_WORKER.stop()
        return response

    response = asyncio.run(call())  # a private loop, not the session's
    assert response["_hidden_params"]["additional_headers"]["x-litellm-model-group"] == "reasoning"
