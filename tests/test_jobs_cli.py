"""``ssrl jobs`` and the trainer's progress ConfigMap, without a cluster.

Status and pod choice are derived from literal API objects in the shapes the API server and the Training
Operator v1.9 return (``kubectl get -o json``); the progress callback runs with a recording patch function.
The cluster tier exercises the same functions against a real kube-apiserver.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

pytest.importorskip("kubernetes")

from typer.testing import CliRunner

from ssrl.cli.jobs_cmd import _age, jobs_app
from ssrl.cluster.client import (
    PROGRESS_KEY,
    batch_job_phase,
    build_progress,
    job_status,
    pick_pods,
    progress_configmap,
    progress_of,
    progress_rows,
    pytorchjob_phase,
)

NOW = dt.datetime(2026, 2, 12, 10, 31, 7, 123456, tzinfo=dt.UTC)
PROGRESS = {"step": 120, "max_steps": 500, "reward": 0.6125, "accuracy": {"depth": 0.7, "shuffle": 0.55},
            "updated": "2026-02-12T10:31:07Z"}

RUNNING_PTJ = {
    "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
    "metadata": {"name": "exp1-train", "namespace": "ml", "creationTimestamp": "2026-02-12T09:00:00Z",
                 "uid": "4f0c7d2e-0000-4000-8000-000000000001",
                 "labels": {"app.kubernetes.io/part-of": "ssrl", "app.kubernetes.io/component": "train"}},
    "spec": {"nprocPerNode": "8", "pytorchReplicaSpecs": {"Master": {"replicas": 1}, "Worker": {"replicas": 2}}},
    "status": {
        "conditions": [
            {"type": "Created", "status": "True", "reason": "PyTorchJobCreated",
             "message": "PyTorchJob exp1-train is created.", "lastTransitionTime": "2026-02-12T09:00:00Z"},
            {"type": "Running", "status": "True", "reason": "PyTorchJobRunning",
             "message": "PyTorchJob ml/exp1-train is running.", "lastTransitionTime": "2026-02-12T09:01:00Z"},
        ],
        "replicaStatuses": {"Master": {"active": 1, "selector": "training.kubeflow.org/job-name=exp1-train"},
                            "Worker": {"active": 2}},
        "startTime": "2026-02-12T09:00:01Z", "lastReconcileTime": "2026-02-12T09:01:00Z",
    },
}

SUCCEEDED_PTJ_CONDITIONS = [
    {"type": "Created", "status": "True"},
    {"type": "Running", "status": "False"},
    {"type": "Succeeded", "status": "True", "message": "PyTorchJob ml/exp1-train successfully completed."},
]

FAILED_JOB = {
    "apiVersion": "batch/v1", "kind": "Job",
    "metadata": {"name": "exp1-generate", "namespace": "ml", "labels": {"app.kubernetes.io/component": "generate"}},
    "spec": {"completionMode": "Indexed", "completions": 4, "parallelism": 4},
    "status": {"failed": 7, "succeeded": 3, "startTime": "2026-02-12T09:00:00Z", "uncountedTerminatedPods": {},
               "conditions": [
                   {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
                   {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit"}]},
}


# ---------------------------------------------------------------------------------------------------------------
# phases and status


def test_pytorchjob_phase_is_the_last_true_condition():
    assert pytorchjob_phase(RUNNING_PTJ) == ("Running", "PyTorchJob ml/exp1-train is running.")
    done = {**RUNNING_PTJ, "status": {"conditions": SUCCEEDED_PTJ_CONDITIONS}}
    assert pytorchjob_phase(done)[0] == "Succeeded"
    restarting = {"status": {"conditions": [{"type": "Created", "status": "True"},
                                            {"type": "Restarting", "status": "True"}]}}
    assert pytorchjob_phase(restarting)[0] == "Restarting"
    created = {"status": {"conditions": [{"type": "Created", "status": "True"}]}}
    assert pytorchjob_phase(created)[0] == "Created"
    assert pytorchjob_phase({"metadata": {"name": "new"}}) == ("Pending", "")


def test_batch_job_phases():
    assert batch_job_phase(FAILED_JOB) == ("Failed", "Job has reached the specified backoff limit")
    complete = {"status": {"succeeded": 1, "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                                          {"type": "Complete", "status": "True"}]}}
    assert batch_job_phase(complete)[0] == "Succeeded"
    assert batch_job_phase({"status": {"active": 2}})[0] == "Running"
    assert batch_job_phase({"status": {}})[0] == "Pending"
    suspended = {"status": {"conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]}}
    assert batch_job_phase(suspended) == ("Suspended", "JobSuspended")


def _progress_cm(raw: str) -> dict:
    return {**progress_configmap("exp1-train", "ml"), "data": {PROGRESS_KEY: raw}}


def test_job_status_of_a_running_pytorchjob():
    s = job_status(RUNNING_PTJ, progress_of(_progress_cm(json.dumps(PROGRESS))))
    assert (s.kind, s.name, s.namespace, s.phase, s.component) == ("PyTorchJob", "exp1-train", "ml", "Running",
                                                                  "train")
    assert s.replicas == {"Master": {"active": 1, "succeeded": 0, "failed": 0},
                          "Worker": {"active": 2, "succeeded": 0, "failed": 0}}
    assert s.started == "2026-02-12T09:00:01Z" and s.completed == ""
    assert s.progress == PROGRESS


def test_job_status_of_a_failed_job_and_a_bad_annotation():
    s = job_status(FAILED_JOB)
    assert (s.kind, s.phase) == ("Job", "Failed")
    assert s.replicas == {"pods": {"active": 0, "succeeded": 3, "failed": 7}}
    assert s.started == "2026-02-12T09:00:00Z"  # as the API writes it, also when the client gave a datetime
    start = dt.datetime(2026, 2, 12, 9, tzinfo=dt.UTC)
    as_client = {**FAILED_JOB, "status": {**FAILED_JOB["status"], "startTime": start}}
    assert job_status(as_client).started == "2026-02-12T09:00:00Z"
    assert s.progress is None
    assert progress_of(_progress_cm("{not json")) is None and progress_of(_progress_cm("[1]")) is None
    assert progress_of(progress_configmap("exp1-train", "ml")) is None and progress_of(None) is None


def test_progress_configmap_is_named_after_its_job_and_owned_by_it():
    """What the chart, k8s/ and `ssrl submit train` create up front: the trainer's Role then needs no `create`."""
    cm = progress_configmap("exp1-train", "ml", {"app.kubernetes.io/part-of": "ssrl"}, owner=RUNNING_PTJ)
    assert cm["metadata"]["name"] == "exp1-train-progress" and cm["metadata"]["namespace"] == "ml"
    assert cm["metadata"]["labels"] == {"app.kubernetes.io/part-of": "ssrl", "ssrl.dev/progress-of": "exp1-train"}
    assert cm["metadata"]["ownerReferences"] == [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                                                  "name": "exp1-train", "uid": RUNNING_PTJ["metadata"]["uid"]}]
    assert "data" not in cm


# ---------------------------------------------------------------------------------------------------------------
# the progress record


def test_build_progress_from_a_trainer_log_and_task_accuracy():
    from ssrl.recipes.callbacks import TaskAccuracy

    accuracy = TaskAccuracy()
    for task, value in (("depth", 1.0), ("depth", 0.0), ("shuffle", 1.0)):
        accuracy.add(task, value)
    logs = {"loss": 0.01, "reward": 0.61254, "reward_std": 0.2, "kl": 0.003, **accuracy.drain()}
    progress = build_progress(120, 500, logs, now=NOW)
    assert progress == {"step": 120, "max_steps": 500, "reward": 0.6125,
                        "accuracy": {"depth": 0.5, "shuffle": 1.0}, "updated": "2026-02-12T10:31:07Z"}
    assert build_progress(3, -1, {"loss": 1.0}, now=NOW) == {"step": 3, "updated": "2026-02-12T10:31:07Z"}
    assert len(json.dumps(progress, separators=(",", ":"))) < 200  # compact: a status record, not a log


def test_progress_rows():
    assert progress_rows(PROGRESS) == [("step", "120 / 500"), ("reward", "0.6125"), ("accuracy depth", "0.700"),
                                       ("accuracy shuffle", "0.550"), ("updated", "2026-02-12T10:31:07Z")]
    assert progress_rows({}) == []


class _State:
    """The TrainerState fields the callback reads."""

    def __init__(self, step: int, rank0: bool = True, max_steps: int = 10):
        self.global_step, self.is_world_process_zero, self.max_steps = step, rank0, max_steps


def _patches():
    sent: list[tuple[str, str, dict]] = []
    return sent, lambda name, namespace, progress: sent.append((name, namespace, progress))


def test_progress_callback_throttles_and_flushes_at_the_end():
    from ssrl.recipes.callbacks import JobProgressCallback

    sent, patch = _patches()
    cb = JobProgressCallback("exp1-train", "ml", interval=3600, patch=patch)
    cb.on_log(None, _State(1), None, logs={"reward": 0.5, "accuracy/depth": 0.25})
    cb.on_log(None, _State(2), None, logs={"reward": 0.75, "accuracy/shuffle": 1.0})  # within the interval
    cb._thread.join(5)
    assert [p["step"] for _, _, p in sent] == [1]
    assert sent[0][:2] == ("exp1-train", "ml")
    cb.on_log(None, _State(2), None, logs={"train_runtime": 12.0})  # the summary log: no reward
    cb.on_train_end(None, _State(2), None)
    assert len(sent) == 2
    final = sent[-1][2]
    assert final["step"] == 2 and final["max_steps"] == 10 and final["reward"] == 0.75
    assert final["accuracy"] == {"depth": 0.25, "shuffle": 1.0}


def test_progress_callback_only_rank0_and_only_in_a_job():
    from ssrl.recipes.callbacks import JobProgressCallback

    sent, patch = _patches()
    worker = JobProgressCallback("exp1-train", "ml", interval=0, patch=patch)
    worker.on_log(None, _State(1, rank0=False), None, logs={"reward": 1.0})
    worker.on_train_end(None, _State(1, rank0=False), None)
    assert sent == []
    outside = JobProgressCallback.from_env({})
    assert not outside.active
    outside.on_log(None, _State(1), None, logs={"reward": 1.0})
    env = {"SSRL_JOB_NAME": "exp1-train", "POD_NAMESPACE": "ml", "SSRL_PROGRESS_INTERVAL": "5"}
    inside = JobProgressCallback.from_env(env)
    assert (inside.active, inside.name, inside.namespace, inside.interval) == (True, "exp1-train", "ml", 5.0)
    assert JobProgressCallback.from_env({**env, "SSRL_JOB_NAMESPACE": "other"}).namespace == "other"


def test_progress_callback_never_raises_and_warns_once(caplog):
    from ssrl.recipes.callbacks import JobProgressCallback

    calls = []

    def broken(name, namespace, progress):
        calls.append(progress["step"])
        raise RuntimeError("403 Forbidden")

    cb = JobProgressCallback("exp1-train", "ml", interval=0, patch=broken)
    with caplog.at_level(logging.WARNING, logger="ssrl.recipes.callbacks"):
        for step in (1, 2, 3):
            cb.on_log(None, _State(step), None, logs={"reward": 0.1})
            cb._thread.join(5)
        cb.on_train_end(None, _State(3), None)
    assert calls[:3] == [1, 2, 3]
    warnings = [r for r in caplog.records if "cannot record progress" in r.getMessage()]
    assert len(warnings) == 1 and "403 Forbidden" in warnings[0].getMessage()


def test_progress_callback_without_cluster_config_stops_trying(tmp_path, monkeypatch):
    from ssrl.recipes.callbacks import JobProgressCallback

    _no_cluster(tmp_path, monkeypatch)
    cb = JobProgressCallback("exp1-train", "ml", interval=0)
    cb.on_log(None, _State(1), None, logs={"reward": 0.1})
    cb._thread.join(30)
    assert cb.active is False  # no kubeconfig, not in a pod: nothing to retry


# ---------------------------------------------------------------------------------------------------------------
# pods for logs


def _pod(name: str, created: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created, "labels": labels}}


def test_pick_pods_defaults_to_master_0_or_index_0():
    ptj = [_pod("t-worker-1", "2026-02-12T09:00:02Z", **{"training.kubeflow.org/replica-type": "worker",
                                                         "training.kubeflow.org/replica-index": "1"}),
           _pod("t-master-0", "2026-02-12T09:00:01Z", **{"training.kubeflow.org/replica-type": "master",
                                                         "training.kubeflow.org/replica-index": "0",
                                                         "training.kubeflow.org/job-role": "master"}),
           _pod("t-worker-0", "2026-02-12T09:00:01Z", **{"training.kubeflow.org/replica-type": "worker",
                                                         "training.kubeflow.org/replica-index": "0"})]
    assert [p["metadata"]["name"] for p in pick_pods("PyTorchJob", ptj, False)] == ["t-master-0"]
    assert [p["metadata"]["name"] for p in pick_pods("PyTorchJob", ptj, True)] == ["t-master-0", "t-worker-0",
                                                                                  "t-worker-1"]
    job = [_pod("g-1-abc", "2026-02-12T09:00:00Z", **{"batch.kubernetes.io/job-completion-index": "1"}),
           _pod("g-0-old", "2026-02-12T09:00:00Z", **{"batch.kubernetes.io/job-completion-index": "0"}),
           _pod("g-0-new", "2026-02-12T09:05:00Z", **{"batch.kubernetes.io/job-completion-index": "0"})]
    assert [p["metadata"]["name"] for p in pick_pods("Job", job, False)] == ["g-0-new"]  # the latest attempt
    plain = [_pod("e-x", "2026-02-12T09:00:00Z"), _pod("e-y", "2026-02-12T09:01:00Z")]
    assert [p["metadata"]["name"] for p in pick_pods("Job", plain, False)] == ["e-y"]
    assert pick_pods("Job", [], False) == []


def test_age():
    now = dt.datetime(2026, 2, 12, 12, 0, 0, tzinfo=dt.UTC)
    assert _age("2026-02-12T11:59:48Z", now) == "12s"
    assert _age("2026-02-12T09:58:00Z", now) == "2h2m"
    assert _age("2026-02-09T09:00:00+00:00", now) == "3d3h"
    assert _age("", now) == ""


# ---------------------------------------------------------------------------------------------------------------
# the commands without a cluster


FAKE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:1"}}]
contexts: [{name: fake, context: {cluster: fake, user: u, namespace: ml}}]
current-context: fake
users: [{name: u, user: {token: not-a-secret}}]
"""


def _no_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing" / "config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


@pytest.mark.parametrize("args", [["ls"], ["status", "exp1-train"], ["logs", "exp1-train", "--all", "--tail", "5"],
                                  ["delete", "exp1-train", "-n", "ml"]])
def test_jobs_without_cluster_is_one_clear_line(args, tmp_path, monkeypatch):
    _no_cluster(tmp_path, monkeypatch)
    result = CliRunner().invoke(jobs_app, args)
    assert result.exit_code == 1, result.output
    assert "no Kubernetes cluster is configured" in result.output and "kubeconfig" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_jobs_ls_through_the_ssrl_entry_point(tmp_path, monkeypatch, capsys):
    from ssrl.cli import main

    _no_cluster(tmp_path, monkeypatch)
    assert main(["jobs", "ls", "-n", "ml"]) == 1
    assert "kubeconfig" in capsys.readouterr().err


def test_jobs_unreachable_server_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(FAKE_KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(jobs_app, ["status", "exp1-train"])
    assert result.exit_code == 1, result.output
    assert "reading PyTorchJob ml/exp1-train" in result.output  # the namespace from the kubeconfig context
    assert "cannot reach the Kubernetes API server at http://127.0.0.1:1" in result.output
    assert "not-a-secret" not in result.output and "Traceback" not in result.output


def test_bad_kind_is_refused(tmp_path, monkeypatch):
    _no_cluster(tmp_path, monkeypatch)
    result = CliRunner().invoke(jobs_app, ["status", "x", "--kind", "deployment"])
    assert result.exit_code == 1 and "--kind must be PyTorchJob or Job" in result.output
