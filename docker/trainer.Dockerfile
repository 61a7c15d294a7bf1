# syntax=docker/dockerfile:1
# GRPO trainer image: torch + torchvision (CUDA 12.8 wheels), .[s3,train,k8s], DeepSpeed, optional vLLM.
#   docker build -f docker/trainer.Dockerfile -t ssrl-trainer:0.1.0 .
#   docker build -f docker/trainer.Dockerfile --build-arg VLLM_VERSION=0.12.0 -t ssrl-trainer:0.1.0-vllm .
#
# Base: NVIDIA's CUDA *devel* image, not the runtime one and not pytorch/pytorch. DeepSpeed is installed
# with DS_BUILD_OPS=0 (as the Makefile does), so its ops (FusedAdam, CPU Adam for offload...) compile
# just in time on first use and need nvcc + headers at run time; torch's own CUDA libraries come from
# the cu128 wheels, so torch and torchvision always match each other and the index they came from.
# The pytorch/pytorch images ship conda Python and their own torch, which pip would then fight with.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.9.1
ARG TORCHVISION_VERSION=0.24.1
# Empty: no vLLM. Set to a version built for TORCH_VERSION to enable vLLM rollouts.
ARG VLLM_VERSION=""
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# Ubuntu's archive keeps only the current patch of each package, so apt versions are not pinned.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ssrl ./ssrl
# torch and torchvision from the same index, then the package with the Makefile's extras (torch already
# satisfied), then DeepSpeed exactly as the Makefile installs it.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && pip install --no-cache-dir ".[s3,train,k8s]" ninja \
    && DS_BUILD_OPS=0 pip install --no-cache-dir "deepspeed>=0.19,<0.20" \
    && if [ -n "${VLLM_VERSION}" ]; then \
         pip install --no-cache-dir "vllm==${VLLM_VERSION}" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
           --extra-index-url "${TORCH_INDEX}"; \
       fi \
    && ssrl --version

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="ssrl-trainer" \
      org.opencontainers.image.description="Spatial-SSRL GRPO trainer (ssrl train, TRL + DeepSpeed)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-dev \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 ssrl && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/ssrl ssrl
COPY --from=build /opt/venv /opt/venv
# JIT-compiled DeepSpeed ops and Triton kernels go under HOME or /tmp: writable emptyDirs in Kubernetes.
ENV PATH=/opt/venv/bin:$PATH HOME=/home/ssrl PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    TORCH_EXTENSIONS_DIR=/tmp/torch_extensions TRITON_CACHE_DIR=/tmp/triton HF_HOME=/tmp/hf
WORKDIR /home/ssrl
USER 10001:10001
ENTRYPOINT ["ssrl"]
CMD ["--help"]
