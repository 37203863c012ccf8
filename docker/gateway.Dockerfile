# A tenant's gateway: LiteLLM's proxy with the tenantgw plugins, never the Kubernetes client.
#
# Public base:   docker build -f docker/gateway.Dockerfile -t ghcr.io/tenantgw/gateway:0.1.0 .
# Without Docker: `make images` builds it with podman from Debian-package bases (docker/build.sh):
#   --build-arg BASE=localhost/tenantgw-base:... --build-arg BUILD_BASE=localhost/tenantgw-build-base:...
# BASE is the runtime stage's image, BUILD_BASE the build stage's (it needs `python3 -m venv`
# with pip); both carry the same CPython 3.11 at the same path, since the venv points at it.
ARG BASE=python:3.11-slim
ARG BUILD_BASE=${BASE}

FROM ${BUILD_BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
COPY requirements/gateway.lock /tmp/gateway.lock
# Every distribution pinned with its hashes, wheels only: nothing is compiled, no build backend.
# The optional secret `pip-ca` is a CA bundle for a TLS-inspecting proxy between pip and the
# index (docker/build.sh passes the host's); it is mounted for this step only, never a layer.
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && /opt/venv/bin/pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/gateway.lock \
 && /opt/venv/bin/pip uninstall --yes pip setuptools
# tenantgw itself: the source tree on PYTHONPATH, byte-compiled now (the root fs is read-only).
COPY operator/tenantgw /opt/tenantgw/tenantgw
RUN /opt/venv/bin/python -m compileall -q /opt/tenantgw

FROM ${BASE}
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/tenantgw /opt/tenantgw
# LiteLLM prices come from its bundled cost map, never fetched at startup; the pod's root
# filesystem is read-only, so HOME (where LiteLLM and its libraries cache) is /tmp.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/tenantgw \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    HOME=/tmp
WORKDIR /
# Numeric, so that the kubelet can check the restricted profile's runAsNonRoot.
USER 65532:65532
EXPOSE 4000
ENTRYPOINT ["python", "-m", "tenantgw.gateway"]
CMD ["--config", "/etc/tenantgw/config/config.yaml", "--port", "4000"]
