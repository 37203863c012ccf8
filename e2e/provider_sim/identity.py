"""Workload identity in the simulator: the cluster's token issuer and the clouds' token exchanges.

A pod with workload identity holds a projected ServiceAccount token (a JWT the cluster signs,
with the audience the cloud expects) and trades it at the cloud's token service for a
credential of its own: AWS STS ``AssumeRoleWithWebIdentity`` (IRSA, ``bedrock.py``), Entra
ID's token endpoint with a client assertion (AKS workload identity, ``azure.py``) or Google's
STS token exchange then a service account's ``generateAccessToken`` (GCP Workload Identity
Federation, ``gemini.py``). The simulator plays all three parts:

* ``service_account_token`` mints what the kubelet would project into the pod: a JWT signed by
  the simulated cluster issuer (``ISSUER``), with ``sub`` ``system:serviceaccount:<ns>:<sa>``;
* ``verify_service_account_token`` is what a cloud checks before it trusts one: signature,
  issuer, audience, expiry, subject;
* the credentials a cloud hands out are verifiable without state (HMAC-derived from the
  simulator's key), so a ``reset`` between tests does not invalidate what the gateway cached.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import jwt

ISSUER = "https://oidc.provider-sim.invalid/cluster"
"""The simulated cluster's service-account issuer (an EKS/AKS OIDC issuer URL)."""
AWS_AUDIENCE = "sts.amazonaws.com"
AZURE_AUDIENCE = "api://AzureADTokenExchange"
POD_IDENTITY_AUDIENCE = "pods.eks.amazonaws.com"
GCP_IAM = "//iam.googleapis.com/"
_CLUSTER_KEY = b"provider-sim-cluster-issuer-signing-key"  # signs projected ServiceAccount tokens
_CLOUD_KEY = b"provider-sim-cloud-credentials-signing"  # derives and signs what the clouds hand out


class IdentityError(Exception):
    """A credential a cloud must refuse; ``code`` is the cloud's own error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def service_account_subject(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


def service_account_token(
    subject: str, audience: str, *, ttl_s: int = 3600, issuer: str = ISSUER
) -> str:
    """A projected ServiceAccount token as the cluster issues it (RS256 there, HS256 here)."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": [audience],
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "kubernetes.io": {"serviceaccount": {"name": subject.rsplit(":", 1)[-1]}},
    }
    return jwt.encode(claims, _CLUSTER_KEY, algorithm="HS256")


def verify_service_account_token(token: str, audience: str) -> dict[str, Any]:
    """The claims of a token the cluster issued for ``audience``, or IdentityError."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token.strip(),
            _CLUSTER_KEY,
            algorithms=["HS256"],
            audience=audience,
            issuer=ISSUER,
            options={"require": ["exp", "sub", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise IdentityError("ExpiredToken", "Token is expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise IdentityError("InvalidIdentityToken", f"Incorrect token audience: {exc}") from exc
    except jwt.PyJWTError as exc:
        raise IdentityError("InvalidIdentityToken", f"Invalid web identity token: {exc}") from exc
    return claims


# --------------------------------------------------------------------------- AWS credentials


def _mac(*parts: str) -> str:
    return hmac.new(_CLOUD_KEY, "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def issue_aws_session(role_arn: str, session_name: str, ttl_s: int) -> dict[str, str | int]:
    """Temporary credentials of an assumed role: ASIA key id, secret and session token."""
    key_id = "ASIA" + secrets.token_hex(8).upper()
    expires = int(time.time()) + ttl_s
    payload = json.dumps(
        {"k": key_id, "r": role_arn, "s": session_name, "e": expires}, separators=(",", ":")
    )
    token = base64.b64encode(payload.encode()).decode() + "." + _mac("token", payload)
    return {
        "AccessKeyId": key_id,
        "SecretAccessKey": _mac("secret", key_id)[:40],
        "SessionToken": token,
        "Expiration": expires,
    }


def aws_session_secret(key_id: str, session_token: str | None) -> tuple[str, dict[str, Any]]:
    """(secret key, session) of temporary credentials this simulator's STS issued.

    IdentityError when the session token is missing, forged, for another key or expired.
    """
    if not session_token:
        raise IdentityError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    encoded, _, mac = session_token.partition(".")
    try:
        payload = base64.b64decode(encoded, validate=True).decode()
        session: dict[str, Any] = json.loads(payload)
    except ValueError as exc:
        raise IdentityError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        ) from exc
    if not hmac.compare_digest(mac, _mac("token", payload)) or session.get("k") != key_id:
        raise IdentityError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if int(session.get("e", 0)) < time.time():
        raise IdentityError(
            "ExpiredTokenException", "The security token included in the request is expired"
        )
    return _mac("secret", key_id)[:40], session


# --------------------------------------------------------------------------- Entra ID tokens

AZURE_RESOURCE = "https://cognitiveservices.azure.com"


def issue_entra_token(tenant_id: str, client_id: str, subject: str, ttl_s: int) -> str:
    """An Entra ID access token for Azure OpenAI (``aud`` the Cognitive Services resource)."""
    now = int(time.time())
    claims = {
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "aud": AZURE_RESOURCE,
        "tid": tenant_id,
        "appid": client_id,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, _CLOUD_KEY, algorithm="HS256")


def verify_entra_token(token: str) -> dict[str, Any]:
    """The claims of an Entra access token this simulator issued for Azure OpenAI."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, _CLOUD_KEY, algorithms=["HS256"], audience=AZURE_RESOURCE
        )
    except jwt.ExpiredSignatureError as exc:
        raise IdentityError("ExpiredAuthenticationToken", "Token expired") from exc
    except jwt.PyJWTError as exc:
        raise IdentityError("InvalidAuthenticationToken", f"Invalid bearer token: {exc}") from exc
    return claims


# --------------------------------------------------------------------------- GCP federation

GCP_FEDERATED_AUDIENCE = "provider-sim-gcp-federated"


def gcp_audience(pool_provider: str) -> str:
    """The projected token's audience a pool provider accepts by default."""
    return "https:" + GCP_IAM + pool_provider


def gcp_principal(pool_provider: str, subject: str) -> str:
    """The federated principal STS makes of ``subject`` (``google.subject=assertion.sub``)."""
    pool = pool_provider.rsplit("/providers/", 1)[0]
    return f"principal:{GCP_IAM}{pool}/subject/{subject}"


def issue_gcp_federated_token(principal: str, ttl_s: int) -> str:
    """A federated access token of STS: good only for impersonating a service account."""
    now = int(time.time())
    claims = {"sub": principal, "aud": GCP_FEDERATED_AUDIENCE, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, _CLOUD_KEY, algorithm="HS256")


def verify_gcp_federated_token(token: str) -> str:
    """The principal of a federated token this simulator's STS issued, or IdentityError."""
    try:
        claims = jwt.decode(
            token, _CLOUD_KEY, algorithms=["HS256"], audience=GCP_FEDERATED_AUDIENCE
        )
    except jwt.PyJWTError as exc:
        raise IdentityError("UNAUTHENTICATED", f"Invalid federated token: {exc}") from exc
    return str(claims["sub"])


__all__ = [
    "AWS_AUDIENCE",
    "AZURE_AUDIENCE",
    "GCP_IAM",
    "ISSUER",
    "POD_IDENTITY_AUDIENCE",
    "IdentityError",
    "aws_session_secret",
    "gcp_audience",
    "gcp_principal",
    "issue_aws_session",
    "issue_entra_token",
    "issue_gcp_federated_token",
    "service_account_subject",
    "service_account_token",
    "verify_entra_token",
    "verify_gcp_federated_token",
    "verify_service_account_token",
]
