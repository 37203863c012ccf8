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
POD_IDENTITY = {"aws": {"podIdentity": True}}
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
        (bedrock(workloadIdentity={"aws": {}}), "exactly one of roleArn .* or podIdentity"),
        (
            bedrock(workloadIdentity={"aws": {"podIdentity": False}}),
            "exactly one of roleArn .* or podIdentity",
        ),
        (
            bedrock(workloadIdentity={"aws": {"roleArn": ROLE, "podIdentity": True}}),
            "exactly one of roleArn .* or podIdentity",
        ),
        (
            bedrock(
                workloadIdentity={
                    "aws": {"podIdentity": True, "stsEndpoint": "https://sts.example.com"}
                }
            ),
            "stsEndpoint is for IRSA",
        ),
        (azure(workloadIdentity=POD_IDENTITY), "workloadIdentity.aws is for providers of type"),
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


def test_a_misused_aws_identity_becomes_a_condition_naming_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        tenant(bedrock(workloadIdentity={"aws": {"roleArn": ROLE, "podIdentity": True}}))
    assert describe_validation_error(exc.value) == (
        "spec.providers[0].workloadIdentity.aws: workloadIdentity.aws needs exactly one of "
        "roleArn (IRSA) or podIdentity: true (EKS Pod Identity)"
    )


def test_irsa_and_pod_identity_are_not_mixed_in_one_tenant() -> None:
    with pytest.raises(ValidationError, match=r"same identity .*; bedrock and bedrock-eu differ"):
        tenant(bedrock(workloadIdentity=AWS), bedrock("bedrock-eu", workloadIdentity=POD_IDENTITY))
    ok = tenant(
        bedrock(workloadIdentity=POD_IDENTITY), bedrock("b2", workloadIdentity=POD_IDENTITY)
    )
    assert ok.spec.workload_identity("aws") is not None


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
        "workloadIdentity.aws needs exactly one of roleArn (IRSA) or podIdentity: true",
        "workloadIdentity.aws.stsEndpoint is for IRSA (roleArn), not podIdentity",
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


AGENT = {("169.254.170.23/32", 80), ("fd00:ec2::23/128", 80)}


def ip_blocks(inputs: RenderInputs) -> set[tuple[str, int]]:
    """(cidr, port) of every ipBlock egress rule, `except`s aside."""
    return {
        (peer["ipBlock"]["cidr"], port["port"])
        for rule in egress_rules(inputs)
        for peer in rule["to"]
        if "ipBlock" in peer
        for port in rule["ports"]
    }


def test_pod_identity_renders_the_agent_env_token_and_nothing_else(
    pod_identity_tenant: RenderInputs,
) -> None:
    objects = {o["kind"]: o for o in render_tenant(pod_identity_tenant)}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (volume,) = [v for v in pod["volumes"] if "projected" in v]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "pods.eks.amazonaws.com"
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == "http://169.254.170.23/v1/credentials"
    token_file = env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]
    assert token_file == f"{mounts[volume['name']]}/{source['serviceAccountToken']['path']}"
    # Not IRSA: no role, no web identity token; no annotation; no key anywhere.
    assert not {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"} & set(env)
    assert not objects["ServiceAccount"]["metadata"].get("annotations")
    assert not any("TENANTGW_PROVIDER_" in name for name in env)
    config = json.dumps(objects["ConfigMap"]["data"])
    assert "169.254.170.23" not in config
    assert "pods.eks.amazonaws.com" not in config
    assert ip_blocks(pod_identity_tenant) >= AGENT


def test_the_agent_is_let_through_only_with_pod_identity(
    pod_identity_tenant: RenderInputs, cloud_identity_tenant: RenderInputs
) -> None:
    """Exactly the agent's two addresses on port 80, and only for a Pod Identity tenant."""
    with_flag = ip_blocks(pod_identity_tenant)
    link_local = {
        (cidr, port)
        for cidr, port in with_flag
        if cidr.startswith(("169.254.", "fd00:ec2:", "fe80:"))
    }
    assert link_local == AGENT
    assert not AGENT & ip_blocks(cloud_identity_tenant)  # IRSA: no agent
    inputs = copy.deepcopy(pod_identity_tenant)
    identity = inputs.tenant.spec.providers[0].workload_identity
    assert identity is not None
    inputs.tenant.spec.providers[0].workload_identity = None
    inputs.tenant.spec.providers[0].credentials_secret_ref = None
    assert not AGENT & ip_blocks(inputs)
    text = json.dumps(render_tenant(inputs))
    assert "169.254.170.23" not in text
    assert "fd00:ec2::23" not in text


def test_a_provider_cannot_open_the_agent_address_by_its_api_base(
    pod_identity_tenant: RenderInputs,
) -> None:
    """An apiBase on a link-local address never becomes an egress rule: with the flag the
    agent's port 80 stays the only link-local opening, without it there is none."""
    inputs = copy.deepcopy(pod_identity_tenant)
    provider = inputs.tenant.spec.providers[0]
    provider.api_base = "http://169.254.170.23:8080/v1"
    assert {b for b in ip_blocks(inputs) if b[0].startswith("169.254.")} == {
        ("169.254.170.23/32", 80)
    }
    provider.workload_identity = None
    assert not any(cidr.startswith("169.254.") for cidr, _ in ip_blocks(inputs))
