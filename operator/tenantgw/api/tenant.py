"""The Tenant resource (cluster-scoped): one team, one namespace, one gateway."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from tenantgw.api.access import Subject
from tenantgw.api.catalog import CatalogModel
from tenantgw.api.common import (
    DNS_LABEL_PATTERN,
    DNS_LABEL_RE,
    LONG_NAME_MAX,
    NAME_MAX,
    URL_MAX,
    CamelModel,
    Condition,
    DnsLabel,
    ObjectMeta,
    Quantity,
    Resource,
    SecretKeyRef,
    ShortString,
    StatusModel,
    cel,
    duplicates,
    map_list,
    unique_set,
    validations,
)
from tenantgw.api.cost import (
    LABEL_VALUE_PATTERN as LABEL_VALUE,
)
from tenantgw.api.cost import (
    CostBaseline,
    CostLabels,
    check_label_keys,
    labels_field,
)

TENANT_PLURAL = "tenants"
NAMESPACE_PREFIX = "tenant-"
KEY_SECRET_PREFIX = "gateway-key-"  # noqa: S105 (a name prefix, not a secret)
# gateway-key-<name> must still fit a label value (63 characters).
KEY_NAME_MAX = 63 - len(KEY_SECRET_PREFIX)
KeyName = Annotated[str, Field(min_length=1, max_length=KEY_NAME_MAX, pattern=DNS_LABEL_PATTERN)]
# tenant-<name> must still be a namespace name (63 characters).
TENANT_NAME_MAX = 63 - len(NAMESPACE_PREFIX)

TENANT_NAME_MESSAGE = (
    f"metadata.name must be a DNS label of at most {TENANT_NAME_MAX} characters "
    "(lowercase letters, digits and '-'): it names the namespace tenant-<name>"
)
NAMESPACE_IMMUTABLE_MESSAGE = "spec.namespace is immutable"
# Namespaces no Tenant may own: the cluster's own, and the operator's (its default install
# namespace here; the operator also refuses the namespace it is configured to run in).
OPERATOR_NAMESPACE = "tenantgw-system"
RESERVED_NAMESPACES = ("default", OPERATOR_NAMESPACE)
RESERVED_NAMESPACE_PREFIX = "kube-"
NAMESPACE_RESERVED_MESSAGE = (
    "spec.namespace must not be default, tenantgw-system or start with kube-: "
    "those belong to the cluster and the operator"
)
NAMESPACE_FIXED_MESSAGE = "spec.namespace cannot be added or removed after creation"
API_BASE_REQUIRED_TYPES = ("azure", "openai-compatible")
API_BASE_MESSAGE = "apiBase is required for providers of type azure and openai-compatible"
CREDENTIALS_MESSAGE = "credentialsSecretRef and workloadIdentity are exclusive: set one"
IDENTITY_ONE_MESSAGE = "workloadIdentity needs exactly one of aws, azure or gcp"
IDENTITY_AWS_MESSAGE = "workloadIdentity.aws is for providers of type bedrock"
IDENTITY_AZURE_MESSAGE = "workloadIdentity.azure is for providers of type azure"
IDENTITY_GCP_MESSAGE = "workloadIdentity.gcp is for providers of type vertex"
AWS_MODE_MESSAGE = (
    "workloadIdentity.aws needs exactly one of roleArn (IRSA) or podIdentity: true "
    "(EKS Pod Identity)"
)
AWS_STS_MESSAGE = "workloadIdentity.aws.stsEndpoint is for IRSA (roleArn), not podIdentity"
IDENTITY_SHARED_MESSAGE = (
    "spec.providers: every workloadIdentity of one cloud must be the same identity "
    "(the gateway's ServiceAccount has one AWS role, one Entra ID app and one GCP "
    "workload identity provider)"
)
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"
GUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
HTTPS_URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
GCP_PROJECT_PATTERN = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
GCP_POOL_PROVIDER_PATTERN = (
    r"^projects/[0-9]{1,20}/locations/global/workloadIdentityPools/[a-z0-9-]{4,32}"
    r"/providers/[a-z0-9-]{4,32}$"
)
GCP_SERVICE_ACCOUNT_PATTERN = (
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com$"
)
MATCH_MESSAGE = "match needs at least one of model, promptPrefix or task"
CATALOG_PROVIDER_MESSAGE = "spec.catalog: every entry's provider must be in spec.providers"


def reserved_namespace(namespace: str) -> bool:
    """A namespace no Tenant may own whatever the install: kube-*, default, tenantgw-system."""
    return namespace.startswith(RESERVED_NAMESPACE_PREFIX) or namespace in RESERVED_NAMESPACES


class ProviderType(StrEnum):
    """The LLM provider protocol a Provider speaks (a LiteLLM provider prefix)."""

    OPENAI = "openai"
    AZURE = "azure"
    OPENROUTER = "openrouter"
    BEDROCK = "bedrock"
    OLLAMA = "ollama"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    VERTEX = "vertex"
    MISTRAL = "mistral"
    GROQ = "groq"
    DEEPSEEK = "deepseek"
    OPENAI_COMPATIBLE = "openai-compatible"
    TOGETHER = "together"
    FIREWORKS = "fireworks"
    COHERE = "cohere"


class PiiEntity(StrEnum):
    """A kind of personal or secret data the gateway can detect."""

    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CREDIT_CARD = "CREDIT_CARD"
    US_SSN = "US_SSN"
    IBAN = "IBAN"
    IP_ADDRESS = "IP_ADDRESS"
    SECRET = "SECRET"  # noqa: S105 (the entity type)


class AwsWorkloadIdentity(CamelModel):
    """An IAM role for the gateway, by IRSA (`roleArn`) or EKS Pod Identity (`podIdentity`)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.roleArn) != (has(self.podIdentity) && self.podIdentity)",
                AWS_MODE_MESSAGE,
            ),
            cel("!has(self.stsEndpoint) || has(self.roleArn)", AWS_STS_MESSAGE),
        )
    )

    role_arn: str | None = Field(
        default=None,
        description=(
            "IRSA: the IAM role the gateway assumes (sts:AssumeRoleWithWebIdentity). Its trust "
            "policy must name the cluster's OIDC issuer and the subject "
            "system:serviceaccount:<tenant namespace>:gateway. Exclusive with podIdentity."
        ),
        pattern=ROLE_ARN_PATTERN,
        max_length=600,
    )
    pod_identity: bool | None = Field(
        default=None,
        description=(
            "EKS Pod Identity: true to take credentials from the node's EKS Pod Identity Agent "
            "(169.254.170.23 / fd00:ec2::23, TCP 80, let through the NetworkPolicy for this "
            "tenant only). The role is the one of the cluster's pod identity association for "
            "<tenant namespace>/gateway, made by the platform. Exclusive with roleArn."
        ),
    )
    sts_endpoint: str | None = Field(
        default=None,
        description=(
            "IRSA only: STS endpoint, e.g. a regional or VPC endpoint "
            "(https://sts.us-east-1.amazonaws.com); the SDK's default when omitted."
        ),
        pattern=HTTPS_URL_PATTERN,
        max_length=URL_MAX,
    )

    @model_validator(mode="after")
    def _one_mode(self) -> AwsWorkloadIdentity:
        if (self.role_arn is not None) == bool(self.pod_identity):
            raise ValueError(AWS_MODE_MESSAGE)
        if self.sts_endpoint is not None and self.role_arn is None:
            raise ValueError(AWS_STS_MESSAGE)
        return self


class AzureWorkloadIdentity(CamelModel):
    """Microsoft Entra Workload ID: the gateway's ServiceAccount token is federated to an app."""

    client_id: str = Field(
        description="Client ID of the app (or user-assigned managed identity) with the "
        "federated credential for system:serviceaccount:<tenant namespace>:gateway.",
        pattern=GUID_PATTERN,
        max_length=36,
    )
    tenant_id: str = Field(
        description="Entra ID tenant (directory) ID.", pattern=GUID_PATTERN, max_length=36
    )
    authority_host: str | None = Field(
        default=None,
        description=(
            "Entra ID authority, e.g. https://login.microsoftonline.us for a sovereign cloud; "
            "https://login.microsoftonline.com when omitted."
        ),
        pattern=HTTPS_URL_PATTERN,
        max_length=URL_MAX,
    )


class GcpWorkloadIdentity(CamelModel):
    """GCP Workload Identity Federation: the gateway's ServiceAccount token is exchanged at
    Google's STS for a federated token, which impersonates a service account."""

    project: str = Field(
        description="Project the Vertex AI calls are made in (LiteLLM's vertex_project).",
        pattern=GCP_PROJECT_PATTERN,
        max_length=30,
    )
    workload_identity_provider: str = Field(
        description=(
            "Workload identity pool provider trusting the cluster's OIDC issuer: "
            "projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/"
            "<provider>. The projected token's audience is https://iam.googleapis.com/ + this "
            "name (the provider's default allowed audience)."
        ),
        pattern=GCP_POOL_PROVIDER_PATTERN,
        max_length=200,
    )
    service_account: str = Field(
        description=(
            "Service account the gateway impersonates; it must grant "
            "roles/iam.workloadIdentityUser to principal://iam.googleapis.com/<pool>/subject/"
            "system:serviceaccount:<tenant namespace>:gateway, and be allowed to call Vertex AI."
        ),
        pattern=GCP_SERVICE_ACCOUNT_PATTERN,
        max_length=100,
    )
    sts_endpoint: str | None = Field(
        default=None,
        description=(
            "Security Token Service root, e.g. a Private Service Connect endpoint; "
            "https://sts.googleapis.com when omitted (the exchange posts to <root>/v1/token)."
        ),
        pattern=HTTPS_URL_PATTERN,
        max_length=URL_MAX,
    )
    iam_credentials_endpoint: str | None = Field(
        default=None,
        description=(
            "IAM Service Account Credentials API root; https://iamcredentials.googleapis.com "
            "when omitted."
        ),
        pattern=HTTPS_URL_PATTERN,
        max_length=URL_MAX,
    )


class WorkloadIdentity(CamelModel):
    """A provider credential the gateway obtains from its own ServiceAccount, no Secret."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "[has(self.aws), has(self.azure), has(self.gcp)].filter(c, c).size() == 1",
                IDENTITY_ONE_MESSAGE,
            )
        )
    )

    aws: AwsWorkloadIdentity | None = Field(
        default=None, description="AWS IAM role (Bedrock providers)."
    )
    azure: AzureWorkloadIdentity | None = Field(
        default=None, description="Microsoft Entra ID app (Azure OpenAI providers)."
    )
    gcp: GcpWorkloadIdentity | None = Field(
        default=None, description="GCP Workload Identity Federation (Vertex AI providers)."
    )

    @property
    def cloud(self) -> Literal["aws", "azure", "gcp"]:
        if self.aws is not None:
            return "aws"
        return "azure" if self.azure is not None else "gcp"

    @model_validator(mode="after")
    def _one_cloud(self) -> WorkloadIdentity:
        if [self.aws, self.azure, self.gcp].count(None) != 2:
            raise ValueError(IDENTITY_ONE_MESSAGE)
        return self


class Provider(CamelModel):
    """An LLM provider account the tenant's gateway may call."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(self.type in ['azure', 'openai-compatible']) || has(self.apiBase)",
                API_BASE_MESSAGE,
            ),
            cel(
                "!(has(self.credentialsSecretRef) && has(self.workloadIdentity))",
                CREDENTIALS_MESSAGE,
            ),
            cel(
                "!has(self.workloadIdentity) || !has(self.workloadIdentity.aws)"
                " || self.type == 'bedrock'",
                IDENTITY_AWS_MESSAGE,
            ),
            cel(
                "!has(self.workloadIdentity) || !has(self.workloadIdentity.azure)"
                " || self.type == 'azure'",
                IDENTITY_AZURE_MESSAGE,
            ),
            cel(
                "!has(self.workloadIdentity) || !has(self.workloadIdentity.gcp)"
                " || self.type == 'vertex'",
                IDENTITY_GCP_MESSAGE,
            ),
        )
    )

    name: DnsLabel = Field(description="Name ModelAlias targets use to refer to this provider.")
    type: ProviderType = Field(description="Provider protocol, e.g. openrouter, azure, bedrock.")
    api_base: str | None = Field(
        default=None,
        description="Base URL overriding the provider's default; required for azure.",
        max_length=URL_MAX,
    )
    api_version: str | None = Field(
        default=None, description="API version (azure only), e.g. 2024-10-21.", max_length=64
    )
    region: str | None = Field(
        default=None,
        description="Region the provider serves from, checked against data residency.",
        max_length=64,
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret key holding the API key, in the tenant namespace; none for ollama or with "
            "workloadIdentity."
        ),
    )
    workload_identity: WorkloadIdentity | None = Field(
        default=None,
        description=(
            "Credentials from the gateway's ServiceAccount instead of a Secret: an AWS IAM "
            "role (bedrock), an Entra ID app (azure) or a GCP workload identity pool provider "
            "(vertex). The operator annotates the ServiceAccount and projects its token into "
            "the gateway pod."
        ),
    )

    @model_validator(mode="after")
    def _api_base_required(self) -> Provider:
        if self.type in API_BASE_REQUIRED_TYPES and self.api_base is None:
            raise ValueError(API_BASE_MESSAGE)
        identity = self.workload_identity
        if identity is None:
            return self
        if self.credentials_secret_ref is not None:
            raise ValueError(CREDENTIALS_MESSAGE)
        if identity.aws is not None and self.type is not ProviderType.BEDROCK:
            raise ValueError(IDENTITY_AWS_MESSAGE)
        if identity.azure is not None and self.type is not ProviderType.AZURE:
            raise ValueError(IDENTITY_AZURE_MESSAGE)
        if identity.gcp is not None and self.type is not ProviderType.VERTEX:
            raise ValueError(IDENTITY_GCP_MESSAGE)
        return self


class KeySpec(CamelModel):
    """A tenant API key; its Secret is gateway-key-<name> in the tenant namespace."""

    name: KeyName = Field(description="Name of the key, unique in the tenant.")
    rotate_after_days: int | None = Field(
        default=None, description="Rotate the key this many days after it was issued.", ge=1
    )
    rpm: int | None = Field(default=None, description="Requests per minute for this key.", ge=1)
    tpm: int | None = Field(default=None, description="Tokens per minute for this key.", ge=1)
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working (RFC 3339)."
    )
    labels: dict[str, Annotated[str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE)]] = (
        labels_field(
            "Cost labels of every request made with the key, e.g. {team: payments, project: "
            "checkout, cost-center: cc-1234}: on its ledger rows, grouped by in reports. At "
            "most 8; keys lowercase (a-z, 0-9, '-'), values [A-Za-z0-9._-]."
        )
    )

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        return check_label_keys(labels)


class Limits(CamelModel):
    """Rate limits for the whole tenant, across all its keys."""

    rpm: int | None = Field(default=None, description="Requests per minute.", ge=1)
    tpm: int | None = Field(default=None, description="Tokens per minute.", ge=1)
    max_parallel_requests: int | None = Field(
        default=None, description="Requests in flight at once.", ge=1
    )


class RoutingMatch(CamelModel):
    """Conditions on a request; every condition that is set must hold."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.model) || has(self.promptPrefix) || has(self.task)", MATCH_MESSAGE)
        )
    )

    model: str | None = Field(
        default=None,
        description="Glob on the model the client asked for, e.g. claude-haiku-*.",
        min_length=1,
        max_length=LONG_NAME_MAX,
    )
    prompt_prefix: str | None = Field(
        default=None,
        description="The last user message starts with this text (case-insensitive).",
        min_length=1,
        max_length=1024,
    )
    task: Literal["background", "thinking", "long-context", "web-search"] | None = Field(
        default=None, description="Kind of request as Claude Code sends it."
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> RoutingMatch:
        if self.model is None and self.prompt_prefix is None and self.task is None:
            raise ValueError(MATCH_MESSAGE)
        return self


class RoutingRule(CamelModel):
    """Send matching requests to a ModelAlias."""

    match: RoutingMatch = Field(description="Which requests the rule applies to.")
    alias: ShortString = Field(description="ModelAlias that serves matching requests.")


class Routing(CamelModel):
    """How the gateway picks a ModelAlias for a request."""

    default_alias: ShortString | None = Field(
        default=None, description="ModelAlias for requests that name no known model."
    )
    rules: list[RoutingRule] = Field(
        default_factory=list,
        description="Rules evaluated in order by the gateway; the first match wins.",
        max_length=64,
    )


class PiiRedaction(CamelModel):
    """Detection of personal data in prompts before they leave the gateway."""

    mode: Literal["off", "redact", "block"] = Field(
        default="off", description="off, redact (mask matches) or block (reject the request)."
    )
    entities: list[PiiEntity] = Field(
        default_factory=lambda: list(PiiEntity),
        description="Kinds of data to detect; all of them when omitted.",
        max_length=len(PiiEntity),
        json_schema_extra=unique_set(),
    )


class Audit(CamelModel):
    """The audit trail of requests, in the tenant's Postgres schema."""

    enabled: bool = Field(default=True, description="Write one audit row per request.")
    bodies: Literal["none", "redacted", "full"] = Field(
        default="none", description="How much of prompts and responses to keep."
    )
    retention_days: int = Field(default=90, description="Days to keep audit rows.", ge=1)


class DataResidency(CamelModel):
    """Where prompts may be processed."""

    allowed_regions: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        description="Provider regions requests may go to.",
        min_length=1,
        max_length=64,
        json_schema_extra=unique_set(),
    )


class Compliance(CamelModel):
    """Privacy and audit settings of the tenant."""

    pii_redaction: PiiRedaction = Field(
        default_factory=PiiRedaction, description="PII detection in prompts."
    )
    audit: Audit = Field(default_factory=Audit, description="Audit trail of requests.")
    data_residency: DataResidency | None = Field(
        default=None, description="Restrict providers to regions; unrestricted when omitted."
    )


class ResourceRequirements(CamelModel):
    """Compute resources of a gateway container, as in a Pod spec."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Minimum resources, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Maximum resources, e.g. {memory: 2Gi}."
    )


DEFAULT_GATEWAY_REPLICAS = 2
AUTOSCALING_RANGE_MESSAGE = "minReplicas must not be more than maxReplicas"
REPLICAS_OR_AUTOSCALING_MESSAGE = (
    "replicas and autoscaling are both set: with autoscaling the HorizontalPodAutoscaler sets "
    "the replicas; remove spec.gateway.replicas"
)


class GatewayAutoscaling(CamelModel):
    """A HorizontalPodAutoscaler (autoscaling/v2) that sizes the gateway Deployment by CPU."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("self.minReplicas <= self.maxReplicas", AUTOSCALING_RANGE_MESSAGE, ".minReplicas")
        )
    )

    min_replicas: int = Field(
        default=DEFAULT_GATEWAY_REPLICAS, description="Fewest gateway pods.", ge=1, le=100
    )
    max_replicas: int = Field(description="Most gateway pods.", ge=1, le=100)
    target_cpu_utilization: int = Field(
        default=70,
        description=(
            "Average CPU use of the gateway pods the autoscaler keeps, in percent of the "
            "container's CPU request."
        ),
        ge=1,
        le=100,
    )

    @model_validator(mode="after")
    def _min_within_max(self) -> GatewayAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) is more than maxReplicas "
                f"({self.max_replicas}): {AUTOSCALING_RANGE_MESSAGE}"
            )
        return self


DEFAULT_TLS_SECRET = "gateway-tls"  # noqa: S105 (a Secret's name)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
TLS_SECRET_RESERVED_MESSAGE = "secretName must not be gateway or start with gateway-key-"  # noqa: S105


class IssuerRef(CamelModel):
    """A cert-manager issuer, as a Certificate's spec.issuerRef names it."""

    name: str = Field(
        description="Name of the Issuer (in the tenant namespace) or ClusterIssuer.",
        min_length=1,
        max_length=LONG_NAME_MAX,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    kind: Literal["Issuer", "ClusterIssuer"] = Field(
        default="ClusterIssuer",
        description="ClusterIssuer (default: the platform's, cluster-wide) or Issuer.",
    )
    group: str = Field(
        default="cert-manager.io",
        description="API group of the issuer; another group for an external issuer.",
        min_length=1,
        max_length=LONG_NAME_MAX,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )


class GatewayTLS(CamelModel):
    """HTTPS on the gateway's port, with the certificate and key of a kubernetes.io/tls Secret."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.secretName != 'gateway' && !self.secretName.startsWith('gateway-key-')",
                TLS_SECRET_RESERVED_MESSAGE,
                ".secretName",
            )
        )
    )

    secret_name: str = Field(
        default=DEFAULT_TLS_SECRET,
        description=(
            "kubernetes.io/tls Secret in the tenant namespace with tls.crt and tls.key, mounted "
            "read-only into the gateway pods; cert-manager writes it when an issuer is known, "
            "else the platform creates it. gateway-tls when omitted."
        ),
        min_length=1,
        max_length=NAME_MAX,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    issuer_ref: IssuerRef | None = Field(
        default=None,
        description=(
            "cert-manager issuer of the gateway's Certificate; the operator's default issuer "
            "($TENANTGW_TLS_ISSUER) when omitted. With an issuer and cert-manager's CRDs "
            "installed, the operator renders Certificate gateway into secretName; with "
            "neither, secretName must be provided."
        ),
    )

    @field_validator("secret_name")
    @classmethod
    def _not_ours(cls, name: str) -> str:
        if name == "gateway" or name.startswith(KEY_SECRET_PREFIX):
            raise ValueError(TLS_SECRET_RESERVED_MESSAGE)
        return name


class GatewaySpec(CamelModel):
    """The tenant's gateway Deployment."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.replicas) && has(self.autoscaling))",
                REPLICAS_OR_AUTOSCALING_MESSAGE,
                ".replicas",
            )
        )
    )

    replicas: int | None = Field(
        default=None,
        description=(
            f"Gateway pods ({DEFAULT_GATEWAY_REPLICAS} when neither this nor autoscaling is "
            "set). Not with autoscaling."
        ),
        ge=0,
        le=100,
    )
    autoscaling: GatewayAutoscaling | None = Field(
        default=None,
        description=(
            "Size the gateway by CPU with a HorizontalPodAutoscaler; the Deployment's replicas "
            "are then the autoscaler's, never set by the operator. Not with replicas."
        ),
    )
    workers: int = Field(default=1, description="LiteLLM worker processes per pod.", ge=1, le=64)
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="Resources of the gateway container; operator defaults when empty.",
    )
    tls: GatewayTLS | None = Field(
        default=None,
        description=(
            "Serve HTTPS instead of plain HTTP, from a kubernetes.io/tls Secret (issued by "
            "cert-manager when an issuer is known); plain HTTP when omitted."
        ),
    )

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> GatewaySpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError(REPLICAS_OR_AUTOSCALING_MESSAGE)
        return self

    def fixed_replicas(self) -> int | None:
        """The Deployment's replicas, None when the autoscaler sets them."""
        if self.autoscaling is not None:
            return None
        return DEFAULT_GATEWAY_REPLICAS if self.replicas is None else self.replicas

    def serves(self) -> bool:
        """Whether the gateway is meant to run at all (zero fixed replicas is a choice)."""
        return self.fixed_replicas() != 0


class Enforcement(CamelModel):
    """What the gateway does when a control cannot be applied: a store it needs (Redis) does
    not answer, or a model has no price to charge."""

    on_store_unavailable: Literal["Closed", "Open"] = Field(
        default="Closed",
        description=(
            "When Redis (rate limits, budgets) is unavailable: Closed refuses requests with "
            "503 and retry-after; Open admits them unchecked and counts them in "
            "tenantgw_enforcement_skipped_total. Either way the gateway logs each transition "
            "and the Tenant's EnforcementAvailable condition shows it."
        ),
    )
    on_unpriced_model: Literal["Closed", "ClosedWhenBudgeted", "Open"] = Field(
        default="ClosedWhenBudgeted",
        description=(
            "When a request would be served by a model with no price (no spec.catalog[].pricing "
            "and none in LiteLLM's cost map), which the ledger would charge $0: Closed refuses "
            "it (403 naming the alias, the model and spec.catalog[].pricing); "
            "ClosedWhenBudgeted refuses it when a BudgetPolicy covers the request and serves "
            "it otherwise; Open serves it. A served one is logged and counted in "
            "tenantgw_unpriced_requests_total (docs/money.md)."
        ),
    )


class AutoMode(CamelModel):
    """Claude Code's auto mode through the gateway: who judges its tool calls.

    Claude Code in auto mode asks the API for a safety verdict on each tool call of a
    response (`safeguards` in the request, `safeguard_results` in the answer). Claude served
    on Anthropic, Bedrock or Vertex answers it itself; for any other model the gateway asks the
    classifier alias named here, charged to the same key like any other call.
    """

    classifier_alias: ShortString | None = Field(
        default=None,
        description=(
            "ModelAlias (typically a small, fast one) that judges each tool call of a "
            "non-Claude model's response for Claude Code's auto mode. Unset: the gateway "
            "answers no verdict and Claude Code checks tool calls with its own classifier "
            "requests instead."
        ),
    )
    timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=120,
        description=(
            "Seconds the gateway waits for the classifier; after that each tool call gets "
            'the "could not check" verdict (unavailable, reason timeout), never "safe".'
        ),
    )


class Access(CamelModel):
    """Who may reach the gateway Service, and who administers or views the tenant."""

    allowed_namespaces: list[DnsLabel] = Field(
        default_factory=list,
        description="Namespaces besides the tenant's own whose pods may call the gateway.",
        max_length=64,
        json_schema_extra=unique_set(),
    )
    admins: list[Subject] = Field(
        default_factory=list,
        description=(
            "The team's administrators: bound in the tenant namespace to tenantgw-tenant-admin "
            "(ModelAliases, read-only view of the gateway) and to Role tenantgw-keys (read the "
            "gateway-key-<name> Secrets only)."
        ),
        max_length=32,
    )
    viewers: list[Subject] = Field(
        default_factory=list,
        description=(
            "Read-only members: bound in the tenant namespace to tenantgw-tenant-viewer "
            "(no Secret, not even the keys)."
        ),
        max_length=32,
    )


class TenantSpec(CamelModel):
    """Desired state of a Tenant."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.namespace) == has(oldSelf.namespace)", NAMESPACE_FIXED_MESSAGE),
            cel(
                "!has(self.catalog) || self.catalog.all(m, has(self.providers)"
                " && self.providers.exists(p, p.name == m.provider))",
                CATALOG_PROVIDER_MESSAGE,
                ".catalog",
            ),
            cel(
                "!has(self.providers) || self.providers.all(p, self.providers.all(q,"
                " !has(p.workloadIdentity) || !has(q.workloadIdentity)"
                " || (has(p.workloadIdentity.aws) != has(q.workloadIdentity.aws))"
                " || (has(p.workloadIdentity.azure) != has(q.workloadIdentity.azure))"
                " || p.workloadIdentity == q.workloadIdentity))",
                IDENTITY_SHARED_MESSAGE,
                ".providers",
            ),
        )
    )

    display_name: str | None = Field(
        default=None, description="Human-readable name of the team.", max_length=LONG_NAME_MAX
    )
    namespace: DnsLabel | None = Field(
        default=None,
        description=(
            "Namespace the tenant owns; tenant-<name> when omitted. Immutable. An existing "
            "namespace is taken only if annotated tenantgw.io/adoptable-by=<tenant name>."
        ),
        json_schema_extra=validations(
            cel("self == oldSelf", NAMESPACE_IMMUTABLE_MESSAGE),
            cel(
                f"!self.startsWith('{RESERVED_NAMESPACE_PREFIX}')"
                f" && !(self in {list(RESERVED_NAMESPACES)})",
                NAMESPACE_RESERVED_MESSAGE,
            ),
        ),
    )
    deletion_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description=(
            "What deleting the Tenant does to its data. Retain (default): the ledger and audit "
            "schema in PostgreSQL is kept with its role locked out, and the namespace is kept "
            "with what the platform and the team put in it (provider Secrets, ModelAliases, "
            "BudgetPolicies); the gateway and every credential the operator created are "
            "removed. Delete: the schema, role and namespace are dropped at once."
        ),
    )
    providers: list[Provider] = Field(
        default_factory=list,
        description="LLM provider accounts, credentials in the tenant namespace.",
        max_length=32,
        json_schema_extra=map_list("name"),
    )
    catalog: list[CatalogModel] = Field(
        default_factory=list,
        description=(
            "Provider models the tenant's ModelAliases may use, with their price and cost "
            "tier; an alias target outside it is rejected. Empty: no model is allowed."
        ),
        max_length=256,
        json_schema_extra=map_list("provider", "model"),
    )
    keys: list[KeySpec] = Field(
        default_factory=list,
        description="API keys for the tenant's developers and services.",
        max_length=256,
        json_schema_extra=map_list("name"),
    )
    limits: Limits = Field(default_factory=Limits, description="Tenant-wide rate limits.")
    routing: Routing = Field(default_factory=Routing, description="How requests pick an alias.")
    compliance: Compliance = Field(
        default_factory=Compliance, description="PII redaction, audit and data residency."
    )
    gateway: GatewaySpec = Field(
        default_factory=GatewaySpec, description="Size of the gateway Deployment."
    )
    access: Access = Field(default_factory=Access, description="Who may reach the gateway.")
    enforcement: Enforcement = Field(
        default_factory=Enforcement,
        description="How the gateway enforces limits and budgets when their store fails.",
    )
    auto_mode: AutoMode = Field(
        default_factory=AutoMode,
        description="Claude Code auto mode: the classifier that judges tool calls.",
    )
    cost_baseline: CostBaseline = Field(
        default_factory=CostBaseline,
        description=(
            "The Claude model whose list price a request naming an alias is compared with "
            "(savings); a request naming a Claude model is compared with that model."
        ),
    )
    cost_labels: CostLabels | None = Field(
        default=None,
        description=(
            "A request header that may set one cost label, from a list of allowed values; "
            "unset: labels come from the key only."
        ),
    )

    @field_validator("namespace")
    @classmethod
    def _not_reserved(cls, namespace: str | None) -> str | None:
        if namespace is not None and reserved_namespace(namespace):
            raise ValueError(NAMESPACE_RESERVED_MESSAGE)
        return namespace

    @field_validator("providers", "keys")
    @classmethod
    def _unique_names(cls, items: list[Provider] | list[KeySpec]) -> Any:
        dups = duplicates([item.name for item in items])
        if dups:
            raise ValueError(f"duplicate name {dups[0]!r}")
        return items

    @model_validator(mode="after")
    def _one_identity_per_cloud(self) -> TenantSpec:
        seen: dict[str, tuple[str, WorkloadIdentity]] = {}
        for provider in self.providers:
            identity = provider.workload_identity
            if identity is None:
                continue
            first = seen.setdefault(identity.cloud, (provider.name, identity))
            if first[1] != identity:
                raise ValueError(
                    f"{IDENTITY_SHARED_MESSAGE}; {first[0]} and {provider.name} differ"
                )
        return self

    def workload_identity(self, cloud: Literal["aws", "azure", "gcp"]) -> WorkloadIdentity | None:
        """The tenant's workload identity for `cloud` (validation makes it one per cloud)."""
        for provider in self.providers:
            identity = provider.workload_identity
            if identity is not None and getattr(identity, cloud) is not None:
                return identity
        return None

    @model_validator(mode="after")
    def _catalog_of_known_providers(self) -> TenantSpec:
        providers = {provider.name for provider in self.providers}
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(self.catalog):
            if entry.provider not in providers:
                raise ValueError(
                    f'catalog[{i}].provider: no provider "{entry.provider}" in spec.providers'
                )
            if (entry.provider, entry.model) in seen:
                raise ValueError(
                    f'catalog[{i}]: duplicate entry for model "{entry.model}" of provider '
                    f'"{entry.provider}"'
                )
            seen.add((entry.provider, entry.model))
        return self


class KeyStatus(StatusModel):
    """An issued tenant key."""

    name: str = Field(description="Name of the key in spec.keys.")
    secret_name: str | None = Field(
        default=None, description="Secret in the tenant namespace holding the key."
    )
    expires_at: datetime | None = Field(default=None, description="When the key expires.")
    issued_at: datetime | None = Field(
        default=None, description="When the current value of the key was issued."
    )
    rotates_at: datetime | None = Field(
        default=None, description="When the operator issues the next value (rotateAfterDays)."
    )
    previous_key_valid_until: datetime | None = Field(
        default=None,
        description="The value replaced at the last rotation keeps working until then.",
    )


class TenantStatus(StatusModel):
    """Observed state of a Tenant."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, ConfigValid, GatewayAvailable, StorageReady.",
        json_schema_extra=map_list("type"),
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last reconciled."
    )
    url: str | None = Field(default=None, description="In-cluster URL of the gateway.")
    models: list[str] = Field(default_factory=list, description="Model names the gateway serves.")
    keys: list[KeyStatus] = Field(
        default_factory=list, description="Issued keys.", json_schema_extra=map_list("name")
    )


class Tenant(Resource):
    """A team with its own namespace and LiteLLM gateway."""

    KIND: ClassVar[str] = "Tenant"
    PLURAL: ClassVar[str] = TENANT_PLURAL
    SINGULAR: ClassVar[str] = "tenant"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("tn",)
    SCOPE: ClassVar[Literal["Cluster", "Namespaced"]] = "Cluster"
    # Rules on the whole object: they need metadata.name.
    CRD_VALIDATIONS: ClassVar[tuple[dict[str, str], ...]] = (
        cel(
            f"size(self.metadata.name) <= {TENANT_NAME_MAX}"
            f" && self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
            TENANT_NAME_MESSAGE,
        ),
    )

    kind: Literal["Tenant"] = Field(default="Tenant", description="Tenant.")
    spec: TenantSpec = Field(description="Desired state.")
    status: TenantStatus | None = Field(default=None, description="Observed state.")

    @field_validator("metadata")
    @classmethod
    def _name_fits_namespace(cls, metadata: ObjectMeta) -> ObjectMeta:
        name = metadata.name
        if name is not None and (len(name) > TENANT_NAME_MAX or not DNS_LABEL_RE.match(name)):
            raise ValueError(TENANT_NAME_MESSAGE)
        return metadata

    def namespace_name(self) -> str:
        """The namespace the tenant owns: spec.namespace, else tenant-<name>."""
        if self.spec.namespace:
            return self.spec.namespace
        if not self.metadata.name:
            raise ValueError("Tenant has no metadata.name")
        return f"{NAMESPACE_PREFIX}{self.metadata.name}"
