"""Small helpers for end-to-end tests: apply objects, read them, wait for conditions."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

GROUP, VERSION = "tenantgw.io", "v1alpha1"


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiException as exc:
            if exc.status != 404:
                raise
            last = None
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class K8s:
    """What e2e tests do with the cluster, as the admin."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.dyn = DynamicClient(api)

    def apply(self, obj: dict[str, Any]) -> Any:
        res = self.dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        return self.dyn.server_side_apply(
            res,
            body=obj,
            name=obj["metadata"]["name"],
            namespace=obj["metadata"].get("namespace"),
            field_manager="e2e-tests",
            force_conflicts=True,
        )

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        res = self.dyn.resources.get(api_version=api_version, kind=kind)
        try:
            res.delete(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def tenant(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
        return obj

    def tenant_exists(self, name: str) -> bool:
        try:
            self.tenant(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return False
        return True

    def alias(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "modelaliases", name
        )
        return obj

    def condition(self, obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
        for cond in (obj.get("status") or {}).get("conditions", []):
            if cond.get("type") == type_:
                return dict(cond)
        return None

    def wait_condition(
        self, get: Callable[[], dict[str, Any]], type_: str, status: str, timeout: float = 30
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            cond = self.condition(get(), type_)
            return cond if cond and cond["status"] == status else None

        result: dict[str, Any] = eventually(check, timeout, f"{type_}={status}")
        return result

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        data = self.core.read_namespaced_secret(name, namespace).data or {}
        return base64.b64decode(data[key]).decode()

    def namespace_exists(self, name: str) -> bool:
        try:
            self.core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def tenant_body(name: str, **spec: Any) -> dict[str, Any]:
    """A Tenant; test tenants are throwaway, so deletionPolicy is Delete unless given."""
    spec.setdefault("deletionPolicy", "Delete")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec,
    }


def alias_body(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelAlias",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def secret_body(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }
