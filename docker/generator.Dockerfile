# syntax=docker/dockerfile:1
# Task generator image: `ssrl generate` and `ssrl store` with the S3 client, no torch (~250 MB).
#   docker build -f docker/generator.Dockerfile -t ssrl-generator:0.1.0 .
# Same extras as the generator part of the Makefile's install: .[s3].

# BASE_IMAGE: a drop-in for the base (the real-node test tier builds from a local Debian rootfs, no registry).
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ssrl ./ssrl
# The package itself is the thing being installed; its dependencies are bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[s3]" && ssrl --version

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="ssrl-generator" \
      org.opencontainers.image.description="Spatial-SSRL pretext-task generator (ssrl generate/store)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 ssrl && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/ssrl ssrl
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HOME=/home/ssrl PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /home/ssrl
USER 10001:10001
ENTRYPOINT ["ssrl"]
CMD ["--help"]
