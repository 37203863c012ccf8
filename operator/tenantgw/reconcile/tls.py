"""The gateway's TLS Secret, judged (pure): the TLSConfigured condition and the certificate digest.

Only a Tenant with `spec.gateway.tls` gets the condition. The operator never writes the Secret:
cert-manager does (Certificate `gateway`, rendered by render.tls when an issuer is known and its
CRDs exist), or the platform does. A missing or unusable Secret is said here, naming the field
and what to do; the pod waits for it in ContainerCreating, it never crash-loops on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from tenantgw.api import IssuerRef, Tenant
from tenantgw.kube.client import JSON
from tenantgw.reconcile.conditions import condition
from tenantgw.render.names import TLS_CERT_FILE, TLS_KEY_FILE

FIELD = "spec.gateway.tls.secretName"
CERT_MARKER = "-----BEGIN CERTIFICATE-----"
KEY_MARKERS = ("-----BEGIN PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----",
               "-----BEGIN RSA PRIVATE KEY-----")  # fmt: skip


@dataclass(frozen=True)
class TlsJudgement:
    """The TLSConfigured condition, and the certificate's digest when the Secret is usable."""

    condition: dict[str, Any]
    digest: str | None


def _pem(data: dict[str, str], key: str) -> str | None:
    raw = data.get(key)
    if not raw:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _issuer_text(issuer: IssuerRef) -> str:
    return f"{issuer.kind} {issuer.name}"


def judge_tls(
    tenant: Tenant,
    secret: JSON | None,
    issuer: IssuerRef | None,
    certificate: bool,
    generation: int | None,
) -> TlsJudgement | None:
    """The condition for spec.gateway.tls, None without TLS.

    `issuer` is the one in effect (the Tenant's or the operator's), `certificate` whether a
    Certificate was rendered (an issuer and cert-manager's CRDs).
    """
    tls = tenant.spec.gateway.tls
    if tls is None:
        return None
    ns = tenant.namespace_name()
    name = tls.secret_name
    if secret is None:
        if certificate and issuer is not None:
            message = (
                f"waiting for cert-manager to issue Certificate gateway ({_issuer_text(issuer)}) "
                f'into Secret "{name}" in namespace {ns}; if it does not come, see '
                f"`kubectl describe certificate gateway -n {ns}`"
            )
            return TlsJudgement(
                condition("TLSConfigured", False, "CertificatePending", message, generation), None
            )
        if issuer is not None:
            how = (
                f"{_issuer_text(issuer)} is named but cert-manager's CRDs (cert-manager.io/v1 "
                "Certificate) are not installed: install cert-manager, or create the Secret"
            )
        else:
            how = (
                "no issuer is set (spec.gateway.tls.issuerRef or the operator's "
                "TENANTGW_TLS_ISSUER): set one with cert-manager installed, or create the "
                f"Secret yourself (kubectl create secret tls {name} -n {ns} --cert=... --key=...)"
            )
        message = f'{FIELD}: Secret "{name}" not found in namespace {ns}; {how}'
        return TlsJudgement(
            condition("TLSConfigured", False, "TLSSecretMissing", message, generation), None
        )
    data = secret.get("data") or {}
    cert, key = _pem(data, TLS_CERT_FILE), _pem(data, TLS_KEY_FILE)
    problems = []
    if cert is None or CERT_MARKER not in cert:
        problems.append(f"{TLS_CERT_FILE} (a PEM certificate chain)")
    if key is None or not any(marker in key for marker in KEY_MARKERS):
        problems.append(f"{TLS_KEY_FILE} (a PEM private key)")
    if problems:
        message = (
            f'{FIELD}: Secret "{name}" in namespace {ns} has no usable '
            f"{' and no usable '.join(problems)}; a kubernetes.io/tls Secret holds both "
            f"(kubectl create secret tls {name} -n {ns} --cert=... --key=...)"
        )
        return TlsJudgement(
            condition("TLSConfigured", False, "TLSSecretInvalid", message, generation), None
        )
    assert cert is not None
    digest = hashlib.sha256(cert.encode()).hexdigest()
    via = f", issued by cert-manager ({_issuer_text(issuer)})" if certificate and issuer else ""
    message = f'the gateway serves HTTPS with the certificate of Secret "{name}"{via}'
    ready = condition("TLSConfigured", True, "SecretReady", message, generation)
    return TlsJudgement(ready, digest)
