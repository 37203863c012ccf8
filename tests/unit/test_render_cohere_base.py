"""A Cohere apiBase given as the server root reaches LiteLLM as the chat URL it posts to."""

from __future__ import annotations

import pytest

from tenantgw.api import Provider
from tenantgw.render.litellm_config import api_base

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("kind", "given", "rendered"),
    [
        ("cohere", "https://api.cohere.com", "https://api.cohere.com/v2/chat"),
        ("cohere", "https://api.cohere.com/", "https://api.cohere.com/v2/chat"),
        ("cohere", "https://proxy.example/v2/chat", "https://proxy.example/v2/chat"),
        ("openai", "https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("ollama", "http://ollama:11434", "http://ollama:11434"),
    ],
)
def test_api_base(kind: str, given: str, rendered: str) -> None:
    provider = Provider.model_validate({"name": "p", "type": kind, "apiBase": given})
    assert api_base(provider) == rendered
