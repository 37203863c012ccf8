"""Failures to obtain the platform's credential for a provider, told apart from other errors.

LiteLLM 1.106.12 wraps whatever is raised while it fetches a cloud credential (boto3's
container, web-identity and STS providers for Bedrock, google-auth's token refresh for
Vertex, azure-identity for Azure) into an `APIConnectionError` with status 500. To the
client that reads as a bug in the gateway; it is neither that nor the client's fault: the
gateway could not authenticate to its upstream with the credential the platform configured
(a wrong audience, an expired or missing projected token, an unreachable credential agent);
Azure's federated exchange fails with Entra ID's status, whose 401 reads as a bad tenant key.
tenantgw answers it 502 `api_error`, in the client's shape, with the credential library's
reason and a sentence saying whose problem it is; the ledger row and the access line carry
the same 502.

A failure counts as a credential failure when an exception in its chain (`__cause__` or
`__context__`) was raised inside a credential library's code, or is LiteLLM's own
`AwsAuthError` (its STS web-identity exchange).
"""

from __future__ import annotations

import traceback

STATUS = 502

CREDENTIAL_MODULES = (
    "botocore.credentials",
    "botocore.tokens",
    "google.auth",
    "google.oauth2",
    "azure.identity",
)
"""Modules whose frames mean "fetching a credential" (a prefix match on the module name)."""

LITELLM_CREDENTIAL_ERRORS = frozenset({"AwsAuthError"})
"""LiteLLM's own exception for its STS web-identity exchange (IRSA)."""

LITELLM_CREDENTIAL_FUNCTIONS = frozenset(
    {("litellm.llms.azure.common_utils", "get_azure_ad_token_from_oidc")}
)
"""LiteLLM's own credential fetchers: Entra ID's federated exchange (Azure workload identity),
whose failures LiteLLM otherwise answers with Entra's status (a 401 reads as a bad tenant key)."""

MAX_DETAIL = 400
"""The credential library's reason is cut to this many characters."""

MESSAGE = (
    "the gateway could not obtain the platform's credential for the upstream provider "
    "(its configuration, not this request, needs fixing; tell the platform team): {detail}"
)


def _raised_in_credentials(exc: BaseException) -> bool:
    if type(exc).__name__ in LITELLM_CREDENTIAL_ERRORS:
        return True
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith(CREDENTIAL_MODULES):
            return True
        if (module, frame.f_code.co_name) in LITELLM_CREDENTIAL_FUNCTIONS:
            return True
    return False


def credential_failure(exc: BaseException) -> str | None:
    """The credential library's reason when `exc` is a failure to obtain a credential."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _raised_in_credentials(current):
            detail = " ".join(str(current).split()) or type(current).__name__
            return detail[:MAX_DETAIL]
        current = current.__cause__ or current.__context__
    return None


def client_message(detail: str) -> str:
    """What the client reads for a credential failure."""
    return MESSAGE.format(detail=detail)
