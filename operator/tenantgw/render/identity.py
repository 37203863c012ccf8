"""Workload identity of a tenant's gateway: provider credentials from its ServiceAccount.

A provider with `workloadIdentity` has no Secret. The gateway's ServiceAccount carries the
cloud's annotations, and the Deployment projects a ServiceAccount token with the cloud's
audience into the pod (never the API server's: the token opens no door to Kubernetes, and
`automountServiceAccountToken` stays false). The SDKs trade it for short-lived credentials:

* AWS (IRSA): `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`; boto3's default credential chain,
  which LiteLLM uses when a Bedrock deployment names no key, calls STS
  AssumeRoleWithWebIdentity and refreshes before expiry. The volume name and path are those
  the EKS pod identity webhook uses, so the pod is the same with or without the webhook.
* AWS (EKS Pod Identity, `podIdentity: true`): `AWS_CONTAINER_CREDENTIALS_FULL_URI` (the
  node's EKS Pod Identity Agent, `http://169.254.170.23/v1/credentials`) +
  `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (a token projected for `pods.eks.amazonaws.com`);
  boto3's container credential provider sends the file's token as `Authorization` and gets
  the role of the cluster's pod identity association for `<namespace>/gateway`. The agent is
  link-local, which the NetworkPolicy blocks: `network.py` opens exactly its two addresses on
  TCP 80 for such a tenant (`POD_IDENTITY_AGENT`). Volume, path and env are the EKS Pod
  Identity webhook's, so the pod is the same with or without it. The ServiceAccount carries
  no annotation: the association lives in the EKS API.
* Azure (Entra Workload ID): `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
  `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`; LiteLLM's `azure_ad_token:
  oidc/azure/...` reads the file on each exchange and posts it to
  `<authority>/<tenant>/oauth2/v2.0/token` as a client assertion. The pod does not carry the
  `azure.workload.identity/use` label: the operator projects the token itself, so the
  webhook's mutation (which would add a second volume of the same name) is not wanted.
* GCP (Workload Identity Federation): `GOOGLE_APPLICATION_CREDENTIALS` names an
  `external_account` credential configuration in the gateway ConfigMap (no secret in it: the
  pool provider's audience, the STS and impersonation URLs, and the projected token's path);
  LiteLLM's `vertex_credentials` points at it. google-auth reads the token file on each
  exchange, trades it at STS (`<sts>/v1/token`, token-exchange grant) for a federated token
  and that for the service account's access token (`:generateAccessToken`). It works on any
  cluster whose OIDC issuer the pool trusts, GKE included; GKE's metadata-server flavour (the
  `iam.gke.io/gcp-service-account` annotation) is not rendered: its server is link-local,
  which the NetworkPolicy blocks.
"""

from __future__ import annotations

import json
from typing import Any

from tenantgw.api import AwsWorkloadIdentity, AzureWorkloadIdentity, GcpWorkloadIdentity
from tenantgw.render.inputs import RenderInputs
from tenantgw.render.names import CONFIG_MOUNT, tenant_name

AWS_ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
AWS_AUDIENCE = "sts.amazonaws.com"
AWS_TOKEN_VOLUME = "aws-iam-token"  # noqa: S105 (names and paths, not secrets)
AWS_TOKEN_DIR = "/var/run/secrets/eks.amazonaws.com/serviceaccount"  # noqa: S105
AWS_TOKEN_SECONDS = 86400
POD_IDENTITY_AUDIENCE = "pods.eks.amazonaws.com"
POD_IDENTITY_TOKEN_VOLUME = "eks-pod-identity-token"  # noqa: S105
POD_IDENTITY_TOKEN_DIR = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"  # noqa: S105
POD_IDENTITY_TOKEN_SECONDS = 86400
POD_IDENTITY_AGENT = ("169.254.170.23/32", "fd00:ec2::23/128")
"""The EKS Pod Identity Agent's addresses on every node (IPv4, IPv6); it listens on TCP 80."""
POD_IDENTITY_AGENT_PORT = 80
POD_IDENTITY_CREDENTIALS_URI = "http://169.254.170.23/v1/credentials"
AZURE_CLIENT_ANNOTATION = "azure.workload.identity/client-id"
AZURE_TENANT_ANNOTATION = "azure.workload.identity/tenant-id"
AZURE_AUDIENCE = "api://AzureADTokenExchange"
AZURE_TOKEN_VOLUME = "azure-identity-token"  # noqa: S105
AZURE_TOKEN_DIR = "/var/run/secrets/azure/tokens"  # noqa: S105
AZURE_TOKEN_SECONDS = 3600
AZURE_AUTHORITY = "https://login.microsoftonline.com"
AZURE_AD_TOKEN = f"oidc/azure/{AZURE_AUDIENCE}"
"""LiteLLM's `azure_ad_token` value for a federated token read from AZURE_FEDERATED_TOKEN_FILE."""
GCP_AUDIENCE_PREFIX = "https://iam.googleapis.com/"
"""The pool provider's default allowed audience is this + its resource name."""
GCP_TOKEN_VOLUME = "gcp-identity-token"  # noqa: S105
GCP_TOKEN_DIR = "/var/run/secrets/gcp/serviceaccount"  # noqa: S105
GCP_TOKEN_SECONDS = 3600
GCP_STS = "https://sts.googleapis.com"
GCP_IAM_CREDENTIALS = "https://iamcredentials.googleapis.com"
GCP_CREDENTIALS_FILE = "gcp-credentials.json"
"""The credential configuration's key in the gateway ConfigMap (mounted at CONFIG_MOUNT)."""
GCP_CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
TOKEN_FILE = "token"  # noqa: S105


def aws_identity(inputs: RenderInputs) -> AwsWorkloadIdentity | None:
    identity = inputs.tenant.spec.workload_identity("aws")
    return identity.aws if identity is not None else None


def irsa_identity(inputs: RenderInputs) -> AwsWorkloadIdentity | None:
    """The tenant's AWS identity when it is IRSA (a role ARN)."""
    aws = aws_identity(inputs)
    return aws if aws is not None and aws.role_arn is not None else None


def pod_identity(inputs: RenderInputs) -> bool:
    """Whether the tenant's AWS identity is EKS Pod Identity."""
    aws = aws_identity(inputs)
    return aws is not None and bool(aws.pod_identity)


def azure_identity(inputs: RenderInputs) -> AzureWorkloadIdentity | None:
    identity = inputs.tenant.spec.workload_identity("azure")
    return identity.azure if identity is not None else None


def gcp_identity(inputs: RenderInputs) -> GcpWorkloadIdentity | None:
    identity = inputs.tenant.spec.workload_identity("gcp")
    return identity.gcp if identity is not None else None


def gcp_audience(gcp: GcpWorkloadIdentity) -> str:
    """The projected token's audience: the pool provider's default allowed audience."""
    return GCP_AUDIENCE_PREFIX + gcp.workload_identity_provider


def gcp_credential_config(gcp: GcpWorkloadIdentity) -> dict[str, Any]:
    """google-auth's `external_account` configuration, as `gcloud iam workload-identity-pools
    create-cred-config --credential-source-file` writes it. Holds no secret."""
    sts = (gcp.sts_endpoint or GCP_STS).rstrip("/")
    iam = (gcp.iam_credentials_endpoint or GCP_IAM_CREDENTIALS).rstrip("/")
    return {
        "type": "external_account",
        "audience": "//iam.googleapis.com/" + gcp.workload_identity_provider,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"{sts}/v1/token",
        "service_account_impersonation_url": (
            f"{iam}/v1/projects/-/serviceAccounts/{gcp.service_account}:generateAccessToken"
        ),
        "credential_source": {
            "file": f"{GCP_TOKEN_DIR}/{TOKEN_FILE}",
            "format": {"type": "text"},
        },
    }


def identity_files(inputs: RenderInputs) -> dict[str, str]:
    """Files of the gateway ConfigMap the clouds' SDKs read: GCP's credential configuration."""
    gcp = gcp_identity(inputs)
    if gcp is None:
        return {}
    return {GCP_CREDENTIALS_FILE: json.dumps(gcp_credential_config(gcp), indent=2) + "\n"}


def service_account_annotations(inputs: RenderInputs) -> dict[str, str]:
    """What the clouds' trust configuration and webhooks read on the gateway ServiceAccount."""
    annotations: dict[str, str] = {}
    aws = irsa_identity(inputs)
    if aws is not None and aws.role_arn is not None:
        annotations[AWS_ROLE_ANNOTATION] = aws.role_arn
    azure = azure_identity(inputs)
    if azure is not None:
        annotations[AZURE_CLIENT_ANNOTATION] = azure.client_id
        annotations[AZURE_TENANT_ANNOTATION] = azure.tenant_id
    return annotations


def identity_env(inputs: RenderInputs) -> list[dict[str, Any]]:
    """Environment the clouds' SDKs read: role or app, and where the projected token is."""
    env: list[dict[str, Any]] = []
    aws = irsa_identity(inputs)
    if aws is not None and aws.role_arn is not None:
        env += [
            {"name": "AWS_ROLE_ARN", "value": aws.role_arn},
            {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": f"{AWS_TOKEN_DIR}/{TOKEN_FILE}"},
            # CloudTrail shows which tenant's gateway assumed the role.
            {"name": "AWS_ROLE_SESSION_NAME", "value": f"tenantgw-{tenant_name(inputs.tenant)}"},
            {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
        ]
        if aws.sts_endpoint:
            env.append({"name": "AWS_ENDPOINT_URL_STS", "value": aws.sts_endpoint})
    if pod_identity(inputs):
        token_file = f"{POD_IDENTITY_TOKEN_DIR}/{POD_IDENTITY_TOKEN_VOLUME}"
        env += [
            {"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": POD_IDENTITY_CREDENTIALS_URI},
            {"name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "value": token_file},
        ]
    azure = azure_identity(inputs)
    if azure is not None:
        env += [
            {"name": "AZURE_CLIENT_ID", "value": azure.client_id},
            {"name": "AZURE_TENANT_ID", "value": azure.tenant_id},
            {
                "name": "AZURE_FEDERATED_TOKEN_FILE",
                "value": f"{AZURE_TOKEN_DIR}/{AZURE_TOKEN_VOLUME}",
            },
            # LiteLLM appends "/<tenant>/oauth2/v2.0/token": no trailing slash.
            {
                "name": "AZURE_AUTHORITY_HOST",
                "value": (azure.authority_host or AZURE_AUTHORITY).rstrip("/"),
            },
        ]
    if gcp_identity(inputs) is not None:
        env.append({"name": GCP_CREDENTIALS_ENV, "value": f"{CONFIG_MOUNT}/{GCP_CREDENTIALS_FILE}"})
    return env


def _projected(name: str, audience: str, seconds: int, path: str) -> dict[str, Any]:
    token = {"audience": audience, "expirationSeconds": seconds, "path": path}
    return {"name": name, "projected": {"sources": [{"serviceAccountToken": token}]}}


def identity_volumes(inputs: RenderInputs) -> list[dict[str, Any]]:
    """Projected ServiceAccount tokens, one per cloud, with that cloud's audience."""
    volumes = []
    if irsa_identity(inputs) is not None:
        volumes.append(_projected(AWS_TOKEN_VOLUME, AWS_AUDIENCE, AWS_TOKEN_SECONDS, TOKEN_FILE))
    if pod_identity(inputs):
        volumes.append(
            _projected(
                POD_IDENTITY_TOKEN_VOLUME,
                POD_IDENTITY_AUDIENCE,
                POD_IDENTITY_TOKEN_SECONDS,
                POD_IDENTITY_TOKEN_VOLUME,
            )
        )
    if azure_identity(inputs) is not None:
        volumes.append(
            _projected(AZURE_TOKEN_VOLUME, AZURE_AUDIENCE, AZURE_TOKEN_SECONDS, AZURE_TOKEN_VOLUME)
        )
    gcp = gcp_identity(inputs)
    if gcp is not None:
        volumes.append(
            _projected(GCP_TOKEN_VOLUME, gcp_audience(gcp), GCP_TOKEN_SECONDS, TOKEN_FILE)
        )
    return volumes


def identity_mounts(inputs: RenderInputs) -> list[dict[str, Any]]:
    mounts = []
    if irsa_identity(inputs) is not None:
        mounts.append({"name": AWS_TOKEN_VOLUME, "mountPath": AWS_TOKEN_DIR, "readOnly": True})
    if pod_identity(inputs):
        mounts.append(
            {
                "name": POD_IDENTITY_TOKEN_VOLUME,
                "mountPath": POD_IDENTITY_TOKEN_DIR,
                "readOnly": True,
            }
        )
    if azure_identity(inputs) is not None:
        mounts.append({"name": AZURE_TOKEN_VOLUME, "mountPath": AZURE_TOKEN_DIR, "readOnly": True})
    if gcp_identity(inputs) is not None:
        mounts.append({"name": GCP_TOKEN_VOLUME, "mountPath": GCP_TOKEN_DIR, "readOnly": True})
    return mounts


def identity_endpoints(inputs: RenderInputs) -> list[str]:
    """URLs the gateway exchanges its token at, when not the clouds' public defaults."""
    urls = []
    aws = irsa_identity(inputs)
    if aws is not None and aws.sts_endpoint:
        urls.append(aws.sts_endpoint)
    azure = azure_identity(inputs)
    if azure is not None and azure.authority_host:
        urls.append(azure.authority_host)
    gcp = gcp_identity(inputs)
    if gcp is not None:
        urls += [url for url in (gcp.sts_endpoint, gcp.iam_credentials_endpoint) if url]
    return urls
