"""The data plane: tenantgw's plugins inside each tenant's LiteLLM gateway.

`python -m tenantgw.gateway` serves `app.create_app()` (LiteLLM's proxy inside tenantgw's
request and error middleware); LiteLLM loads `auth.user_api_key_auth` (custom_auth) and
`callbacks.handler` (routing, PII, residency, limits, budgets, metering) from its config.
Nothing here imports the operator or the Kubernetes client.
"""
