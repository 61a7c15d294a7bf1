"""Kubernetes objects for ``ssrl submit``: the chart's generator Job, trainer PyTorchJob and eval Job, in Python.

The builders are pure (no cluster access): they turn a :class:`SubmitConfig` into the client libraries'
model objects, the same shape as ``helm/ssrl/templates/`` (pinned images, non-root read-only containers that
drop every capability, resources, ``/tmp`` and ``HOME`` emptyDirs, a memory-backed ``/dev/shm`` for the
trainer, store credentials only through ``secretKeyRef``). :func:`to_yaml` prints what ``kubectl apply -f``
accepts; :func:`submit` creates an object in the configured cluster.

Needs the ``k8s`` extra (``kubernetes``, ``kubeflow-training``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from ssrl import __version__
from ssrl.errors import ConfigError, SSRLError

CONTAINER_HOME = "/home/ssrl"
TRAIN_CONFIG_DIR = "/etc/ssrl"
TRAIN_CONFIG_KEY = "train.yaml"
PYTORCHJOB_PORT = 23456
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 50  # room for the "-generate" / "-train" suffixes and the pods' own suffixes (as the chart)
JOB_NAME_ENV = "SSRL_JOB_NAME"
"""The trainer's own PyTorchJob (downward API: the operator's job-name pod label); see ``ssrl.cluster.client``."""
JOB_NAMESPACE_ENV = "SSRL_JOB_NAMESPACE"
PYTORCHJOB_NAME_LABEL = "training.kubeflow.org/job-name"
PLACEHOLDER_REGISTRY = "ghcr.io/ssrl"
"""What the image defaults once named; nothing publishes there, so this, the chart and ``make images`` refuse it."""
REGISTRY_ENV = "SSRL_REGISTRY"
IMAGE_ENV = {"generator": "SSRL_IMAGE_GENERATOR", "trainer": "SSRL_IMAGE_TRAINER"}
"""Environment variables ``ssrl submit`` reads for ``registry`` and the images (flags; ``--set`` overrides them)."""
_IMAGES_HINT = (f"build and push the images with `make images REGISTRY=<registry> PUSH=1` (it prints the digests to "
                f"pin), then set that registry: --registry, ${REGISTRY_ENV} or `registry:` in --config")


def _resources(requests: dict[str, Any], limits: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"requests": dict(requests), "limits": dict(limits)}


@dataclass
class Placement:
    """Where and how a component's pods run on a shared cluster (the chart's per-component values of the same name)."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Kubernetes Toleration objects, e.g. ``{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}``."""
    affinity: dict[str, Any] = field(default_factory=dict)
    """A Kubernetes Affinity object."""
    priority_class_name: str = ""
    pod_labels: dict[str, str] = field(default_factory=dict)
    """Extra pod labels, e.g. Kueue's ``kueue.x-k8s.io/queue-name`` (``app.kubernetes.io/*`` stay ours)."""
    pod_annotations: dict[str, str] = field(default_factory=dict)
    """Extra pod annotations, e.g. Multus ``k8s.v1.cni.cncf.io/networks``."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables, e.g. ``NCCL_*`` knobs."""
    extra_resources: dict[str, Any] = field(default_factory=dict)
    """Extra resources per pod (request = limit), e.g. ``{"rdma/rdma_shared_device_a": 1}``."""
    scratch_size: str = "20Gi"
    """sizeLimit of the /tmp and $HOME emptyDirs and the container's ephemeral-storage request and limit."""

    def placement_problems(self, section: str) -> list[str]:
        clash = sorted(k for k in self.pod_labels if k.startswith("app.kubernetes.io/"))
        return [f"{section}.pod_labels: {', '.join(clash)} are set by ssrl"] if clash else []


@dataclass
class GenerateSpec(Placement):
    """Sharded ``ssrl generate``: one pod per shard."""

    inputs: list[str] = field(default_factory=lambda: ["s3://ssrl/sources/images"])
    """Folders, globs, list files or store URLs (``--input``)."""
    output: str = "s3://ssrl/tasks/main"
    """Dataset URL (``--output``)."""
    shards: int = 4
    """Pods = shards (Job completions = parallelism; PyTorchJob Master + shards-1 Workers)."""
    tasks: str = ""
    """Comma-separated task names; empty runs every registered task."""
    workers: int = 1
    """Worker processes inside each pod (``--workers``)."""
    extra_args: list[str] = field(default_factory=list)
    """Extra ``ssrl generate`` arguments, e.g. ``["--set", "seed=7"]``."""
    backoff_limit: int = 6
    ttl_seconds_after_finished: int | None = 86400
    resources: dict[str, Any] = field(
        default_factory=lambda: _resources({"cpu": "1", "memory": "2Gi"}, {"cpu": "2", "memory": "4Gi"}))

    def __post_init__(self) -> None:
        problems = self.placement_problems("generate")
        if self.shards < 1:
            problems.append(f"generate.shards must be at least 1, got {self.shards}")
        if self.workers < 1:
            problems.append(f"generate.workers must be at least 1, got {self.workers}")
        if not self.inputs:
            problems.append("generate.inputs: give at least one input")
        if not self.output:
            problems.append("generate.output: give the dataset URL")
        if problems:
            raise ConfigError(problems)


@dataclass
class TrainSpec(Placement):
    """GRPO training as a Kubeflow PyTorchJob (``torchrun -m ssrl train ... --resume auto``)."""

    config_map: str = ""
    """Name of an existing ConfigMap with a ``train.yaml`` key, mounted at /etc/ssrl (``--config``)."""
    config_path: str = ""
    """Otherwise: a TrainConfig YAML path inside the trainer image; empty: no ``--config``."""
    model: str = "s3://ssrl/models/base"
    dataset: str = "s3://ssrl/tasks/main"
    output: str = "s3://ssrl/checkpoints/main"
    workers: int = 0
    """Worker replicas besides the Master (nodes = 1 + workers)."""
    gpus_per_node: int = 1
    """nvidia.com/gpu per pod; 0 runs on CPU."""
    nproc_per_node: int = 0
    """Processes per pod (the operator's PET_NPROC_PER_NODE for torchrun); 0: one per GPU (one on CPU)."""
    extra_args: list[str] = field(default_factory=list)
    shm_size: str = "16Gi"
    backoff_limit: int = 3
    """runPolicy.backoffLimit. Operator v1.9 counts container restarts only: a pod killed from outside (128+) is
    recreated each time, whatever this says (see ``build_train_pytorchjob``)."""
    ttl_seconds_after_finished: int | None = 7 * 86400
    """Seconds the finished PyTorchJob is kept; the checkpoints stay in the store."""
    ipc_lock: bool = False
    """Add IPC_LOCK (RDMA memory registration); the namespace's Pod Security level must allow it."""
    resources: dict[str, Any] = field(
        default_factory=lambda: _resources({"cpu": "4", "memory": "32Gi"}, {"cpu": "8", "memory": "64Gi"}))
    scratch_size: str = "200Gi"

    def __post_init__(self) -> None:
        problems = self.placement_problems("train")
        if self.config_map and self.config_path:
            problems.append("train: give config_map or config_path, not both")
        if self.workers < 0:
            problems.append(f"train.workers must be >= 0, got {self.workers}")
        if self.gpus_per_node < 0:
            problems.append(f"train.gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.nproc_per_node < 0:
            problems.append(f"train.nproc_per_node must be >= 0 (0: one per GPU), got {self.nproc_per_node}")
        if problems:
            raise ConfigError(problems)


@dataclass
class EvalSpec(Placement):
    """``ssrl eval`` of models x benchmarks as one Job in the trainer image (torchrun ranks when gpus > 1)."""

    models: list[str] = field(default_factory=lambda: ["base=s3://ssrl/models/base",
                                                       "trained=s3://ssrl/checkpoints/main"])
    """``name=location`` or ``location`` (``--model``): model folder, checkpoint run or store URL."""
    benchmarks: list[str] = field(default_factory=lambda: ["s3://ssrl/tasks/heldout"])
    """VLMEvalKit ``.tsv``, ``.jsonl`` or a generated task dataset (``--bench``)."""
    output: str = "s3://ssrl/evals/main"
    """Evaluation folder in the store (``--output``)."""
    limit: int = 0
    """Only the first N items of each benchmark (``--limit``); 0: all."""
    gpus: int = 1
    """nvidia.com/gpu of the pod; > 1 runs one rank per GPU under torchrun; 0 runs on CPU."""
    extra_args: list[str] = field(default_factory=list)
    """Extra ``ssrl eval`` arguments, e.g. ``["--batch-size", "16"]``."""
    shm_size: str = "8Gi"
    backoff_limit: int = 2
    ttl_seconds_after_finished: int | None = 86400
    resources: dict[str, Any] = field(
        default_factory=lambda: _resources({"cpu": "4", "memory": "32Gi"}, {"cpu": "8", "memory": "64Gi"}))
    scratch_size: str = "100Gi"

    def __post_init__(self) -> None:
        problems = self.placement_problems("eval")
        if not self.models:
            problems.append("eval.models: give at least one model (name=location)")
        if not self.benchmarks:
            problems.append("eval.benchmarks: give at least one benchmark")
        if not self.output:
            problems.append("eval.output: give the evaluation folder URL")
        if self.limit < 0:
            problems.append(f"eval.limit must be >= 0, got {self.limit}")
        if self.gpus < 0:
            problems.append(f"eval.gpus must be >= 0, got {self.gpus}")
        if problems:
            raise ConfigError(problems)


@dataclass
class SubmitConfig:
    """Where and how ``ssrl submit`` runs the generator and the trainer; YAML < flags < ``--set``."""

    name: str = "ssrl"
    """Prefix of the object names: ``<name>-generate``, ``<name>-train``, ``<name>-eval``."""
    namespace: str = ""
    """Empty: the kubeconfig context's namespace (as ``kubectl`` and ``ssrl jobs``)."""
    registry: str = ""
    """Registry/namespace ``make images REGISTRY=… PUSH=1`` pushed to (``--registry``, ``$SSRL_REGISTRY``); the images
    are then ``<registry>/ssrl-generator:<version>`` and ``<registry>/ssrl-trainer:<version>``. Nothing publishes
    ssrl images, so there is no default: a build needs one of this or the two images (as the chart's
    ``images.registry``)."""
    image_generator: str = ""
    """The generator image itself, over ``registry`` (``submit generate --image``, ``$SSRL_IMAGE_GENERATOR``), e.g.
    with the ``@sha256:…`` digest ``make images`` printed."""
    image_trainer: str = ""
    """The trainer image (train and eval) itself, over ``registry`` (``submit train|eval --image``,
    ``$SSRL_IMAGE_TRAINER``)."""
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: list[str] = field(default_factory=list)
    service_account: str = ""
    """ServiceAccount for the pods; empty: the namespace's default, without a mounted token."""
    store_endpoint: str = ""
    """S3 endpoint (SSRL_S3_ENDPOINT); empty: the S3 client's default (AWS)."""
    store_secret: str = "ssrl-store"
    """Secret holding the store credentials; empty: none passed (e.g. workload identity)."""
    store_access_key_key: str = "AWS_ACCESS_KEY_ID"
    store_secret_key_key: str = "AWS_SECRET_ACCESS_KEY"
    run_as_user: int = 10001
    generate: GenerateSpec = field(default_factory=GenerateSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)

    def __post_init__(self) -> None:
        problems = []
        for label, value in (("name", self.name), ("namespace", self.namespace or "default")):
            if not _NAME.match(value or "") or len(value) > (_MAX_NAME if label == "name" else 63):
                problems.append(f"{label} {value!r} must be a DNS label (lower-case letters, digits, '-'; "
                                f"at most {_MAX_NAME if label == 'name' else 63} characters)")
        for label, image in (("image_generator", self.image_generator), ("image_trainer", self.image_trainer)):
            problem = image and image_problem(image)
            if problem:
                problems.append(f"{label}: {problem}")
        if self.registry.rstrip("/") == PLACEHOLDER_REGISTRY:
            problems.append(f"registry: {PLACEHOLDER_REGISTRY} is a placeholder nothing publishes; {_IMAGES_HINT}")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            problems.append(f"image_pull_policy must be Always, IfNotPresent or Never, got {self.image_pull_policy!r}")
        if self.run_as_user == 0:
            problems.append("run_as_user must not be 0 (pods run as non-root)")
        if problems:
            raise ConfigError(problems)

    def image(self, component: str) -> str:
        """The ``generator`` or ``trainer`` image: ``image_<component>``, else ``<registry>/ssrl-<component>:<ver>``.

        Raises:
            ConfigError: neither is set (says how to build the images and set either).
        """
        explicit = {"generator": self.image_generator, "trainer": self.image_trainer}[component]
        if explicit:
            return explicit
        if self.registry:
            return f"{self.registry.rstrip('/')}/ssrl-{component}:{__version__}"
        raise ConfigError(f"no {component} image: {_IMAGES_HINT} (or the image itself: --image of `ssrl submit "
                          f"{'generate' if component == 'generator' else 'train|eval'}`, ${IMAGE_ENV[component]} "
                          f"or image_{component})")


def require_clients() -> None:
    """SSRLError with the install hint when the ``k8s`` extra is missing."""
    try:
        import kubeflow.training  # noqa: F401
        import kubernetes  # noqa: F401
    except ImportError as e:
        raise SSRLError(f"ssrl submit needs the k8s extra ({e.name} is not installed): "
                        "pip install 'ssrl[k8s]'") from None


def image_problem(image: str) -> str | None:
    """Why ``image`` cannot be used (under the placeholder registry, or not pinned to a tag other than ``latest``
    or a digest), or None."""
    if image.startswith(PLACEHOLDER_REGISTRY + "/"):
        return f"{image!r} is under {PLACEHOLDER_REGISTRY}, a placeholder nothing publishes; {_IMAGES_HINT}"
    if "@sha256:" in image:
        return None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or not tag:
        return f"{image!r} has no tag; pin one (e.g. :0.1.0)"
    if tag == "latest":
        return f"{image!r} uses 'latest'; pin a tag"
    return None


# ---------------------------------------------------------------------------------------------------------------
# shared pieces


def _labels(cfg: SubmitConfig, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "ssrl", "app.kubernetes.io/instance": cfg.name,
            "app.kubernetes.io/component": component, "app.kubernetes.io/managed-by": "ssrl-submit",
            "app.kubernetes.io/part-of": "ssrl"}


def _store_env(cfg: SubmitConfig) -> list:
    from kubernetes import client

    env = []
    if cfg.store_endpoint:
        env.append(client.V1EnvVar(name="SSRL_S3_ENDPOINT", value=cfg.store_endpoint))
    if cfg.store_secret:
        for var, key in (("AWS_ACCESS_KEY_ID", cfg.store_access_key_key),
                         ("AWS_SECRET_ACCESS_KEY", cfg.store_secret_key_key)):
            ref = client.V1SecretKeySelector(name=cfg.store_secret, key=key)
            env.append(client.V1EnvVar(name=var, value_from=client.V1EnvVarSource(secret_key_ref=ref)))
    env.append(client.V1EnvVar(name="HOME", value=CONTAINER_HOME))
    return env


def _security(cfg: SubmitConfig) -> tuple:
    from kubernetes import client

    pod = client.V1PodSecurityContext(
        run_as_non_root=True, run_as_user=cfg.run_as_user, run_as_group=cfg.run_as_user, fs_group=cfg.run_as_user,
        seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))
    container = client.V1SecurityContext(
        run_as_non_root=True, allow_privilege_escalation=False, read_only_root_filesystem=True, privileged=False,
        capabilities=client.V1Capabilities(drop=["ALL"]))
    return pod, container


def _scratch(spec: Placement) -> tuple[list, list]:
    from kubernetes import client

    mounts = [client.V1VolumeMount(name="tmp", mount_path="/tmp"),
              client.V1VolumeMount(name="home", mount_path=CONTAINER_HOME)]
    volumes = [client.V1Volume(name=n, empty_dir=client.V1EmptyDirVolumeSource(size_limit=spec.scratch_size))
               for n in ("tmp", "home")]
    return mounts, volumes


def _container_resources(spec: Placement, gpus: int = 0):
    """The spec's resources plus nvidia.com/gpu, ephemeral-storage (= scratch_size) and extra_resources."""
    from kubernetes import client

    q = _quantities(copy.deepcopy(spec.resources))  # type: ignore[attr-defined]
    extra = {**{str(k): str(v) for k, v in spec.extra_resources.items()}, "ephemeral-storage": spec.scratch_size}
    if gpus > 0:
        extra["nvidia.com/gpu"] = str(gpus)
    for part in ("requests", "limits"):
        q[part] = {**q[part], **extra}
    return client.V1ResourceRequirements(requests=q["requests"], limits=q["limits"])


def _env(spec: Placement) -> list:
    from kubernetes import client

    return [client.V1EnvVar(name=k, value=str(v)) for k, v in spec.env.items()]


def _template(labels: dict[str, str], spec: Placement, pod):
    """The pod template: our labels (the NetworkPolicies select them) after the user's, and the user's annotations."""
    from kubernetes import client

    meta = client.V1ObjectMeta(labels={**spec.pod_labels, **labels}, annotations=dict(spec.pod_annotations) or None)
    return client.V1PodTemplateSpec(metadata=meta, spec=pod)


def _quantities(resources: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Requests/limits with every quantity as a string (``cpu: 2`` -> ``"2"``)."""
    out: dict[str, dict[str, str]] = {}
    for part in ("requests", "limits"):
        values = resources.get(part) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"resources.{part} must be a mapping, got {values!r}")
        out[part] = {str(k): str(v) for k, v in values.items()}
    unknown = set(resources) - {"requests", "limits"}
    if unknown:
        raise ConfigError(f"resources: unknown keys {sorted(unknown)} (use requests, limits)")
    return out


def _pod_spec(cfg: SubmitConfig, container, volumes: list, spec: Placement, restart: str | None, token: bool):
    from kubernetes import client

    pod_security, _ = _security(cfg)
    return client.V1PodSpec(
        restart_policy=restart,
        service_account_name=cfg.service_account or None,
        automount_service_account_token=token,
        image_pull_secrets=[client.V1LocalObjectReference(name=s) for s in cfg.image_pull_secrets] or None,
        security_context=pod_security,
        node_selector=dict(spec.node_selector) or None,
        tolerations=[dict(t) for t in spec.tolerations] or None,
        affinity=dict(spec.affinity) or None,
        priority_class_name=spec.priority_class_name or None,
        containers=[container],
        volumes=volumes,
    )


def generate_args(cfg: SubmitConfig) -> list[str]:
    """``ssrl generate`` arguments for one shard's pod (the shard comes from the environment)."""
    g = cfg.generate
    args = ["generate"]
    for item in g.inputs:
        args += ["--input", item]
    args += ["--output", g.output]
    if g.tasks:
        args += ["--tasks", g.tasks]
    args += ["--workers", str(g.workers), "--quiet", *g.extra_args]
    return args


def _generate_container(cfg: SubmitConfig, name: str, env_extra: list):
    from kubernetes import client

    mounts, _ = _scratch(cfg.generate)
    _, security = _security(cfg)
    return client.V1Container(
        name=name, image=cfg.image("generator"), image_pull_policy=cfg.image_pull_policy,
        args=generate_args(cfg), env=[*env_extra, *_store_env(cfg), *_env(cfg.generate)],
        resources=_container_resources(cfg.generate), security_context=security, volume_mounts=mounts)


# ---------------------------------------------------------------------------------------------------------------
# builders


def build_generate_job(cfg: SubmitConfig):
    """Indexed Job: completions = parallelism = shards; each pod takes JOB_COMPLETION_INDEX of SSRL_NUM_SHARDS."""
    from kubernetes import client

    g = cfg.generate
    labels = _labels(cfg, "generate")
    env = [client.V1EnvVar(name="SSRL_NUM_SHARDS", value=str(g.shards))]
    container = _generate_container(cfg, "generate", env)
    _, volumes = _scratch(g)
    pod = _pod_spec(cfg, container, volumes, g, "Never", token=False)
    return client.V1Job(
        api_version="batch/v1", kind="Job",
        metadata=client.V1ObjectMeta(name=f"{cfg.name}-generate", namespace=cfg.namespace, labels=labels),
        spec=client.V1JobSpec(
            completion_mode="Indexed", completions=g.shards, parallelism=g.shards, backoff_limit=g.backoff_limit,
            ttl_seconds_after_finished=g.ttl_seconds_after_finished, template=_template(labels, g, pod)))


def _pytorchjob(cfg: SubmitConfig, name: str, component: str, template_for_role, replicas: dict[str, int],
                nproc: int, backoff: int, restart: str = "OnFailure", clean: str = "None", ttl: int | None = None):
    from kubeflow.training import (
        KubeflowOrgV1PyTorchJob,
        KubeflowOrgV1PyTorchJobSpec,
        KubeflowOrgV1ReplicaSpec,
        KubeflowOrgV1RunPolicy,
    )
    from kubernetes import client

    specs = {role: KubeflowOrgV1ReplicaSpec(replicas=n, restart_policy=restart, template=template_for_role())
             for role, n in replicas.items() if n > 0}
    return KubeflowOrgV1PyTorchJob(
        api_version="kubeflow.org/v1", kind="PyTorchJob",
        metadata=client.V1ObjectMeta(name=name, namespace=cfg.namespace, labels=_labels(cfg, component)),
        spec=KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(nproc),
            run_policy=KubeflowOrgV1RunPolicy(backoff_limit=backoff, clean_pod_policy=clean,
                                              ttl_seconds_after_finished=ttl),
            pytorch_replica_specs=specs))


def build_generate_pytorchjob(cfg: SubmitConfig):
    """PyTorchJob with ``shards`` pods (Master + shards-1 Workers), one process each: RANK/WORLD_SIZE shard it."""
    from kubernetes import client

    g = cfg.generate
    labels = _labels(cfg, "generate")

    def template():
        container = _generate_container(cfg, "pytorch", [])  # the operator requires the name "pytorch"
        container.ports = [client.V1ContainerPort(name="pytorchjob-port", container_port=PYTORCHJOB_PORT,
                                                  protocol="TCP")]
        _, volumes = _scratch(g)
        pod = _pod_spec(cfg, container, volumes, g, None, token=False)
        return _template(labels, g, pod)

    return _pytorchjob(cfg, f"{cfg.name}-generate", "generate", template,
                       {"Master": 1, "Worker": g.shards - 1}, nproc=1, backoff=g.backoff_limit)


def train_args(cfg: SubmitConfig) -> list[str]:
    """Arguments after ``torchrun``: ``-m ssrl train ... --resume auto``."""
    t = cfg.train
    args = ["-m", "ssrl", "train"]
    if t.config_map:
        args += ["--config", f"{TRAIN_CONFIG_DIR}/{TRAIN_CONFIG_KEY}"]
    elif t.config_path:
        args += ["--config", t.config_path]
    args += ["--resume", "auto"]
    for flag, value in (("--model", t.model), ("--dataset", t.dataset), ("--output", t.output)):
        if value:
            args += [flag, value]
    return [*args, *t.extra_args]


def build_train_pytorchjob(cfg: SubmitConfig):
    """The trainer: ``torchrun -m ssrl train --config ... --resume auto`` on 1 + workers pods."""
    from kubernetes import client

    t = cfg.train
    name = f"{cfg.name}-train"
    labels = _labels(cfg, "train")

    def template():
        mounts, volumes = _scratch(t)
        if t.config_map:
            mounts.append(client.V1VolumeMount(name="config", mount_path=TRAIN_CONFIG_DIR, read_only=True))
            volumes.append(client.V1Volume(name="config", config_map=client.V1ConfigMapVolumeSource(name=t.config_map)))
        mounts.append(client.V1VolumeMount(name="dshm", mount_path="/dev/shm"))
        volumes.append(client.V1Volume(name="dshm", empty_dir=client.V1EmptyDirVolumeSource(
            medium="Memory", size_limit=t.shm_size)))
        env = [*_store_env(cfg), *_job_identity_env(), *_env(t)]
        _, security = _security(cfg)
        if t.ipc_lock:  # RDMA memory registration pins pages
            security.capabilities.add = ["IPC_LOCK"]
        container = client.V1Container(
            name="pytorch", image=cfg.image("trainer"), image_pull_policy=cfg.image_pull_policy,
            command=["torchrun"], args=train_args(cfg), env=env,
            ports=[client.V1ContainerPort(name="pytorchjob-port", container_port=PYTORCHJOB_PORT, protocol="TCP")],
            resources=_container_resources(t, t.gpus_per_node), security_context=security, volume_mounts=mounts)
        # A token only with a named ServiceAccount: rank 0 may then write its job's progress ConfigMap.
        pod = _pod_spec(cfg, container, volumes, t, None, token=bool(cfg.service_account))
        return _template(labels, t, pod)

    # ExitCode + cleanPodPolicy Running: a rank that exits 1-127 fails the job and the other pods are removed, so
    # none holds its GPUs waiting in NCCL; one killed from outside (128+) is recreated, not counted against
    # backoffLimit (the chart's pytorchjob-train.yaml explains the policy; tests/test_cluster.py shows both).
    return _pytorchjob(cfg, name, "train", template, {"Master": 1, "Worker": t.workers},
                       nproc=t.nproc_per_node or max(t.gpus_per_node, 1), backoff=t.backoff_limit,
                       restart="ExitCode", clean="Running", ttl=t.ttl_seconds_after_finished)


def _job_identity_env() -> list:
    """SSRL_JOB_NAME / SSRL_JOB_NAMESPACE from the pod itself, so rank 0 can annotate its PyTorchJob."""
    from kubernetes import client

    def field_env(name: str, path: str):
        return client.V1EnvVar(name=name, value_from=client.V1EnvVarSource(
            field_ref=client.V1ObjectFieldSelector(field_path=path)))

    return [field_env(JOB_NAME_ENV, f"metadata.labels['{PYTORCHJOB_NAME_LABEL}']"),
            field_env(JOB_NAMESPACE_ENV, "metadata.namespace")]


def eval_command(cfg: SubmitConfig) -> tuple[list[str] | None, list[str]]:
    """(command, args) of the eval container: the image's ``ssrl`` entrypoint, or torchrun for several GPUs."""
    e = cfg.eval
    args = ["eval"]
    for model in e.models:
        args += ["--model", model]
    for bench in e.benchmarks:
        args += ["--bench", bench]
    args += ["--output", e.output]
    if e.limit:
        args += ["--limit", str(e.limit)]
    args += list(e.extra_args)
    if e.gpus > 1:
        return ["torchrun"], ["--standalone", "--nproc-per-node", str(e.gpus), "-m", "ssrl", *args]
    return None, args


def build_eval_job(cfg: SubmitConfig):
    """``ssrl eval`` (models x benchmarks -> report in the store) as one Job with the trainer image."""
    from kubernetes import client

    e = cfg.eval
    labels = _labels(cfg, "eval")
    mounts, volumes = _scratch(e)
    mounts.append(client.V1VolumeMount(name="dshm", mount_path="/dev/shm"))
    volumes.append(client.V1Volume(name="dshm", empty_dir=client.V1EmptyDirVolumeSource(
        medium="Memory", size_limit=e.shm_size)))
    command, args = eval_command(cfg)
    _, security = _security(cfg)
    container = client.V1Container(
        name="eval", image=cfg.image("trainer"), image_pull_policy=cfg.image_pull_policy, command=command, args=args,
        env=[*_store_env(cfg), *_env(e)], resources=_container_resources(e, e.gpus),
        security_context=security, volume_mounts=mounts)
    pod = _pod_spec(cfg, container, volumes, e, "Never", token=False)
    return client.V1Job(
        api_version="batch/v1", kind="Job",
        metadata=client.V1ObjectMeta(name=f"{cfg.name}-eval", namespace=cfg.namespace, labels=labels),
        spec=client.V1JobSpec(
            backoff_limit=e.backoff_limit, ttl_seconds_after_finished=e.ttl_seconds_after_finished,
            template=_template(labels, e, pod)))


def to_dict(obj: Any) -> dict[str, Any]:
    """The object as plain API data (camelCase keys, no nulls), as the API server and kubectl expect."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def to_yaml(obj: Any) -> str:
    """YAML for ``kubectl apply -f``."""
    import yaml

    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------------------------------------------------------
# submission


def cluster_configuration(hint: str = "set KUBECONFIG or use --dry-run to print the YAML"):
    """kubeconfig (``KUBECONFIG`` or ``~/.kube/config``) or the in-cluster service account, else SSRLError."""
    import os

    from kubernetes import client, config

    # Read KUBECONFIG / HOME now: the client library reads them once, when it is imported.
    config_file = os.environ.get("KUBECONFIG") or os.path.join(os.path.expanduser("~"), ".kube", "config")
    try:
        config.load_kube_config(config_file=config_file)
    except Exception as kube_error:  # ConfigException, or a missing/unreadable file
        try:
            config.load_incluster_config()
        except Exception:
            reason = str(kube_error).strip().splitlines()[0] if str(kube_error).strip() else type(kube_error).__name__
            raise SSRLError(f"no Kubernetes cluster is configured (no usable kubeconfig: {reason}; not running "
                            "in a cluster); " + hint) from None
    return client.Configuration.get_default_copy()


def submit(obj: Any, namespace: str) -> str:
    """Create ``obj`` (a V1Job or a PyTorchJob) in the cluster; returns ``kind/namespace/name``."""
    import urllib3
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    configuration = cluster_configuration()
    kind, name = obj.kind, obj.metadata.name
    what = f"creating {kind} {namespace}/{name} failed"
    try:
        if kind == "Job":
            client.BatchV1Api(client.ApiClient(configuration)).create_namespaced_job(namespace, obj)
        else:
            from kubeflow.training import TrainingClient

            TrainingClient(client_configuration=configuration, namespace=namespace,
                           job_kind="PyTorchJob").create_job(job=obj, namespace=namespace)
    except Exception as e:  # one line whatever went wrong; TrainingClient wraps the API's error in RuntimeError
        cause = e
        while not isinstance(cause, ApiException | urllib3.exceptions.HTTPError) and (
                cause.__cause__ or cause.__context__):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ApiException):
            raise SSRLError(f"{what}: {cause.status} {cause.reason}{_api_message(cause)}") from None
        if isinstance(cause, urllib3.exceptions.HTTPError):
            reason = getattr(cause, "reason", None) or cause
            raise SSRLError(f"{what}: cannot reach the Kubernetes API server at {configuration.host} "
                            f"({type(reason).__name__})") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise SSRLError(f"{what} ({type(e).__name__}): {first}") from None
    return f"{kind}/{namespace}/{name}"


def create_progress_configmap(job: Any, namespace: str) -> str:
    """Create the progress ConfigMap of a submitted PyTorchJob, owned by it (deleted with it); an existing one stays.

    Created here, not by the trainer, so its Role needs no ``create`` verb: ``get``/``patch`` on this one name."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from ssrl.cluster.client import GROUP, PLURAL, VERSION, api_errors, progress_configmap

    api = client.ApiClient(cluster_configuration())
    name = job.metadata.name
    with api_errors(f"creating the progress ConfigMap of PyTorchJob {namespace}/{name}", api):
        owner = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        body = progress_configmap(name, namespace, job.metadata.labels, owner=owner)
        try:
            client.CoreV1Api(api).create_namespaced_config_map(namespace, body)
        except ApiException as e:
            if e.status != 409:
                raise
    return f"ConfigMap/{namespace}/{body['metadata']['name']}"


def _api_message(e: Any) -> str:
    """The API server's own message from an ApiException body (Status object), if any."""
    import json

    try:
        message = json.loads(e.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f": {message}" if message else ""
