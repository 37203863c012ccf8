"""Every alias of examples/ answers a real Claude Code turn, served by its own provider.

`make demo`'s alias check (e2e/demo/aliases.py, `python -m e2e.demo check --all-aliases`) run
against the example tenant's gateway of the tests: one `claude -p --model <alias>` per
ModelAlias of examples/model-aliases.yaml, all through the real CLI, PARALLEL at a time (the
CLI turns are what takes time; run in parallel the eleven take about as long as three in a
row). Every provider of the Tenant points at the simulator's route of its own protocol, so the
ledger must name each alias's own target and the simulator must have seen its model on its
provider's wire protocol (o3-pro and gpt-5-codex on the Responses API).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from e2e.demo.aliases import CHECK_KEY, AliasResult, check_aliases, example_aliases, lines
from e2e.gateway_fixture import ExampleGateway
from tenantgw.cli.onboard import onboard

pytestmark = pytest.mark.e2e

PROTOCOLS = {
    "openai": {"openai", "openai-responses"},
    "openrouter": {"openai"},
    "azure": {"azure"},
    "bedrock": {"bedrock"},
    "anthropic": {"anthropic"},
    "ollama": {"ollama"},
}
"""What the simulator records for a call of each provider type the example uses."""
RESPONSES_ONLY = {"o3-pro", "gpt-5-codex"}


@pytest.fixture(autouse=True)
def _fresh_simulator(example_gateway: ExampleGateway) -> Iterator[None]:
    example_gateway.simulator.reset()
    yield
    example_gateway.simulator.reset()


def _check(
    gw: ExampleGateway, kube: ApiClient, workdir: Path, names: set[str] | None = None
) -> list[AliasResult]:
    env = onboard(kube, gw.tenant, CHECK_KEY, base_url=gw.url).env()
    aliases = [a for a in example_aliases() if names is None or a.name in names]
    return check_aliases(
        gateway_env=env,
        simulator_root=gw.simulator.root_url,
        dsn=gw.postgres_dsn,
        workdir=workdir,
        aliases=aliases,
    )


def test_every_alias_of_the_example_answers_claude_code_from_its_own_provider(
    example_gateway: ExampleGateway, kube: ApiClient, tmp_path: Path
) -> None:
    gw = example_gateway
    results = _check(gw, kube, tmp_path)
    report = lines(results)
    print(report)
    aliases = example_aliases()
    assert [r.alias for r in results] == [a.name for a in aliases]
    assert len(aliases) == 11  # examples/model-aliases.yaml: a new alias is checked too
    assert all(r.ok for r in results), report
    for alias, result in zip(aliases, results, strict=True):
        assert result.requests >= (1 if alias.classifier else 2), report
        assert result.input_tokens > 0, report
        assert result.output_tokens > 0, report
        own = {alias.provider_types[provider] for provider, _ in alias.targets}
        assert {kind for kind, _ in result.served} <= own, report
        if own == {"anthropic"}:
            # Claude Code first sends an alias name it does not know a mid-conversation
            # `role: system` message; the Anthropic API refuses it for Claude Haiku 4.5 (a 400,
            # as the simulator does) and Claude Code resends the request without it.
            assert len(result.notes) <= 1, report
        else:
            assert result.statuses == ("success",), report
    by_name = {r.alias: r for r in results}
    assert by_name["refactoring"].served == (("ollama", "ollama/qwen2.5-coder:14b"),)
    assert by_name["security-analysis"].served == (("azure", "azure/gpt-4"),)
    assert by_name["reasoning"].cost_usd > 0  # o3-pro at OpenAI's list price

    # On the wire: each target's model reached the simulator in its provider's protocol.
    seen: dict[str, set[str]] = {}
    for request in gw.simulator.requests():
        if request.get("model"):
            seen.setdefault(request["model"], set()).add(request["protocol"])
    for alias in aliases:
        for provider, model in alias.targets:
            if alias.name == "fast-code" and model not in seen:
                continue  # an A/B split: the two turns may both land on one target
            wanted = PROTOCOLS[alias.provider_types[provider]]
            assert seen.get(model), f"{alias.name}: no call of {model} reached the simulator"
            assert seen[model] <= wanted, (alias.name, model, seen[model])
    for model in RESPONSES_ONLY:
        assert seen[model] == {"openai-responses"}, (model, seen[model])


def test_the_check_fails_an_alias_its_fallback_answered(
    example_gateway: ExampleGateway, kube: ApiClient, tmp_path: Path
) -> None:
    """The check is not fooled by a fallback: with the Ollama model down, refactoring's turn is
    answered by openrouter-deepseek, and the check reports exactly that."""
    gw = example_gateway
    gw.simulator.configure(fail_models={"qwen2.5-coder:14b": "503"})
    [result] = _check(gw, kube, tmp_path, {"refactoring"})
    assert not result.ok
    assert result.served == (("openrouter", "openrouter/deepseek/deepseek-chat"),), lines([result])
    assert any("fallback alias openrouter-deepseek" in p for p in result.problems), result.problems
