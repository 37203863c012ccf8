"""The committed CRDs are what `make crds` generates, and they are valid structural schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantgw.api import BudgetPolicy, ModelAlias, Tenant, apiref
from tenantgw.api.crdgen import HEADER, main, render_crds, rendered_files
from tenantgw.api.model_alias import FALLBACK_SELF_MESSAGE, FALLBACKS_UNIQUE_MESSAGE
from tenantgw.api.tenant import API_BASE_MESSAGE, MATCH_MESSAGE

pytestmark = pytest.mark.unit

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"
RUN = "run `make crds` and commit crds/"


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its JSON path, properties and items included."""
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from walk(schema[key], f"{path}[]" if key == "items" else f"{path}{{}}")


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


CRDS = render_crds()


def test_committed_crds_are_generated() -> None:
    for name, text in rendered_files().items():
        path = CRDS_DIR / name
        assert path.exists(), f"{path} is missing: {RUN}"
        assert path.read_text() == text, f"{path} differs from the models: {RUN}"


def test_no_stray_crd_files() -> None:
    committed = {path.name for path in CRDS_DIR.glob("*.yaml")}
    assert committed == set(rendered_files()), f"crds/ holds other files: {RUN}"


def test_files_are_yaml_with_the_header() -> None:
    for name, text in rendered_files().items():
        assert text.startswith(HEADER)
        assert yaml.safe_load(text) == CRDS[name.removesuffix(".yaml")]


def test_check_mode_reports_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 0
    assert main([str(tmp_path), "--check"]) == 0
    (tmp_path / "tenants.tenantgw.io.yaml").write_text("stale")
    assert main([str(tmp_path), "--check"]) == 1
    assert "run `make crds`" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(CRDS))
def test_every_property_has_a_description(name: str) -> None:
    missing = [
        f"{path}.{prop}"
        for path, node in walk(schema_of(CRDS[name]))
        for prop, sub in node.get("properties", {}).items()
        if not sub.get("description") and f"{path}.{prop}" != ".metadata"
    ]
    assert not missing, f"properties without a description: {missing}"


@pytest.mark.parametrize("name", sorted(CRDS))
def test_schema_is_structural(name: str) -> None:
    for path, node in walk(schema_of(CRDS[name])):
        assert "$ref" not in node, path
        assert "$defs" not in node, path
        assert "title" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert node.get("additionalProperties") is not False, path
        assert not node.get("uniqueItems"), f"{path}: the API server rejects uniqueItems"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"
        if "properties" in node:
            assert "additionalProperties" not in node, path
    assert "$ref" not in yaml.safe_dump(CRDS[name])


@pytest.mark.parametrize("name", sorted(CRDS))
def test_spec_lists_and_strings_are_bounded_for_cel_cost(name: str) -> None:
    spec = schema_of(CRDS[name])["properties"]["spec"]
    for path, node in walk(spec, ".spec"):
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} needs maxItems"
        if node.get("type") == "string" and "enum" not in node and "format" not in node:
            assert "maxLength" in node, f"{path} needs maxLength"


def test_names_scope_and_subresources() -> None:
    expected = {
        Tenant: ("tenants.tenantgw.io", "Cluster", ["tn"]),
        ModelAlias: ("modelaliases.tenantgw.io", "Namespaced", ["ma"]),
        BudgetPolicy: ("budgetpolicies.tenantgw.io", "Namespaced", ["bp"]),
    }
    for resource, (name, scope, short_names) in expected.items():
        spec = CRDS[name]["spec"]
        assert spec["group"] == "tenantgw.io"
        assert spec["scope"] == scope
        assert spec["names"]["kind"] == resource.KIND
        assert spec["names"]["shortNames"] == short_names
        assert spec["names"]["categories"] == ["tenantgw"]
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1"
        assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    def columns(name: str) -> list[str]:
        version = CRDS[name]["spec"]["versions"][0]
        return [column["name"] for column in version["additionalPrinterColumns"]]

    assert columns("tenants.tenantgw.io") == ["Ready", "Reason", "URL", "Models", "Deletion", "Age"]
    assert columns("modelaliases.tenantgw.io") == ["Accepted", "Targets", "Age"]
    assert columns("budgetpolicies.tenantgw.io") == ["Spent", "Limit", "State", "Age"]


def test_explain_reaches_nested_fields() -> None:
    routing = schema_of(CRDS["tenants.tenantgw.io"])["properties"]["spec"]["properties"]["routing"]
    assert "alias" in routing["description"]
    rule = routing["properties"]["rules"]["items"]
    assert rule["properties"]["match"]["properties"]["task"]["enum"] == [
        "background",
        "thinking",
        "long-context",
        "web-search",
    ]


def rules(name: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for _, node in walk(schema_of(CRDS[name])):
        found.extend(node.get("x-kubernetes-validations", []))
    return found


def test_cel_rules_carry_the_pydantic_messages() -> None:
    tenant_messages = {rule["message"] for rule in rules("tenants.tenantgw.io")}
    assert {API_BASE_MESSAGE, MATCH_MESSAGE, "spec.namespace is immutable"} <= tenant_messages
    alias_messages = {rule["message"] for rule in rules("modelaliases.tenantgw.io")}
    assert {FALLBACKS_UNIQUE_MESSAGE, FALLBACK_SELF_MESSAGE} <= alias_messages
    for name in CRDS:
        for rule in rules(name):
            assert {"rule", "message"} <= set(rule) <= {"rule", "message", "fieldPath"}, rule


def test_namespace_immutability_is_a_transition_rule() -> None:
    spec = schema_of(CRDS["tenants.tenantgw.io"])["properties"]["spec"]
    immutable, reserved = spec["properties"]["namespace"]["x-kubernetes-validations"]
    assert immutable == {"rule": "self == oldSelf", "message": "spec.namespace is immutable"}
    assert "kube-" in reserved["rule"]
    assert "'default'" in reserved["rule"]
    assert "'tenantgw-system'" in reserved["rule"]
    fixed = [rule for rule in spec["x-kubernetes-validations"] if "oldSelf" in rule["rule"]]
    assert len(fixed) == 1


def test_unique_names_and_bounded_thresholds() -> None:
    spec = schema_of(CRDS["tenants.tenantgw.io"])["properties"]["spec"]["properties"]
    for field in ("providers", "keys"):
        assert spec[field]["x-kubernetes-list-type"] == "map"
        assert spec[field]["x-kubernetes-list-map-keys"] == ["name"]
    budget = schema_of(CRDS["budgetpolicies.tenantgw.io"])["properties"]["spec"]["properties"]
    thresholds = budget["alertThresholds"]
    assert thresholds["items"]["minimum"] == 1
    assert thresholds["items"]["maximum"] == 100
    assert thresholds["x-kubernetes-list-type"] == "set"
    assert thresholds["default"] == [50, 80, 100]
    alias_spec = schema_of(CRDS["modelaliases.tenantgw.io"])["properties"]["spec"]
    assert alias_spec["properties"]["targets"]["items"]["properties"]["weight"]["minimum"] == 1


def test_optional_fields_are_nullable_and_status_has_no_defaults() -> None:
    for name in CRDS:
        status = schema_of(CRDS[name])["properties"]["status"]
        assert not [path for path, node in walk(status) if "default" in node]
    spec = schema_of(CRDS["tenants.tenantgw.io"])["properties"]["spec"]["properties"]
    assert spec["namespace"]["nullable"] is True
    assert "nullable" not in spec["providers"]


def test_committed_api_reference_is_generated() -> None:
    """docs/api-reference.md is what `make crds` writes from the same models."""
    reference = CRDS_DIR.parent / "docs" / "api-reference.md"
    assert reference.exists(), f"{reference} is missing: {RUN} and docs/api-reference.md"
    assert reference.read_text() == apiref.render(), f"{reference} is stale: {RUN}"


def test_api_reference_lists_every_field() -> None:
    text = apiref.render()
    for name, crd in CRDS.items():
        schema = schema_of(crd)
        for part in ("spec", "status"):
            for path, node in walk(schema["properties"][part], part):
                for prop in node.get("properties", {}):
                    assert f"| `{path}.{prop}` |" in text, f"{name}: {path}.{prop} not documented"
