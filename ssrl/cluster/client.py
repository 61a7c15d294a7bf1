"""The platform's jobs in a cluster, for ``ssrl jobs``: list, status, logs, delete, and the training progress.

Every object is handled as plain API data (camelCase dicts, as ``kubectl get -o json`` shows it), so the status
logic is pure and tested on literal objects; the cluster functions take an optional ``ApiClient`` (default: the
kubeconfig or in-cluster configuration) so they run against any real API server.

Progress: the trainer's rank 0 writes a compact JSON object into the ConfigMap ``<job>-progress``
(:func:`write_progress`, key :data:`PROGRESS_KEY`)::

    {"step": 120, "max_steps": 500, "reward": 0.61, "accuracy": {"depth": 0.7, "shuffle": 0.55},
     "updated": "2026-02-12T10:31:07Z"}

A ConfigMap of its own, created up front (chart, k8s/, ``ssrl submit``), lets the trainer's Role grant ``get`` and
``patch`` on that one object and nothing else: a token that may patch its PyTorchJob could rewrite the replica
templates the operator turns into pods.

Pod labels used for logs: PyTorchJob pods carry the Training Operator's (v1.9) ``training.kubeflow.org/job-name``,
``training.kubeflow.org/replica-type`` (lower case: master, worker) and ``training.kubeflow.org/replica-index``;
Job pods carry ``job-name`` and, for Indexed Jobs, ``batch.kubernetes.io/job-completion-index``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ssrl.errors import SSRLError

PROGRESS_KEY = "progress.json"
"""Key in the progress ConfigMap: JSON {step, max_steps, reward, accuracy: {task: value}, updated}."""
PROGRESS_LABEL = "ssrl.dev/progress-of"
"""Label of a progress ConfigMap: the job it belongs to."""
PART_OF_SELECTOR = "app.kubernetes.io/part-of=ssrl"
"""Set on every object by ``ssrl submit``, the Helm chart and the kustomize base."""
GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
PTJ_JOB_LABEL = "training.kubeflow.org/job-name"
PTJ_TYPE_LABEL = "training.kubeflow.org/replica-type"
PTJ_INDEX_LABEL = "training.kubeflow.org/replica-index"
JOB_LABEL = "job-name"
JOB_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
KINDS = ("PyTorchJob", "Job")
_NO_CLUSTER_HINT = "set KUBECONFIG (or ~/.kube/config) to reach a cluster"


# ---------------------------------------------------------------------------------------------------------------
# pure: status and progress from API objects


@dataclass
class JobStatus:
    """What ``ssrl jobs status`` shows of one Job or PyTorchJob."""

    kind: str
    name: str
    namespace: str
    phase: str
    component: str = ""
    created: str = ""
    started: str = ""
    completed: str = ""
    message: str = ""
    replicas: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per replica type (PyTorchJob: Master, Worker; Job: pods): active / succeeded / failed."""
    progress: dict[str, Any] | None = None


def pytorchjob_phase(obj: dict[str, Any]) -> tuple[str, str]:
    """(phase, message): the type of the last condition whose status is True (the operator's order), else Pending."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    true = [c for c in conditions if str(c.get("status")) == "True"]
    if not true:
        return "Pending", ""
    last = true[-1]
    return str(last.get("type", "Unknown")), str(last.get("message") or "")


def batch_job_phase(obj: dict[str, Any]) -> tuple[str, str]:
    """(phase, message) of a batch Job: Succeeded / Failed / Suspended by condition, else Running or Pending."""
    status = obj.get("status") or {}
    by_type = {c.get("type"): c for c in status.get("conditions") or [] if str(c.get("status")) == "True"}
    for condition, phase in (("Complete", "Succeeded"), ("Failed", "Failed"), ("Suspended", "Suspended")):
        if condition in by_type:
            return phase, str(by_type[condition].get("message") or by_type[condition].get("reason") or "")
    return ("Running" if status.get("active") else "Pending"), ""


def progress_configmap_name(job: str) -> str:
    """The progress ConfigMap of a job (at most 62 characters for a job name of at most 53)."""
    return f"{job}-progress"


def progress_configmap(job: str, namespace: str, labels: dict[str, str] | None = None,
                       owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The empty progress ConfigMap created with the job (owned by it when ``owner`` is the job as API data)."""
    meta: dict[str, Any] = {"name": progress_configmap_name(job), "namespace": namespace,
                            "labels": {**(labels or {}), PROGRESS_LABEL: job}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                    "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}


def progress_of(configmap: dict[str, Any] | None) -> dict[str, Any] | None:
    """The decoded progress of a progress ConfigMap, or None when absent or not a JSON object."""
    raw = ((configmap or {}).get("data") or {}).get(PROGRESS_KEY)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def job_status(obj: dict[str, Any], progress: dict[str, Any] | None = None) -> JobStatus:
    """Summary of a Job or PyTorchJob given as API data (``progress``: from its progress ConfigMap)."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    kind = obj.get("kind") or ("PyTorchJob" if "pytorchReplicaSpecs" in (obj.get("spec") or {}) else "Job")
    if kind == "PyTorchJob":
        phase, message = pytorchjob_phase(obj)
        replicas = {role: {k: int(v.get(k) or 0) for k in ("active", "succeeded", "failed")}
                    for role, v in (status.get("replicaStatuses") or {}).items()}
    else:
        phase, message = batch_job_phase(obj)
        replicas = {"pods": {k: int(status.get(k) or 0) for k in ("active", "succeeded", "failed")}}
    return JobStatus(
        kind=kind, name=meta.get("name", ""), namespace=meta.get("namespace", ""), phase=phase,
        component=(meta.get("labels") or {}).get("app.kubernetes.io/component", ""),
        created=_time(meta.get("creationTimestamp")), started=_time(status.get("startTime")),
        completed=_time(status.get("completionTime")), message=message, replicas=replicas,
        progress=progress)


def _time(value: Any) -> str:
    """RFC 3339 in UTC as the API server writes it (``...Z``), whether it came as a string or a datetime."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).isoformat()
    return str(value or "").replace("+00:00", "Z")


def build_progress(step: int, max_steps: int | None, logs: dict[str, Any],
                   now: dt.datetime | None = None) -> dict[str, Any]:
    """The annotation's value from one Trainer log: step, max_steps, mean reward, ``accuracy/<task>`` values."""
    def number(value: Any) -> float | None:
        try:
            return round(float(value), 4)
        except (TypeError, ValueError):
            return None

    accuracy = {key.split("/", 1)[1]: number(value) for key, value in sorted(logs.items())
                if key.startswith("accuracy/") and number(value) is not None}
    progress: dict[str, Any] = {"step": int(step)}
    if max_steps and max_steps > 0:
        progress["max_steps"] = int(max_steps)
    reward = number(logs.get("reward"))
    if reward is not None:
        progress["reward"] = reward
    if accuracy:
        progress["accuracy"] = accuracy
    validation = {key.split("/", 1)[1]: number(value) for key, value in sorted(logs.items())
                  if key.startswith("eval_accuracy/") and number(value) is not None}
    if validation:  # accuracy per task on the held-out split (``eval_steps``)
        progress["validation"] = validation
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    progress["updated"] = stamp.isoformat().replace("+00:00", "Z")
    return progress


def progress_rows(progress: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, value) rows: step (of max), reward, then one ``accuracy <task>`` row per task, updated."""
    rows: list[tuple[str, str]] = []
    if "step" in progress:
        total = progress.get("max_steps")
        rows.append(("step", f"{progress['step']} / {total}" if total else str(progress["step"])))
    if "reward" in progress:
        rows.append(("reward", f"{progress['reward']:.4g}" if isinstance(progress["reward"], int | float)
                     else str(progress["reward"])))
    for task, value in sorted((progress.get("accuracy") or {}).items()):
        rows.append((f"accuracy {task}", f"{value:.3f}" if isinstance(value, int | float) else str(value)))
    if "updated" in progress:
        rows.append(("updated", str(progress["updated"])))
    return rows


def pick_pods(kind: str, pods: list[dict[str, Any]], all_pods: bool) -> list[dict[str, Any]]:
    """The pods to show logs of: all (oldest first), or the primary one (PyTorchJob master 0 / Job index 0)."""
    pods = sorted(pods, key=lambda p: (str((p.get("metadata") or {}).get("creationTimestamp") or ""),
                                       (p.get("metadata") or {}).get("name", "")))
    if all_pods or len(pods) <= 1:
        return pods

    def labels(p: dict[str, Any]) -> dict[str, str]:
        meta = p.get("metadata") or {}
        return {**(meta.get("annotations") or {}), **(meta.get("labels") or {})}

    if kind == "PyTorchJob":
        primary = [p for p in pods if labels(p).get(PTJ_TYPE_LABEL) == "master"
                   and labels(p).get(PTJ_INDEX_LABEL) == "0"]
    else:
        primary = [p for p in pods if labels(p).get(JOB_INDEX_LABEL) == "0"]
    return [(primary or pods)[-1]]  # the newest attempt of the primary pod


# ---------------------------------------------------------------------------------------------------------------
# cluster access


def api_client(api: Any = None) -> Any:
    """``api`` itself, or an ApiClient for the kubeconfig / in-cluster configuration (SSRLError when neither)."""
    if api is not None:
        return api
    from kubernetes import client

    from ssrl.cluster.manifests import cluster_configuration

    return client.ApiClient(cluster_configuration(hint=_NO_CLUSTER_HINT))


def default_namespace() -> str:
    """The kubeconfig context's namespace, else the in-cluster service account's, else ``default``."""
    import os
    from pathlib import Path

    from kubernetes import config

    config_file = os.environ.get("KUBECONFIG") or os.path.join(os.path.expanduser("~"), ".kube", "config")
    try:
        _, active = config.list_kube_config_contexts(config_file=config_file)
        namespace = ((active or {}).get("context") or {}).get("namespace")
        if namespace:
            return str(namespace)
    except Exception:  # no or broken kubeconfig: the client call that follows reports it
        pass
    in_cluster = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    with contextlib.suppress(OSError):
        return in_cluster.read_text().strip() or "default"
    return "default"


@contextlib.contextmanager
def api_errors(what: str, api: Any) -> Iterator[None]:
    """Turn the client's errors into one SSRLError line: the API's status and message, or an unreachable server."""
    import urllib3
    from kubernetes.client.rest import ApiException

    from ssrl.cluster.manifests import _api_message

    try:
        yield
    except ApiException as e:
        raise SSRLError(f"{what}: {e.status} {e.reason}{_api_message(e)}") from None
    except urllib3.exceptions.HTTPError as e:
        reason = getattr(e, "reason", None) or e
        raise SSRLError(f"{what}: cannot reach the Kubernetes API server at {api.configuration.host} "
                        f"({type(reason).__name__})") from None


def _not_found(e: Exception) -> bool:
    return getattr(e, "status", None) == 404


def list_jobs(namespace: str, api: Any = None, selector: str = PART_OF_SELECTOR) -> list[JobStatus]:
    """The platform's PyTorchJobs and Jobs in ``namespace``, oldest first (no PyTorchJob CRD: Jobs only)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = api_client(api)
    objs: list[dict[str, Any]] = []
    with api_errors(f"listing PyTorchJobs in {namespace}", api):
        try:
            found = client.CustomObjectsApi(api).list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, label_selector=selector)
            objs += [{"kind": "PyTorchJob", **o} for o in found.get("items", [])]
        except ApiException as e:
            if not _not_found(e):  # 404: the Training Operator's CRD is not installed
                raise
    with api_errors(f"listing Jobs in {namespace}", api):
        jobs = client.BatchV1Api(api).list_namespaced_job(namespace, label_selector=selector)
        objs += [{"kind": "Job", **api.sanitize_for_serialization(j)} for j in jobs.items]
    progress: dict[str, dict[str, Any] | None] = {}
    with contextlib.suppress(ApiException):  # progress is extra: a user who may not read ConfigMaps still lists
        for cm in client.CoreV1Api(api).list_namespaced_config_map(namespace, label_selector=PROGRESS_LABEL).items:
            cm = api.sanitize_for_serialization(cm)
            progress[cm["metadata"]["labels"][PROGRESS_LABEL]] = progress_of(cm)
    statuses = [job_status(o, progress.get(o["metadata"]["name"])) for o in objs]
    return sorted(statuses, key=lambda s: (s.created, s.kind, s.name))


def get_job(name: str, namespace: str, api: Any = None, kind: str | None = None) -> dict[str, Any]:
    """The PyTorchJob or Job ``name`` as API data; SSRLError when neither (or both, without ``kind``) exists."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    if kind not in (None, *KINDS):
        raise SSRLError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    api = api_client(api)
    found: list[dict[str, Any]] = []
    if kind in (None, "PyTorchJob"):
        with api_errors(f"reading PyTorchJob {namespace}/{name}", api):
            try:
                found.append({"kind": "PyTorchJob", **client.CustomObjectsApi(api).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name)})
            except ApiException as e:
                if not _not_found(e):
                    raise
    if kind in (None, "Job"):
        with api_errors(f"reading Job {namespace}/{name}", api):
            try:
                job = client.BatchV1Api(api).read_namespaced_job(name, namespace)
                found.append({"kind": "Job", **api.sanitize_for_serialization(job)})
            except ApiException as e:
                if not _not_found(e):
                    raise
    if not found:
        what = kind or "Job or PyTorchJob"
        raise SSRLError(f"no {what} named {name!r} in namespace {namespace!r} (`ssrl jobs ls -n {namespace}` "
                        "lists them)")
    if len(found) > 1:
        raise SSRLError(f"both a PyTorchJob and a Job are named {name!r} in {namespace!r}: pass --kind")
    return found[0]


def status(name: str, namespace: str, api: Any = None, kind: str | None = None) -> JobStatus:
    api = api_client(api)
    return job_status(get_job(name, namespace, api, kind), read_progress(name, namespace, api))


def read_progress(job: str, namespace: str, api: Any = None) -> dict[str, Any] | None:
    """The job's progress, or None without a progress ConfigMap (or the right to read it)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = api_client(api)
    with api_errors(f"reading ConfigMap {namespace}/{progress_configmap_name(job)}", api):
        try:
            cm = client.CoreV1Api(api).read_namespaced_config_map(progress_configmap_name(job), namespace)
        except ApiException as e:
            if e.status in (403, 404):
                return None
            raise
    return progress_of(api.sanitize_for_serialization(cm))


def job_pods(obj: dict[str, Any], api: Any = None) -> list[dict[str, Any]]:
    """Every pod of a Job (``job-name``) or PyTorchJob (``training.kubeflow.org/job-name``), as API data."""
    from kubernetes import client

    api = api_client(api)
    meta = obj["metadata"]
    label = PTJ_JOB_LABEL if obj["kind"] == "PyTorchJob" else JOB_LABEL
    with api_errors(f"listing the pods of {obj['kind']} {meta['namespace']}/{meta['name']}", api):
        pods = client.CoreV1Api(api).list_namespaced_pod(meta["namespace"], label_selector=f"{label}={meta['name']}")
    return [api.sanitize_for_serialization(p) for p in pods.items]


def stream_logs(pods: list[str], namespace: str, write: Callable[[str], None], api: Any = None,
                tail: int | None = None, follow: bool = False) -> None:
    """Write each pod's log lines (prefixed ``[pod]`` when several); with ``follow`` all pods at once, until done."""
    from kubernetes import client

    api = api_client(api)
    core = client.CoreV1Api(api)
    lock = threading.Lock()
    errors: list[SSRLError] = []

    def one(pod: str) -> None:
        prefix = f"[{pod}] " if len(pods) > 1 else ""
        try:
            with api_errors(f"reading the log of pod {namespace}/{pod}", api):
                response = core.read_namespaced_pod_log(pod, namespace, tail_lines=tail, follow=follow,
                                                        _preload_content=False)
                pending = b""
                try:
                    for chunk in response.stream(4096):
                        lines = (pending + chunk).split(b"\n")
                        pending = lines.pop()
                        with lock:
                            for line in lines:
                                write(prefix + line.decode("utf-8", "replace"))
                finally:
                    response.release_conn()
                if pending:
                    with lock:
                        write(prefix + pending.decode("utf-8", "replace"))
        except SSRLError as e:
            errors.append(e)

    if follow and len(pods) > 1:
        threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in pods]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)  # a short join keeps Ctrl-C responsive
    else:
        for pod in pods:
            one(pod)
    if errors and len(errors) == len(pods):
        raise errors[0]
    for e in errors:
        write(f"(skipped: {e})")


def delete_job(name: str, namespace: str, api: Any = None, kind: str | None = None) -> str:
    """Delete a Job or PyTorchJob with Foreground propagation (its pods go first); returns ``kind/ns/name``."""
    from kubernetes import client

    api = api_client(api)
    obj = get_job(name, namespace, api, kind)
    what = f"deleting {obj['kind']} {namespace}/{name}"
    with api_errors(what, api):
        if obj["kind"] == "PyTorchJob":
            client.CustomObjectsApi(api).delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground")
        else:
            client.BatchV1Api(api).delete_namespaced_job(name, namespace, propagation_policy="Foreground")
    return f"{obj['kind']}/{namespace}/{name}"


def write_progress(job: str, namespace: str, progress: dict[str, Any], api: Any = None,
                   timeout: float | None = 10.0) -> None:
    """Merge-patch the progress into the job's existing ConfigMap (the trainer's Role allows patch on it alone)."""
    from kubernetes import client

    api = api_client(api)
    name = progress_configmap_name(job)
    body = {"data": {PROGRESS_KEY: json.dumps(progress, sort_keys=True, separators=(",", ":"))}}
    with api_errors(f"writing progress to ConfigMap {namespace}/{name}", api):
        client.CoreV1Api(api).patch_namespaced_config_map(name, namespace, body, _request_timeout=timeout)
