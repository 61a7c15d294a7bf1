# syntax=docker/dockerfile:1
# GRPO trainer / evaluator image: the package with the Makefile's extras (.[s3,train,k8s], torch and torchvision
# from PyPI, as `make test` installs them), DeepSpeed, optional vLLM.
#   docker build -f docker/trainer.Dockerfile -t ssrl-trainer:0.1.0 .
#   docker build -f docker/trainer.Dockerfile --build-arg VLLM_VERSION=0.31.0 -t ssrl-trainer:0.1.0-vllm .
#
# torch comes from PyPI exactly as in the test setup, so the image runs the torch the suite ran; PyPI's Linux
# wheels bundle their CUDA runtime (13.0 for torch 2.13) as nvidia-* packages. The base is NVIDIA's CUDA *devel*
# image of that CUDA major: DeepSpeed is installed with DS_BUILD_OPS=0 (as the Makefile does), so its ops
# (FusedAdam, CPU Adam for offload...) compile just in time on first use with nvcc + headers, which must match
# torch's CUDA major; the build checks it. When PyPI's torch moves to a new CUDA major, bump CUDA_IMAGE.

ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
# Empty: no vLLM. Set to a release built for the torch PyPI resolves (vLLM pins its own torch).
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
# The package with the Makefile's extras (torch, torchvision from PyPI), then DeepSpeed exactly as the Makefile
# installs it, then the CUDA check: torch's CUDA major must be the base image's (nvcc for DeepSpeed's JIT ops).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[s3,train,k8s]" ninja \
    && DS_BUILD_OPS=0 pip install --no-cache-dir "deepspeed>=0.19,<0.20" \
    && if [ -n "${VLLM_VERSION}" ]; then pip install --no-cache-dir "vllm==${VLLM_VERSION}"; fi \
    && python -c "import os, torch; t, c = torch.version.cuda, os.environ['CUDA_VERSION']; \
assert t and t.split('.')[0] == c.split('.')[0], f'torch is built for CUDA {t}, the base image has {c}'" \
    && ssrl --version

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="ssrl-trainer" \
      org.opencontainers.image.description="Spatial-SSRL GRPO trainer and evaluator (ssrl train / eval, TRL + DeepSpeed)" \
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
