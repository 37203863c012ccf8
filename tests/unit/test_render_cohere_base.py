"""A Cohere provider reaches LiteLLM as an OpenAI-compatible deployment on Cohere's
Compatibility API; a Gemini/Vertex tenant turns off LiteLLM's context-caching transform."""

from __future__ import annotations

from typing import Any

import pytest

from tenantgw.api import ModelAlias, Provider, Tenant
from tenantgw.render import RenderInputs, StorageEndpoints
from tenantgw.render.litellm_config import (
    GEMINI_CACHING_SETTING,
    api_base,
    render_litellm_config,
)

pytestmark = pytest.mark.unit

SECRET = {"name": "s", "key": "k"}


@pytest.mark.parametrize(
    ("kind", "given", "rendered"),
    [
        ("cohere", "https://api.cohere.com", "https://api.cohere.com/compatibility/v1"),
        ("cohere", "https://api.cohere.com/", "https://api.cohere.com/compatibility/v1"),
        ("cohere", "https://proxy.example/v2/chat", "https://proxy.example/compatibility/v1"),
        ("cohere", "https://proxy.example/v2", "https://proxy.example/compatibility/v1"),
        (
            "cohere",
            "https://api.cohere.ai/compatibility/v1/",
            "https://api.cohere.ai/compatibility/v1",
        ),
        ("cohere", None, "https://api.cohere.ai/compatibility/v1"),
        ("openai", "https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("openai", None, None),
        ("ollama", "http://ollama:11434", "http://ollama:11434"),
    ],
)
def test_api_base(kind: str, given: str | None, rendered: str | None) -> None:
    spec: dict[str, Any] = {"name": "p", "type": kind}
    if given is not None:
        spec["apiBase"] = given
    assert api_base(Provider.model_validate(spec)) == rendered


def _config(*providers: dict[str, Any]) -> dict[str, Any]:
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": "t", "uid": "00000000-0000-4000-8000-00000000c0e1"},
            "spec": {
                "providers": list(providers),
                "keys": [{"name": "alice"}],
                "routing": {"defaultAlias": "a"},
            },
        }
    )
    alias = ModelAlias.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "ModelAlias",
            "metadata": {"name": "a", "namespace": "tenant-t"},
            "spec": {"targets": [{"provider": providers[0]["name"], "model": "m-1"}]},
        }
    )
    inputs = RenderInputs(
        tenant=tenant,
        aliases=[alias],
        budgets=[],
        master_key="sk-master",
        keys={"alice": "sk-alice"},
        image="img",
        monitoring=False,
        storage=StorageEndpoints(postgres_dsn="postgresql://x/y", redis_url="redis://r:6379/0"),
    )
    return render_litellm_config(inputs)


def test_cohere_is_an_openai_client_on_the_compatibility_api() -> None:
    config = _config({"name": "co", "type": "cohere", "credentialsSecretRef": SECRET})
    (deployment,) = config["model_list"]
    params = deployment["litellm_params"]
    assert params["model"] == "openai/m-1"
    assert params["api_base"] == "https://api.cohere.ai/compatibility/v1"
    assert params["api_key"] == "os.environ/TENANTGW_PROVIDER_CO_API_KEY"
    # Metering and the model picker still know it as a Cohere model.
    assert deployment["model_info"]["tenantgw"]["provider_type"] == "cohere"
    assert GEMINI_CACHING_SETTING not in config["litellm_settings"]


@pytest.mark.parametrize("kind", ["gemini", "vertex"])
def test_gemini_context_caching_is_off_for_a_tenant_with_gemini(kind: str) -> None:
    config = _config(
        {"name": "g", "type": kind, "region": "us-central1", "credentialsSecretRef": SECRET}
    )
    assert config["litellm_settings"][GEMINI_CACHING_SETTING] is True
