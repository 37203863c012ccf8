# The tenantgw operator: kopf and the Kubernetes client, never LiteLLM.
# Build from the repository root: docker build -f docker/operator.Dockerfile -t ghcr.io/tenantgw/operator:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY requirements/operator.lock requirements/operator.lock
RUN pip install --require-hashes --no-deps -r requirements/operator.lock
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install --no-deps . && rm -rf /src

WORKDIR /
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["kopf"]
CMD ["run", "--all-namespaces", "--peering=tenantgw", "--liveness=http://0.0.0.0:8080/healthz", "-m", "tenantgw.operator.handlers"]
