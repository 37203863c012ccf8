"""The small pieces of tenantgw.render: labels, names, quantities, endpoints."""

from __future__ import annotations

import hashlib

import pytest

from tenantgw.api import ProviderType, Tenant
from tenantgw.render import (
    MANAGED_BY,
    PROVIDER_PREFIX,
    TENANT_LABEL,
    canonical_quantity,
    key_hash,
    key_secret_name,
    labels,
    owner_reference,
    provider_env,
    selector,
)
from tenantgw.render.network import postgres_endpoint, url_endpoint

pytestmark = pytest.mark.unit


def test_labels_and_selector_agree() -> None:
    assert labels("eng") == {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        TENANT_LABEL: "eng",
        "app.kubernetes.io/part-of": "tenantgw",
    }
    assert (
        selector("eng") == "app.kubernetes.io/managed-by=tenantgw-operator,tenantgw.io/tenant=eng"
    )
    wanted = dict(term.split("=") for term in selector("eng").split(","))
    assert wanted.items() <= labels("eng").items()


def test_key_names_and_hashes() -> None:
    assert key_secret_name("alice") == "gateway-key-alice"
    assert key_hash("sk-1") == hashlib.sha256(b"sk-1").hexdigest()


@pytest.mark.parametrize(
    ("provider", "env"),
    [
        ("openrouter", "TENANTGW_PROVIDER_OPENROUTER_API_KEY"),
        ("azure-east", "TENANTGW_PROVIDER_AZURE_EAST_API_KEY"),
        ("a.b-2", "TENANTGW_PROVIDER_A_B_2_API_KEY"),
    ],
)
def test_provider_env(provider: str, env: str) -> None:
    assert provider_env(provider) == env


def test_every_provider_type_has_a_litellm_prefix() -> None:
    assert set(PROVIDER_PREFIX) == set(ProviderType)
    assert PROVIDER_PREFIX[ProviderType.OLLAMA] == "ollama_chat"
    assert PROVIDER_PREFIX[ProviderType.VERTEX] == "vertex_ai"


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("250m", "250m"),
        ("512Mi", "512Mi"),
        ("1Gi", "1Gi"),
        ("0.5", "500m"),
        (".5", "500m"),
        ("1.5", "1500m"),
        ("1000m", "1"),
        ("2", "2"),
        ("1000", "1k"),
        ("1536", "1536"),
        ("1024Mi", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1025Ki", "1025Ki"),
        ("0.1Ki", "102400m"),  # under 1024 a binary quantity is written in decimal
        ("1e3", "1e3"),
        ("1.5e3", "1500"),
        ("+1", "1"),
        ("0", "0"),
        ("0.0000000001", "1n"),  # rounded up to the smallest unit, never to zero
    ],
)
def test_canonical_quantity(given: str, canonical: str) -> None:
    assert canonical_quantity(given) == canonical


def test_canonical_quantity_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        canonical_quantity("1 GB")


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://openrouter.ai/api/v1", ("openrouter.ai", 443)),
        ("http://ollama.svc:11434", ("ollama.svc", 11434)),
        ("http://vllm.svc/v1", ("vllm.svc", 80)),
        ("redis://u:p@10.0.0.1/0", ("10.0.0.1", 6379)),
        ("rediss://u:p@redis.svc:6380/0", ("redis.svc", 6380)),
    ],
)
def test_url_endpoint(url: str, endpoint: tuple[str, int]) -> None:
    assert url_endpoint(url, 443) == endpoint


@pytest.mark.parametrize(
    ("dsn", "endpoint"),
    [
        ("postgresql://u:p@pg.svc/db", ("pg.svc", 5432)),
        ("postgres://u:p@pg.svc:6432/db?sslmode=require", ("pg.svc", 6432)),
        ("host=pg.svc port=6543 dbname=db", ("pg.svc", 6543)),
        ("dbname=db user=u", (None, 5432)),
    ],
)
def test_postgres_endpoint(dsn: str, endpoint: tuple[str | None, int]) -> None:
    assert postgres_endpoint(dsn) == endpoint


def test_tenant_without_uid_cannot_be_owner() -> None:
    tenant = Tenant.model_validate({"metadata": {"name": "t"}, "spec": {}})
    with pytest.raises(ValueError, match=r"no metadata\.uid"):
        owner_reference(tenant)
