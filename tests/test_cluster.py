"""The cluster tier: the chart, the k8s/ manifests, ``ssrl submit`` and ``ssrl jobs`` against a real API
server, the real Kubeflow training operator and KWOK's fake GPU nodes (tests/kube.py).

Run alone with ``pytest -m cluster -p no:xdist`` (one control plane per session); ``make test`` does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.kube import CPU_NODES, GPU_NODES, LOG_LINES, Cluster
from tests.servers import ROOT, tool

pytestmark = pytest.mark.cluster
pytest.importorskip("kubernetes")
pytest.importorskip("kubeflow.training")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
    except BaseException:
        c.stop()
        raise
    yield c
    c.stop()


def ssrl(cluster: Cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``ssrl`` in the shell the README's deployment leaves: KUBECONFIG, and SSRL_REGISTRY for ``ssrl submit``'s
    images (KWOK pulls nothing)."""
    env = {**cluster.env(), "SSRL_REGISTRY": "registry.example.com/ssrl"}
    return subprocess.run([sys.executable, "-m", "ssrl", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def get(cluster: Cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def pytorchjob_phase(cluster: Cluster, name: str, ns: str) -> str:
    conds = get(cluster, "pytorchjob", name, "-n", ns).get("status", {}).get("conditions", [])
    true = [c["type"] for c in conds if c.get("status") == "True"]
    return true[-1] if true else ""


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env", [])}


def store_secret(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("create", "namespace", ns, check=False)
    cluster.kubectl("create", "secret", "generic", "ssrl-store", "-n", ns, "--from-literal=AWS_ACCESS_KEY_ID=k",
                    "--from-literal=AWS_SECRET_ACCESS_KEY=s", check=False)


def test_fake_gpu_nodes_are_ready(cluster: Cluster) -> None:
    nodes = {n["metadata"]["name"]: n["status"]["allocatable"] for n in get(cluster, "nodes")["items"]}
    assert sorted(nodes) == sorted(GPU_NODES + CPU_NODES)
    assert {name: a.get("nvidia.com/gpu") for name, a in nodes.items()} == {
        **dict.fromkeys(GPU_NODES, "8"), **dict.fromkeys(CPU_NODES)}
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"].startswith("v1.")


def test_submit_train_pytorchjob_runs_to_completion(cluster: Cluster) -> None:
    ns = "train"
    store_secret(cluster, ns)
    r = ssrl(cluster, "submit", "train", "--name", "grpo", "-n", ns, "--workers", "1", "--gpus-per-node", "2",
             "--nproc-per-node", "2", "--set", "store_endpoint=http://minio:9000")
    assert r.returncode == 0, r.stderr
    # The operator makes one pod and one Service per replica, with the torchrun rendezvous in the environment.
    pods = wait_for("master and worker pods", lambda: [p for p in get(cluster, "pods", "-n", ns)["items"]
                                                       if p["metadata"]["name"].startswith("grpo-train-")] or None)
    pods = wait_for("both pods scheduled", lambda: (lambda items: items if len(items) == 2 and all(
        p["spec"].get("nodeName") for p in items) else None)(
        get(cluster, "pods", "-n", ns, "-l", "training.kubeflow.org/job-name=grpo-train")["items"]))
    by_role = {p["metadata"]["labels"]["training.kubeflow.org/replica-type"]: p for p in pods}
    assert set(by_role) == {"master", "worker"}
    master, worker = env_of(by_role["master"]), env_of(by_role["worker"])
    assert master["MASTER_ADDR"] == "localhost" or master["MASTER_ADDR"].startswith("grpo-train-master-0")
    assert worker["MASTER_ADDR"].startswith("grpo-train-master-0")
    # torchrun's view: 2 nodes x 2 processes; RANK is the node rank.
    assert master["WORLD_SIZE"] == worker["WORLD_SIZE"] == "4" and (master["RANK"], worker["RANK"]) == ("0", "1")
    assert master["PET_NNODES"] == "2" and master["PET_NPROC_PER_NODE"] == "2"
    assert master["MASTER_PORT"] == worker["MASTER_PORT"]
    assert by_role["master"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    services = {s["metadata"]["name"] for s in get(cluster, "services", "-n", ns)["items"]}
    assert {"grpo-train-master-0", "grpo-train-worker-0"} <= services
    placed = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    assert set(placed.values()) <= set(GPU_NODES), placed  # their GPU requests kept them off the GPU-less node
    wait_for("PyTorchJob Succeeded", lambda: pytorchjob_phase(cluster, "grpo-train", ns) == "Succeeded")


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_k8s_manifests_apply_and_run(cluster: Cluster, overlay: str) -> None:
    from tests.test_deploy import k8s_tree

    rendered = cluster.kubectl("kustomize", str(k8s_tree() / "overlays" / overlay)).stdout  # with generated secrets
    cluster.kubectl("apply", "--server-side", "-f", "-", input=rendered)
    docs = [d for d in rendered.split("\n---\n") if d.strip()]
    ns = next(line.split(":", 1)[1].strip() for d in docs for line in d.splitlines()
              if line.startswith("  namespace:"))
    # The generator Job is created suspended (it must not list sources still being uploaded): start it as the
    # README says once they are in.
    assert get(cluster, "job", "ssrl-generate", "-n", ns)["spec"]["suspend"] is True
    cluster.kubectl("patch", "job", "ssrl-generate", "-n", ns, "--type", "merge", "-p", '{"spec":{"suspend":false}}')
    jobs = get(cluster, "pytorchjobs", "-n", ns)["items"]
    assert jobs, "the overlay's PyTorchJobs were not created"
    running = [j["metadata"]["name"] for j in jobs if not j["spec"].get("runPolicy", {}).get("suspend")]
    seen: dict[str, dict] = {}
    suspended = [j["metadata"]["name"] for j in jobs if j["spec"].get("runPolicy", {}).get("suspend")]
    assert running
    for name in running:
        pods = wait_for(f"{name} pods", lambda name=name: get(cluster, "pods", "-n", ns, "-l",
                                                             f"training.kubeflow.org/job-name={name}")["items"] or None)
        replicas = sum(int(r.get("replicas", 1)) for r in next(
            j for j in jobs if j["metadata"]["name"] == name)["spec"]["pytorchReplicaSpecs"].values())
        assert all(env_of(p)["MASTER_ADDR"] and env_of(p)["WORLD_SIZE"] for p in pods)
        seen.update((p["metadata"]["name"], p) for p in pods)
        wait_for(f"{name} Succeeded", lambda name=name: pytorchjob_phase(cluster, name, ns) == "Succeeded")
        # cleanPodPolicy Running: once the job is done no pod of it is left running (holding GPUs); finished
        # ones may stay for their logs
        wait_for(f"{name}: no pod left running", lambda name=name: all(
            p["status"].get("phase") in ("Succeeded", "Failed") or p["metadata"].get("deletionTimestamp")
            for p in get(cluster, "pods", "-n", ns, "-l", f"training.kubeflow.org/job-name={name}")["items"]))
        assert len(get(cluster, "pods", "-n", ns, "-l", f"training.kubeflow.org/job-name={name}")["items"]) \
            <= replicas
    for name in suspended:  # the alternative generator stays parked until a user resumes it
        wait_for(f"{name} Suspended", lambda name=name: pytorchjob_phase(cluster, name, ns) == "Suspended")
        assert not get(cluster, "pods", "-n", ns, "-l", f"training.kubeflow.org/job-name={name}")["items"]
    statefulsets = get(cluster, "statefulsets", "-n", ns)["items"]
    assert statefulsets and wait_for("MinIO pod running", lambda: any(
        p["status"].get("phase") == "Running" for p in get(cluster, "pods", "-n", ns)["items"]
        if p["metadata"]["name"].startswith(statefulsets[0]["metadata"]["name"])))
    # The overlay's NetworkPolicies (prod: default deny) against the labels of the pods the operator, the Job
    # controller and the StatefulSet created.
    from tests.netpol import Endpoint
    from tests.test_network import check_network

    seen.update((p["metadata"]["name"], p) for p in get(cluster, "pods", "-n", ns)["items"])
    live: dict[str, list] = {}
    for name, p in seen.items():
        labels = p["metadata"]["labels"]
        live.setdefault(labels.get("app.kubernetes.io/component", "?"), []).append((name, Endpoint(ns, labels)))
    policies = [{**p, "kind": "NetworkPolicy"} for p in get(cluster, "networkpolicies", "-n", ns)["items"]]
    check_network(policies, live, minio=True, default_deny=overlay == "prod", namespace=ns)
    # Both overlays use one namespace: remove it (pods, claims and all) so the next overlay starts clean.
    cluster.kubectl("delete", "namespace", ns, "--wait", "--timeout=120s", timeout=150)


def test_generator_indexed_job_one_pod_per_shard(cluster: Cluster) -> None:
    ns = "gen"
    store_secret(cluster, ns)
    r = ssrl(cluster, "submit", "generate", "--name", "corpus", "-n", ns, "--kind", "job", "--set", "generate.shards=3",
             "--set", "store_endpoint=http://minio:9000")
    assert r.returncode == 0, r.stderr
    job = wait_for("Job complete", lambda: (lambda j: j if j.get("status", {}).get("succeeded") == 3 else None)(
        get(cluster, "job", "corpus-generate", "-n", ns)))
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    pods = get(cluster, "pods", "-n", ns, "-l", "job-name=corpus-generate")["items"]
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1", "2"]

    # The same generator as a PyTorchJob (for clusters that run everything through the operator): one replica
    # per shard, sharded by RANK / WORLD_SIZE.
    r = ssrl(cluster, "submit", "generate", "--name", "corpus2", "-n", ns, "--kind", "pytorchjob",
             "--set", "generate.shards=3", "--set", "store_endpoint=http://minio:9000")
    assert r.returncode == 0, r.stderr
    name = "corpus2-generate"
    pods = wait_for("3 generator replicas", lambda: (lambda items: items if len(items) == 3 else None)(
        get(cluster, "pods", "-n", ns, "-l", f"training.kubeflow.org/job-name={name}")["items"]))
    assert sorted((env_of(p)["RANK"], env_of(p)["WORLD_SIZE"]) for p in pods) == [("0", "3"), ("1", "3"), ("2", "3")]
    wait_for("generator PyTorchJob Succeeded", lambda: pytorchjob_phase(cluster, name, ns) == "Succeeded")


def test_helm_install_and_helm_test(cluster: Cluster, tmp_path: Path) -> None:
    helm = str(tool("helm"))
    ns = "ssrl-helm"

    def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([helm, *args], capture_output=True, text=True, env=cluster.env(), timeout=timeout)

    r = run("install", "demo", str(ROOT / "helm" / "ssrl"), "-n", ns, "--create-namespace", "--wait",
            "--timeout", "3m", "--set", "train.workers=1", "--set", "networkPolicy.enabled=true",
            "--set", "networkPolicy.defaultDeny=true",
            # the trainer pods stay Running (KWOK stage) so their live labels can be checked after helm test
            "--set-string", "train.podAnnotations.ssrl-test/keep-running=true",
            "--set", "images.registry=registry.example.com/ssrl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "STATUS: deployed" in r.stdout
    r = run("test", "demo", "-n", ns, "--timeout", "2m")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^Phase:\s+Succeeded$", r.stdout, re.M), r.stdout  # the test pod's phase, not any line
    pods = {p["metadata"]["name"]: p for p in get(cluster, "pods", "-n", ns)["items"]}

    # The NetworkPolicies as the API server holds them admit what the pods the operator and the Job controller
    # created need (their real labels), and nothing else.
    from tests.netpol import Endpoint
    from tests.test_network import check_network

    train = wait_for("the trainer PyTorchJob", lambda: next(
        (j["metadata"]["name"] for j in get(cluster, "pytorchjobs", "-n", ns)["items"]), None))
    live: dict[str, list] = {}
    trainers = wait_for("2 scheduled trainer pods", lambda: (lambda items: items if len(items) == 2 and all(
        p["spec"].get("nodeName") for p in items) else None)(
        get(cluster, "pods", "-n", ns, "-l", f"training.kubeflow.org/job-name={train}")["items"]))
    assert all(p["spec"]["nodeName"] in GPU_NODES for p in trainers)  # their GPU request kept them off cpu-node-0
    for p in trainers + [p for p in pods.values() if "training.kubeflow.org/job-name" not in p["metadata"]["labels"]]:
        labels = p["metadata"]["labels"]
        live.setdefault(labels.get("app.kubernetes.io/component", "?"), []).append(
            (p["metadata"]["name"], Endpoint(ns, labels)))
    assert len(live["train"]) == 2 and live["minio"] and live["generate"], sorted(live)
    policies = get(cluster, "networkpolicies", "-n", ns)["items"]
    check_network([{**p, "kind": "NetworkPolicy"} for p in policies], live, minio=True, default_deny=True,
                  namespace=ns)

    # The chart's ServiceAccount can do what its trainer needs (record progress in its job's ConfigMap) and
    # nothing more: not its PyTorchJob, not creating anything.
    sa = next(s["metadata"]["name"] for s in get(cluster, "serviceaccounts", "-n", ns)["items"]
              if s["metadata"]["name"] != "default")

    def can(verb: str, resource: str) -> bool:
        r = cluster.kubectl("auth", "can-i", verb, resource, "-n", ns, f"--as=system:serviceaccount:{ns}:{sa}",
                            check=False)
        return r.stdout.strip() == "yes"

    progress_cm = f"configmaps/{train}-progress"
    assert can("get", progress_cm) and can("patch", progress_cm)
    for verb, resource in [("patch", f"pytorchjobs.kubeflow.org/{train}"), ("get", f"pytorchjobs.kubeflow.org/{train}"),
                           ("update", f"pytorchjobs.kubeflow.org/{train}"), ("create", "configmaps"),
                           ("delete", progress_cm), ("patch", "configmaps/other-progress"), ("list", "configmaps"),
                           ("patch", "configmaps/demo-ssrl-train"), ("create", "pytorchjobs.kubeflow.org"),
                           ("get", "secrets"), ("list", "secrets"), ("create", "pods"), ("delete", "pods"),
                           ("create", "rolebindings.rbac.authorization.k8s.io"), ("get", "nodes")]:
        assert not can(verb, resource), f"{sa} may {verb} {resource}"
    assert cluster.kubectl("auth", "can-i", "patch", progress_cm, "-n", "default",
                           f"--as=system:serviceaccount:{ns}:{sa}", check=False).stdout.strip() == "no"

    # Rank 0's progress, written with the ServiceAccount's own token (what the pod holds), read by `ssrl jobs`.
    from kubernetes import client

    from ssrl.cluster.client import build_progress, write_progress
    from ssrl.recipes.callbacks import TaskAccuracy

    acc = TaskAccuracy()
    for task, value in [("depth_order", 1.0), ("depth_order", 0.0), ("shuffle", 1.0)]:
        acc.add(task, value)
    logs = {"reward": 0.625, **acc.drain()}  # what MetricsCallback puts into the Trainer logs
    token = cluster.kubectl("create", "token", sa, "-n", ns).stdout.strip()
    conf = client.Configuration()
    conf.host, conf.ssl_ca_cert = cluster.server, str(cluster.root / "pki" / "ca.crt")
    conf.api_key = {"authorization": f"Bearer {token}"}
    write_progress(train, ns, build_progress(12, 100, logs), api=client.ApiClient(conf))
    r = ssrl(cluster, "jobs", "status", train, "-n", ns, "--json")
    assert r.returncode == 0, r.stderr
    progress = json.loads(r.stdout)["progress"]
    assert progress["step"] == 12 and progress["max_steps"] == 100 and progress["reward"] == 0.625
    assert progress["accuracy"] == {"depth_order": 0.5, "shuffle": 1.0}
    from ssrl.errors import SSRLError

    with pytest.raises(SSRLError, match="403"):  # the same token may not touch another job
        write_progress("other", ns, {"step": 1}, api=client.ApiClient(conf))
    from kubernetes.client.rest import ApiException

    with pytest.raises(ApiException) as denied:  # nor its own PyTorchJob (whose templates become pods)
        client.CustomObjectsApi(client.ApiClient(conf)).patch_namespaced_custom_object(
            "kubeflow.org", "v1", ns, "pytorchjobs", train, {"metadata": {"labels": {"x": "y"}}})
    assert denied.value.status == 403

    # An upgrade that changes both image tags and enables eval: the generator Job's pod template is immutable
    # and the operator ignores a changed PyTorchJob, so both are replaced by objects named after their new spec.
    def run_objects() -> dict[str, str]:
        objs = get(cluster, "jobs", "-n", ns)["items"] + get(cluster, "pytorchjobs", "-n", ns)["items"]
        return {o["metadata"]["labels"].get("app.kubernetes.io/component"): o["metadata"]["name"] for o in objs
                if o["metadata"]["labels"].get("app.kubernetes.io/component") in ("generate", "train", "eval")}

    before = run_objects()
    r = run("upgrade", "demo", str(ROOT / "helm" / "ssrl"), "-n", ns, "--reuse-values", "--wait", "--timeout", "3m",
            "--set", "images.trainer.tag=0.1.1", "--set", "images.generator.tag=0.1.1", "--set", "eval.enabled=true")
    assert r.returncode == 0, r.stdout + r.stderr
    after = wait_for("the upgraded jobs", lambda: (lambda o: o if len(o) == 3 else None)(run_objects()))
    assert after["generate"] != before["generate"] and after["train"] != before["train"], (before, after)
    ptj = get(cluster, "pytorchjob", after["train"], "-n", ns)
    assert all(r["template"]["spec"]["containers"][0]["image"].endswith(":0.1.1")
               for r in ptj["spec"]["pytorchReplicaSpecs"].values())
    assert cluster.kubectl("get", "pytorchjob", before["train"], "-n", ns, check=False).returncode != 0
    wait_for("the upgraded trainer's pods", lambda: get(cluster, "pods", "-n", ns, "-l",
                                                        f"training.kubeflow.org/job-name={after['train']}")["items"])
    assert can("patch", f"configmaps/{after['train']}-progress") and not can("patch", progress_cm)
    r = run("uninstall", "demo", "-n", ns, "--wait", "--timeout", "2m")
    assert r.returncode == 0, r.stderr


def test_a_failed_rank_fails_the_job_and_frees_the_other_pods(cluster: Cluster) -> None:
    """The trainer's failure policy (restartPolicy ExitCode, cleanPodPolicy Running): when the master exits 1 while
    the workers still run (as ranks stuck in NCCL would), the job fails and the operator deletes the workers, so
    none keeps holding GPUs. KWOK fails the master by its ssrl-test/exit-code annotation."""
    import yaml

    ns = "failing"
    store_secret(cluster, ns)
    r = ssrl(cluster, "submit", "train", "--name", "crash", "-n", ns, "--workers", "2", "--dry-run")
    assert r.returncode == 0, r.stderr
    job, progress = list(yaml.safe_load_all(r.stdout))
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert {s["restartPolicy"] for s in specs.values()} == {"ExitCode"}
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "Running"
    specs["Master"]["template"]["metadata"]["annotations"] = {"ssrl-test/exit-code": "1"}
    specs["Worker"]["template"]["metadata"]["annotations"] = {"ssrl-test/keep-running": "true"}
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([job, progress]))

    def pods() -> list[dict]:
        return get(cluster, "pods", "-n", ns, "-l", "training.kubeflow.org/job-name=crash-train")["items"]

    wait_for("master and 2 workers running", lambda: sum(p["status"].get("phase") == "Running" for p in pods()) == 3)
    wait_for("PyTorchJob Failed", lambda: pytorchjob_phase(cluster, "crash-train", ns) == "Failed")
    wait_for("no worker left running", lambda: not [
        p for p in pods() if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")])
    assert all(p["metadata"]["labels"]["training.kubeflow.org/replica-type"] == "master" for p in pods()
               if not p["metadata"].get("deletionTimestamp"))


def test_a_killed_rank_is_recreated_and_a_crashed_one_fails_the_job(cluster: Cluster) -> None:
    """restartPolicy ExitCode, as the operator (v1.9) applies it to the trainer we submit: a rank killed from outside
    (137, SIGKILL: node lost, preempted, OOM-killed) is deleted and recreated while the others keep running, and the
    job is Restarting, not Failed — each time: these recreations do not count against runPolicy.backoffLimit (the
    operator counts container restarts, and a recreated pod has none); a rank that exits 1 fails the job, is not
    recreated, and cleanPodPolicy Running deletes the others. KWOK fails a pod by its ssrl-test/exit-code
    annotation, set here on one live pod (the template keeps them all running)."""
    ns = "retrying"
    store_secret(cluster, ns)
    r = ssrl(cluster, "submit", "train", "--name", "retry", "-n", ns, "--workers", "2",
             "--set", "train.backoff_limit=1", "--set", "store_endpoint=http://minio:9000",
             "--pod-annotation", "ssrl-test/keep-running=true")
    assert r.returncode == 0, r.stderr

    def running() -> dict[str, str]:
        """name -> uid of the job's pods that are Running and not being deleted."""
        return {p["metadata"]["name"]: p["metadata"]["uid"] for p in get(
            cluster, "pods", "-n", ns, "-l", "training.kubeflow.org/job-name=retry-train")["items"]
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")}

    def conditions() -> dict[str, str]:
        return {c["type"]: c["status"] for c in get(cluster, "pytorchjob", "retry-train", "-n", ns)
                .get("status", {}).get("conditions", [])}

    pods = wait_for("master and 2 workers running", lambda: (lambda r: r if len(r) == 3 else None)(running()))
    victim = "retry-train-worker-0"

    def recreated(old_uid: str) -> dict[str, str] | None:
        now = running()
        return now if len(now) == 3 and now[victim] != old_uid else None

    for kill in range(2):  # one more than backoffLimit
        cluster.kubectl("annotate", "pod", victim, "-n", ns, "ssrl-test/exit-code=137")
        now = wait_for(f"{victim} recreated after 137 (#{kill + 1})", lambda uid=pods[victim]: recreated(uid),
                       diagnose=lambda: json.dumps(conditions()))
        assert {k: v for k, v in now.items() if k != victim} == {k: v for k, v in pods.items() if k != victim}
        assert conditions().get("Failed") != "True", conditions()
        pods = now
    # Running replaces the Restarting condition once the pod is back; the job's events keep what happened.
    events = get(cluster, "events", "-n", ns, "--field-selector", "involvedObject.name=retry-train")["items"]
    reasons = {e["reason"] for e in events}
    assert "PyTorchJobRestarting" in reasons and "PyTorchJobFailed" not in reasons, reasons
    assert any("exited with code 137" in e.get("message", "") for e in events), [e.get("message") for e in events]

    cluster.kubectl("annotate", "pod", victim, "-n", ns, "ssrl-test/exit-code=1")
    wait_for("PyTorchJob Failed after exit 1", lambda: conditions().get("Failed") == "True")
    wait_for("the other ranks deleted", lambda: not running())
    left = get(cluster, "pods", "-n", ns, "-l", "training.kubeflow.org/job-name=retry-train")["items"]
    kept = [p for p in left if not p["metadata"].get("deletionTimestamp")]
    assert [(p["metadata"]["name"], p["metadata"]["uid"], p["status"]["phase"]) for p in kept] == [
        (victim, pods[victim], "Failed")], kept  # not recreated


def test_ssrl_jobs_follow_a_pytorchjob_through_its_phases_and_delete_it(cluster: Cluster) -> None:
    ns = "follow"
    store_secret(cluster, ns)
    # The pods stay Running (KWOK stage, annotation set by --pod-annotation) until the test lets them finish, so
    # `ssrl jobs status` sees each phase however slowly it starts.
    r = ssrl(cluster, "submit", "train", "--name", "watch", "-n", ns, "--workers", "1",
             "--set", "store_endpoint=http://minio:9000", "--pod-annotation", "ssrl-test/keep-running=true")
    assert r.returncode == 0, r.stderr
    seen = []

    def phase(want: str):
        r = ssrl(cluster, "jobs", "status", "watch-train", "-n", ns, "--json")
        assert r.returncode == 0, r.stderr
        seen.append(json.loads(r.stdout)["phase"])
        return seen[-1] == want

    wait_for("Running", lambda: phase("Running"), timeout=120, every=0.3)
    # Logs through the API server's pods/log proxy (KWOK serves every container the same two lines), while
    # both pods run (once the job succeeds, cleanPodPolicy Running removes a worker still running).
    r = ssrl(cluster, "jobs", "logs", "watch-train", "-n", ns, "--tail", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(LOG_LINES[-1]) and LOG_LINES[0] not in r.stdout
    r = ssrl(cluster, "jobs", "logs", "watch-train", "-n", ns, "--all")
    assert r.returncode == 0, r.stderr
    assert "watch-train-master-0" in r.stdout and "watch-train-worker-0" in r.stdout
    assert r.stdout.count(LOG_LINES[0]) == 2
    # --follow streams (KWOK's log stub never reports the container finished, so the stream stays open here;
    # a real kubelet ends it with the container).
    proc = subprocess.Popen([sys.executable, "-m", "ssrl", "jobs", "logs", "watch-train", "-n", ns, "--follow"],
                            stdout=subprocess.PIPE, text=True, env=cluster.env(), cwd=ROOT)
    watchdog = threading.Timer(60, proc.kill)  # readline blocks: a stream that never delivers is killed
    watchdog.start()
    try:
        lines: list[str] = []
        while LOG_LINES[-1] not in "".join(lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert LOG_LINES[0] in "".join(lines) and LOG_LINES[-1] in "".join(lines), lines
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()

    cluster.kubectl("annotate", "pods", "-n", ns, "-l", "training.kubeflow.org/job-name=watch-train",
                    "ssrl-test/keep-running-")
    wait_for("Succeeded", lambda: phase("Succeeded"), timeout=120, every=0.3)
    assert seen[-1] == "Succeeded" and "Running" in seen, seen
    r = ssrl(cluster, "jobs", "status", "watch-train", "-n", ns)
    assert r.returncode == 0 and "Succeeded" in r.stdout
    r = ssrl(cluster, "jobs", "ls", "-n", ns)
    assert r.returncode == 0 and "watch-train" in r.stdout and "PyTorchJob" in r.stdout
    r = ssrl(cluster, "jobs", "status", "nope", "-n", ns)
    assert r.returncode != 0 and "nope" in r.stderr

    r = ssrl(cluster, "jobs", "delete", "watch-train", "-n", ns)
    assert r.returncode == 0, r.stderr
    wait_for("pods and services gone", lambda: not get(cluster, "pods", "-n", ns)["items"] and not [
        s for s in get(cluster, "services", "-n", ns)["items"] if s["metadata"]["name"].startswith("watch-")])
    assert cluster.kubectl("get", "pytorchjob", "watch-train", "-n", ns, check=False).returncode != 0


def test_helm_multinode_training_takes_one_8_gpu_node_per_pod(cluster: Cluster) -> None:
    """helm/ssrl/ci/multinode-values.yaml: Master + 2 Workers x 8 GPUs x 8 processes (24 ranks), 64 generator
    shards, an 8-GPU evaluation, on four fake 8-GPU nodes."""
    helm, ns = str(tool("helm")), "ssrl-multi"
    r = subprocess.run([helm, "install", "multi", str(ROOT / "helm" / "ssrl"), "-n", ns, "--create-namespace",
                        "-f", str(ROOT / "helm" / "ssrl" / "ci" / "multinode-values.yaml"), "--wait", "--timeout",
                        "3m", "--set-string", "train.podAnnotations.ssrl-test/keep-running=true"],
                       capture_output=True, text=True, env=cluster.env(), timeout=240)
    # The trainer pods stay Running (KWOK stage) until checked: helm --wait outlasts a 3-s fake training run.
    assert r.returncode == 0, r.stdout + r.stderr
    train = next(j["metadata"]["name"] for j in get(cluster, "pytorchjobs", "-n", ns)["items"]
                 if j["metadata"]["labels"].get("app.kubernetes.io/component") == "train")
    pods = wait_for("3 scheduled training pods", lambda: (lambda items: items if len(items) == 3 and all(
        p["spec"].get("nodeName") for p in items) else None)(
        get(cluster, "pods", "-n", ns, "-l", f"training.kubeflow.org/job-name={train}")["items"]))
    assert len({p["spec"]["nodeName"] for p in pods}) == 3  # 8 GPUs each: one pod per node
    assert {env_of(p)["WORLD_SIZE"] for p in pods} == {"24"} and sorted(env_of(p)["RANK"] for p in pods) == [
        "0", "1", "2"]
    cluster.kubectl("annotate", "pods", "-n", ns, "-l", f"training.kubeflow.org/job-name={train}",
                    "ssrl-test/keep-running-")
    wait_for("training Succeeded", lambda: pytorchjob_phase(cluster, train, ns) == "Succeeded")
    gen = next(j for j in get(cluster, "jobs", "-n", ns)["items"]
               if j["metadata"]["labels"].get("app.kubernetes.io/component") == "generate")
    assert gen["spec"]["completions"] == 64
    wait_for("64 shards done", lambda: get(cluster, "job", gen["metadata"]["name"], "-n", ns).get(
        "status", {}).get("succeeded") == 64, timeout=180)


def test_a_real_training_run_records_its_progress_in_its_configmap(cluster: Cluster, synth_dir: Path,
                                                                    tmp_path: Path) -> None:
    """`ssrl train` (tiny model, real TRL steps) run as rank 0 of an existing PyTorchJob, as the pod would: the
    progress lands in the ConfigMap `ssrl submit train` created with the job."""
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    from ssrl.dataset.generate import GenerateConfig, run
    from ssrl.recipes.tiny_model import build_tiny_model

    ns = "progress"
    store_secret(cluster, ns)
    r = ssrl(cluster, "submit", "train", "--name", "local", "-n", ns, "--set", "store_endpoint=http://minio:9000")
    assert r.returncode == 0, r.stderr
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "tasks"), min_pixels=3136, max_pixels=12544))
    build_tiny_model(tmp_path / "tiny")
    env = {**cluster.env(), "SSRL_JOB_NAME": "local-train", "SSRL_JOB_NAMESPACE": ns, "SSRL_PROGRESS_INTERVAL": "0",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-m", "ssrl", "train", "--model", str(tmp_path / "tiny"), "--dataset",
                        str(tmp_path / "tasks"), "--output", str(tmp_path / "run"), "--max-steps", "2",
                        "--set", "save_steps=2", "--set", "max_completion_length=16", "--set", "min_pixels=3136",
                        "--set", "max_pixels=12544", "--set", "per_device_train_batch_size=4",
                        "--set", "num_generations=2", "--set", "report_to=[]"],
                       capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    r = ssrl(cluster, "jobs", "status", "local-train", "-n", ns, "--json")
    assert r.returncode == 0, r.stderr
    progress = json.loads(r.stdout)["progress"]
    assert progress["step"] == 2 and progress["max_steps"] == 2 and "reward" in progress
    assert progress["accuracy"] and set(progress["accuracy"]) <= {"shuffle", "flip", "crop", "depth_order", "position"}
    r = ssrl(cluster, "jobs", "status", "local-train", "-n", ns)
    assert r.returncode == 0 and "step" in r.stdout
