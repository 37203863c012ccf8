"""tenantgw: an isolated LiteLLM gateway per team, managed by a Kubernetes operator."""

__version__ = "0.1.0"
