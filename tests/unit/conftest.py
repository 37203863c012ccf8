"""Unit-test options: `--update-golden` rewrites the golden files instead of comparing with them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from tenantgw.render import RenderInputs


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """Whether golden files are rewritten (`pytest --update-golden`) rather than compared."""
    return bool(request.config.getoption("--update-golden"))


# --------------------------------------------------------------------------- render cases
# The inputs of the golden-file cases of tenantgw.render. Key values here are fakes made to be
# recognisable, so a test can search every rendered byte for them.

ENGINEERING_TENANT = """
apiVersion: tenantgw.io/v1alpha1
kind: Tenant
metadata:
  name: engineering-team
  uid: 0d6b4b1e-0000-4000-8000-000000000001
  generation: 3
spec:
  displayName: Engineering
  namespace: tenant-engineering-team
  providers:
    - name: openrouter
      type: openrouter
      apiBase: https://openrouter.ai/api/v1
      region: us-east-1
      credentialsSecretRef: {name: openrouter, key: apiKey}
    - name: openai
      type: openai
      region: us-east-1
      credentialsSecretRef: {name: openai, key: apiKey}
    - name: azure-east
      type: azure
      apiBase: https://eng-east.openai.azure.com
      apiVersion: "2024-10-21"
      region: us-east-1
      credentialsSecretRef: {name: azure-openai, key: key}
    - name: bedrock
      type: bedrock
      region: us-west-2
      credentialsSecretRef: {name: bedrock, key: apiKey}
    - name: ollama
      type: ollama
      apiBase: http://ollama.tenant-engineering-team.svc:11434
      region: us-east-1
  catalog:
    - provider: openrouter
      model: qwen/qwen3-coder
      costTier: medium
      pricing: {inputPerMillion: 0.30, outputPerMillion: 1.20}
      contextWindow: 262144
    - {provider: openrouter, model: "anthropic/*", costTier: high}
    - {provider: openai, model: gpt-4o-mini, costTier: low}
    - {provider: azure-east, model: o4-mini, costTier: medium}
    - {provider: bedrock, model: "us.anthropic.claude-sonnet-4-5-20250929-v1:0", costTier: high}
    - provider: ollama
      model: "qwen2.5-coder:*"
      costTier: low
      pricing: {inputPerMillion: 0, outputPerMillion: 0}
  keys:
    - {name: alice, rotateAfterDays: 30, rpm: 120, tpm: 400000}
    - {name: ci, expiresAt: "2026-01-01T00:00:00Z"}
  limits: {rpm: 2000, tpm: 5000000, maxParallelRequests: 200}
  routing:
    defaultAlias: fast-code
    rules:
      - {match: {model: "claude-haiku-*"}, alias: documentation}
      - {match: {promptPrefix: "refactor"}, alias: refactoring}
      - {match: {task: thinking}, alias: reasoning}
  compliance:
    piiRedaction:
      mode: redact
      entities: [EMAIL, PHONE, CREDIT_CARD, US_SSN, IBAN, IP_ADDRESS, SECRET]
    audit: {enabled: true, bodies: redacted, retentionDays: 365}
    dataResidency: {allowedRegions: [us-east-1, us-west-2]}
  gateway:
    replicas: 2
    workers: 2
    resources:
      requests: {cpu: "0.5", memory: 1024Mi}
      limits: {memory: 2Gi}
  access:
    allowedNamespaces: [eng-ci]
    admins:
      - {kind: Group, name: eng-admins}
      - {kind: ServiceAccount, name: deployer, namespace: eng-ci}
    viewers:
      - {kind: User, name: dana@example.com}
"""

ENGINEERING_ALIASES = """
- metadata:
    name: fast-code
    namespace: tenant-engineering-team
    creationTimestamp: "2025-06-01T09:30:00Z"
  spec:
    displayName: Fast code
    description: Everyday coding, Qwen3-Coder and GPT-4o-mini
    aliases: ["claude-sonnet-4-5", "claude-sonnet-4-5-*"]
    targets:
      - provider: openrouter
        model: qwen/qwen3-coder
        weight: 80
        maxTokens: 8192
      - {provider: openai, model: gpt-4o-mini, weight: 20}
    fallbacks: [reasoning]
- metadata: {name: reasoning, namespace: tenant-engineering-team}
  spec:
    aliases: ["claude-opus-4-1"]
    targets:
      - {provider: bedrock, model: "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}
      - {provider: azure-east, model: o4-mini}
- metadata: {name: documentation, namespace: tenant-engineering-team}
  spec:
    targets:
      - provider: ollama
        model: "qwen2.5-coder:7b"
- metadata: {name: refactoring, namespace: tenant-engineering-team}
  spec:
    targets:
      - {provider: openrouter, model: anthropic/claude-sonnet-4.5, maxTokens: 16000}
    fallbacks: [reasoning, fast-code]
"""

ENGINEERING_BUDGETS = """
- metadata: {name: team-monthly, namespace: tenant-engineering-team}
  spec:
    scope: {kind: Tenant}
    period: monthly
    limitUSD: 1000
    alertThresholds: [50, 80, 100]
    onExceeded: {action: downgrade, toCostTier: low}
- metadata: {name: alice-daily, namespace: tenant-engineering-team}
  spec:
    scope: {kind: Key, name: alice}
    period: daily
    limitUSD: 25
    alertThresholds: [80, 100]
    onExceeded: {action: block}
"""

ENGINEERING_SECRETS = {
    "master_key": "sk-tgw-MASTER-engineering-0000",
    "keys": {"alice": "sk-tgw-ALICE-plain-0001", "ci": "sk-tgw-CI-plain-0002"},
    "postgres_dsn": (
        "postgresql://t_engineering_team:PG-PASSWORD-0003@postgres.tenantgw-system.svc:5432"
        "/tenantgw?options=-csearch_path%3Dt_engineering_team"
    ),
    "redis_url": "redis://t-engineering-team:REDIS-PASSWORD-0004@10.96.0.20:6380/0",
}

MINIMAL_TENANT = """
apiVersion: tenantgw.io/v1alpha1
kind: Tenant
metadata:
  name: solo
  uid: 0d6b4b1e-0000-4000-8000-000000000002
spec:
  providers:
    - name: anthropic
      type: anthropic
      credentialsSecretRef: {name: anthropic, key: apiKey}
  catalog:
    - {provider: anthropic, model: "claude-sonnet-4-5*", costTier: medium}
  keys:
    - {name: dev}
  routing: {defaultAlias: default}
  deletionPolicy: Delete
"""

MINIMAL_ALIASES = """
- metadata: {name: default, namespace: tenant-solo}
  spec:
    targets:
      - {provider: anthropic, model: claude-sonnet-4-5-20250929}
"""

MINIMAL_SECRETS = {"master_key": "sk-tgw-MASTER-solo-0000", "keys": {"dev": "sk-tgw-DEV-0001"}}

IMAGE = "ghcr.io/tenantgw/gateway:0.1.0"

CLOUD_IDENTITY_TENANT = """
apiVersion: tenantgw.io/v1alpha1
kind: Tenant
metadata:
  name: clouds
  uid: 0d6b4b1e-0000-4000-8000-000000000003
spec:
  providers:
    - name: bedrock
      type: bedrock
      region: eu-central-1
      workloadIdentity:
        aws:
          roleArn: arn:aws:iam::123456789012:role/tenantgw-clouds-bedrock
          stsEndpoint: https://sts.eu-central-1.amazonaws.com
    - name: azure
      type: azure
      apiBase: https://clouds.openai.azure.com
      apiVersion: "2024-10-21"
      region: westeurope
      workloadIdentity:
        azure:
          clientId: 6f1c2a4e-3b5d-4c7e-9f01-23456789abcd
          tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47
    - name: vertex
      type: vertex
      region: europe-west1
      workloadIdentity:
        gcp:
          project: clouds-vertex
          workloadIdentityProvider: projects/123456789012/locations/global/\
workloadIdentityPools/clusters/providers/prod-eu
          serviceAccount: tenantgw-clouds@clouds-vertex.iam.gserviceaccount.com
  catalog:
    - {provider: bedrock, model: "eu.anthropic.claude-sonnet-4-5-20250929-v1:0", costTier: high}
    - {provider: azure, model: gpt-4o, costTier: medium}
    - {provider: vertex, model: gemini-2.5-pro, costTier: high}
  keys:
    - {name: dev}
  routing: {defaultAlias: claude}
"""

CLOUD_IDENTITY_ALIASES = """
- metadata: {name: claude, namespace: tenant-clouds}
  spec:
    targets:
      - {provider: bedrock, model: "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"}
    fallbacks: [gpt]
- metadata: {name: gpt, namespace: tenant-clouds}
  spec:
    targets:
      - {provider: azure, model: gpt-4o}
- metadata: {name: gemini, namespace: tenant-clouds}
  spec:
    targets:
      - {provider: vertex, model: gemini-2.5-pro}
"""

POD_IDENTITY_TENANT = """
apiVersion: tenantgw.io/v1alpha1
kind: Tenant
metadata:
  name: podid
  uid: 0d6b4b1e-0000-4000-8000-000000000004
spec:
  providers:
    - name: bedrock
      type: bedrock
      region: us-east-1
      workloadIdentity:
        aws:
          podIdentity: true
  catalog:
    - {provider: bedrock, model: "us.anthropic.claude-sonnet-4-5-20250929-v1:0", costTier: high}
  keys:
    - {name: dev}
  routing: {defaultAlias: claude}
"""

POD_IDENTITY_ALIASES = """
- metadata: {name: claude, namespace: tenant-podid}
  spec:
    targets:
      - {provider: bedrock, model: "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}
"""


def _engineering() -> RenderInputs:
    # Imported here: a broken render package must not break the other unit tests.
    from tenantgw.api import BudgetPolicy, ModelAlias, Tenant
    from tenantgw.render import RenderInputs, StorageEndpoints
    from tenantgw.render.inputs import UnenforceableBudget

    return RenderInputs(
        tenant=Tenant.model_validate(yaml.safe_load(ENGINEERING_TENANT)),
        aliases=sorted(
            (ModelAlias.model_validate(body) for body in yaml.safe_load(ENGINEERING_ALIASES)),
            key=lambda alias: alias.metadata.name or "",
        ),
        budgets=[BudgetPolicy.model_validate(body) for body in yaml.safe_load(ENGINEERING_BUDGETS)],
        # A policy validation rejected: rendered so that the gateway refuses its scope.
        unenforceable_budgets=(
            UnenforceableBudget(
                name="tenant-weekly",
                scope_kind="Tenant",
                scope_name=None,
                period="weekly",
                reason="UnknownModelAlias",
                message='spec.scope.name: no accepted ModelAlias "docs"',
            ),
        ),
        master_key=ENGINEERING_SECRETS["master_key"],
        keys=dict(ENGINEERING_SECRETS["keys"]),
        image=IMAGE,
        monitoring=True,
        storage=StorageEndpoints(
            postgres_dsn=ENGINEERING_SECRETS["postgres_dsn"],
            redis_url=ENGINEERING_SECRETS["redis_url"],
        ),
    )


def _minimal() -> RenderInputs:
    from tenantgw.api import ModelAlias, Tenant
    from tenantgw.render import RenderInputs

    return RenderInputs(
        tenant=Tenant.model_validate(yaml.safe_load(MINIMAL_TENANT)),
        aliases=[ModelAlias.model_validate(body) for body in yaml.safe_load(MINIMAL_ALIASES)],
        budgets=[],
        master_key=MINIMAL_SECRETS["master_key"],
        keys=dict(MINIMAL_SECRETS["keys"]),
        image=IMAGE,
        monitoring=True,
    )


@pytest.fixture
def engineering_team() -> RenderInputs:
    """RenderInputs of the design's engineering-team tenant: five providers, four aliases."""
    return _engineering()


def _cloud_identity() -> RenderInputs:
    from tenantgw.api import ModelAlias, Tenant
    from tenantgw.render import RenderInputs

    return RenderInputs(
        tenant=Tenant.model_validate(yaml.safe_load(CLOUD_IDENTITY_TENANT)),
        aliases=[
            ModelAlias.model_validate(body) for body in yaml.safe_load(CLOUD_IDENTITY_ALIASES)
        ],
        budgets=[],
        master_key="sk-tgw-MASTER-clouds-0000",
        keys={"dev": "sk-tgw-DEV-0003"},
        image=IMAGE,
        monitoring=False,
    )


@pytest.fixture
def cloud_identity_tenant() -> RenderInputs:
    """RenderInputs of a tenant whose Bedrock and Azure providers use workload identity."""
    return _cloud_identity()


def _pod_identity() -> RenderInputs:
    from tenantgw.api import ModelAlias, Tenant
    from tenantgw.render import RenderInputs

    return RenderInputs(
        tenant=Tenant.model_validate(yaml.safe_load(POD_IDENTITY_TENANT)),
        aliases=[ModelAlias.model_validate(body) for body in yaml.safe_load(POD_IDENTITY_ALIASES)],
        budgets=[],
        master_key="sk-tgw-MASTER-podid-0000",
        keys={"dev": "sk-tgw-DEV-0004"},
        image=IMAGE,
        monitoring=False,
    )


def _tls() -> RenderInputs:
    import dataclasses

    from tenantgw.api import Tenant

    minimal = _minimal()
    body = yaml.safe_load(MINIMAL_TENANT)
    body["spec"].setdefault("gateway", {})["tls"] = {
        "secretName": "gateway-cert",
        "issuerRef": {"name": "platform-ca", "kind": "ClusterIssuer"},
    }
    return dataclasses.replace(
        minimal,
        tenant=Tenant.model_validate(body),
        cert_manager=True,
        tls_digest="0" * 64,
    )


STORAGE_CA = "-----BEGIN CERTIFICATE-----\nMIIB-storage-ca\n-----END CERTIFICATE-----\n"
STORAGE_CRL = "-----BEGIN X509 CRL-----\nMIIB-storage-crl\n-----END X509 CRL-----\n"


def _storage_tls() -> RenderInputs:
    import dataclasses

    from tenantgw.render import StorageEndpoints

    return dataclasses.replace(
        _minimal(),
        storage=StorageEndpoints(
            postgres_dsn=(
                "postgresql://tgw_team_a:PG-PASSWORD-0005@pg.example.com:5432/tenantgw"
                "?sslmode=verify-full&sslrootcert=/etc/ssl/platform/pg-ca.crt"
                "&sslcrl=/etc/ssl/platform/pg.crl"
            ),
            redis_url=(
                "rediss://tgw%3Ateam-a:REDIS-PASSWORD-0006@redis.example.com:6380/0"
                "?ssl_ca_certs=/etc/ssl/platform/redis-ca.crt"
            ),
            tls_files={
                "sslrootcert": STORAGE_CA,
                "sslcrl": STORAGE_CRL,
                "ssl_ca_certs": STORAGE_CA,
            },
        ),
    )


@pytest.fixture
def storage_tls_tenant() -> RenderInputs:
    """The minimal tenant whose PostgreSQL and Redis are reached over TLS with the platform's
    CA files (verify-full, rediss): the gateway pod mounts them from Secret `gateway`."""
    return _storage_tls()


@pytest.fixture
def pod_identity_tenant() -> RenderInputs:
    """RenderInputs of a tenant whose Bedrock provider uses EKS Pod Identity."""
    return _pod_identity()


@pytest.fixture
def tls_tenant() -> RenderInputs:
    """The minimal tenant serving HTTPS, cert-manager installed and the certificate issued."""
    return _tls()


@pytest.fixture
def minimal_tenant() -> RenderInputs:
    """RenderInputs of a tenant with one provider, one alias, one key, monitoring on."""
    return _minimal()
