"""Real pods (issue 11, first part): the project's generator image, built from docker/generator.Dockerfile on a
local Debian base, runs on a real kubelet + containerd node (tests/realnode.py) registered with the control
plane of tests/kube.py, and the generator's Indexed Job commits its shards and manifest to a MinIO the pods
reach over the CNI bridge.

Opt-in: ``make test-realnode`` (``pytest -p no:xdist -m realnode tests/realnode_tier``); root needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.realnode import (
    GATEWAY,
    GENERATOR_IMAGE,
    NODE,
    BridgeMinio,
    RealCluster,
    RealNode,
    cleanup_leftovers,
    images,
    missing,
)
from tests.servers import ACCESS_KEY, ROOT, SECRET_KEY, tool

pytestmark = [pytest.mark.realnode, pytest.mark.slow, pytest.mark.timeout(1800)]
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def tier(tmp_path_factory: pytest.TempPathFactory):
    gaps = missing()
    if gaps:
        pytest.skip("real-node tier needs: " + ", ".join(gaps))
    cleanup_leftovers()  # a killed earlier run: its daemons, bridge, chains, cgroups, mounts (tests/realnode.py)
    t0 = time.monotonic()
    archives = images("pause") + images("generator")
    TIMINGS["images"] = time.monotonic() - t0
    tmp = tmp_path_factory.mktemp("realnode")
    cluster = RealCluster(tmp / "cluster")
    node = RealNode(cluster, tmp / "node")
    minio = BridgeMinio("minio", tool("minio"), tmp / "minio")
    try:
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


def describe(cluster, ns: str) -> str:
    return cluster.kubectl("describe", "pods", "-n", ns, check=False).stdout[-6000:]


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
        r = subprocess.run([sys.executable, "-m", "ssrl", *args], capture_output=True, text=True, env=env,
                           timeout=300, cwd=ROOT)
        assert r.returncode == 0, f"ssrl {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
        return r

    # Sources go into MinIO from outside the cluster, as the README tells users.
    ssrl("synth", str(tmp_path / "synth"), "--count", "6", "--seed", "0")
    ssrl("store", "upload", str(tmp_path / "synth"), "s3://ssrl/sources/synth")
    ns = "gen"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "secret", "generic", "ssrl-store", "-n", ns,
                    f"--from-literal=AWS_ACCESS_KEY_ID={ACCESS_KEY}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={SECRET_KEY}")
    # The store by Service name, as the chart gives it to pods (http://<release>-minio:9000): a Service without
    # selector whose EndpointSlice is the test's MinIO on the gateway address (CoreDNS + kube-proxy).
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
