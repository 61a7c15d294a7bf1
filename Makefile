# Two entry points, both self-installing: `make demo` (the main job on the embedded default) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= store

.PHONY: demo test test-cluster test-realnode tools bench clean images

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The pins in docker/trainer-constraints.txt (what the trainer image installs) constrain every install, so the
# demo, the tests and the image run the same torch/transformers/TRL, whatever PyPI released since.
CONSTRAINTS := docker/trainer-constraints.txt

$(VENV)/.installed-core: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[train]"
	touch $@

# torch from PyPI (a CUDA build that also runs on CPU) comes with the train extra; pip's cache serves reruns.
# DeepSpeed builds from source after torch, with no ops compiled ahead (they JIT on first use).
$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[dev,s3,train,k8s]"
	DS_BUILD_OPS=0 $(BIN)/pip install -q "deepspeed>=0.19,<0.20"
	touch $@

## demo: synthetic RGB-D scenes -> five pretext tasks -> preview -> cold-start traces -> SFT then GRPO steps on a
##       tiny model -> checkpoint -> evaluation of base vs trained on held-out tasks (store/evals/demo/results.md)
demo: $(VENV)/.installed-core
	$(BIN)/ssrl synth $(STORE)/sources/synth --count 24 --seed 0
	$(BIN)/ssrl generate --config examples/demo.yaml -i $(STORE)/sources/synth -o $(STORE)/tasks/demo
	$(BIN)/ssrl verify $(STORE)/tasks/demo
	$(BIN)/ssrl preview $(STORE)/tasks/demo
	$(BIN)/ssrl tiny-model $(STORE)/models/tiny
	$(BIN)/ssrl coldstart $(STORE)/tasks/demo -o $(STORE)/coldstart/demo
	OMP_NUM_THREADS=1 $(BIN)/ssrl sft --config examples/sft-demo.yaml --model $(STORE)/models/tiny \
		--data $(STORE)/coldstart/demo/coldstart.json -o $(STORE)/checkpoints/sft
	OMP_NUM_THREADS=1 $(BIN)/ssrl train --config examples/train-demo.yaml --model $(STORE)/checkpoints/sft \
		--dataset $(STORE)/tasks/demo -o $(STORE)/checkpoints/demo
	$(BIN)/ssrl ckpt ls $(STORE)/checkpoints/demo
	$(BIN)/ssrl synth $(STORE)/sources/heldout --count 8 --seed 1
	$(BIN)/ssrl generate --config examples/heldout.yaml -i $(STORE)/sources/heldout -o $(STORE)/tasks/heldout
	OMP_NUM_THREADS=1 $(BIN)/ssrl eval --config examples/eval-demo.yaml -m base=$(STORE)/models/tiny \
		-m trained=$(STORE)/checkpoints/demo -b $(STORE)/tasks/heldout -o $(STORE)/evals/demo

## tools: real servers the tests run against (MinIO, SeaweedFS, helm, etcd, kube-*, training operator, KWOK),
## built from source once into ~/.cache
tools:
	scripts/tools.sh

## test: lint, then the whole suite (unit, end to end, real S3 servers, doctests), then the cluster tier
test: $(VENV)/.installed-dev tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 -q -m "not cluster"
	$(MAKE) test-cluster
	$(MAKE) test-realnode

## test-cluster: the Kubernetes tier alone (one control plane on loopback; tests/kube.py)
test-cluster: $(VENV)/.installed-dev tools
	$(BIN)/python -m pytest -p no:xdist -q -m cluster

## test-realnode: the real-pod tier alone (the project's images on a real kubelet + containerd node,
## tests/realnode.py: generate, train with a lost Worker, the chart with its MinIO, the kustomize dev overlay); needs
## root; installs Debian's containerd runc containernetworking-plugins iptables podman buildah debootstrap gcc when
## missing; images are built on first use into ~/.cache/ssrl-realnode (trainer: 12 min cold)
test-realnode: $(VENV)/.installed-dev tools
	scripts/realnode/setup.sh
	scripts/tools.sh realnode
	$(BIN)/python -m pytest -p no:xdist -q -s -m realnode tests/realnode_tier

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_generate.py

clean:
	rm -rf $(STORE) .pytest_cache .ruff_cache

# The three images from docker/ (docker or podman): make images REGISTRY=registry.example.com/ssrl [PUSH=1] [TAG=…]
images:
	REGISTRY="$(REGISTRY)" PUSH="$(PUSH)" TAG="$(TAG)" ENGINE="$(ENGINE)" TRAINER_BUILD_ARGS="$(TRAINER_BUILD_ARGS)" \
		docker/build-images.sh
