"""Argo CD: the health checks of manifests/argocd/health, and the example Application.

The health checks run in e2e/argocd/luahealth, gopher-lua (the interpreter Argo CD embeds) with
the libraries Argo CD opens for a custom check, on the sample objects each kind's
health_test.yaml lists, the way Argo CD's own resource_customizations are tested.
`make setup` builds the runner; without it these tests fail saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.argocd import health
from tenantgw.api import BudgetPolicy, ModelAlias, Tenant
from tenantgw.reconcile.namespace import ADOPTABLE_ANNOTATION, judge_namespace
from tenantgw.reconcile.reasons import REASONS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
APPLICATION = ROOT / "manifests" / "argocd" / "application-example.yaml"
MODELS = {"Tenant": Tenant, "ModelAlias": ModelAlias, "BudgetPolicy": BudgetPolicy}


@pytest.fixture(scope="module", autouse=True)
def runner() -> None:
    try:
        health.runner()
    except health.RunnerMissingError as exc:
        pytest.fail(str(exc))


CASES = [(kind, *case) for kind in health.KINDS for case in health.cases(kind)]


@pytest.mark.parametrize(
    ("kind", "path", "obj", "expected"), CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES]
)
def test_health_of_sample_objects(
    kind: str, path: str, obj: dict[str, Any], expected: dict[str, str]
) -> None:
    (answer,) = health.run(kind, [obj])
    assert answer == expected


@pytest.mark.parametrize(("kind", "path", "obj", "expected"), CASES, ids=[c[1] for c in CASES])
def test_samples_are_valid_objects(
    kind: str, path: str, obj: dict[str, Any], expected: dict[str, str]
) -> None:
    """The samples are objects the API could hold: status shapes of the real models."""
    MODELS[kind].model_validate(obj)


def test_every_kind_has_a_healthy_progressing_and_degraded_sample() -> None:
    for kind in health.KINDS:
        seen = {case[2]["status"] for case in health.cases(kind)}
        assert {"Healthy", "Progressing", "Degraded"} <= seen, kind


def cond(type_: str, status: str, reason: str, generation: int = 4) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": f"{reason} message",
        "observedGeneration": generation,
    }


def object_with(kind: str, reason: str, conditions: tuple[str, ...]) -> dict[str, Any]:
    """A reconciled object whose deciding condition carries `reason`."""
    body: dict[str, Any] = {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "t", "generation": 4},
        "spec": {"limitUSD": 10, "period": "daily"},
    }
    if kind != "Tenant":
        ok = "True" if reason == "Accepted" else "False"
        body["status"] = {"conditions": [cond("Accepted", ok, reason)], "observedGeneration": 4}
        return body
    ready = cond("Ready", "True", "Ready")
    config = cond("ConfigValid", "True", "Valid")
    enforcement = cond("EnforcementAvailable", "True", "Enforced")
    if "Ready" in conditions:
        ready = cond("Ready", "True" if reason in ("Ready", "Degraded") else "False", reason)
        if reason == "Degraded":
            config = cond("ConfigValid", "False", "ModelAliasRejected")
    elif "ConfigValid" in conditions:
        ready = cond("Ready", "True", "Degraded")
        config = cond("ConfigValid", "False", reason)
    elif "EnforcementAvailable" in conditions:
        fine = reason in ("Enforced", "Recovered")
        enforcement = cond("EnforcementAvailable", "True" if fine else "False", reason)
    body["status"] = {"conditions": [ready, config, enforcement], "observedGeneration": 4}
    return body


DECIDING = [(kind, name, r) for (kind, name), r in sorted(REASONS.items()) if r.health]


@pytest.mark.parametrize(
    ("kind", "name", "reason"), DECIDING, ids=[f"{k}/{n}" for k, n, _ in DECIDING]
)
def test_every_reason_gets_the_health_the_registry_says(kind: str, name: str, reason: Any) -> None:
    """docs/troubleshooting.md's Argo CD column is what the Lua answers."""
    (answer,) = health.run(kind, [object_with(kind, name, reason.conditions)])
    assert answer.get("status") == reason.health, answer


def test_a_stale_status_is_progressing_whatever_it_says() -> None:
    for kind in health.KINDS:
        ok = "Ready" if kind == "Tenant" else "Accepted"
        body = object_with(kind, ok, ("Ready",) if kind == "Tenant" else ("Accepted",))
        body["metadata"]["generation"] = 5
        (answer,) = health.run(kind, [body])
        assert answer["status"] == "Progressing", (kind, answer)


def test_the_runner_gives_no_string_library_like_argo_cd(tmp_path: Path) -> None:
    """A script that needs a library Argo CD does not open for custom checks fails here too."""
    scripted = tmp_path / "probe.lua"
    scripted.write_text('return {status = "Healthy", message = string.format("%d", 1)}\n')
    (answer,) = health.run_script(scripted, [{"metadata": {}}])
    assert "string" in answer.get("error", ""), answer
    scripted.write_text('return {status = "Fine"}\n')
    (answer,) = health.run_script(scripted, [{}])
    assert "invalid health status" in answer.get("error", ""), answer


def test_the_argocd_cm_patch_holds_the_scripts() -> None:
    committed = health.CM_PATCH.read_text()
    assert committed == health.cm_patch(), "run `python -m e2e.argocd.health` and commit"
    data = yaml.safe_load(committed)["data"]
    for kind in health.KINDS:
        assert data[f"resource.customizations.health.tenantgw.io_{kind}"] == (
            health.script(kind).read_text()
        )


# --------------------------------------------------------------------------- the Application


def application() -> dict[str, Any]:
    app: dict[str, Any] = yaml.safe_load(APPLICATION.read_text())
    return app


def source_objects(app: dict[str, Any]) -> list[dict[str, Any]]:
    folder = ROOT / app["spec"]["source"]["path"]
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return [
        doc
        for resource in kustomization["resources"]
        for doc in yaml.safe_load_all((folder / resource).read_text())
        if doc
    ]


def test_application_creates_the_namespace_the_tenant_adopts() -> None:
    app = application()
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    (tenant,) = [o for o in source_objects(app) if o["kind"] == "Tenant"]
    name = tenant["metadata"]["name"]
    namespace = Tenant.model_validate(tenant).namespace_name()
    sync = app["spec"]["syncPolicy"]
    assert app["spec"]["destination"]["namespace"] == namespace
    assert "CreateNamespace=true" in sync["syncOptions"]
    annotations = sync["managedNamespaceMetadata"]["annotations"]
    assert annotations == {ADOPTABLE_ANNOTATION: name}
    # The namespace as Argo CD creates it is one the operator adopts, not a NamespaceConflict.
    live = {"metadata": {"name": namespace, "annotations": annotations}}
    verdict = judge_namespace(name, namespace, live, "tenantgw-system")
    assert (verdict.allowed, verdict.adopted) == (True, True), verdict
    # Without the annotation it would not be.
    assert not judge_namespace(name, namespace, {"metadata": {}}, "tenantgw-system").allowed


def test_application_syncs_everything_in_one_wave_with_retries() -> None:
    app = application()
    sync = app["spec"]["syncPolicy"]
    assert "SkipDryRunOnMissingResource=true" in sync["syncOptions"]
    assert sync["retry"]["limit"] >= 3
    objects = source_objects(app)
    namespace = app["spec"]["destination"]["namespace"]
    waves = set()
    for obj in objects:
        annotations = obj["metadata"].get("annotations") or {}
        waves.add(annotations.get("argocd.argoproj.io/sync-wave", "0"))
        if obj["kind"] != "Tenant":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]
    # A Tenant in an earlier wave would wait for a health that needs the later wave.
    assert waves == {"0"}
    kinds = {o["kind"] for o in objects}
    assert {"Tenant", "Secret", "ModelAlias", "BudgetPolicy"} <= kinds
