# syntax=docker/dockerfile:1
# mlgate: `mlgate run` (operator + validating webhook) as a non-root, read-only container.
#
#   docker build -t ghcr.io/mlgate/mlgate:0.1.0 .
#
# Two stages: the first builds a virtualenv, the second copies only that venv onto a clean slim
# Python; no compiler, pip cache or build dependency reaches the final image. Every dependency
# ships wheels for amd64 and arm64, so neither stage needs a compiler.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# A venv without pip of its own: the build stage's pip installs into it.
RUN python -m venv --without-pip /opt/mlgate
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Bytecode is compiled here, because the running container's filesystem is read-only.
RUN pip --python /opt/mlgate/bin/python install --no-warn-script-location . \
    && /opt/mlgate/bin/python -m compileall -q /opt/mlgate/lib \
    && /opt/mlgate/bin/mlgate version

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mlgate" \
      org.opencontainers.image.description="Admission control for ML workloads on Kubernetes" \
      org.opencontainers.image.source="https://github.com/mlgate/mlgate" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# The runtime needs no packaging tools: remove them from the base image's Python, and add the
# unprivileged user the chart runs as (uid/gid 65532; kopf names peers after it outside a pod).
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --system --gid 65532 mlgate \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mlgate
COPY --from=build /opt/mlgate /opt/mlgate
ENV PATH=/opt/mlgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
# The webhook's HTTPS port (also /healthz, /readyz and /metrics).
EXPOSE 8443
ENTRYPOINT ["mlgate"]
CMD ["run"]
