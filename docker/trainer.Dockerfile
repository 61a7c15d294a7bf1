# syntax=docker/dockerfile:1
# GRPO trainer / evaluator image: the package with the Makefile's extras (.[s3,train,k8s]), DeepSpeed, optional vLLM.
#   make images REGISTRY=registry.example.com/ssrl                (all three images; see docker/build-images.sh)
#   docker build -f docker/trainer.Dockerfile -t ssrl-trainer:0.1.0 .
#   docker build -f docker/trainer.Dockerfile --build-arg VLLM_VERSION=0.31.0 \
#     --build-arg CONSTRAINTS=docker/trainer-vllm-constraints.txt -t ssrl-trainer:0.1.0-vllm .
#
# Layers: the pinned dependencies (docker/trainer-constraints.txt: torch, its CUDA wheels, TRL... as the test suite
# ran them) first, then DeepSpeed, in their own stage (`deps`) whose venv the final image copies as one layer; the
# package comes last, as a wheel installed over it. A source edit rebuilds only that small top layer (neither the
# build nor a push moves the multi-GB torch layer again), and one tag always rebuilds the same torch/CUDA. PyPI's
# torch bundles its CUDA runtime (13.x) as nvidia-* wheels. pip's cache is a build cache mount: a rebuild after a
# constraints change downloads only what changed.
#
# Final stage: CUDA *devel*, not runtime. DeepSpeed is installed with DS_BUILD_OPS=0 (as the Makefile does), so its
# ops (FusedAdam, CPU Adam for ZeRO offload...) are compiled just in time on first use: that needs nvcc and the CUDA
# headers of torch's CUDA major at run time, which the build checks, and a host C++ compiler (g++, installed below).
#
# CUDA 12.x (drivers older than CUDA 13's): PyPI's torch 2.10 is the newest built for CUDA 12.8, pinned with the
# same other pins in docker/trainer-constraints-cu12.txt (docker/lock-trainer.py --cuda12):
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 \
#   --build-arg CONSTRAINTS=docker/trainer-constraints-cu12.txt
# The CUDA check below guards either build.

ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04

# 1. Dependencies only: this stage, and the layer the final image copies from it, survive source edits.
FROM ${CUDA_IMAGE} AS deps
# Empty: no vLLM. vLLM pins its own torch (no TRL-supported release is built for the main pins' torch): set it
# together with CONSTRAINTS=docker/trainer-vllm-constraints.txt (docker/lock-trainer.py --vllm).
ARG VLLM_VERSION=""
# Empty: torch from PyPI, as the test setup installs it. A PyTorch wheel index for another CUDA major.
ARG TORCH_INDEX_URL=""
ARG CONSTRAINTS=docker/trainer-constraints.txt
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Ubuntu's archive keeps only the current patch of each package, so apt versions are not pinned.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY ${CONSTRAINTS} /src/constraints.txt
# hadolint ignore=DL3013,DL3042
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r constraints.txt ninja
# DeepSpeed exactly as the Makefile installs it (an sdist that needs torch installed), ops compiled at run time.
# hadolint ignore=DL3013,DL3042
RUN --mount=type=cache,target=/root/.cache/pip \
    DS_BUILD_OPS=0 pip install "deepspeed>=0.19,<0.20" \
    && if [ -n "${VLLM_VERSION}" ]; then pip install -c constraints.txt "vllm==${VLLM_VERSION}"; fi

# 2. The package with the Makefile's extras, held to the pins above (nothing new is downloaded), built into a wheel
# for the final stage; then the CUDA check: torch's CUDA major must be the base image's (nvcc for DeepSpeed's JIT
# ops). A base without CUDA (CUDA_VERSION unset) is refused unless CPU_BASE=1 says a CPU-only image is meant (the
# real-node test tier builds this file on a local Debian base).
FROM deps AS build
ARG TORCH_INDEX_URL=""
ARG CPU_BASE=""
COPY pyproject.toml README.md ./
COPY ssrl ./ssrl
# hadolint ignore=DL3013,DL3042
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -c constraints.txt ".[s3,train,k8s]" \
    && pip wheel --no-deps -w /wheels . \
    && CPU_BASE="${CPU_BASE}" python -c "import os, torch; t, c = torch.version.cuda, os.environ.get('CUDA_VERSION'); \
assert c or os.environ['CPU_BASE'] == '1', 'the base image has no CUDA (CUDA_VERSION unset): pass CPU_BASE=1 for a CPU-only image'; \
assert not c or (t and t.split('.')[0] == c.split('.')[0]), f'torch is built for CUDA {t}, the base image has {c}'" \
    && ssrl --version

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="ssrl-trainer" \
      org.opencontainers.image.description="Spatial-SSRL GRPO trainer and evaluator (ssrl train / eval, TRL + DeepSpeed)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# g++: DeepSpeed's just-in-time ops (FusedAdam, CPU Adam; on CPU nodes its shm collectives) are C++ built with
# ninja at first use (the real-node tier's trainer pods failed with "c++: not found" without it).
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-dev g++ \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 ssrl && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/ssrl ssrl
# The dependency layer (GBs, unchanged by source edits), then the package's wheel on top (kB).
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /wheels /opt/wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /opt/wheels/*.whl && /opt/venv/bin/ssrl --version
# JIT-compiled DeepSpeed ops and Triton kernels go under HOME or /tmp: writable emptyDirs in Kubernetes.
ENV PATH=/opt/venv/bin:$PATH HOME=/home/ssrl PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    TORCH_EXTENSIONS_DIR=/tmp/torch_extensions TRITON_CACHE_DIR=/tmp/triton HF_HOME=/tmp/hf
WORKDIR /home/ssrl
USER 10001:10001
ENTRYPOINT ["ssrl"]
CMD ["--help"]
