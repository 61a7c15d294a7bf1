"""``ssrl submit``: the generated Jobs / PyTorchJobs validate, follow the chart's policies and call real commands.

Core kinds validate with ``kubernetes-validate`` (1.31, strict); PyTorchJobs with the Training Operator's CRD
from ``../shared/crds`` (skipped when absent). Nothing here needs a cluster.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kubernetes")
pytest.importorskip("kubeflow.training")

from typer.testing import CliRunner

from ssrl import __version__
from ssrl.cli.submit_cmd import submit_app
from ssrl.cluster.manifests import (
    SubmitConfig,
    build_eval_job,
    build_generate_job,
    build_generate_pytorchjob,
    build_train_pytorchjob,
    image_problem,
    to_dict,
)
from ssrl.errors import ConfigError
from tests.conftest import pytorchjob_problems

K8S_VERSION = "1.31"

CASES = {
    "generate-job": ["generate", "--kind", "job"],
    "generate-pytorchjob": ["generate", "--kind", "pytorchjob"],
    "train": ["train"],
    "eval": ["eval"],
    "eval-multigpu": ["eval", "--gpus", "2", "-m", "base=s3://b/models/base", "-m", "s3://b/checkpoints/run",
                      "-b", "s3://b/bench/cv-bench.tsv", "-b", "s3://b/tasks/heldout", "--limit", "50"],
}
EXTRA = ["--set", "store_endpoint=http://minio.store.svc:9000"]
REGISTRY = "registry.example.com/ssrl"
IMAGE_VARS = ("SSRL_REGISTRY", "SSRL_IMAGE_GENERATOR", "SSRL_IMAGE_TRAINER")


@pytest.fixture(autouse=True)
def registry_env(monkeypatch):
    """The shell the README's deployment leaves: SSRL_REGISTRY names where `make images` pushed (nothing else set)."""
    for var in IMAGE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SSRL_REGISTRY", REGISTRY)


def dry_run_docs(args: list[str]) -> list[dict]:
    result = CliRunner().invoke(submit_app, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert all(isinstance(d, dict) for d in docs)
    # train also prints its progress ConfigMap; the rest one object
    assert len(docs) == (2 if args[0] == "train" else 1), [d["kind"] for d in docs]
    return docs


def dry_run(args: list[str]) -> dict:
    return dry_run_docs(args)[0]


@functools.cache
def rendered(case: str) -> dict:
    return dry_run([*CASES[case], *EXTRA])


def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    if obj["kind"] == "PyTorchJob":
        return [(role, r["template"]["spec"]) for role, r in obj["spec"]["pytorchReplicaSpecs"].items()]
    return [("pod", obj["spec"]["template"]["spec"])]


# ---------------------------------------------------------------------------------------------------------------
# schema validation


def ssrl_args(c: dict) -> list[str]:
    """What follows ``ssrl`` in a container: its args, or after ``torchrun ... -m ssrl``."""
    if not c.get("command"):
        return list(c["args"])
    assert c["command"] == ["torchrun"], c["command"]
    i = c["args"].index("-m")
    assert c["args"][i + 1] == "ssrl"
    return c["args"][i + 2:]


@pytest.mark.parametrize("case", ["generate-job", "eval", "eval-multigpu"])
def test_jobs_validate(case):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    job = rendered(case)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    try:
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{e.message} at {list(e.path)}")


def test_generate_job_shape():
    spec = rendered("generate-job")["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["SSRL_NUM_SHARDS"]["value"] == "4"
    assert env["SSRL_S3_ENDPOINT"]["value"] == "http://minio.store.svc:9000"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_eval_job_shape():
    job = rendered("eval")
    assert job["metadata"]["name"] == "ssrl-eval"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "eval"
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert c["image"] == f"{REGISTRY}/ssrl-trainer:{__version__}" and "command" not in c  # image's entrypoint
    assert c["args"] == ["eval", "--model", "base=s3://ssrl/models/base", "--model", "trained=s3://ssrl/checkpoints/main",
                         "--bench", "s3://ssrl/tasks/heldout", "--output", "s3://ssrl/evals/main"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"/tmp", "/home/ssrl", "/dev/shm"} <= {m["mountPath"] for m in c["volumeMounts"]}

    multi = rendered("eval-multigpu")["spec"]["template"]["spec"]["containers"][0]
    assert multi["command"] == ["torchrun"] and multi["args"][:6] == ["--standalone", "--nproc-per-node", "2", "-m",
                                                                         "ssrl", "eval"]
    args = ssrl_args(multi)
    assert args[args.index("--limit") + 1] == "50" and args.count("--model") == 2 and args.count("--bench") == 2
    assert multi["resources"]["requests"]["nvidia.com/gpu"] == "2"

    cpu = dry_run(["eval", "--gpus", "0", "--name", "exp1", "-n", "ml", "--set", "eval.extra_args=[--batch-size, '4']"])
    c = cpu["spec"]["template"]["spec"]["containers"][0]
    assert (cpu["metadata"]["name"], cpu["metadata"]["namespace"]) == ("exp1-eval", "ml")
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and c["args"][-2:] == ["--batch-size", "4"]


def test_train_prints_its_progress_configmap():
    """`ssrl submit train` creates the job's progress ConfigMap up front (owned by the job when submitted)."""
    job, cm = dry_run_docs(["train", "--name", "exp1", "-n", "ml"])
    assert (job["kind"], cm["kind"]) == ("PyTorchJob", "ConfigMap")
    assert (cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("exp1-train-progress", "ml")
    assert cm["metadata"]["labels"]["ssrl.dev/progress-of"] == "exp1-train" and "data" not in cm


def test_namespace_defaults_to_the_kubeconfig_context(fake_cluster):
    """Like kubectl and `ssrl jobs`: without -n the context's namespace, not "default"."""
    fake_cluster.write_text(FAKE_KUBECONFIG.replace("context: {cluster: fake, user: u}",
                                                    "context: {cluster: fake, user: u, namespace: ml}"))
    for args in (["generate"], ["train"], ["eval"]):
        assert dry_run(args)["metadata"]["namespace"] == "ml", args
    assert dry_run(["train", "-n", "other"])["metadata"]["namespace"] == "other"


def test_trainer_knows_its_own_pytorchjob():
    """SSRL_JOB_NAME / SSRL_JOB_NAMESPACE come from the pod (downward API), for its progress ConfigMap."""
    for spec in rendered("train")["spec"]["pytorchReplicaSpecs"].values():
        env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
        assert env["SSRL_JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == \
            "metadata.labels['training.kubeflow.org/job-name']"
        assert env["SSRL_JOB_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


@pytest.mark.parametrize("case", ["generate-pytorchjob", "train"])
def test_pytorchjobs_match_crd_and_operator_rules(case):
    pytest.importorskip("jsonschema")
    job = rendered(case)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert not pytorchjob_problems(job)


def test_replica_counts_and_shapes():
    ptj = dry_run(["generate", "--kind", "pytorchjob", "--shards", "3"])
    specs = ptj["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    assert ptj["spec"]["nprocPerNode"] == "1"  # WORLD_SIZE = pods = shards, RANK = shard index
    one = dry_run(["generate", "--kind", "pytorchjob", "--shards", "1"])
    assert list(one["spec"]["pytorchReplicaSpecs"]) == ["Master"]

    train = dry_run(["train", "--workers", "2", "--gpus-per-node", "8", "--nproc-per-node", "8",
                     "--config-map", "my-train", "--name", "exp1", "-n", "ml"])
    assert train["metadata"] == {**train["metadata"], "name": "exp1-train", "namespace": "ml"}
    assert train["spec"]["nprocPerNode"] == "8"
    assert train["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    pod = train["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert c["command"] == ["torchrun"] and c["args"][:5] == ["-m", "ssrl", "train", "--config", "/etc/ssrl/train.yaml"]
    assert c["args"][5:7] == ["--resume", "auto"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "my-train"
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/dev/shm", "/tmp", "/etc/ssrl"} <= mounts

    cpu = dry_run(["train", "--gpus-per-node", "0", "--set", "train.config_path=/app/examples/train-demo.yaml"])
    c = cpu["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert c["args"][3:5] == ["--config", "/app/examples/train-demo.yaml"]


def test_config_file_flags_and_set_precedence(tmp_path):
    cfg = tmp_path / "submit.yaml"
    cfg.write_text(yaml.safe_dump({"name": "fromfile", "generate": {"shards": 2, "inputs": ["s3://b/in"],
                                                                     "tasks": "depth"}}))
    job = dry_run(["generate", "-c", str(cfg), "--shards", "5", "--set", "generate.tasks=shuffle"])
    assert job["metadata"]["name"] == "fromfile-generate"
    assert job["spec"]["completions"] == 5
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--tasks") + 1] == "shuffle"
    assert args[args.index("--input") + 1] == "s3://b/in"


# ---------------------------------------------------------------------------------------------------------------
# policies


@pytest.mark.parametrize("case", list(CASES))
def test_policies(case):
    obj = rendered(case)
    for role, pod in pod_specs(obj):
        where = f"{case}/{role}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"], where
            assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"] and c["resources"]["limits"], where
            assert image_problem(c["image"]) is None, where
            assert ":" in c["image"].rsplit("/", 1)[-1] and not c["image"].endswith(":latest"), where
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/tmp" in mounts, where  # writable scratch on a read-only root
            env = {e["name"]: e for e in c["env"]}
            for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert set(env[var]) == {"name", "valueFrom"}, where
                assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "ssrl-store", where
            for e in c["env"]:  # no credential is ever inline
                if any(k in e["name"] for k in ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY")):
                    assert "value" not in e, (where, e["name"])


def test_secret_key_names_configurable():
    job = dry_run(["generate", "--set", "store_secret=creds", "--set", "store_access_key_key=user",
                   "--set", "store_secret_key_key=pass"])
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": "user"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": "pass"}


@pytest.mark.parametrize("override, needle", [
    ("image_generator=registry.example.com/ssrl/ssrl-generator:latest", "latest"),
    ("image_trainer=registry.example.com/ssrl/ssrl-trainer", "no tag"),
    ("name=Bad_Name", "DNS label"),
    ("generate.shards=0", "at least 1"),
    ("eval.models=[]", "at least one model"),
    ("run_as_user=0", "non-root"),
    ("shards=3", "unknown field shards"),
])
def test_bad_config_is_refused(override, needle):
    result = CliRunner().invoke(submit_app, ["generate", "--dry-run", "--set", override])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------------------------
# images: nothing publishes them, so the registry (or the image) is a setting without a default, as in the chart


def _invoke(args: list[str], **env: str):
    return CliRunner().invoke(submit_app, args, env=env or None)


@pytest.mark.parametrize("args", [["generate", "--dry-run"], ["generate", "--kind", "pytorchjob", "--dry-run"],
                                  ["train", "--dry-run"], ["eval", "--dry-run"], ["train"]])
def test_no_registry_is_refused_with_how_to_set_it(args, monkeypatch, tmp_path):
    """Without a registry there is no image to run: `--dry-run` and a real submit (before any cluster is asked)
    fail naming `make images`, which prints the pins, and every way to set the registry or the image."""
    monkeypatch.delenv("SSRL_REGISTRY")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))  # a submit that got past the image would say so
    result = _invoke(args)
    assert result.exit_code == 2, result.output
    component = "generator" if args[0] == "generate" else "trainer"
    for needle in (f"no {component} image", "make images REGISTRY=<registry> PUSH=1", "digests", "--registry",
                   "$SSRL_REGISTRY", "registry:", "--image", f"$SSRL_IMAGE_{component.upper()}"):
        assert needle in result.output, (needle, result.output)
    assert "Kubernetes" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("how", [["--registry", "ghcr.io/ssrl"], ["--registry", "ghcr.io/ssrl/"],
                                 ["--image", "ghcr.io/ssrl/ssrl-trainer:0.1.0"],
                                 ["--set", "image_trainer=ghcr.io/ssrl/ssrl-trainer:0.1.0@sha256:" + "0" * 64]])
def test_the_old_placeholder_is_refused(how):
    """ghcr.io/ssrl, the old default, is refused as by the chart and `make images`, even pinned to a digest."""
    result = _invoke(["train", "--dry-run", *how])
    assert result.exit_code == 2, result.output
    assert "ghcr.io/ssrl" in result.output and "placeholder" in result.output
    assert "make images REGISTRY=<registry> PUSH=1" in result.output


def _images(args: list[str], config: Path | None = None, **env: str) -> list[str]:
    docs = list(yaml.safe_load_all(_invoke([*args, *(["-c", str(config)] if config else []), "--dry-run"],
                                           **env).stdout))
    return [c["image"] for _, pod in pod_specs(docs[0]) for c in pod["containers"]]


def test_registry_and_images_from_flag_env_and_config(tmp_path, monkeypatch):
    """The registry gives both images at the package's version; an image (flag, env, config key, --set) wins over
    it, with the usual order: config file < flags and their environment variables < --set."""
    ours = f"{REGISTRY}/ssrl-trainer:{__version__}"
    assert _images(["train"]) == [ours]  # SSRL_REGISTRY
    assert _images(["generate"]) == [f"{REGISTRY}/ssrl-generator:{__version__}"]
    assert _images(["eval", "--registry", "reg.local:5000/ml/"]) == [f"reg.local:5000/ml/ssrl-trainer:{__version__}"]
    pinned = f"{REGISTRY}/ssrl-trainer:0.1.0@sha256:{'a' * 64}"
    assert _images(["train"], SSRL_IMAGE_TRAINER=pinned) == [pinned]
    assert _images(["train", "--image", "r.io/t:2"], SSRL_IMAGE_TRAINER=pinned) == ["r.io/t:2"]
    assert _images(["generate"], SSRL_IMAGE_TRAINER=pinned) == [f"{REGISTRY}/ssrl-generator:{__version__}"]

    monkeypatch.delenv("SSRL_REGISTRY")
    config = tmp_path / "submit.yaml"
    config.write_text(yaml.safe_dump({"registry": "from.file/ssrl"}))
    assert _images(["train"], config) == [f"from.file/ssrl/ssrl-trainer:{__version__}"]
    assert _images(["train"], config, SSRL_REGISTRY="from.env/ssrl") == [f"from.env/ssrl/ssrl-trainer:{__version__}"]
    assert _images(["train", "--set", "image_trainer=r.io/t:3"], config, SSRL_IMAGE_TRAINER="r.io/t:2") == ["r.io/t:3"]
    # the generator alone needs only its own image
    assert _images(["generate", "--kind", "pytorchjob", "--image", "r.io/g:1", "--shards", "2"]) == ["r.io/g:1"] * 2


def test_subcommand_help_names_the_image_settings():
    for sub in ("generate", "train", "eval"):
        result = CliRunner().invoke(submit_app, [sub, "--help"], env={"COLUMNS": "200"})
        assert "--registry" in result.output and "SSRL_REGISTRY" in result.output, sub
        assert f"SSRL_IMAGE_{'GENERATOR' if sub == 'generate' else 'TRAINER'}" in result.output, sub


def test_builders_are_pure_objects():
    cfg = SubmitConfig(registry=REGISTRY)
    job, ptj, train = build_generate_job(cfg), build_generate_pytorchjob(cfg), build_train_pytorchjob(cfg)
    assert isinstance(build_eval_job(cfg), type(job))
    from kubeflow.training import KubeflowOrgV1PyTorchJob
    from kubernetes.client import V1Job

    assert isinstance(job, V1Job)
    assert isinstance(ptj, KubeflowOrgV1PyTorchJob) and isinstance(train, KubeflowOrgV1PyTorchJob)
    # ExitCode + cleanPodPolicy Running: a failed rank fails the job and no other pod keeps its GPUs in NCCL
    assert to_dict(train)["spec"]["runPolicy"] == {"backoffLimit": 3, "cleanPodPolicy": "Running",
                                                   "ttlSecondsAfterFinished": 7 * 86400}
    assert {r["restartPolicy"] for r in to_dict(train)["spec"]["pytorchReplicaSpecs"].values()} == {"ExitCode"}
    with pytest.raises(ConfigError):
        SubmitConfig(train=type(cfg.train)(config_map="a", config_path="b"))


# ---------------------------------------------------------------------------------------------------------------
# the generated commands exist


def _options(sub: str) -> set[str]:
    import typer

    from ssrl.cli import app

    command = typer.main.get_command(app).commands[sub]
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("case", list(CASES))
def test_commands_name_real_subcommands_and_flags(case):
    obj = rendered(case)
    for _, pod in pod_specs(obj):
        args = ssrl_args(pod["containers"][0])  # torchrun [...] -m ssrl <sub> ...
        sub, flags = args[0], [a for a in args[1:] if a.startswith("-")]
        known = _options(sub)
        assert flags and set(flags) <= known, (sub, set(flags) - known)


@pytest.mark.parametrize("case", list(CASES))
def test_subcommand_help_lists_flags(case):
    c = pod_specs(rendered(case))[0][1]["containers"][0]
    args = ssrl_args(c)
    exe = Path(sys.executable).with_name("ssrl")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ssrl"]
    proc = subprocess.run([*cmd, args[0], "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    for flag in (a for a in args[1:] if a.startswith("--")):
        assert flag in proc.stdout, flag


# ---------------------------------------------------------------------------------------------------------------
# submitting without a cluster


@pytest.mark.parametrize("args", [["generate"], ["generate", "--kind", "pytorchjob"], ["train"], ["eval"]])
def test_submit_without_cluster_is_one_clear_line(args, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing" / "config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    result = CliRunner().invoke(submit_app, args)
    assert result.exit_code == 1, result.output
    assert "no Kubernetes cluster is configured" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


FAKE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:1"}}]
contexts: [{name: fake, context: {cluster: fake, user: u}}]
current-context: fake
users: [{name: u, user: {token: not-a-secret}}]
"""


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(FAKE_KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setenv("HOME", str(tmp_path))
    return path


def test_submit_unreachable_server_is_one_line(fake_cluster):
    for args in (["generate"], ["train"], ["eval"]):
        result = CliRunner().invoke(submit_app, args)
        assert result.exit_code == 1, result.output
        assert "cannot reach the Kubernetes API server at http://127.0.0.1:1" in result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_placement_flags_reach_every_pod_template():
    """Shared GPU clusters: node selector, tolerations, priority, Kueue label, Multus annotation, NCCL env."""
    flags = ["--node-selector", "pool=a100", "--toleration", "nvidia.com/gpu:NoSchedule",
             "--toleration", "team=ml:NoExecute", "--priority-class", "research",
             "--pod-label", "kueue.x-k8s.io/queue-name=gpu", "--pod-annotation", "k8s.v1.cni.cncf.io/networks=rdma",
             "--env", "NCCL_DEBUG=INFO", "--env", "NCCL_IB_HCA=mlx5"]
    for case in ("generate", "train", "eval"):
        obj = dry_run([case, *flags])
        for where, pod in pod_specs(obj):
            template = (obj["spec"]["pytorchReplicaSpecs"][where.rsplit("/", 1)[-1]]["template"]
                        if obj["kind"] == "PyTorchJob" else obj["spec"]["template"])
            assert pod["nodeSelector"] == {"pool": "a100"} and pod["priorityClassName"] == "research", where
            assert pod["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoExecute"}], where
            labels = template["metadata"]["labels"]
            assert labels["kueue.x-k8s.io/queue-name"] == "gpu" and labels["app.kubernetes.io/part-of"] == "ssrl"
            assert template["metadata"]["annotations"] == {"k8s.v1.cni.cncf.io/networks": "rdma"}
            c = pod["containers"][0]
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_IB_HCA"] == "mlx5", where
            # scratch: the emptyDirs are bounded and the scheduler knows the ephemeral storage they need
            sizes = {v["name"]: v["emptyDir"].get("sizeLimit") for v in pod["volumes"] if v["name"] in ("tmp", "home")}
            assert len(set(sizes.values())) == 1 and None not in sizes.values(), where
            assert c["resources"]["requests"]["ephemeral-storage"] == sizes["tmp"] == \
                c["resources"]["limits"]["ephemeral-storage"], where


@pytest.mark.parametrize("items, needle", [
    (["--pod-label", "app.kubernetes.io/part-of=x"], "set by ssrl"),
    (["--toleration", "nvidia.com/gpu"], "--toleration takes"),
    (["--node-selector", "pool"], "--node-selector takes key=value"),
])
def test_bad_placement_flags_are_one_line(items, needle):
    result = CliRunner().invoke(submit_app, ["train", "--dry-run", *items])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_nproc_follows_gpus_and_rdma_knobs():
    assert dry_run(["train", "--gpus-per-node", "8"])["spec"]["nprocPerNode"] == "8"
    assert dry_run(["train", "--gpus-per-node", "0"])["spec"]["nprocPerNode"] == "1"
    assert dry_run(["train", "--gpus-per-node", "8", "--nproc-per-node", "4"])["spec"]["nprocPerNode"] == "4"
    job = dry_run(["train", "--set", "train.ipc_lock=true", "--set", 'train.extra_resources={"rdma/hca": 1}'])
    c = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["capabilities"] == {"add": ["IPC_LOCK"], "drop": ["ALL"]}
    assert c["resources"]["limits"]["rdma/hca"] == c["resources"]["requests"]["rdma/hca"] == "1"
