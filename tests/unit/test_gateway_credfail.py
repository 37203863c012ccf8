"""Failures to obtain a provider's credential are told apart from every other failure.

Each case raises through the real credential library (boto3's container provider,
google-auth's token refresh, LiteLLM's Entra ID exchange) and wraps the error the way
LiteLLM does; provider answers and connection errors are not credential failures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tenantgw.gateway import credfail
from tenantgw.gateway.usage import status_of

pytestmark = pytest.mark.unit

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens


def wrapped(raise_inner: Callable[[], object]) -> Exception:
    """What LiteLLM raises: its own exception, the library's in `__context__`."""
    import litellm

    try:
        try:
            raise_inner()
        except Exception as inner:
            # LiteLLM chains by context, as here
            raise litellm.APIConnectionError(message=str(inner), llm_provider="x", model="m")  # noqa: B904
    except Exception as outer:
        return outer
    raise AssertionError("nothing was raised")


def boto3_container_provider(tmp_path: Path) -> None:
    from botocore.credentials import ContainerProvider

    env = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{CLOSED}/v1/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(tmp_path / "missing-token"),
    }
    ContainerProvider(environ=env).load()


def google_refresh(tmp_path: Path) -> None:
    import google.auth.transport.requests
    from google.oauth2 import credentials

    creds = credentials.Credentials(
        token=None,
        refresh_token="r",
        token_uri=f"{CLOSED}/token",
        client_id="c",
        client_secret="s",
    )
    creds.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]


def azure_oidc(tmp_path: Path) -> None:
    from litellm.llms.azure.common_utils import get_azure_ad_token_from_oidc

    get_azure_ad_token_from_oidc(
        azure_ad_token="oidc/file/" + str(tmp_path / "missing-federated-token"),
        azure_client_id="client",
        azure_tenant_id="tenant",
    )


@pytest.mark.parametrize("fetch", [boto3_container_provider, google_refresh, azure_oidc])
def test_a_credential_library_failure_is_a_credential_failure(
    fetch: Callable[[Path], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", CLOSED)
    exc = wrapped(lambda: fetch(tmp_path))
    detail = credfail.credential_failure(exc)
    assert detail, exc
    assert len(detail) <= credfail.MAX_DETAIL
    assert status_of(exc) == credfail.STATUS


def test_provider_answers_and_connection_errors_are_not() -> None:
    from litellm.exceptions import InternalServerError

    def provider_500() -> None:
        raise InternalServerError(message="upstream broke", llm_provider="x", model="m")

    def refused() -> None:
        httpx.get(f"{CLOSED}/v1/messages", timeout=2)

    def missing_file() -> None:
        Path("/nonexistent/prompt").read_text()

    for fail in (provider_500, refused, missing_file):
        exc = wrapped(fail)
        assert credfail.credential_failure(exc) is None, fail
        assert status_of(exc) != credfail.STATUS


def test_a_cycle_in_the_exception_chain_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert credfail.credential_failure(a) is None
