# A tenant's gateway: LiteLLM's proxy with the tenantgw plugins, never the Kubernetes client.
# Build from the repository root: docker build -f docker/gateway.Dockerfile -t ghcr.io/tenantgw/gateway:0.1.0 .
FROM python:3.11-slim

# LiteLLM prices come from its bundled cost map, never fetched at startup; the pod's root
# filesystem is read-only, so HOME (where LiteLLM and its libraries cache) is /tmp.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    HOME=/tmp

WORKDIR /src
COPY requirements/gateway.lock requirements/gateway.lock
RUN pip install --require-hashes --no-deps -r requirements/gateway.lock
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install --no-deps . && rm -rf /src

WORKDIR /
USER 65532:65532
EXPOSE 4000
ENTRYPOINT ["python", "-m", "tenantgw.gateway"]
CMD ["--config", "/etc/tenantgw/config/config.yaml", "--port", "4000"]
