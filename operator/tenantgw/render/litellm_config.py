"""The LiteLLM proxy `config.yaml` of a tenant's gateway.

Setting names are those of LiteLLM 1.106.12 (`proxy/proxy_server.py`, `router.py`). The dict
holds no secret: credentials are `os.environ/<NAME>` references LiteLLM resolves at start-up,
and the Deployment fills those variables from Secrets.
"""

from __future__ import annotations

import re
from typing import Any

from tenantgw.api import (
    CatalogModel,
    CostTier,
    ModelAlias,
    Provider,
    ProviderType,
    Target,
    alias_cost_tiers,
    catalog_entry,
)
from tenantgw.render.identity import AZURE_AD_TOKEN, GCP_CREDENTIALS_ENV
from tenantgw.render.inputs import RenderInputs, alias_name, exact_client_names

# Plugin entry points in the gateway image; tenantgw.gateway must provide exactly these.
CUSTOM_AUTH = "tenantgw.gateway.auth.user_api_key_auth"
# The only callback: LiteLLM's own Prometheus exporter is not loaded, tenantgw.gateway.metrics
# exports the series the dashboard and the alerts read (under LiteLLM's names).
CALLBACKS = ["tenantgw.gateway.callbacks.handler"]

MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
ROUTING_STRATEGY = "simple-shuffle"
NUM_RETRIES = 1  # then the fallbacks; the verified setting (docs/litellm-notes.md)
# Seconds; long enough for a slow streamed completion of a large context.
REQUEST_TIMEOUT = 600

PROVIDER_PREFIX: dict[ProviderType, str] = {
    ProviderType.OPENAI: "openai",
    ProviderType.AZURE: "azure",
    ProviderType.OPENROUTER: "openrouter",
    ProviderType.BEDROCK: "bedrock",
    ProviderType.OLLAMA: "ollama_chat",
    ProviderType.ANTHROPIC: "anthropic",
    ProviderType.GEMINI: "gemini",
    ProviderType.VERTEX: "vertex_ai",
    ProviderType.MISTRAL: "mistral",
    ProviderType.GROQ: "groq",
    ProviderType.DEEPSEEK: "deepseek",
    ProviderType.OPENAI_COMPATIBLE: "openai",
    ProviderType.TOGETHER: "together_ai",
    ProviderType.FIREWORKS: "fireworks_ai",
    ProviderType.COHERE: "cohere_chat",
}
"""LiteLLM provider prefix of each provider type (`<prefix>/<model>`)."""

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def env_ref(name: str) -> str:
    """A value LiteLLM reads from the environment variable `name` at start-up."""
    return f"os.environ/{name}"


def provider_env(provider_name: str) -> str:
    """Environment variable holding a provider's credential: TENANTGW_PROVIDER_<NAME>_API_KEY."""
    return f"TENANTGW_PROVIDER_{_NOT_ALNUM.sub('_', provider_name).upper()}_API_KEY"


def deployment_id(alias: str, index: int) -> str:
    """model_info.id of the `index`-th target of an alias; the rules file uses it too."""
    return f"{alias}-{index}"


def litellm_model(provider: Provider, target: Target) -> str:
    """The model string LiteLLM routes on, e.g. openrouter/qwen/qwen3-coder."""
    return f"{PROVIDER_PREFIX[provider.type]}/{target.model}"


def _providers(inputs: RenderInputs) -> dict[str, Provider]:
    return {provider.name: provider for provider in inputs.tenant.spec.providers}


def _provider_of(providers: dict[str, Provider], alias: str, target: Target) -> Provider:
    provider = providers.get(target.provider)
    if provider is None:
        # Validation rejects such an alias before rendering; reaching here is a bug.
        raise ValueError(f"ModelAlias {alias}: no provider {target.provider!r} in the Tenant")
    return provider


COHERE_COMPAT_PATH = "/compatibility/v1"
COHERE_DEFAULT_BASE = "https://api.cohere.ai"
_COHERE_API_SUFFIXES = ("/v2/chat", "/v1/chat", "/v2", "/v1")


def api_base(provider: Provider) -> str | None:
    """The provider's apiBase as LiteLLM wants it.

    Cohere is called on its OpenAI-compatible Compatibility API
    (`{root}/compatibility/v1/chat/completions`, LiteLLM's `openai/` client), because
    LiteLLM 1.106.12 cannot parse the streams of Cohere's native v2 chat
    (docs/litellm-notes.md (k)). A Cohere apiBase is the server's root; a native API path
    given with it (`/v2/chat`, `/v2`, ...) is taken off. Without an apiBase the rendered base
    is Cohere's own: `openai/` would otherwise go to OpenAI.
    """
    base = provider.api_base
    if provider.type is ProviderType.COHERE:
        root = (base or COHERE_DEFAULT_BASE).rstrip("/")
        if root.endswith(COHERE_COMPAT_PATH):
            return root
        for suffix in _COHERE_API_SUFFIXES:
            if root.endswith(suffix):
                root = root[: -len(suffix)]
                break
        return root + COHERE_COMPAT_PATH
    return base


LITELLM_CLIENT_PREFIX: dict[ProviderType, str] = {ProviderType.COHERE: "openai"}
"""Provider types LiteLLM is told to call with another client than its own prefix's
(`PROVIDER_PREFIX` stays the name LiteLLM's model map knows the model by)."""


def litellm_route(provider: Provider, target: Target) -> str:
    """The model LiteLLM's router calls (and prices) a target by: its `litellm_params.model`."""
    client = LITELLM_CLIENT_PREFIX.get(provider.type)
    return f"{client}/{target.model}" if client else litellm_model(provider, target)


def _litellm_params(provider: Provider, target: Target) -> dict[str, Any]:
    params: dict[str, Any] = {"model": litellm_route(provider, target)}
    base = api_base(provider)
    if base:
        params["api_base"] = base
    if provider.credentials_secret_ref is not None:
        # Vertex takes a service-account JSON, every other provider an API key (for
        # Bedrock a bearer API key, which LiteLLM sends instead of SigV4).
        field = "vertex_credentials" if provider.type is ProviderType.VERTEX else "api_key"
        params[field] = env_ref(provider_env(provider.name))
    identity = provider.workload_identity
    if identity is not None and identity.azure is not None:
        # An Entra ID token from the projected ServiceAccount token (render.identity); a
        # Bedrock provider with an AWS role needs nothing here: with no key, LiteLLM signs
        # with boto3's default credentials, the web identity of AWS_ROLE_ARN.
        params["azure_ad_token"] = AZURE_AD_TOKEN
    if identity is not None and identity.gcp is not None:
        # The external_account configuration (render.identity), by its path; google-auth
        # exchanges the projected token. The project is named: google-auth would otherwise
        # look it up at Cloud Resource Manager, a host the gateway has no business with.
        params["vertex_credentials"] = env_ref(GCP_CREDENTIALS_ENV)
        params["vertex_project"] = identity.gcp.project
    if provider.type is ProviderType.AZURE and provider.api_version:
        params["api_version"] = provider.api_version
    if provider.region:
        if provider.type is ProviderType.BEDROCK:
            params["aws_region_name"] = provider.region
        elif provider.type is ProviderType.VERTEX:
            params["vertex_location"] = provider.region
    params["weight"] = target.weight
    if target.max_tokens is not None:
        # A default for requests that send none; the gateway clamps larger ones (rules file).
        params["max_tokens"] = target.max_tokens
    return params


def _model_info(
    alias: ModelAlias,
    index: int,
    provider: Provider,
    target: Target,
    catalog: list[CatalogModel],
    tier: CostTier,
) -> dict[str, Any]:
    name = alias_name(alias)
    info: dict[str, Any] = {"id": deployment_id(name, index)}
    entry = catalog_entry(catalog, provider.name, target.model)
    if entry is not None and entry.pricing is not None:
        # The platform's price: LiteLLM bills a deployment's own model_info price before its
        # list price, and the gateway's metering falls back to it (docs/litellm-notes.md).
        info["input_cost_per_token"] = entry.pricing.input_per_million / 1_000_000
        info["output_cost_per_token"] = entry.pricing.output_per_million / 1_000_000
    tenantgw: dict[str, Any] = {
        "alias": name,
        "provider": provider.name,
        "provider_type": provider.type.value,
        "provider_model": target.model,
        "cost_tier": tier,
    }
    if provider.region:
        tenantgw["region"] = provider.region
    info["tenantgw"] = tenantgw
    return info


def render_model_list(inputs: RenderInputs) -> list[dict[str, Any]]:
    """One LiteLLM deployment per (alias, target), model_name = the alias."""
    providers = _providers(inputs)
    catalog = inputs.tenant.spec.catalog
    tiers = alias_cost_tiers(catalog, inputs.aliases)
    model_list: list[dict[str, Any]] = []
    for alias in inputs.sorted_aliases():
        name = alias_name(alias)
        for index, target in enumerate(alias.spec.targets):
            provider = _provider_of(providers, name, target)
            model_list.append(
                {
                    "model_name": name,
                    "litellm_params": _litellm_params(provider, target),
                    "model_info": _model_info(alias, index, provider, target, catalog, tiers[name]),
                }
            )
    return model_list


def render_model_group_alias(inputs: RenderInputs) -> dict[str, str]:
    """Exact extra client names -> alias: LiteLLM resolves them on every endpoint.

    Glob names (claude-sonnet-4-5-*) are not here: the gateway's routing plugin resolves them
    from the rules file, so that a glob never shadows an exact name or a routing rule.
    """
    group_alias: dict[str, str] = {}
    for alias in inputs.sorted_aliases():
        for client_name in exact_client_names(alias):
            group_alias[client_name] = alias_name(alias)
    return group_alias


def render_fallbacks(inputs: RenderInputs) -> list[dict[str, list[str]]]:
    """Router fallbacks, keyed by the alias and by each of its exact client names.

    LiteLLM looks fallbacks up by the model group the client asked for, not by the
    model_group_alias target, so a request for `claude-sonnet-4-5` needs its own entry.
    Fallbacks to aliases that are not served are left out (validation reports them).
    """
    served = {alias_name(alias) for alias in inputs.aliases}
    fallbacks: list[dict[str, list[str]]] = []
    for alias in inputs.sorted_aliases():
        chain = [name for name in alias.spec.fallbacks if name in served]
        if not chain:
            continue
        for requested in [alias_name(alias), *exact_client_names(alias)]:
            fallbacks.append({requested: list(chain)})
    return fallbacks


GEMINI_CACHING_TYPES = frozenset({ProviderType.GEMINI, ProviderType.VERTEX})
GEMINI_CACHING_SETTING = "disable_anthropic_gemini_context_caching_transform"
"""LiteLLM 1.106.12's switch (`litellm.utils.is_cached_message`) that turns off its
`cache_control` -> Gemini/Vertex context caching transform; nothing else reads it."""


def render_litellm_config(inputs: RenderInputs) -> dict[str, Any]:
    """The LiteLLM proxy config.yaml of the tenant, as a dict (no secret values)."""
    litellm_settings: dict[str, Any] = {
        "drop_params": True,
        # OpenAI-type deployments answer /v1/messages through chat/completions, not the
        # Responses API, which OpenAI-compatible providers (OpenRouter, Ollama, ...) lack.
        "use_chat_completions_url_for_anthropic_messages": True,
        "num_retries": NUM_RETRIES,
        "request_timeout": REQUEST_TIMEOUT,
    }
    if any(p.type in GEMINI_CACHING_TYPES for p in inputs.tenant.spec.providers):
        # Claude Code marks its prompt with cache_control; LiteLLM would turn that into
        # Gemini context caches (a cache LIST and CREATE per request, on a path built from
        # api_base that Google does not serve for a custom base). Gemini caches implicitly.
        litellm_settings[GEMINI_CACHING_SETTING] = True
    fallbacks = render_fallbacks(inputs)
    if fallbacks:
        litellm_settings["fallbacks"] = fallbacks
    litellm_settings["callbacks"] = list(CALLBACKS)

    router_settings: dict[str, Any] = {"routing_strategy": ROUTING_STRATEGY}
    group_alias = render_model_group_alias(inputs)
    if group_alias:
        router_settings["model_group_alias"] = group_alias

    return {
        "model_list": render_model_list(inputs),
        "litellm_settings": litellm_settings,
        "general_settings": {
            "master_key": env_ref(MASTER_KEY_ENV),
            "custom_auth": CUSTOM_AUTH,
        },
        "router_settings": router_settings,
    }
