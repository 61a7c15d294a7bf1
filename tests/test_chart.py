"""The Helm chart across upgrades and GitOps renders (rendered with the real helm; the cluster tier runs a real
``helm upgrade``): stable pod-template labels, run objects named after their spec, MinIO not rolled by a render,
no pods referencing a Secret nobody creates."""

from __future__ import annotations

import shutil

import pytest
import yaml

from tests.test_deploy import CHART, helm, load_docs, run

RUN_OBJECTS = {("Job", "generate"), ("PyTorchJob", "train"), ("Job", "eval")}
REGISTRY = "registry.example.com/ssrl"


def render(*sets: str, chart=None) -> list[dict]:
    cmd = [helm(), "template", "r", chart or CHART, "--namespace", "ssrl", "--kube-version", "1.31.0",
           "--set", "eval.enabled=true", "--set", f"images.registry={REGISTRY}"]
    for s in sets:
        cmd += ["--set", s]
    out = run(cmd)
    assert out.returncode == 0, out.stderr
    return load_docs(out.stdout)


def run_objects(objs: list[dict]) -> dict[str, dict]:
    """component -> its generate/eval Job or train PyTorchJob."""
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objs
            if (o["kind"], o["metadata"]["labels"].get("app.kubernetes.io/component")) in RUN_OBJECTS}


def pod_templates(obj: dict) -> list[dict]:
    spec = obj["spec"]
    if obj["kind"] == "PyTorchJob":
        return [r["template"] for r in spec["pytorchReplicaSpecs"].values()]
    return [spec["template"]] if "template" in spec else []


def test_pod_templates_carry_only_stable_labels(tmp_path):
    """A Job's pod template is immutable: a chart or app version in its labels made every upgrade fail with
    "field is immutable". A new chart version renders the same pod templates, hence the same object names."""
    bumped = tmp_path / "ssrl"
    shutil.copytree(CHART, bumped)
    meta = yaml.safe_load((bumped / "Chart.yaml").read_text())
    meta.update(version="9.9.9", appVersion="9.9.9")
    (bumped / "Chart.yaml").write_text(yaml.safe_dump(meta))
    before, after = render(), render(chart=bumped)
    for obj in before:
        for template in pod_templates(obj) if "spec" in obj else []:
            labels = template["metadata"]["labels"]
            assert not {"helm.sh/chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"} & set(labels), \
                (obj["kind"], obj["metadata"]["name"], labels)
            assert labels["app.kubernetes.io/part-of"] == "ssrl" and labels["app.kubernetes.io/instance"] == "r"
    old, new = run_objects(before), run_objects(after)
    assert set(old) == {"generate", "train", "eval"}
    for component in old:
        assert old[component]["metadata"]["name"] == new[component]["metadata"]["name"], component
        assert pod_templates(old[component]) == pod_templates(new[component]), component


def test_a_changed_spec_is_a_new_object_an_unchanged_one_keeps_its_name():
    """The image tag, config or eval switch changes only the objects whose spec changes: those get a new name (the
    upgrade creates them and deletes the old ones: no immutable-field error, no silently ignored PyTorchJob edit)."""
    base = run_objects(render())
    names = {c: o["metadata"]["name"] for c, o in base.items()}
    for sets, changed in [(["images.generator.tag=0.1.1"], {"generate"}),
                          (["images.trainer.tag=0.1.1"], {"train", "eval"}),
                          (["train.config=max_steps: 1000"], {"train"}),
                          (["eval.limit=50"], {"eval"})]:
        now = {c: o["metadata"]["name"] for c, o in run_objects(render(*sets)).items()}
        assert {c for c in names if names[c] != now[c]} == changed, sets
    for obj in base.values():
        assert len(obj["metadata"]["name"]) <= 53  # + "-worker-NN" stays a DNS label for the operator's pods
    long = run_objects(render("fullnameOverride=" + "x" * 50))
    assert all(len(o["metadata"]["name"]) <= 54 for o in long.values())
    # Enabling eval adds the eval Job and leaves the others running.
    no_eval = run_objects(render("eval.enabled=false"))
    assert set(no_eval) == {"generate", "train"}
    assert all(no_eval[c]["metadata"]["name"] == names[c] for c in no_eval)


def test_progress_configmap_and_role_follow_the_trainer_name():
    for sets in ([], ["images.trainer.tag=0.1.1"]):
        objs = render(*sets)
        train = run_objects(objs)["train"]["metadata"]["name"]
        role = next(o for o in objs if o["kind"] == "Role")
        assert role["rules"][0]["resourceNames"] == [f"{train}-progress"]
        assert any(o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{train}-progress" for o in objs)


def test_gitops_renders_do_not_roll_minio():
    """`helm template` has no lookup: the generated password differs per render, the MinIO pod template must not."""
    first, second = render(), render()
    secrets = [next(o for o in objs if o["kind"] == "Secret") for objs in (first, second)]
    assert secrets[0]["data"] != secrets[1]["data"]  # the generated password: the reason for existingSecret
    sts = [next(o for o in objs if o["kind"] == "StatefulSet") for objs in (first, second)]
    assert sts[0]["spec"]["template"] == sts[1]["spec"]["template"]
    changed = next(o for o in render("minio.auth.secretKey=another-password") if o["kind"] == "StatefulSet")
    assert changed["spec"]["template"] != sts[0]["spec"]["template"]  # a deliberate credential change restarts


@pytest.mark.parametrize("sets", [["minio.enabled=false", "store.endpoint=https://s3.example.com"]])
def test_external_store_without_existing_secret_is_refused(sets):
    """Pods would reference a Secret nobody creates (the chart makes credentials only for its own MinIO)."""
    cmd = [helm(), "template", "r", CHART, "--set", f"images.registry={REGISTRY}"]
    for s in sets:
        cmd += ["--set", s]
    out = run(cmd)
    assert out.returncode != 0
    assert "store.existingSecret is required when minio.enabled=false" in out.stderr
    ok = run([*cmd, "--set", "store.existingSecret=s3-credentials"])
    assert ok.returncode == 0, ok.stderr


def test_placement_and_knobs_per_component():
    """Tolerations, affinity, nodeSelector, priorityClassName, pod labels/annotations, env, extra resources and the
    scratch size reach each component's pods; nprocPerNode follows the GPUs; the trainer fails fast (ExitCode,
    cleanPodPolicy Running) and may keep its PyTorchJob for a TTL."""
    sets = []
    for c in ("generate", "train", "eval"):
        sets += [f"{c}.nodeSelector.pool={c}", f"{c}.tolerations[0].key=gpu", f"{c}.tolerations[0].operator=Exists",
                 f"{c}.priorityClassName=p-{c}", f"{c}.podLabels.kueue\\.x-k8s\\.io/queue-name=q-{c}",
                 f"{c}.podAnnotations.k8s\\.v1\\.cni\\.cncf\\.io/networks=net-{c}", f"{c}.extraEnv[0].name=NCCL_DEBUG",
                 f"{c}.extraEnv[0].value=INFO", f"{c}.scratchSize=7Gi", f"{c}.extraResources.rdma/hca=1",
                 f"{c}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
                 f".matchExpressions[0].key=zone",
                 f"{c}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
                 f".matchExpressions[0].operator=Exists"]
    objs = render(*sets, "train.gpusPerNode=4", "train.ipcLock=true", "train.ttlSecondsAfterFinished=3600")
    for component, obj in run_objects(objs).items():
        for template in pod_templates(obj):
            pod, c = template["spec"], template["spec"]["containers"][0]
            assert pod["nodeSelector"] == {"pool": component} and pod["priorityClassName"] == f"p-{component}"
            assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
            assert pod["affinity"]["nodeAffinity"]
            assert template["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == f"q-{component}"
            assert template["metadata"]["labels"]["app.kubernetes.io/component"] == component
            assert template["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] == f"net-{component}"
            assert {"name": "NCCL_DEBUG", "value": "INFO"} in c["env"]
            for part in ("requests", "limits"):
                assert c["resources"][part]["ephemeral-storage"] == "7Gi" and c["resources"][part]["rdma/hca"] == 1
            assert {v["name"]: v["emptyDir"]["sizeLimit"] for v in pod["volumes"] if v["name"] in ("tmp", "home")} \
                == {"tmp": "7Gi", "home": "7Gi"}
    train = run_objects(objs)["train"]["spec"]
    assert train["nprocPerNode"] == "4"
    assert train["runPolicy"] == {"backoffLimit": 3, "cleanPodPolicy": "Running", "ttlSecondsAfterFinished": 3600}
    master = train["pytorchReplicaSpecs"]["Master"]
    assert master["restartPolicy"] == "ExitCode"
    assert master["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] == {
        "add": ["IPC_LOCK"], "drop": ["ALL"]}
    assert run_objects(render("train.gpusPerNode=0"))["train"]["spec"]["nprocPerNode"] == "1"


def test_the_registry_is_required_and_not_the_placeholder():
    """Nothing publishes ghcr.io/ssrl: the chart refuses to render pods nobody can pull, naming `make images`."""
    for sets in ([], ["images.registry=ghcr.io/ssrl"], ["images.registry=ghcr.io/ssrl/"]):
        cmd = [helm(), "template", "r", CHART]
        for s in sets:
            cmd += ["--set", s]
        out = run(cmd)
        assert out.returncode != 0 and "make images REGISTRY=" in out.stderr, (sets, out.stderr)
    objs = render("images.trainer.tag=0.1.0@sha256:" + "a" * 64)
    images = {c["image"] for o in objs if "spec" in o for t in pod_templates(o) for c in t["spec"]["containers"]}
    assert images == {f"{REGISTRY}/ssrl-generator:0.1.0", f"{REGISTRY}/ssrl-trainer:0.1.0@sha256:{'a' * 64}",
                      f"{REGISTRY}/ssrl-minio:20260212-7aac2a2"}


def test_shared_cache_claim_one_folder_per_pod():
    """cacheClaim (an RWX PVC) holds ~/.cache/ssrl: the trainer's pods each get their own sub-folder (named after
    the pod, stable across restarts), so no two pods write one file; without it nothing mounts a claim."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from tests.conftest import pytorchjob_problems

    assert not any(v.get("persistentVolumeClaim") for o in run_objects(render()).values()
                   for t in pod_templates(o) for v in t["spec"]["volumes"])
    objs = run_objects(render("cacheClaim=shared-cache", "train.workers=1"))
    for component, sub in (("train", "train/$(SSRL_POD_NAME)"), ("eval", "eval")):
        for t in pod_templates(objs[component]):
            c = t["spec"]["containers"][0]
            assert {"name": "cache", "mountPath": "/home/ssrl/.cache/ssrl", "subPathExpr": sub} in c["volumeMounts"]
            assert {"name": "cache", "persistentVolumeClaim": {"claimName": "shared-cache"}} in t["spec"]["volumes"]
            if component == "train":
                assert {"name": "SSRL_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c["env"]
    assert "cache" not in {m["name"] for t in pod_templates(objs["generate"]) for m in t["spec"]["containers"][0]
                           ["volumeMounts"]}
    kubernetes_validate.validate(objs["eval"], "1.31", strict=True)
    assert not pytorchjob_problems(objs["train"])
