# One image for both commands: `doma-gateway serve` (the default) and `doma-gateway authz`.
#   docker build -t doma-gateway .
#   docker run -p 8080:8080 doma-gateway
#   docker run -p 9000:9000 doma-gateway authz
# The routes YAML is read from /etc/doma-gateway/routes: mount yours over the example.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: resolves and installs every dependency, pinned by constraints.txt, into a
# virtual environment that the final stage copies whole. Wheels only, so no compiler is needed
# here either; pip, setuptools and the build's caches stay behind in this stage.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/doma-gateway
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY authz/ authz/
COPY gateway/ gateway/
COPY doma_gateway/ doma_gateway/
# The project itself is pure Python: it alone may be built from source (by setuptools).
RUN /opt/doma-gateway/bin/pip install --no-cache-dir --only-binary=:all: --no-binary=doma-gateway \
        -c constraints.txt . \
    && /opt/doma-gateway/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="doma-gateway" \
      org.opencontainers.image.description="A domain gateway for DOMA: an Envoy ext-authz server and an edge proxy." \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 doma \
    && useradd --system --uid 10001 --gid doma --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin doma
COPY --from=build /opt/doma-gateway /opt/doma-gateway
WORKDIR /etc/doma-gateway
COPY routes/ routes/
ENV PATH=/opt/doma-gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# serve: gateway 8080 (admin 9901 stays on loopback); authz: gRPC 9000, HTTP ext_authz 9002.
EXPOSE 8080 9000 9002
# Asks the gateway's /readyz and the authz server's gRPC health, whichever this container runs.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "doma_gateway.healthcheck"]
ENTRYPOINT ["doma-gateway"]
CMD ["serve"]
