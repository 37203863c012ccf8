"""The operator's API client against the real API server.

User story: the operator talks to the API server on its own event loop: a server-side apply, a
read, a refused object, a delete, an optional API that is not served and a server that cannot
be reached all come back as what they are, with the server's reason and message, and an
expiring token is asked for again on every call.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from kubernetes.client import Configuration
from kubernetes.config import load_kube_config

from e2e.fixtures import Cluster
from tenantgw.kube.apply import apply_objects
from tenantgw.kube.client import FIELD_MANAGER, Kube, KubeError

pytestmark = pytest.mark.integration


def _config(cluster: Cluster) -> Configuration:
    config = Configuration()
    load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=config)
    return config


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[Kube]:
    client = Kube(_config(cluster))
    yield client
    await client.close()


def _configmap(namespace: str, name: str, data: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


async def test_apply_read_refuse_and_delete(kube: Kube) -> None:
    ns = f"it-kube-{uuid.uuid4().hex[:8]}"
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    try:
        await kube.apply(namespace)
        live = await kube.apply(_configmap(ns, "one", {"a": "1"}))
        assert live["data"] == {"a": "1"}
        assert any(m["manager"] == FIELD_MANAGER for m in live["metadata"]["managedFields"])
        again = await kube.apply(_configmap(ns, "one", {"a": "2"}))
        assert again["data"] == {"a": "2"}
        got = await kube.get("v1", "ConfigMap", "one", ns)
        assert got is not None
        assert got["data"] == {"a": "2"}
        assert await kube.get("v1", "ConfigMap", "missing", ns) is None
        writes = kube.writes

        with pytest.raises(KubeError) as refused:
            await kube.apply(_configmap(ns, "Not_A_Name", {}))
        assert refused.value.status == 422
        assert refused.value.reason == "Invalid"
        assert "metadata.name" in refused.value.message
        assert refused.value.causes
        assert "NamespaceTerminating" not in refused.value.causes
        assert kube.writes == writes + 1

        assert await kube.delete("v1", "ConfigMap", "one", ns) is True
        assert await kube.delete("v1", "ConfigMap", "one", ns) is False
        assert await kube.has_api("v1", "ConfigMap") is True
        assert await kube.has_api("nothing.example.com/v1", "Thing") is False
    finally:
        await kube.delete("v1", "Namespace", ns)


async def test_a_create_in_a_terminating_namespace_carries_the_servers_cause(kube: Kube) -> None:
    """A namespace held in Terminating by a finalizer refuses new content with a 403 whose
    Status names the cause, so a reconcile planned from a stale cache can say what it is."""
    ns = f"it-kube-{uuid.uuid4().hex[:8]}"
    held = _configmap(ns, "held", {})
    held["metadata"]["finalizers"] = ["e2e.tenantgw.io/hold"]  # type: ignore[index]
    await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        await kube.apply(held)
        await kube.delete("v1", "Namespace", ns)
        with pytest.raises(KubeError) as refused:
            await kube.apply(_configmap(ns, "new", {"a": "1"}))
        assert refused.value.status == 403
        assert "NamespaceTerminating" in refused.value.causes
        result = await apply_objects(kube, [_configmap(ns, "new", {"a": "1"})], {})
        assert [(f.object, f.namespace_terminating) for f in result.failed] == [
            ("ConfigMap/new", True)
        ]
    finally:
        held["metadata"]["finalizers"] = []  # type: ignore[index]
        await kube.apply(held)


async def test_a_server_that_cannot_be_reached_is_an_error_with_status_0(
    cluster: Cluster,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = _config(cluster)
    config.host = f"https://127.0.0.1:{port}"
    kube = Kube(config)
    try:
        with pytest.raises(KubeError) as failed:
            await kube.get("v1", "Namespace", "default")
        assert failed.value.status == 0
        assert failed.value.reason == "Unreachable"
    finally:
        await kube.close()


async def test_the_token_is_asked_for_on_every_call(cluster: Cluster) -> None:
    """A projected ServiceAccount token or an exec plugin's expires: the client refreshes it
    when it is read, so each call must read it."""
    config = _config(cluster)
    asked: list[int] = []

    def refresh(c: Configuration) -> None:
        asked.append(1)
        c.api_key["BearerToken"] = "not-a-valid-token"
        c.api_key_prefix["BearerToken"] = "Bearer"

    config.api_key["BearerToken"] = "expired"  # as the in-cluster loader leaves it
    config.refresh_api_key_hook = refresh
    config.cert_file = config.key_file = None  # the token alone authenticates
    kube = Kube(config)
    try:
        for _ in range(2):
            with pytest.raises(KubeError) as refused:
                await kube.get("v1", "Namespace", "default")
            assert refused.value.status == 401
        assert len(asked) == 2
    finally:
        await kube.close()
