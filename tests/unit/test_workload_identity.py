"""Workload identity as a provider credential: the API refuses what cannot work, the renderer
puts the cloud's identity on the ServiceAccount, the pod and LiteLLM's params."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tenantgw.api import Tenant
from tenantgw.reconcile.validate import describe_validation_error
from tenantgw.render import RenderInputs, render_litellm_config, render_tenant
from tenantgw.render.network import egress_rules

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

ROLE = "arn:aws:iam::123456789012:role/tenantgw-clouds-bedrock"
AWS = {"aws": {"roleArn": ROLE}}
AZURE = {
    "azure": {
        "clientId": "6f1c2a4e-3b5d-4c7e-9f01-23456789abcd",
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    }
}


GCP = {
    "gcp": {
        "project": "clouds-vertex",
        "workloadIdentityProvider": (
            "projects/123456789012/locations/global/workloadIdentityPools/clusters/providers/prod"
        ),
        "serviceAccount": "tenantgw-clouds@clouds-vertex.iam.gserviceaccount.com",
    }
}


def tenant(*providers: dict[str, Any]) -> Tenant:
    return Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": "clouds"},
            "spec": {"providers": list(providers)},
        }
    )


def bedrock(name: str = "bedrock", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "bedrock", "region": "us-east-1", **extra}


def azure(name: str = "azure", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "azure", "apiBase": "https://x.openai.azure.com", **extra}


def vertex(name: str = "vertex", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "vertex", "region": "europe-west1", **extra}


def gcp(**fields: str) -> dict[str, Any]:
    return {"gcp": {**GCP["gcp"], **fields}}


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (
            bedrock(workloadIdentity=AWS, credentialsSecretRef={"name": "b", "key": "k"}),
            "credentialsSecretRef and workloadIdentity are exclusive",
        ),
        (azure(workloadIdentity=AWS), "workloadIdentity.aws is for providers of type bedrock"),
        (bedrock(workloadIdentity=AZURE), "workloadIdentity.azure is for providers of type azure"),
        (bedrock(workloadIdentity={**AWS, **AZURE}), "exactly one of aws, azure or gcp"),
        (bedrock(workloadIdentity={}), "exactly one of aws, azure or gcp"),
        (vertex(workloadIdentity={**GCP, **AZURE}), "exactly one of aws, azure or gcp"),
        (bedrock(workloadIdentity=GCP), "workloadIdentity.gcp is for providers of type vertex"),
        (vertex(workloadIdentity=AWS), "workloadIdentity.aws is for providers of type bedrock"),
        (
            vertex(workloadIdentity=GCP, credentialsSecretRef={"name": "v", "key": "k"}),
            "credentialsSecretRef and workloadIdentity are exclusive",
        ),
        (vertex(workloadIdentity=gcp(project="My_Project")), "project"),
        (
            vertex(workloadIdentity=gcp(workloadIdentityProvider="pool/x")),
            "workloadIdentityProvider",
        ),
        (vertex(workloadIdentity=gcp(serviceAccount="me@gmail.com")), "serviceAccount"),
        (vertex(workloadIdentity=gcp(stsEndpoint="sts.googleapis.com")), "stsEndpoint"),
        (
            vertex(workloadIdentity={"gcp": {"project": "clouds-vertex"}}),
            "workloadIdentityProvider",
        ),
        (bedrock(workloadIdentity={"aws": {"roleArn": "admin"}}), "roleArn"),
        (azure(workloadIdentity={"azure": {"clientId": "x", "tenantId": "y"}}), "clientId"),
    ],
)
def test_the_api_refuses_an_identity_that_cannot_work(
    provider: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        tenant(provider)


def test_a_misused_gcp_identity_becomes_a_condition_naming_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        tenant(vertex(workloadIdentity=gcp(serviceAccount="vertex@gmail.com")))
    assert describe_validation_error(exc.value).startswith(
        "spec.providers[0].workloadIdentity.gcp.serviceAccount: String should match pattern"
    )
    with pytest.raises(ValidationError) as exc:
        tenant(bedrock(workloadIdentity=GCP))
    assert describe_validation_error(exc.value) == (
        "spec.providers[0]: workloadIdentity.gcp is for providers of type vertex"
    )


def test_one_role_and_one_app_per_tenant() -> None:
    other = {"aws": {"roleArn": ROLE.replace("bedrock", "other")}}
    with pytest.raises(ValidationError, match=r"same identity .*; bedrock and bedrock-eu differ"):
        tenant(bedrock(workloadIdentity=AWS), bedrock("bedrock-eu", workloadIdentity=other))
    ok = tenant(bedrock(workloadIdentity=AWS), bedrock("bedrock-eu", workloadIdentity=AWS))
    assert ok.spec.workload_identity("aws") is not None
    assert ok.spec.workload_identity("azure") is None
    with pytest.raises(ValidationError, match=r"same identity .*; vertex and vertex-us differ"):
        tenant(
            vertex(workloadIdentity=GCP),
            vertex("vertex-us", workloadIdentity=gcp(project="other-project")),
        )
    clouds = tenant(bedrock(workloadIdentity=AWS), vertex(workloadIdentity=GCP))
    assert clouds.spec.workload_identity("gcp") is not None


def test_the_crd_carries_the_same_rules() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "tenants.tenantgw.io.yaml").read_text())
    text = json.dumps(crd)
    for message in (
        "credentialsSecretRef and workloadIdentity are exclusive",
        "workloadIdentity.aws is for providers of type bedrock",
        "workloadIdentity.azure is for providers of type azure",
        "workloadIdentity.gcp is for providers of type vertex",
        "workloadIdentity needs exactly one of aws, azure or gcp",
        "every workloadIdentity of one cloud must be the same identity",
    ):
        assert message in text


def test_rendered_identity_reaches_pod_service_account_and_litellm(
    cloud_identity_tenant: RenderInputs,
) -> None:
    objects = {o["kind"]: o for o in render_tenant(cloud_identity_tenant)}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    # Never a token for the API server: the projected tokens have the clouds' audiences only.
    assert pod["automountServiceAccountToken"] is False
    audiences = {
        source["serviceAccountToken"]["audience"]
        for volume in pod["volumes"]
        if "projected" in volume
        for source in volume["projected"]["sources"]
    }
    assert audiences == {
        "sts.amazonaws.com",
        "api://AzureADTokenExchange",
        "https://iam.googleapis.com/projects/123456789012/locations/global/"
        "workloadIdentityPools/clusters/providers/prod-eu",
    }
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert (
        env["AWS_ROLE_ARN"]
        == objects["ServiceAccount"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    )
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert env["AWS_WEB_IDENTITY_TOKEN_FILE"].startswith(mounts["aws-iam-token"] + "/")
    assert env["AZURE_FEDERATED_TOKEN_FILE"].startswith(mounts["azure-identity-token"] + "/")
    assert not env["AZURE_AUTHORITY_HOST"].endswith("/")
    # No provider Secret is referenced, and no key reaches LiteLLM's params.
    assert not any("TENANTGW_PROVIDER_" in name for name in env)
    params = [
        d["litellm_params"] for d in render_litellm_config(cloud_identity_tenant)["model_list"]
    ]
    assert all("api_key" not in p for p in params)
    (azure_params,) = [p for p in params if p["model"].startswith("azure/")]
    assert azure_params["azure_ad_token"] == "oidc/azure/api://AzureADTokenExchange"
    (vertex_params,) = [p for p in params if p["model"].startswith("vertex_ai/")]
    assert vertex_params["vertex_credentials"] == "os.environ/GOOGLE_APPLICATION_CREDENTIALS"
    assert vertex_params["vertex_project"] == "clouds-vertex"
    assert vertex_params["vertex_location"] == "europe-west1"


def test_the_gcp_credential_configuration_is_in_the_configmap_and_holds_no_secret(
    cloud_identity_tenant: RenderInputs,
) -> None:
    objects = {o["kind"]: o for o in render_tenant(cloud_identity_tenant)}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    path = env["GOOGLE_APPLICATION_CREDENTIALS"]
    assert path == mounts["config"] + "/gcp-credentials.json"
    config = json.loads(objects["ConfigMap"]["data"]["gcp-credentials.json"])
    assert config == {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/123456789012/locations/global/"
        "workloadIdentityPools/clusters/providers/prod-eu",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/"
        "projects/-/serviceAccounts/tenantgw-clouds@clouds-vertex.iam.gserviceaccount.com"
        ":generateAccessToken",
        "credential_source": {
            "file": mounts["gcp-identity-token"] + "/token",
            "format": {"type": "text"},
        },
    }
    # google-auth's external_account takes exactly these keys; none is a key or a secret.
    assert not {"private_key", "client_secret", "refresh_token"} & set(config)
    # Public Google endpoints: no egress rule of their own beyond the internet's 443.
    assert "iamcredentials" not in json.dumps(objects["NetworkPolicy"])


def test_private_gcp_endpoints_are_let_through_the_network_policy(
    cloud_identity_tenant: RenderInputs,
) -> None:
    inputs = copy.deepcopy(cloud_identity_tenant)
    identity = inputs.tenant.spec.workload_identity("gcp")
    assert identity is not None
    assert identity.gcp is not None
    identity.gcp.sts_endpoint = "https://10.20.30.41:8443"
    identity.gcp.iam_credentials_endpoint = "https://10.20.30.42"
    (configmap,) = [o for o in render_tenant(inputs) if o["kind"] == "ConfigMap"]
    config = json.loads(configmap["data"]["gcp-credentials.json"])
    assert config["token_url"] == "https://10.20.30.41:8443/v1/token"
    assert config["service_account_impersonation_url"].startswith("https://10.20.30.42/v1/")
    rules = egress_rules(inputs)
    allowed = {
        (peer["ipBlock"]["cidr"], port["port"])
        for rule in rules
        for peer in rule["to"]
        if "ipBlock" in peer
        for port in rule["ports"]
    }
    assert {("10.20.30.41/32", 8443), ("10.20.30.42/32", 443)} <= allowed, rules


def test_a_private_token_endpoint_is_let_through_the_network_policy(
    cloud_identity_tenant: RenderInputs,
) -> None:
    inputs = copy.deepcopy(cloud_identity_tenant)
    provider = inputs.tenant.spec.providers[0]
    assert provider.workload_identity is not None
    assert provider.workload_identity.aws is not None
    provider.workload_identity.aws.sts_endpoint = "https://10.20.30.40:8443"
    rules = egress_rules(inputs)
    assert any(
        peer.get("ipBlock", {}).get("cidr") == "10.20.30.40/32"
        and {"port": 8443, "protocol": "TCP"} in rule["ports"]
        for rule in rules
        for peer in rule["to"]
    ), rules
