"""Real pods (issue 11): the project's generator and trainer images, built from docker/ on a local Debian base, run
on a real kubelet + containerd node (tests/realnode.py) registered with the control plane of tests/kube.py,
through the user's path: the generator's Indexed Job, Master + Worker training that loses its Worker and
resumes when resubmitted, and the Helm chart's install, test, upgrade, eval and uninstall, against a MinIO the
pods reach by Service name over the CNI bridge.

Opt-in: ``make test-realnode`` (``pytest -p no:xdist -m realnode tests/realnode_tier``); root needed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_for
from tests.netpol import Endpoint
from tests.realnode import (
    GATEWAY,
    GENERATOR_IMAGE,
    NODE,
    TRAINER_IMAGE,
    BridgeMinio,
    RealCluster,
    RealNode,
    cleanup_leftovers,
    images,
    missing,
)
from tests.servers import ACCESS_KEY, ROOT, SECRET_KEY, free_port, tool
from tests.test_network import check_network

pytestmark = [pytest.mark.realnode, pytest.mark.slow, pytest.mark.timeout(1800)]
TIMINGS: dict[str, float] = {}
#: ``ssrl train``'s config for the chart's and the kustomize overlay's trainer: 2 steps of the tiny model on CPU.
TRAIN_CONFIG = """deepspeed: zero2
max_steps: 2
save_steps: 1
max_completion_length: 12
min_pixels: 3136
max_pixels: 12544
per_device_train_batch_size: 4
num_generations: 2
report_to: []
max_samples: 32
"""


@pytest.fixture(scope="session")
def tier(tmp_path_factory: pytest.TempPathFactory):
    gaps = missing()
    if gaps:
        pytest.skip("real-node tier needs: " + ", ".join(gaps))
    cleanup_leftovers()  # a killed earlier run: its daemons, bridge, chains, cgroups, mounts (tests/realnode.py)
    t0 = time.monotonic()
    archives = images("pause") + images("generator") + images("init") + images("minio") + images("trainer")
    TIMINGS["images"] = time.monotonic() - t0
    tmp = tmp_path_factory.mktemp("realnode")
    cluster = RealCluster(tmp / "cluster")
    node = RealNode(cluster, tmp / "node")
    minio = BridgeMinio("minio", tool("minio"), tmp / "minio")
    try:
        node.prepare()  # the bridge first: the API server listens on its gateway address, where pods reach it
        t0 = time.monotonic()
        cluster.start()
        TIMINGS["control plane"] = time.monotonic() - t0
        t0 = time.monotonic()
        node.start(archives)
        TIMINGS["node Ready"] = time.monotonic() - t0
        TIMINGS.update(node.timings)
        minio.start(timeout=120)
        minio.make_bucket("ssrl")
        yield cluster, node, minio
    finally:
        t0 = time.monotonic()
        try:
            node.stop()
        finally:
            TIMINGS["node teardown"] = time.monotonic() - t0
            t0 = time.monotonic()
            minio.stop()
            cluster.stop()
            TIMINGS["control plane + MinIO stop"] = time.monotonic() - t0
        TIMINGS.update({f"stop: {k}": v for k, v in node.timings.items() if k in ("pods removed", "daemons stopped")})
        print("\nreal-node tier timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))


def get(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def ssrl_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it from outside the cluster (host venv, KUBECONFIG and store credentials)."""
    r = subprocess.run([sys.executable, "-m", "ssrl", *args], capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, f"ssrl {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


def store_for_pods(cluster, ns: str, minio) -> None:
    """The namespace's store credentials Secret, and the store by Service name as the chart gives it to pods
    (http://<release>-minio:9000): a Service without selector whose EndpointSlice is the test's MinIO on the
    gateway address (CoreDNS + kube-proxy)."""
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "secret", "generic", "ssrl-store", "-n", ns,
                    f"--from-literal=AWS_ACCESS_KEY_ID={ACCESS_KEY}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={SECRET_KEY}")
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=f"""apiVersion: v1
kind: Service
metadata: {{name: minio}}
spec:
  ports: [{{name: s3, port: 9000}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: minio-test, labels: {{kubernetes.io/service-name: minio}}}}
addressType: IPv4
endpoints: [{{addresses: ["{GATEWAY}"]}}]
ports: [{{name: s3, port: {minio.port}, protocol: TCP}}]
""")


def describe(cluster, ns: str) -> str:
    return cluster.kubectl("describe", "pods", "-n", ns, check=False).stdout[-6000:]


def conditions(cluster, kind: str, name: str, ns: str) -> dict[str, str]:
    """A Job's or PyTorchJob's status conditions by type; raises, with the pods' state and logs, once it failed."""
    conds = {c["type"]: c["status"] for c in get(cluster, kind, name, "-n", ns).get("status", {})
             .get("conditions", [])}
    if conds.get("Failed") == "True":
        raise AssertionError(f"{kind} {name} failed:\n{describe(cluster, ns)}\n{logs(cluster, ns)}")
    return conds


def finished(cluster, kind: str, name: str, ns: str) -> bool:
    """Whether a Job (Complete) or PyTorchJob (Succeeded) is done; raises once it failed."""
    conds = conditions(cluster, kind, name, ns)
    return conds.get("Succeeded") == "True" or conds.get("Complete") == "True"


def local_volume(cluster, path: Path, name: str, storage_class: str, size: str) -> None:
    """A hostPath PersistentVolume for the bundled MinIO's claim, as a cluster's provisioner would make one
    (world-writable, as local-path provisioners create them: MinIO runs as the chart's non-root user)."""
    path.mkdir()
    path.chmod(0o777)
    cluster.kubectl("apply", "-f", "-", input=f"""apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  capacity: {{storage: {size}}}
  accessModes: [ReadWriteOnce]
  storageClassName: {storage_class}
  persistentVolumeReclaimPolicy: Retain
  hostPath: {{path: "{path}", type: Directory}}
""")


def store_keys(cluster, ns: str, secret: str) -> dict[str, str]:
    """A store credentials Secret's keys, as the README reads them (kubectl get secret ... | base64 -d)."""
    data = get(cluster, "secret", secret, "-n", ns)["data"]
    return {k: base64.b64decode(data[k]).decode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


@contextlib.contextmanager
def store_port_forward(cluster, ns: str, log: Path):
    """The README's ``kubectl port-forward svc/ssrl-minio`` from outside the cluster: yields the settings a user's
    shell then has (endpoint + the root keys read from the ``ssrl-store`` Secret). kubectl exits ("lost
    connection to pod") when MinIO resets a connection, which it does on a refused upload, so it runs in a loop,
    as the README advises. Its output goes to ``log``: a pipe nobody reads fills up and stalls it."""
    port, stop = free_port(), threading.Event()
    cmd = [str(tool("kubectl")), "-n", ns, "port-forward", "svc/ssrl-minio", f"{port}:9000"]

    def forward() -> None:
        with log.open("a") as out:
            while not stop.is_set():
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=cluster.env())
                while proc.poll() is None and not stop.wait(0.2):
                    pass
                proc.kill()
                proc.wait()

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        wait_for("kubectl port-forward listening", lambda: log.exists() and "Forwarding from" in log.read_text(), 60)
        yield {**cluster.env(), "SSRL_S3_ENDPOINT": f"http://127.0.0.1:{port}", **store_keys(cluster, ns, "ssrl-store")}
    finally:
        stop.set()
        thread.join(30)


def test_node_is_real_and_advertises_gpus(tier) -> None:
    cluster, _node, _ = tier
    n = get(cluster, "node", NODE)
    assert n["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert n["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.2"
    assert {"type": "InternalIP", "address": GATEWAY} in n["status"]["addresses"]
    assert n["status"]["allocatable"]["nvidia.com/gpu"] == "2"


def test_ssrl_version_in_a_real_pod(tier) -> None:
    cluster, node, _ = tier
    expected = subprocess.run([sys.executable, "-m", "ssrl", "--version"], capture_output=True, text=True,
                              check=True, cwd=ROOT).stdout.strip()
    cluster.kubectl("apply", "-f", "-", input=f"""apiVersion: v1
kind: Pod
metadata: {{name: version, namespace: default}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {NODE}}}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  securityContext: {{runAsNonRoot: true, runAsUser: 10001, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: ssrl
    image: {GENERATOR_IMAGE}
    imagePullPolicy: Never
    args: ["--version"]
    resources: {{requests: {{cpu: 50m, memory: 64Mi}}, limits: {{cpu: "1", memory: 512Mi}}}}
    securityContext: {{readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
""")
    t0 = time.monotonic()
    phase = wait_for("version pod finished", lambda: get(cluster, "pod", "version").get("status", {}).get("phase")
                     in ("Succeeded", "Failed") and get(cluster, "pod", "version")["status"]["phase"], 180,
                     diagnose=lambda: describe(cluster, "default") + node.log_tail("kubelet"))
    TIMINGS["version pod"] = time.monotonic() - t0
    logs = cluster.kubectl("logs", "version").stdout.strip()  # through the API server's proxy to the kubelet
    assert phase == "Succeeded", (phase, logs, describe(cluster, "default"))
    assert logs == expected


def test_generator_indexed_job_commits_shards_and_manifest(tier, tmp_path: Path) -> None:
    cluster, node, minio = tier
    env = {**cluster.env(), **minio.env()}

    def ssrl(*args: str) -> subprocess.CompletedProcess[str]:
        return ssrl_cli(env, *args)

    # Sources go into MinIO from outside the cluster, as the README tells users.
    ssrl("synth", str(tmp_path / "synth"), "--count", "6", "--seed", "0")
    ssrl("store", "upload", str(tmp_path / "synth"), "s3://ssrl/sources/synth")
    ns = "gen"
    store_for_pods(cluster, ns, minio)
    t0 = time.monotonic()
    ssrl("submit", "generate", "--name", "corpus", "-n", ns, "--kind", "job", "--set", "generate.shards=2",
         "--image", GENERATOR_IMAGE, "--set", "image_pull_policy=Never", "--set", "store_endpoint=http://minio:9000",
         "--node-selector", f"kubernetes.io/hostname={NODE}", "--set", "generate.scratch_size=1Gi",
         "--set", 'generate.resources={requests: {cpu: 100m, memory: 256Mi}, limits: {cpu: "1", memory: 2Gi}}',
         # 6 sources in shards of 3: two data shards, one per pod, so both pods must commit theirs.
         "--set", 'generate.extra_args=["--set", "shard_size=3"]',
         "-i", "s3://ssrl/sources/synth", "-o", "s3://ssrl/tasks/real")

    def done():
        status = get(cluster, "job", "corpus-generate", "-n", ns).get("status", {})
        if status.get("failed"):
            raise AssertionError(f"generator pod failed: {status}\n{describe(cluster, ns)}\n" + "\n".join(
                cluster.kubectl("logs", "-n", ns, p["metadata"]["name"], check=False).stdout[-3000:]
                for p in get(cluster, "pods", "-n", ns)["items"]))
        return status.get("succeeded") == 2 and status

    wait_for("generator Job complete", done, 600, diagnose=lambda: describe(cluster, ns) + node.log_tail("kubelet"))
    TIMINGS["generator job"] = time.monotonic() - t0
    pods = get(cluster, "pods", "-n", ns, "-l", "job-name=corpus-generate")["items"]
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1"]
    assert {p["spec"]["nodeName"] for p in pods} == {NODE}
    assert all(p["status"]["podIP"].startswith(GATEWAY.rsplit(".", 1)[0] + ".") for p in pods)
    # What the real pods committed, read back from outside the cluster.
    listing = ssrl("store", "ls", "s3://ssrl/tasks/real").stdout
    for name in ("shard-00000.parquet", "shard-00001.parquet", "manifest.json"):
        assert name in listing, listing
    manifest = json.loads(subprocess.run([sys.executable, "-c", "import sys; from ssrl.store import read_url; "
                                          "sys.stdout.buffer.write(read_url(sys.argv[1]))",
                                          "s3://ssrl/tasks/real/manifest.json"], capture_output=True, env=env,
                                         check=True, cwd=ROOT).stdout)
    print(json.dumps({k: manifest[k] for k in manifest if k != "config"}, indent=1)[:3000])
    ssrl("verify", "s3://ssrl/tasks/real")


def test_service_name_and_cluster_ip_reach_a_pod(tier) -> None:
    """CoreDNS resolves a Service's name in a pod, kube-proxy's rules carry its ClusterIP to the backing pod."""
    cluster, node, _ = tier
    ns = "svc"
    cluster.kubectl("create", "namespace", ns)
    pod = f"""  nodeSelector: {{kubernetes.io/hostname: {NODE}}}
  terminationGracePeriodSeconds: 0
  automountServiceAccountToken: false
  securityContext: {{runAsNonRoot: true, runAsUser: 10001}}"""
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=f"""apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
{pod}
  containers:
  - name: web
    image: {GENERATOR_IMAGE}
    imagePullPolicy: Never
    command: ["python", "-m", "http.server", "8000", "-d", "/opt/venv"]
    readinessProbe: {{tcpSocket: {{port: 8000}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8000}}]
""")
    cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/web", "--timeout=120s", timeout=150)
    cluster_ip = get(cluster, "service", "web", "-n", ns)["spec"]["clusterIP"]
    # kube-proxy may not have synced the new endpoint yet: the client retries.
    script = ("import socket, time, urllib.request\n"
              "for _ in range(30):\n"
              "    try:\n"
              f"        ip = socket.gethostbyname('web.{ns}.svc.cluster.local')\n"
              f"        status = urllib.request.urlopen('http://web.{ns}.svc.cluster.local/', timeout=3).status\n"
              "        print(ip, status)\n"
              "        break\n"
              "    except Exception as e:\n"
              "        print('retry', e)\n"
              "        time.sleep(1)\n"
              "else:\n"
              "    raise SystemExit(1)\n")
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=f"""apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
{pod}
  restartPolicy: Never
  containers:
  - name: client
    image: {GENERATOR_IMAGE}
    imagePullPolicy: Never
    command: ["python", "-c", {json.dumps(script)}]
""")
    phase = wait_for("client finished", lambda: get(cluster, "pod", "client", "-n", ns).get("status", {}).get(
        "phase") in ("Succeeded", "Failed") and get(cluster, "pod", "client", "-n", ns)["status"]["phase"], 120,
        diagnose=lambda: describe(cluster, ns) + node.log_tail("kube-proxy"))
    logs = cluster.kubectl("logs", "-n", ns, "client").stdout
    assert phase == "Succeeded", logs
    assert logs.strip().splitlines()[-1] == f"{cluster_ip} 200", logs


#: The tiny model's settings that keep a CPU step short (tests/test_multinode.py's FAST, paper reward kept).
TRAIN_ARGS = ["--max-steps", "6", "--deepspeed", "zero2", "--set", "save_steps=1", "--set", "keep_checkpoints=2",
              "--set", "max_completion_length=12", "--set", "min_pixels=3136", "--set", "max_pixels=12544",
              "--set", "per_device_train_batch_size=4", "--set", "num_generations=2", "--set", "report_to=[]",
              "--set", "max_samples=64"]


def test_trainer_pytorchjob_lost_worker_then_resume(tier, tmp_path: Path) -> None:
    """`ssrl submit train --dry-run | kubectl create -f -`: the trainer image's Master and Worker pods (one process
    each, ZeRO-2 on gloo, rendezvous through the Master's Service) train from a base model and dataset put into
    the store from outside. After the first committed step the Worker pod is deleted: the Master fails at once,
    the job fails and no trainer pod is left running (restartPolicy ExitCode, cleanPodPolicy Running); the same
    YAML applied again resumes from the store on empty disks and finishes at its last step. Each pod uploads its
    own optimizer shard, rank 0 writes its progress through the API server (ServiceAccount token, the README's
    Role), `ssrl jobs status` reads it, and `ssrl ckpt pull --weights-only` from outside fetches a model
    `from_pretrained` loads."""
    from ssrl.store import open_store
    from ssrl.store.checkpoints import latest_step

    cluster, node, minio = tier
    env = {**cluster.env(), **minio.env()}
    ssrl_cli(env, "tiny-model", str(tmp_path / "tiny"))
    ssrl_cli(env, "model", "push", str(tmp_path / "tiny"), "s3://ssrl/models/base")
    ssrl_cli(env, "synth", str(tmp_path / "synth"), "--count", "8", "--seed", "3")
    ssrl_cli(env, "generate", "-i", str(tmp_path / "synth"), "-o", "s3://ssrl/tasks/train")
    ns, job = "train", "t1-train"
    store_for_pods(cluster, ns, minio)
    # The README's least privilege for `ssrl submit train --set service_account=…`: get/patch its progress only.
    cluster.kubectl("create", "serviceaccount", "trainer", "-n", ns)
    cluster.kubectl("create", "role", "progress", "-n", ns, "--verb=get,patch", "--resource=configmaps",
                    f"--resource-name={job}-progress")
    cluster.kubectl("create", "rolebinding", "progress", "-n", ns, "--role=progress", f"--serviceaccount={ns}:trainer")
    manifest = ssrl_cli(
        env, "submit", "train", "--dry-run", "--name", "t1", "-n", ns, "--image", TRAINER_IMAGE,
        "--set", "image_pull_policy=Never", "--set", "store_endpoint=http://minio:9000",
        "--set", "service_account=trainer", "--workers", "1", "--gpus-per-node", "1", "--nproc-per-node", "1",
        "--model", "s3://ssrl/models/base", "--dataset", "s3://ssrl/tasks/train", "-o", "s3://ssrl/runs/t1",
        "--node-selector", f"kubernetes.io/hostname={NODE}", "--set", "train.scratch_size=4Gi",
        "--set", "train.shm_size=512Mi", "--env", "OMP_NUM_THREADS=1",
        "--set", 'train.resources={requests: {cpu: 100m, memory: 1Gi}, limits: {cpu: "2", memory: 6Gi}}',
        "--set", "train.extra_args=" + json.dumps(TRAIN_ARGS)).stdout
    t0 = time.monotonic()
    cluster.kubectl("create", "-f", "-", input=manifest)

    def pods() -> dict[str, dict]:
        items = get(cluster, "pods", "-n", ns, "-l", f"training.kubeflow.org/job-name={job}")["items"]
        return {p["metadata"]["labels"]["training.kubeflow.org/replica-type"]: p for p in items}

    def diagnose() -> str:
        return describe(cluster, ns) + logs(cluster, ns) + node.log_tail("kubelet")

    def committed() -> int | None:
        conditions(cluster, "pytorchjob", job, ns)  # raises once the job failed
        return latest_step(run)

    with pytest.MonkeyPatch.context() as mp:
        for k, v in minio.env().items():
            mp.setenv(k, v)
        run = open_store("s3://ssrl/runs/t1")
        # Fault: the Worker pod is lost (deleted at once, as a node loss) after the first committed step.
        cut = wait_for("a committed step", committed, 900, diagnose=diagnose)
        TIMINGS["trainer: first commit"] = time.monotonic() - t0
        cluster.kubectl("delete", "pod", "-n", ns, f"{job}-worker-0", "--grace-period=0", "--force")
        lost = time.monotonic()
        # The Master's gloo connection to it breaks, its torchrun exits 1, the job fails and the operator removes
        # what still runs: no rank is left waiting for its peer (on GPUs: holding them in NCCL).
        wait_for("the job Failed", lambda: {c["type"]: c["status"] for c in get(
            cluster, "pytorchjob", job, "-n", ns).get("status", {}).get("conditions", [])}.get("Failed") == "True",
            300, diagnose=diagnose)
        wait_for("no trainer pod running", lambda: not [p for p in pods().values()
                                                        if p["status"].get("phase") in ("Pending", "Running")],
                 120, diagnose=diagnose)
        TIMINGS["trainer: worker lost to job failed, pods gone"] = time.monotonic() - lost
        # Resubmitted as the README says (the same YAML, `kubectl apply`): resumes from the store.
        cluster.kubectl("delete", "pytorchjob", job, "-n", ns)
        t1 = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=manifest)
        wait_for("the resubmitted PyTorchJob Succeeded", lambda: finished(cluster, "pytorchjob", job, ns),
                 1200, diagnose=diagnose)
        TIMINGS["trainer: resubmitted job"] = time.monotonic() - t1
        assert latest_step(run) == 6
        files = json.loads(run.read_bytes("step-6/_COMMIT.json"))["files"]
        metrics = run.read_bytes("metrics.jsonl").decode()
    # (A Worker still running when the Master finishes is removed by cleanPodPolicy Running.)
    assert {p["spec"]["nodeName"] for p in pods().values()} == {NODE}
    # The new pods started on empty disks and resumed at a step committed before the loss (or a later one
    # committed before the Master noticed), with every rank's optimizer state from the store.
    master_log = cluster.kubectl("logs", "-n", ns, f"{job}-master-0").stdout
    resumed = [int(line.rsplit("resumed from committed step ", 1)[1].split()[0])
               for line in master_log.splitlines() if "resumed from committed step " in line]
    assert resumed and resumed[-1] >= cut, master_log[-4000:]
    # Each pod wrote its own rank's optimizer shard on its own disk; both reached the store.
    assert any("zero_pp_rank_0_" in f for f in files) and any("zero_pp_rank_1_" in f for f in files), files
    steps = [json.loads(line)["step"] for line in metrics.splitlines() if line.strip()]
    assert max(steps) == 6, metrics[-2000:]
    status = json.loads(ssrl_cli(env, "jobs", "status", job, "-n", ns, "--json").stdout)
    assert status["progress"]["step"] == 6 and status["progress"]["max_steps"] == 6, status
    ssrl_cli(env, "ckpt", "pull", "s3://ssrl/runs/t1", str(tmp_path / "trained"), "--weights-only")
    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(tmp_path / "trained")


def logs(cluster, ns: str) -> str:
    return "\n".join(f"--- {p['metadata']['name']}\n" + cluster.kubectl(
        "logs", "-n", ns, p["metadata"]["name"], "--all-containers", check=False).stdout[-4000:]
        for p in get(cluster, "pods", "-n", ns)["items"])


def test_helm_release_on_real_pods(tier, tmp_path: Path) -> None:
    """The README's deployment steps 2-6 with the chart and its bundled MinIO, on real pods: `helm install` with
    no jobs starts MinIO (the image built from docker/minio.Dockerfile, its volume bound to a local
    PersistentVolume) and runs the bucket-init hook and `helm test`'s pod as real containers; sources, base model
    and held-out tasks go in from outside through `kubectl port-forward` with the root credentials read from the
    chart's Secret; `helm upgrade` enabling generate and train starts both, the trainer (Master + Worker, ZeRO-2
    on gloo) waiting for the dataset's manifest; `ssrl jobs status` shows the step rank 0 wrote; `ssrl ckpt
    pull` with the read-only credentials fetches weights that load; `helm upgrade` with a new trainer tag and
    eval replaces the PyTorchJob (which resumes at its last step) and runs the evaluation, whose report lands in
    the store; the NetworkPolicies (not enforced by the bridge CNI) admit every real pod that talks to MinIO, and
    only those; `helm uninstall` leaves no pod."""
    from minio import Minio

    cluster, node, _ = tier
    helm, ns, bucket = str(tool("helm")), "rel", "ssrl"

    def run(*args: str, timeout: float = 900) -> str:
        r = subprocess.run([helm, *args], capture_output=True, text=True, env=cluster.env(), timeout=timeout)
        assert r.returncode == 0, f"helm {' '.join(args)}:\n{r.stdout}\n{r.stderr}\n{describe(cluster, ns)}"
        return r.stdout

    def named(kind: str, component: str) -> list[str]:
        return [o["metadata"]["name"] for o in get(cluster, kind, "-n", ns)["items"]
                if o["metadata"]["labels"].get("app.kubernetes.io/component") == component]

    local_volume(cluster, tmp_path / "minio-data", "realnode-minio", "realnode-local", "2Gi")
    node.ctr("images", "tag", TRAINER_IMAGE, TRAINER_IMAGE + "-b")  # the upgrade's "new" trainer tag
    values = tmp_path / "values.yaml"
    values.write_text(f"""images:
  registry: localhost
  generator: {{tag: realnode, pullPolicy: Never}}
  trainer: {{tag: realnode, pullPolicy: Never}}
  minio: {{tag: realnode, pullPolicy: Never}}
store: {{bucket: {bucket}}}
minio:
  persistence: {{size: 1Gi, storageClass: realnode-local}}
  resources: {{requests: {{cpu: 50m, memory: 256Mi}}, limits: {{cpu: "1", memory: 2Gi}}}}
networkPolicy: {{enabled: true, defaultDeny: true}}
bucketInit:
  resources: {{requests: {{cpu: 50m, memory: 64Mi}}, limits: {{cpu: "1", memory: 512Mi}}}}
generate:
  enabled: false
  shards: 2
  scratchSize: 1Gi
  resources: {{requests: {{cpu: 50m, memory: 256Mi}}, limits: {{cpu: "1", memory: 2Gi}}}}
  nodeSelector: {{kubernetes.io/hostname: {NODE}}}
train:
  enabled: false
  workers: 1
  gpusPerNode: 1
  scratchSize: 4Gi
  shmSize: 512Mi
  config: |
{textwrap.indent(TRAIN_CONFIG, "    ")}  extraEnv: [{{name: OMP_NUM_THREADS, value: "1"}}]
  resources: {{requests: {{cpu: 50m, memory: 1Gi}}, limits: {{cpu: "2", memory: 6Gi}}}}
  nodeSelector: {{kubernetes.io/hostname: {NODE}}}
eval:
  gpus: 1
  scratchSize: 2Gi
  shmSize: 256Mi
  extraArgs: ["--set", "min_pixels=3136", "--set", "max_pixels=12544", "--set", "max_new_tokens=16"]
  extraEnv: [{{name: OMP_NUM_THREADS, value: "1"}}]
  resources: {{requests: {{cpu: 50m, memory: 512Mi}}, limits: {{cpu: "2", memory: 4Gi}}}}
  nodeSelector: {{kubernetes.io/hostname: {NODE}}}
""")
    # 2. The store first, no jobs: MinIO starts on its volume; the post-install hook (a real pod) makes the bucket.
    t0 = time.monotonic()
    assert "STATUS: deployed" in run("install", "ssrl", str(ROOT / "helm" / "ssrl"), "-n", ns, "--create-namespace",
                                     "-f", str(values), "--wait", "--timeout", "5m")
    test = run("test", "ssrl", "-n", ns, "--timeout", "5m")
    assert re.search(r"^Phase:\s+Succeeded$", test, re.M), test
    assert get(cluster, "pvc", "data-ssrl-minio-0", "-n", ns)["spec"]["volumeName"] == "realnode-minio"
    TIMINGS["helm: install + test"] = time.monotonic() - t0
    # 3. From outside, as the README does: port-forward to the MinIO Service, root credentials from the Secret.
    with store_port_forward(cluster, ns, tmp_path / "port-forward.log") as root:
        port = root["SSRL_S3_ENDPOINT"].rsplit(":", 1)[1]
        reader = {**root, **store_keys(cluster, ns, "ssrl-store-reader")}
        client = Minio(f"127.0.0.1:{port}", root["AWS_ACCESS_KEY_ID"], root["AWS_SECRET_ACCESS_KEY"], secure=False)
        assert client.bucket_exists(bucket), "the bucket-init hook did not create the bucket"
        ssrl_cli(root, "synth", str(tmp_path / "synth"), "--count", "6", "--seed", "5")
        ssrl_cli(root, "store", "upload", str(tmp_path / "synth"), f"s3://{bucket}/sources/images")
        ssrl_cli(root, "tiny-model", str(tmp_path / "tiny"))
        ssrl_cli(root, "model", "push", str(tmp_path / "tiny"), f"s3://{bucket}/models/base")
        ssrl_cli(root, "synth", str(tmp_path / "heldout"), "--count", "2", "--seed", "6")
        ssrl_cli(root, "generate", "-i", str(tmp_path / "heldout"), "-o", f"s3://{bucket}/tasks/heldout")
        # 4. Generate and train together; the trainer waits for the dataset's manifest.
        t0 = time.monotonic()
        run("upgrade", "ssrl", str(ROOT / "helm" / "ssrl"), "-n", ns, "--reuse-values", "--set",
            "generate.enabled=true", "--set", "train.enabled=true", "--timeout", "5m")
        [gen_job], [train_job] = named("jobs", "generate"), named("pytorchjobs", "train")
        wait_for("the chart's PyTorchJob Succeeded", lambda: finished(cluster, "pytorchjob", train_job, ns), 1200,
                 diagnose=lambda: describe(cluster, ns) + logs(cluster, ns))
        TIMINGS["helm: generate + train"] = time.monotonic() - t0
        assert finished(cluster, "job", gen_job, ns)
        assert "trained to step 2" in cluster.kubectl("logs", "-n", ns, f"{train_job}-master-0").stdout
        # Both ranks trained: each pod's optimizer shard is in the commit (a Worker still running when the Master
        # finishes is removed by cleanPodPolicy Running, so its pod's phase proves nothing).
        commit = json.loads(client.get_object(bucket, "checkpoints/main/step-2/_COMMIT.json").read())
        assert all(any(f"zero_pp_rank_{r}_" in f for f in commit["files"]) for r in (0, 1)), commit["files"]
        status = json.loads(ssrl_cli(root, "jobs", "status", train_job, "-n", ns, "--json").stdout)
        assert status["progress"]["step"] == 2 and status["progress"]["max_steps"] == 2, status
        # 5. The trained model with the read-only credentials, which cannot write.
        ssrl_cli(reader, "ckpt", "pull", f"s3://{bucket}/checkpoints/main", str(tmp_path / "trained"),
                 "--weights-only")
        from transformers import AutoModelForImageTextToText

        AutoModelForImageTextToText.from_pretrained(tmp_path / "trained")
        denied = subprocess.run([sys.executable, "-m", "ssrl", "store", "upload", str(tmp_path / "synth"),
                                 f"s3://{bucket}/sources/other"], capture_output=True, text=True, env=reader,
                                timeout=120, cwd=ROOT)
        assert denied.returncode != 0 and "AccessDenied" in denied.stderr + denied.stdout, denied
        # 6. A new trainer tag and eval: a new PyTorchJob (the old one deleted) that resumes at step 2, and the eval.
        t0 = time.monotonic()
        run("upgrade", "ssrl", str(ROOT / "helm" / "ssrl"), "-n", ns, "--reuse-values", "--set",
            "images.trainer.tag=realnode-b", "--set", "eval.enabled=true", "--timeout", "5m")
        [eval_job], [train_b] = named("jobs", "eval"), named("pytorchjobs", "train")
        assert train_b != train_job
        wait_for("the eval Job and the new PyTorchJob done",
                 lambda: finished(cluster, "job", eval_job, ns) and finished(cluster, "pytorchjob", train_b, ns), 900,
                 diagnose=lambda: describe(cluster, ns) + logs(cluster, ns))
        TIMINGS["helm: upgrade to evaluated"] = time.monotonic() - t0
        pod = get(cluster, "pods", "-n", ns, "-l", f"job-name={eval_job}")["items"][0]
        assert pod["spec"]["containers"][0]["image"] == TRAINER_IMAGE + "-b"
        assert "resumed from committed step 2" in cluster.kubectl("logs", "-n", ns, f"{train_b}-master-0").stdout
        assert "results.md" in ssrl_cli(root, "store", "ls", f"s3://{bucket}/evals/main").stdout
    # The policies (the bridge CNI does not enforce them) against the pods that ran: the job pods still here, and
    # the hook pods (deleted once they succeed) as `helm get hooks` rendered them: every component that uses the
    # store reaches MinIO, Master and Worker reach each other, a pod outside the release reaches neither.
    policies = [{**p, "kind": "NetworkPolicy"} for p in get(cluster, "networkpolicies", "-n", ns)["items"]]
    labels = [p["metadata"]["labels"] for p in get(cluster, "pods", "-n", ns)["items"]]
    for hook in yaml.safe_load_all(run("get", "hooks", "ssrl", "-n", ns)):
        if hook and hook["kind"] in ("Job", "Pod"):
            labels.append((hook["spec"]["template"] if hook["kind"] == "Job" else hook)["metadata"]["labels"])
    live: dict[str, list] = {}
    for ls in labels:
        live.setdefault(ls.get("app.kubernetes.io/component", "?"), []).append((str(ls), Endpoint(ns, ls)))
    assert {"minio", "bucket-init", "generate", "train", "eval", "test"} <= set(live), sorted(live)
    check_network(policies, live, minio=True, default_deny=True, namespace=ns)
    run("uninstall", "ssrl", "-n", ns, "--wait", "--timeout", "5m")
    wait_for("no pod left running", lambda: not [
        p for p in get(cluster, "pods", "-n", ns)["items"] if p["status"].get("phase") in ("Pending", "Running")],
        120, diagnose=lambda: describe(cluster, ns))


def test_kustomize_dev_overlay_generates_and_trains(tier, tmp_path: Path) -> None:
    """`kubectl apply --server-side -k` of an overlay on k8s/overlays/dev (what a user on a small cluster writes:
    local image names, requests that fit one 2-core node, a StorageClass, a few training steps), then the README's
    uploads through `kubectl port-forward`: bucket-init (a real pod) makes the bucket and the scoped users; the
    generator Job, suspended until the upload is done, is started as the README says and its 2 shards commit the
    dataset with no failed pod; the single-Master trainer, started at apply, waits for the manifest and commits
    its steps; the eval Job stays suspended; deleting the overlay leaves no pod."""
    from tests.test_deploy import k8s_tree

    cluster, _node, _ = tier
    ns, tree = "ssrl", k8s_tree()
    small = "{requests: {cpu: 50m, memory: 128Mi}, limits: {cpu: '1', memory: 2Gi}}"
    overlay = tree / "overlays" / "realnode"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../dev]
images:
  - {{name: ghcr.io/ssrl/ssrl-generator, newName: localhost/ssrl-generator, newTag: realnode}}
  - {{name: ghcr.io/ssrl/ssrl-trainer, newName: localhost/ssrl-trainer, newTag: realnode}}
  - {{name: ghcr.io/ssrl/ssrl-minio, newName: localhost/ssrl-minio, newTag: realnode}}
patches:
  - target: {{kind: ConfigMap, name: ssrl-train}}
    patch: |-
      - op: replace
        path: /data/train.yaml
        value: |
{textwrap.indent(TRAIN_CONFIG, "          ")}  - target: {{kind: PyTorchJob, name: ssrl-train}}
    patch: |-
      - op: replace
        path: /spec/pytorchReplicaSpecs/Master/template/spec/containers/0/resources
        value:
          requests: {{cpu: 50m, memory: 1Gi, nvidia.com/gpu: 1}}
          limits: {{cpu: '2', memory: 6Gi, nvidia.com/gpu: 1}}
      - op: add
        path: /spec/pytorchReplicaSpecs/Master/template/spec/containers/0/env/-
        value: {{name: OMP_NUM_THREADS, value: "1"}}
  - target: {{kind: Job, name: ssrl-generate}}
    patch: |-
      - {{op: replace, path: /spec/template/spec/containers/0/resources, value: {small}}}
  - target: {{kind: Job, name: ssrl-bucket-init}}
    patch: |-
      - {{op: replace, path: /spec/template/spec/containers/0/resources, value: {small}}}
  - target: {{kind: StatefulSet, name: ssrl-minio}}
    patch: |-
      - {{op: replace, path: /spec/template/spec/containers/0/resources, value: {small}}}
      - {{op: add, path: /spec/volumeClaimTemplates/0/spec/storageClassName, value: realnode-local-k}}
""")
    local_volume(cluster, tmp_path / "minio-data", "realnode-minio-k", "realnode-local-k", "20Gi")
    t0 = time.monotonic()
    cluster.kubectl("apply", "--server-side", "-k", str(overlay), timeout=120)

    wait_for("bucket-init Complete (MinIO up, bucket and users made)",
             lambda: finished(cluster, "job", "ssrl-bucket-init", ns), 300,
             diagnose=lambda: describe(cluster, ns) + logs(cluster, ns))
    with store_port_forward(cluster, ns, tmp_path / "port-forward.log") as root:
        ssrl_cli(root, "synth", str(tmp_path / "synth"), "--count", "6", "--seed", "7")
        ssrl_cli(root, "store", "upload", str(tmp_path / "synth"), "s3://ssrl/sources/images")
        ssrl_cli(root, "tiny-model", str(tmp_path / "tiny"))
        ssrl_cli(root, "model", "push", str(tmp_path / "tiny"), "s3://ssrl/models/base")
        assert not get(cluster, "pods", "-n", ns, "-l", "job-name=ssrl-generate")["items"]  # suspended until now
        cluster.kubectl("patch", "job", "ssrl-generate", "-n", ns, "--type", "merge", "-p",
                        '{"spec":{"suspend":false}}')
        wait_for("the generator's 2 shards and the trainer done",
                 lambda: finished(cluster, "job", "ssrl-generate", ns) and finished(cluster, "pytorchjob",
                                                                                   "ssrl-train", ns), 1200,
                 diagnose=lambda: describe(cluster, ns) + logs(cluster, ns))
        TIMINGS["kustomize dev: apply to trained"] = time.monotonic() - t0
        gen_status = get(cluster, "job", "ssrl-generate", "-n", ns)["status"]
        assert gen_status["succeeded"] == 2 and not gen_status.get("failed"), gen_status
        assert "trained to step 2" in cluster.kubectl("logs", "-n", ns, "ssrl-train-master-0").stdout
        listing = ssrl_cli(root, "store", "ls", "s3://ssrl/checkpoints/main").stdout
        assert "step-2" in listing, listing
    assert get(cluster, "job", "ssrl-eval", "-n", ns)["spec"]["suspend"] is True
    assert not get(cluster, "pods", "-n", ns, "-l", "job-name=ssrl-eval")["items"]
    cluster.kubectl("delete", "-k", str(overlay), "--wait", "--timeout", "5m", timeout=330)
    assert not get(cluster, "pods", "-n", ns, "-l", "app.kubernetes.io/part-of=ssrl")["items"]
