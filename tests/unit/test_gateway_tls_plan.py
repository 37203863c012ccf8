"""spec.gateway.tls, planned without a server: which objects, which condition, which flags.

A platform engineer turns TLS on and expects HTTPS from a Secret, a Certificate when cert-manager
and an issuer are there, and a condition naming the field when the Secret is missing or unusable.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tests.unit.test_tenant_plan import (
    NOW,
    SETTINGS,
    STORAGE,
    TENANT,
    conds,
    keys,
    plan,
    served,
    snapshot,
)

from e2e.tls_certs import CertificateAuthority
from tenantgw.api import IssuerRef, Tenant
from tenantgw.gateway.__main__ import _uvicorn_options, tls_problem
from tenantgw.reconcile.plan import TenantSnapshot, conclude, plan_tenant
from tenantgw.reconcile.settings import SettingsError, issuer_from_env

pytestmark = pytest.mark.unit

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tls_tenant(**tls: Any) -> dict[str, Any]:
    body = copy.deepcopy(TENANT)
    body["spec"]["gateway"] = {"tls": tls}
    return body


def tls_snapshot(
    body: dict[str, Any], secret: dict[str, Any] | None, cert_manager: bool
) -> TenantSnapshot:
    return dataclasses.replace(snapshot(body), tls_secret=secret, cert_manager=cert_manager)


def secret(cert: str | None = CERT, key: str | None = KEY) -> dict[str, Any]:
    data = {}
    if cert is not None:
        data["tls.crt"] = b64(cert)
    if key is not None:
        data["tls.key"] = b64(key)
    return {"metadata": {"name": "gateway-tls"}, "type": "kubernetes.io/tls", "data": data}


def kinds(snap: TenantSnapshot) -> list[str]:
    return [o["kind"] for o in plan(snap).objects]


def test_without_tls_nothing_changes_and_no_condition_appears() -> None:
    p = plan(tls_snapshot(copy.deepcopy(TENANT), None, cert_manager=True))
    assert "Certificate" not in [o["kind"] for o in p.objects]
    done = conclude(p, served())
    assert "TLSConfigured" not in conds(done)
    assert done.status is not None
    assert done.status["url"].startswith("http://")


def test_a_ready_secret_serves_https_and_the_url_says_so() -> None:
    p = plan(tls_snapshot(tls_tenant(), secret(), cert_manager=False))
    assert "Certificate" not in [o["kind"] for o in p.objects]  # no issuer: none
    deployment = next(o for o in p.objects if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {"name": "tls", "mountPath": "/etc/tenantgw/tls", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "tenantgw.io/tls-hash" in pod["metadata"]["annotations"]
    done = conclude(p, served())
    tls = conds(done)["TLSConfigured"]
    assert (tls["status"], tls["reason"]) == ("True", "SecretReady")
    assert conds(done)["Ready"]["status"] == "True"
    assert done.status is not None
    assert done.status["url"] == "https://gateway.tenant-plan-solo.svc:4000"


def test_a_renewed_certificate_changes_the_pod_template() -> None:
    def digest(cert: str) -> str:
        p = plan(tls_snapshot(tls_tenant(), secret(cert=cert), cert_manager=False))
        dep = next(o for o in p.objects if o["kind"] == "Deployment")
        return str(dep["spec"]["template"]["metadata"]["annotations"]["tenantgw.io/tls-hash"])

    assert digest(CERT) != digest(CERT.replace("MIIB", "MIIC"))


@pytest.mark.parametrize(
    ("cert", "key", "named"),
    [(None, KEY, "tls.crt"), (CERT, None, "tls.key"), ("not pem", KEY, "tls.crt"),
     (CERT, CERT, "tls.key")],
)  # fmt: skip
def test_an_unusable_secret_is_a_condition_naming_the_field(
    cert: str | None, key: str | None, named: str
) -> None:
    done = conclude(plan(tls_snapshot(tls_tenant(), secret(cert, key), False)), served())
    ready, tls = conds(done)["Ready"], conds(done)["TLSConfigured"]
    assert (tls["status"], tls["reason"]) == ("False", "TLSSecretInvalid")
    assert "spec.gateway.tls.secretName" in tls["message"]
    assert named in tls["message"]
    assert (ready["status"], ready["reason"]) == ("False", "TLSSecretInvalid")


def test_a_missing_secret_without_an_issuer_says_what_to_do() -> None:
    done = conclude(plan(tls_snapshot(tls_tenant(), None, cert_manager=True)), served())
    tls = conds(done)["TLSConfigured"]
    assert tls["reason"] == "TLSSecretMissing"
    assert "spec.gateway.tls.issuerRef" in tls["message"]
    assert "kubectl create secret tls gateway-tls" in tls["message"]
    assert conds(done)["Ready"]["reason"] == "TLSSecretMissing"


def test_an_issuer_without_cert_manager_renders_no_certificate_and_says_so() -> None:
    body = tls_tenant(issuerRef={"name": "platform-ca"})
    snap = tls_snapshot(body, None, cert_manager=False)
    assert "Certificate" not in kinds(snap)
    tls = conds(conclude(plan(snap), served()))["TLSConfigured"]
    assert tls["reason"] == "TLSSecretMissing"
    assert "cert-manager's CRDs" in tls["message"]


def test_an_issuer_with_cert_manager_renders_the_certificate_and_waits_for_it() -> None:
    body = tls_tenant(issuerRef={"name": "team-ca", "kind": "Issuer"})
    p = plan(tls_snapshot(body, None, cert_manager=True))
    (cert,) = [o for o in p.objects if o["kind"] == "Certificate"]
    assert cert["spec"]["secretName"] == "gateway-tls"
    assert cert["spec"]["issuerRef"] == {
        "name": "team-ca",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    assert "gateway.tenant-plan-solo.svc" in cert["spec"]["dnsNames"]
    assert ("cert-manager.io/v1", "Certificate") in p.prune_kinds
    tls = conds(conclude(p, served()))["TLSConfigured"]
    assert (tls["reason"], tls["status"]) == ("CertificatePending", "False")


def test_the_operators_issuer_is_used_when_the_tenant_names_none() -> None:
    settings = dataclasses.replace(
        SETTINGS, tls_issuer=IssuerRef(name="platform-ca", kind="ClusterIssuer")
    )
    snap = tls_snapshot(tls_tenant(), secret(), cert_manager=True)
    p = plan_tenant(snap, settings, now=NOW, new_key=keys(), storage=STORAGE)
    (cert,) = [o for o in p.objects if o["kind"] == "Certificate"]
    assert cert["spec"]["issuerRef"]["name"] == "platform-ca"
    tls = conds(conclude(p, served()))["TLSConfigured"]
    assert tls["reason"] == "SecretReady"
    assert "ClusterIssuer platform-ca" in tls["message"]


@pytest.mark.parametrize("name", ["gateway", "gateway-key-alice"])
def test_the_tls_secret_cannot_be_one_of_the_operators(name: str) -> None:
    with pytest.raises(ValidationError, match="secretName"):
        Tenant.model_validate(tls_tenant(secretName=name))


def test_the_operator_issuer_setting_is_parsed_or_refused_by_name() -> None:
    issuer = issuer_from_env({"TENANTGW_TLS_ISSUER": "ClusterIssuer/platform-ca"})
    assert issuer == IssuerRef(name="platform-ca", kind="ClusterIssuer")
    assert issuer_from_env({}) is None
    for bad in ("platform-ca", "Secret/x", "Issuer/Not_A_Name"):
        with pytest.raises(SettingsError, match="TENANTGW_TLS_ISSUER"):
            issuer_from_env({"TENANTGW_TLS_ISSUER": bad})


def test_the_gateway_refuses_a_bad_certificate_pair_before_starting(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    pem = ca.issue("server", ["localhost"])
    other = ca.issue("other", ["localhost"])
    assert tls_problem(None, None) is None
    assert tls_problem(str(pem.cert), str(pem.key)) is None
    assert "go together" in (tls_problem(str(pem.cert), None) or "")
    assert "no such file" in (tls_problem(str(tmp_path / "nope"), str(pem.key)) or "")
    mismatch = tls_problem(str(pem.cert), str(other.key)) or ""
    assert "--ssl_certfile_path" in mismatch
    assert "private key" in mismatch
    options = _uvicorn_options("0.0.0.0", 4000, 1, str(pem.cert), str(pem.key))  # noqa: S104
    assert options["ssl_certfile"] == str(pem.cert)
    assert "ssl_certfile" not in _uvicorn_options("0.0.0.0", 4000, 1)  # noqa: S104
