"""kopf logs in with the official client's configuration, in a session of bounded connections.

User story: a platform engineer restarts the operator on a cluster with a thousand Tenants. kopf
adds its finalizer to each new one; unbounded, it would send them all at once and the API
server would refuse most (429), each retried after seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import kopf
import pytest
from kubernetes.client import Configuration
from kubernetes.config import kube_config

import tenantgw.operator.handlers  # noqa: F401  (registers the handlers with kopf)
from tenantgw.operator.login import CONNECTIONS, login

pytestmark = pytest.mark.unit

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: not-a-real-token}
contexts:
- name: x
  context: {cluster: c, user: u, namespace: team-a}
current-context: x
"""


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    # The client reads $KUBECONFIG when it is imported.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    before = Configuration.get_default_copy()
    yield path
    Configuration.set_default(before)  # login_via_client sets the client's default


async def test_login_keeps_kopfs_credentials_in_a_bounded_session(kubeconfig: Path) -> None:
    got = await login(logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
    assert isinstance(got, kopf.AiohttpSession)
    try:
        assert got.server == "https://127.0.0.1:6443"
        assert got.aiohttp_session.connector is not None
        assert got.aiohttp_session.connector.limit == CONNECTIONS
        assert got.aiohttp_session.headers["Authorization"] == "Bearer not-a-real-token"
    finally:
        await got.aiohttp_session.close()


def test_the_login_replaces_kopfs_default_and_leaves_room_beyond_the_watches() -> None:
    """Each watched kind holds a connection for as long as its stream runs: the rest must be
    enough for kopf's requests, or they would wait behind the watches forever."""
    registry = kopf.get_default_registry()
    logins = [
        h
        for h in registry._activities._handlers
        if h.activity.value == "authentication" and not h._fallback
    ]
    assert [h.fn for h in logins] == [login]
    watched = {
        h.selector
        for part in (registry._indexing, registry._watching, registry._changing)
        for h in part._handlers
    }
    assert 10 < len(watched) <= CONNECTIONS // 2
