"""spec.gateway.tls on the real control plane: cert-manager's Certificate exactly when its CRD is
there, and a Tenant that says what is missing when it is not.

The real operator (as its own ServiceAccount, with the RBAC of manifests/) reconciles a Tenant
that asks for HTTPS with an issuer. Without cert-manager's CRD it renders no Certificate, makes
no failed apply, and the Tenant's TLSConfigured condition names the field and the missing CRD.
Then the test installs a minimal Certificate CRD (e2e/certmanager/, cert-manager's schema for
the fields tenantgw sets): the operator discovers it and applies Certificate `gateway` naming the
issuer; the test plays cert-manager by writing the kubernetes.io/tls Secret, and the Tenant
turns Ready with the gateway mounting it read-only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from e2e.fixtures import Cluster
from e2e.helpers import K8s, alias_body, eventually, secret_body, tenant_body
from e2e.operator_fixture import RunningOperator
from e2e.tls_certs import CertificateAuthority

pytestmark = pytest.mark.e2e

TENANT_API = "tenantgw.io/v1alpha1"
CRD = Path(__file__).resolve().parent / "certmanager" / "certificates.cert-manager.io.yaml"
CRD_NAME = "certificates.cert-manager.io"
DISCOVERY_WAIT = 120
"""The operator remembers discovery for 60 s; then a resync (5 s here) applies."""


@pytest.fixture(scope="module")
def k8s(kube: Any) -> K8s:
    return K8s(kube)


def remove_crd(cluster: Cluster) -> None:
    cluster.run_kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true")


@pytest.fixture(scope="module")
def no_cert_manager(cluster: Cluster) -> Iterator[None]:
    """cert-manager's CRD absent at the start, and removed again at the end."""
    remove_crd(cluster)
    yield
    remove_crd(cluster)


def tls_spec(issuer: dict[str, str]) -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": "sim",
                "type": "openai-compatible",
                "apiBase": "http://127.0.0.1:9/v1",
                "credentialsSecretRef": {"name": "sim", "key": "apiKey"},
            }
        ],
        "catalog": [{"provider": "sim", "model": "*", "costTier": "medium"}],
        "keys": [{"name": "alice"}],
        "routing": {"defaultAlias": "fast"},
        "gateway": {"replicas": 1, "tls": {"issuerRef": issuer}},
    }


def certificate(k8s: K8s, ns: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = k8s.custom.get_namespaced_custom_object(
            "cert-manager.io", "v1", ns, "certificates", "gateway"
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def condition_with(k8s: K8s, name: str, type_: str, reason: str) -> dict[str, Any] | None:
    cond = k8s.condition(k8s.tenant(name), type_)
    return cond if cond and cond["reason"] == reason else None


def test_certificate_only_when_cert_managers_crd_exists(
    k8s: K8s,
    cluster: Cluster,
    operator: RunningOperator,
    no_cert_manager: None,
    tmp_path: Path,
) -> None:
    name = f"e2e-tls-{uuid.uuid4().hex[:6]}"
    ns = f"tenant-{name}"
    issuer = {"name": "platform-ca", "kind": "ClusterIssuer"}
    k8s.apply(tenant_body(name, **tls_spec(issuer)))
    try:
        eventually(lambda: k8s.namespace_exists(ns), 30, f"namespace {ns}")
        k8s.apply(secret_body(ns, "sim", {"apiKey": "sim-" + name}))
        k8s.apply(alias_body(ns, "fast", targets=[{"provider": "sim", "model": "m", "weight": 1}]))

        # Without the CRD: no Certificate, no failed apply, a condition saying what to do.
        missing = eventually(
            lambda: condition_with(k8s, name, "TLSConfigured", "TLSSecretMissing"),
            60,
            "TLSConfigured=TLSSecretMissing",
        )
        assert "spec.gateway.tls.secretName" in missing["message"]
        assert "cert-manager's CRDs" in missing["message"]
        ready = eventually(
            lambda: condition_with(k8s, name, "Ready", "TLSSecretMissing"), 30, "Ready's reason"
        )
        assert ready["status"] == "False"
        dep = k8s.apps.read_namespaced_deployment("gateway", ns)
        volumes = {v.name: v for v in dep.spec.template.spec.volumes}
        assert volumes["tls"].secret.secret_name == "gateway-tls"
        probe = dep.spec.template.spec.containers[0].readiness_probe.http_get
        assert (probe.scheme, probe.port) == ("HTTPS", "https")
        assert "ApplyFailed" not in operator.log()

        # cert-manager's CRD appears: the operator discovers it and applies the Certificate.
        cluster.run_kubectl("apply", "--server-side", "-f", str(CRD))
        cluster.run_kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRD))
        cert = eventually(lambda: certificate(k8s, ns), DISCOVERY_WAIT, "Certificate gateway")
        spec = cert["spec"]
        assert spec["secretName"] == "gateway-tls"
        assert spec["issuerRef"] == {**issuer, "group": "cert-manager.io"}
        assert f"gateway.{ns}.svc" in spec["dnsNames"]
        assert cert["metadata"]["ownerReferences"][0]["name"] == name
        eventually(
            lambda: condition_with(k8s, name, "TLSConfigured", "CertificatePending"),
            30,
            "TLSConfigured=CertificatePending",
        )

        # Playing cert-manager: the Secret it would write, with the labels of secretTemplate.
        pem = CertificateAuthority(tmp_path / "ca").issue("gateway", spec["dnsNames"])
        body = pem.secret_body("gateway-tls", ns)
        body["metadata"]["labels"] = spec["secretTemplate"]["labels"]
        k8s.apply(body)
        k8s.wait_condition(lambda: k8s.tenant(name), "TLSConfigured", "True", timeout=60)
        k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=60)
        tenant = k8s.tenant(name)
        assert tenant["status"]["url"] == f"https://gateway.{ns}.svc:4000"
        template = k8s.apps.read_namespaced_deployment("gateway", ns).spec.template
        assert "tenantgw.io/tls-hash" in template.metadata.annotations
        service = k8s.core.read_namespaced_service("gateway", ns)
        assert [p.name for p in service.spec.ports] == ["https", "metrics"]

        # TLS off again: the Certificate is pruned, the gateway serves plain HTTP.
        k8s.custom.patch_cluster_custom_object(
            "tenantgw.io", "v1alpha1", "tenants", name, {"spec": {"gateway": {"tls": None}}}
        )
        eventually(lambda: certificate(k8s, ns) is None, 60, "the Certificate to be pruned")
        tenant = eventually(
            lambda: (t := k8s.tenant(name))["status"]["url"].startswith("http://") and t,
            60,
            "status.url back to http",
        )
        assert k8s.condition(tenant, "TLSConfigured") is None
    finally:
        k8s.delete(TENANT_API, "Tenant", name)
