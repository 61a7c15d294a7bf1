"""``ssrl submit generate|train|eval``: run the generator, trainer or evaluation on Kubernetes (or print the YAML).

Configuration is :class:`ssrl.cluster.manifests.SubmitConfig`: YAML file (``--config``) < flags (and the environment
variables of ``--registry`` / ``--image``) < ``--set key=value``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ssrl.cli.common import console, exits_on_error, sub_app
from ssrl.cluster.manifests import IMAGE_ENV, REGISTRY_ENV
from ssrl.config import load_config
from ssrl.errors import ConfigError

submit_app = sub_app("Run sharded generation, GRPO training or evaluation on Kubernetes (Job / Kubeflow PyTorchJob).")

_CONFIG = typer.Option(None, "--config", "-c", help="YAML file of SubmitConfig fields (ssrl.cluster.manifests).")
_SET = typer.Option(None, "--set", "-s", help="Override any field: key=value, e.g. train.workers=3.")
_NAME = typer.Option(None, "--name", help="Object name prefix (<name>-generate, <name>-train, <name>-eval).")
_NAMESPACE = typer.Option(None, "--namespace", "-n", help="Kubernetes namespace (default: the kubeconfig's).")
_DRY_RUN = typer.Option(False, "--dry-run", help="Print the YAML (for kubectl apply -f) and submit nothing.")
_NODE_SELECTOR = typer.Option(None, "--node-selector", help="Node label key=value (repeatable).")
_TOLERATION = typer.Option(None, "--toleration", help="key[=value]:Effect, e.g. nvidia.com/gpu:NoSchedule.")
_PRIORITY = typer.Option(None, "--priority-class", help="PriorityClass of the pods.")
_POD_LABEL = typer.Option(None, "--pod-label", help="Extra pod label key=value, e.g. Kueue's queue (repeatable).")
_POD_ANNOTATION = typer.Option(None, "--pod-annotation", help="Extra pod annotation key=value (repeatable).")
_ENV = typer.Option(None, "--env", "-e", help="Extra environment variable NAME=value, e.g. NCCL_DEBUG=INFO.")
_REGISTRY = typer.Option(None, "--registry", envvar=REGISTRY_ENV,
                         help="Registry `make images REGISTRY=… PUSH=1` pushed to: images <registry>/ssrl-*:<version>.")


def _image(component: str) -> Any:
    return typer.Option(None, "--image", envvar=IMAGE_ENV[component],
                        help=f"{component.capitalize()} image, over --registry (pinned tag or @sha256: digest).")


def _pairs(flag: str, items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} takes key=value, got {item!r}")
        out[key] = value
    return out


def _tolerations(items: list[str] | None) -> list[dict[str, str]] | None:
    """``key[=value]:Effect`` -> Toleration objects (Equal with a value, Exists without)."""
    if not items:
        return None
    out = []
    for item in items:
        head, sep, effect = item.rpartition(":")
        if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute") or not head:
            raise ConfigError(f"--toleration takes key[=value]:NoSchedule|PreferNoSchedule|NoExecute, got {item!r}")
        key, eq, value = head.partition("=")
        out.append({"key": key, "operator": "Equal", "value": value, "effect": effect} if eq
                   else {"key": key, "operator": "Exists", "effect": effect})
    return out


def _placement(node_selector, toleration, priority_class, pod_label, pod_annotation, env) -> dict[str, Any]:
    """The Placement fields (ssrl.cluster.manifests) the flags set."""
    return {"node_selector": _pairs("--node-selector", node_selector), "tolerations": _tolerations(toleration),
            "priority_class_name": priority_class, "pod_labels": _pairs("--pod-label", pod_label),
            "pod_annotations": _pairs("--pod-annotation", pod_annotation), "env": _pairs("--env", env)}


def _config(config: Path | None, overrides: list[str] | None, top: dict[str, Any], section: str,
            values: dict[str, Any]):
    from ssrl.cluster.manifests import SubmitConfig, require_clients

    require_clients()
    flags = [f"{section}.{k}={_yaml_scalar(v)}" for k, v in values.items() if v is not None]
    cfg = load_config(SubmitConfig, config, [*flags, *(overrides or [])], **top)
    if not cfg.namespace:  # like kubectl and `ssrl jobs`: the kubeconfig context's namespace
        from ssrl.cluster.client import default_namespace

        cfg.namespace = default_namespace()
        cfg.__post_init__()
    return cfg


def _yaml_scalar(value: Any) -> str:
    import json

    return json.dumps(value)  # JSON is YAML: strings and lists survive the --set parser unchanged


def _finish(obj: Any, namespace: str, dry_run: bool, progress: bool = False) -> None:
    """Print or create ``obj``; with ``progress`` also the job's progress ConfigMap (owned by the job)."""
    from ssrl.cluster.client import progress_configmap
    from ssrl.cluster.manifests import create_progress_configmap, submit, to_yaml

    if dry_run:
        typer.echo(to_yaml(obj), nl=False)
        if progress:
            typer.echo("---\n" + to_yaml(progress_configmap(obj.metadata.name, namespace, obj.metadata.labels)),
                       nl=False)
        return
    created = submit(obj, namespace)
    console.print(f"created {created}", markup=False)
    if progress:
        console.print(f"created {create_progress_configmap(obj, namespace)}", markup=False)


@submit_app.command("generate")
@exits_on_error
def generate(
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
    name: str | None = _NAME,
    namespace: str | None = _NAMESPACE,
    kind: str = typer.Option("job", "--kind", help="job (Indexed Job) or pytorchjob (Kubeflow PyTorchJob)."),
    inputs: list[str] | None = typer.Option(None, "--input", "-i", help="Input folder, glob or URL (repeatable)."),
    output: str | None = typer.Option(None, "--output", "-o", help="Dataset URL."),
    shards: int | None = typer.Option(None, "--shards", help="Number of shards = pods."),
    tasks: str | None = typer.Option(None, "--tasks", "-t", help="Comma-separated task names."),
    registry: str | None = _REGISTRY,
    image: str | None = _image("generator"),
    node_selector: list[str] | None = _NODE_SELECTOR,
    toleration: list[str] | None = _TOLERATION,
    priority_class: str | None = _PRIORITY,
    pod_label: list[str] | None = _POD_LABEL,
    pod_annotation: list[str] | None = _POD_ANNOTATION,
    env: list[str] | None = _ENV,
    dry_run: bool = _DRY_RUN,
) -> None:
    """Sharded `ssrl generate`: one pod per shard, as an Indexed Job or a PyTorchJob."""
    if kind not in ("job", "pytorchjob"):
        raise ConfigError(f"--kind must be job or pytorchjob, got {kind!r}")
    top = {"name": name, "namespace": namespace, "registry": registry, "image_generator": image}
    cfg = _config(config, overrides, top, "generate",
                  {"inputs": inputs or None, "output": output, "shards": shards, "tasks": tasks,
                   **_placement(node_selector, toleration, priority_class, pod_label, pod_annotation, env)})
    from ssrl.cluster.manifests import build_generate_job, build_generate_pytorchjob

    obj = build_generate_job(cfg) if kind == "job" else build_generate_pytorchjob(cfg)
    _finish(obj, cfg.namespace, dry_run)


@submit_app.command("train")
@exits_on_error
def train(
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
    name: str | None = _NAME,
    namespace: str | None = _NAMESPACE,
    config_map: str | None = typer.Option(None, "--config-map", help="ConfigMap holding train.yaml."),
    model: str | None = typer.Option(None, "--model", help="Model folder or store URL."),
    dataset: str | None = typer.Option(None, "--dataset", help="Generated tasks URL."),
    output: str | None = typer.Option(None, "--output", "-o", help="Run folder URL for checkpoints."),
    workers: int | None = typer.Option(None, "--workers", help="Worker replicas besides the Master."),
    gpus_per_node: int | None = typer.Option(None, "--gpus-per-node", help="GPUs per pod (0: CPU)."),
    nproc_per_node: int | None = typer.Option(None, "--nproc-per-node", help="Processes per pod (default: 1/GPU)."),
    registry: str | None = _REGISTRY,
    image: str | None = _image("trainer"),
    node_selector: list[str] | None = _NODE_SELECTOR,
    toleration: list[str] | None = _TOLERATION,
    priority_class: str | None = _PRIORITY,
    pod_label: list[str] | None = _POD_LABEL,
    pod_annotation: list[str] | None = _POD_ANNOTATION,
    env: list[str] | None = _ENV,
    dry_run: bool = _DRY_RUN,
) -> None:
    """GRPO training as a PyTorchJob: `torchrun -m ssrl train --config ... --resume auto`."""
    top = {"name": name, "namespace": namespace, "registry": registry, "image_trainer": image}
    cfg = _config(config, overrides, top, "train",
                  {"config_map": config_map, "model": model, "dataset": dataset, "output": output,
                   "workers": workers, "gpus_per_node": gpus_per_node, "nproc_per_node": nproc_per_node,
                   **_placement(node_selector, toleration, priority_class, pod_label, pod_annotation, env)})
    from ssrl.cluster.manifests import build_train_pytorchjob

    _finish(build_train_pytorchjob(cfg), cfg.namespace, dry_run, progress=True)


@submit_app.command("eval")
@exits_on_error
def evaluate(
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
    name: str | None = _NAME,
    namespace: str | None = _NAMESPACE,
    models: list[str] | None = typer.Option(None, "--model", "-m", help="name=location (repeatable)."),
    benchmarks: list[str] | None = typer.Option(None, "--bench", "-b", help=".tsv, .jsonl or dataset (repeatable)."),
    output: str | None = typer.Option(None, "--output", "-o", help="Evaluation folder URL."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N items of each benchmark."),
    gpus: int | None = typer.Option(None, "--gpus", help="GPUs of the pod (> 1: one torchrun rank each; 0: CPU)."),
    registry: str | None = _REGISTRY,
    image: str | None = _image("trainer"),
    node_selector: list[str] | None = _NODE_SELECTOR,
    toleration: list[str] | None = _TOLERATION,
    priority_class: str | None = _PRIORITY,
    pod_label: list[str] | None = _POD_LABEL,
    pod_annotation: list[str] | None = _POD_ANNOTATION,
    env: list[str] | None = _ENV,
    dry_run: bool = _DRY_RUN,
) -> None:
    """`ssrl eval` of models x benchmarks as a Job; the report is committed to --output."""
    top = {"name": name, "namespace": namespace, "registry": registry, "image_trainer": image}
    cfg = _config(config, overrides, top, "eval",
                  {"models": models or None, "benchmarks": benchmarks or None, "output": output, "limit": limit,
                   "gpus": gpus,
                   **_placement(node_selector, toleration, priority_class, pod_label, pod_annotation, env)})
    from ssrl.cluster.manifests import build_eval_job

    _finish(build_eval_job(cfg), cfg.namespace, dry_run)
