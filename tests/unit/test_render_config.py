"""The gateway's network reach, LiteLLM config and rules file, as rendered for a tenant."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tenantgw.api import ModelAlias
from tenantgw.render import (
    GATEWAY_NAME,
    RenderInputs,
    StorageEndpoints,
    render_litellm_config,
    render_rules,
    render_tenant,
)
from tenantgw.render.inputs import NetworkSettings, Peer

pytestmark = pytest.mark.unit


def by_kind(objects: list[dict[str, Any]], kind: str, name: str = GATEWAY_NAME) -> dict[str, Any]:
    (match,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return match


def secret_values(inputs: RenderInputs) -> list[str]:
    values = [inputs.master_key, *inputs.keys.values()]
    if inputs.storage is not None:
        values += [v for v in (inputs.storage.postgres_dsn, inputs.storage.redis_url) if v]
    return values


# --------------------------------------------------------------------------- network


def test_network_policy_admits_allowed_namespaces_only(engineering_team: RenderInputs) -> None:
    policy = by_kind(render_tenant(engineering_team), "NetworkPolicy")["spec"]
    api, metrics = policy["ingress"]
    (peer,) = api["from"]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "eng-ci",
        "tenant-engineering-team",
    ]
    assert api["ports"] == [{"protocol": "TCP", "port": 4000}]
    # The monitoring namespace reaches the exporter, never the API port.
    (peer,) = metrics["from"]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["monitoring"]
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9464}]


def egress_by_port(inputs: RenderInputs) -> dict[int, list[dict[str, Any]]]:
    egress = by_kind(render_tenant(inputs), "NetworkPolicy")["spec"]["egress"]
    found: dict[int, list[dict[str, Any]]] = {}
    for rule in egress:
        assert rule.get("to"), f"an egress rule without peers allows anywhere: {rule}"
        for port in {p["port"] for p in rule["ports"]}:
            found.setdefault(port, []).extend(rule["to"])
    return found


INTERNET_V4 = {
    "cidr": "0.0.0.0/0",
    "except": [
        "10.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ],
}


def test_network_policy_egress(engineering_team: RenderInputs) -> None:
    inputs = dataclasses.replace(engineering_team, egress_ports=(3128, 443))
    by_port = egress_by_port(inputs)
    # DNS only to the cluster's DNS pods.
    assert by_port[53] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    # Public providers and egress_ports: the internet, never the cluster or link-local.
    for port in (443, 3128):
        assert by_port[port][0] == {"ipBlock": INTERNET_V4}
        assert by_port[port][1]["ipBlock"]["cidr"] == "::/0"
        assert "fe80::/10" in by_port[port][1]["ipBlock"]["except"]
    # Ollama by its in-cluster Service name: that namespace only.
    assert by_port[11434] == [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "tenant-engineering-team"}
            }
        }
    ]
    assert by_port[6380] == [{"ipBlock": {"cidr": "10.96.0.20/32"}}]  # Redis by address


def test_an_http_provider_never_opens_the_metadata_address(
    minimal_tenant: RenderInputs,
) -> None:
    tenant = minimal_tenant.tenant.model_copy(deep=True)
    tenant.spec.providers[0].api_base = "http://llm.example.com/v1"
    by_port = egress_by_port(dataclasses.replace(minimal_tenant, tenant=tenant))
    assert by_port[80][0] == {"ipBlock": INTERNET_V4}
    metadata = dataclasses.replace(
        minimal_tenant,
        tenant=tenant.model_copy(
            update={
                "spec": tenant.spec.model_copy(
                    update={
                        "providers": [
                            tenant.spec.providers[0].model_copy(
                                update={"api_base": "http://169.254.169.254/latest"}
                            )
                        ]
                    }
                )
            }
        ),
    )
    assert 80 not in egress_by_port(metadata)


def test_cluster_cidrs_and_dns_peers_come_from_the_settings(
    minimal_tenant: RenderInputs,
) -> None:
    network = NetworkSettings(
        cluster_cidrs=("10.244.0.0/16", "10.96.0.0/12"),
        dns=(Peer(cidr="169.254.20.10/32"),),
    )
    by_port = egress_by_port(dataclasses.replace(minimal_tenant, network=network))
    assert by_port[53] == [{"ipBlock": {"cidr": "169.254.20.10/32"}}]
    assert by_port[443][0]["ipBlock"]["except"] == [
        "10.96.0.0/12",
        "10.244.0.0/16",
        "169.254.0.0/16",
    ]


def test_network_policy_reads_keyword_postgres_dsns(minimal_tenant: RenderInputs) -> None:
    storage = StorageEndpoints(postgres_dsn="host=10.0.0.5 port=6432 dbname=t user=t password=x")
    by_port = egress_by_port(dataclasses.replace(minimal_tenant, storage=storage))
    assert by_port[6432] == [{"ipBlock": {"cidr": "10.0.0.5/32"}}]


def test_storage_by_dns_name_is_outside_the_cluster_or_in_its_namespace(
    minimal_tenant: RenderInputs,
) -> None:
    storage = StorageEndpoints(
        postgres_dsn="postgresql://t:x@db.example.rds.amazonaws.com:5432/t",
        redis_url="redis://t:x@redis.data.svc.cluster.local:6379/0",
    )
    by_port = egress_by_port(dataclasses.replace(minimal_tenant, storage=storage))
    assert by_port[5432][0] == {"ipBlock": INTERNET_V4}
    assert by_port[6379] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}}}
    ]


# --------------------------------------------------------------------------- LiteLLM config


def test_weights_pricing_and_limits_land_in_the_litellm_config(
    engineering_team: RenderInputs,
) -> None:
    config = render_litellm_config(engineering_team)
    fast = [m for m in config["model_list"] if m["model_name"] == "fast-code"]
    assert [m["litellm_params"]["weight"] for m in fast] == [80, 20]
    assert [m["model_info"]["id"] for m in fast] == ["fast-code-0", "fast-code-1"]
    assert fast[0]["litellm_params"]["model"] == "openrouter/qwen/qwen3-coder"
    assert fast[0]["litellm_params"]["max_tokens"] == 8192
    assert fast[0]["model_info"]["input_cost_per_token"] == pytest.approx(0.30e-6)
    assert fast[0]["model_info"]["output_cost_per_token"] == pytest.approx(1.20e-6)
    assert "input_cost_per_token" not in fast[1]["model_info"]  # LiteLLM knows gpt-4o-mini
    reasoning = [m for m in config["model_list"] if m["model_name"] == "reasoning"]
    assert reasoning[0]["litellm_params"]["aws_region_name"] == "us-west-2"
    assert reasoning[1]["litellm_params"]["api_version"] == "2024-10-21"


def test_fallbacks_follow_aliases_and_their_exact_client_names(
    engineering_team: RenderInputs,
) -> None:
    config = render_litellm_config(engineering_team)
    assert config["litellm_settings"]["fallbacks"] == [
        {"fast-code": ["reasoning"]},
        {"claude-sonnet-4-5": ["reasoning"]},
        {"refactoring": ["reasoning", "fast-code"]},
    ]
    assert config["router_settings"]["model_group_alias"] == {
        "claude-sonnet-4-5": "fast-code",
        "claude-opus-4-1": "reasoning",
    }
    # Globs are for the gateway's routing plugin, never a LiteLLM model name.
    assert "claude-sonnet-4-5-*" not in json.dumps(config)
    rules = render_rules(engineering_team)
    assert rules["aliases"]["fast-code"]["client_names"] == [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-*",
    ]


def test_fallbacks_to_aliases_not_served_are_left_out(engineering_team: RenderInputs) -> None:
    served = [a for a in engineering_team.aliases if a.metadata.name != "reasoning"]
    config = render_litellm_config(dataclasses.replace(engineering_team, aliases=served))
    assert config["litellm_settings"]["fallbacks"] == [{"refactoring": ["fast-code"]}]


def test_minimal_config_has_no_empty_sections(minimal_tenant: RenderInputs) -> None:
    config = render_litellm_config(minimal_tenant)
    assert "fallbacks" not in config["litellm_settings"]
    assert "model_group_alias" not in config["router_settings"]
    assert config["model_list"] == [
        {
            "model_name": "default",
            "litellm_params": {
                "model": "anthropic/claude-sonnet-4-5-20250929",
                "api_key": "os.environ/TENANTGW_PROVIDER_ANTHROPIC_API_KEY",
                "weight": 1,
            },
            "model_info": {
                "id": "default-0",
                "tenantgw": {
                    "alias": "default",
                    "provider": "anthropic",
                    "provider_type": "anthropic",
                    "provider_model": "claude-sonnet-4-5-20250929",
                    "cost_tier": "medium",
                },
            },
        }
    ]


def test_unknown_provider_is_refused(minimal_tenant: RenderInputs) -> None:
    alias = ModelAlias.model_validate(
        {"metadata": {"name": "x"}, "spec": {"targets": [{"provider": "nope", "model": "m"}]}}
    )
    with pytest.raises(ValueError, match="no provider 'nope'"):
        render_litellm_config(dataclasses.replace(minimal_tenant, aliases=[alias]))


# --------------------------------------------------------------------------- rules file


def test_rules_file_carries_policy_but_no_keys(engineering_team: RenderInputs) -> None:
    rules = render_rules(engineering_team)
    assert rules["tenant"] == "engineering-team"
    assert rules["default_alias"] == "fast-code"
    assert rules["rules"][0] == {
        "match": {"model": "claude-haiku-*", "prompt_prefix": None, "task": None},
        "alias": "documentation",
    }
    assert rules["keys"] == [
        {"name": "alice", "rpm": 120, "tpm": 400000, "labels": {}},
        {"name": "ci", "rpm": None, "tpm": None, "labels": {}},
    ]
    assert rules["compliance"]["data_residency"] == {"allowed_regions": ["us-east-1", "us-west-2"]}
    assert [b["name"] for b in rules["budgets"]] == ["alice-daily", "team-monthly", "tenant-weekly"]
    assert rules["budgets"][1]["on_exceeded"] == {"action": "downgrade", "to_cost_tier": "low"}
    assert rules["budgets"][1]["unenforceable"] is None
    # A policy validation rejected stays in the rules, marked, so the gateway fails closed.
    assert rules["budgets"][2]["scope"] == {"kind": "Tenant", "name": None}
    assert rules["budgets"][2]["unenforceable"] == {
        "reason": "UnknownModelAlias",
        "message": 'spec.scope.name: no accepted ModelAlias "docs"',
    }
    assert rules["aliases"]["reasoning"]["targets"][0] == {
        "id": "reasoning-0",
        "provider": "bedrock",
        "provider_type": "bedrock",
        "model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "region": "us-west-2",
        "weight": 1,
        "max_tokens": None,
        "litellm_model": "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "context_window": None,
        "pricing": None,
        "litellm_route": "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    }
    assert rules["aliases"]["fast-code"]["targets"][0]["context_window"] == 262144
    # The platform's catalog price reaches the gateway, which refuses what nothing prices.
    assert rules["aliases"]["fast-code"]["targets"][0]["pricing"] == {
        "input_per_million": 0.30,
        "output_per_million": 1.20,
    }
    assert rules["enforcement"]["on_unpriced_model"] == "ClosedWhenBudgeted"
    assert rules["aliases"]["fast-code"]["display_name"] == "Fast code"
    text = json.dumps(rules)
    assert not [v for v in secret_values(engineering_team) if v in text]
