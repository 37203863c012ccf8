"""JSON Schemas for kubeconform, made offline: built-in kinds from the API server's OpenAPI,
tenantgw's kinds (and kopf's) from the CRDs in the repository.

kubeconform looks a resource's schema up by a path template; with `-strict` it asks for the
`-strict` variant, in which an undocumented field is an error. Both are written here, in the
layout of kubeconform's schema repository:

    <root>/v<k8s version>-standalone[-strict]/<kind>-<group prefix>-<version>.json

A built-in schema keeps the OpenAPI definitions it reaches under `definitions` and refers to
them with local `$ref`s (Kubernetes' types are recursive, so they are not inlined). Two
OpenAPI string types also take numbers in a manifest, as the API server accepts:
IntOrString (`port: 8080`) and Quantity (`cpu: 1`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

Schema = dict[str, Any]

INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}
QUANTITY_DEF = "io.k8s.apimachinery.pkg.api.resource.Quantity"
REF_PREFIX = "#/definitions/"
# Keywords whose value maps names (which may read like keywords) to schemas.
NAME_MAPS = ("properties", "definitions", "patternProperties")
# What the API server gives every custom resource, declared in its CRD's schema or not.
OBJECT_FIELDS: Schema = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}


def file_name(kind: str, api_version: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` for this kind."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0].lower()}-{version.lower()}" if group else f"-{version.lower()}"
    return f"{kind.lower()}{suffix}.json"


def _strict(node: Any) -> Any:
    """A copy where every object that lists its properties refuses any other."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in NAME_MAPS and isinstance(value, dict):
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        else:
            out[key] = _strict(value)
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _openapi_types(node: Any) -> Any:
    """OpenAPI's int-or-string and nullable, as JSON Schema says them."""
    if isinstance(node, list):
        return [_openapi_types(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in NAME_MAPS and isinstance(value, dict):
            out[key] = {name: _openapi_types(sub) for name, sub in value.items()}
        else:
            out[key] = _openapi_types(value)
    if out.get("format") == "int-or-string" or out.get("x-kubernetes-int-or-string"):
        for key in ("type", "format"):
            out.pop(key, None)
        out.update(copy.deepcopy(INT_OR_STRING))
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            yield ref.removeprefix(REF_PREFIX)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _reachable(definitions: dict[str, Schema], root: str) -> dict[str, Schema]:
    seen: dict[str, Schema] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in definitions:
            continue
        seen[name] = definitions[name]
        todo.extend(_refs(definitions[name]))
    return seen


def builtin_schemas(openapi_v2: Schema) -> dict[str, Schema]:
    """file name -> schema for every built-in kind (io.k8s.*) of an /openapi/v2 document.

    Kinds served from CRDs are left out: their schemas come from the repository's CRDs.
    """
    definitions: dict[str, Schema] = {
        name: _openapi_types(schema)
        for name, schema in openapi_v2["definitions"].items()
        if name.startswith("io.k8s.")
    }
    if QUANTITY_DEF in definitions:
        definitions[QUANTITY_DEF] = {**copy.deepcopy(QUANTITY), "description": "Quantity"}
    out: dict[str, Schema] = {}
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            target = file_name(gvk["kind"], api_version)
            if target in out and not name.endswith("." + gvk["kind"]):
                continue  # e.g. DeleteOptions listed under every group
            reached = _reachable(definitions, name)
            reached.pop(name)
            out[target] = {**copy.deepcopy(schema), "definitions": copy.deepcopy(reached)}
    return out


def crd_schemas(crd_files: Iterable[Path]) -> dict[str, Schema]:
    """file name -> schema for each served version of each CustomResourceDefinition."""
    out: dict[str, Schema] = {}
    for path in crd_files:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if not version.get("served", True) or schema is None:
                    continue
                schema = _openapi_types(schema)
                schema["properties"] = {**OBJECT_FIELDS, **schema.get("properties", {})}
                out[file_name(kind, f"{group}/{version['name']}")] = schema
    return out


def write(root: Path, kubernetes_version: str, schemas: dict[str, Schema]) -> None:
    """Write the plain and the strict variant of each schema under `root`."""
    for suffix, transform in (("", lambda s: s), ("-strict", _strict)):
        target = root / f"v{kubernetes_version}-standalone{suffix}"
        target.mkdir(parents=True, exist_ok=True)
        for name, schema in schemas.items():
            (target / name).write_text(json.dumps(transform(schema)))


def location(root: Path) -> str:
    """The -schema-location template that finds what `write` wrote."""
    return (
        str(root)
        + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/"
        + ("{{ .ResourceKind }}{{ .KindSuffix }}.json")
    )
