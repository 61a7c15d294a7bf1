"""``ssrl jobs ls|status|logs|delete``: the platform's Jobs and PyTorchJobs in a cluster, without kubectl.

Cluster logic lives in :mod:`ssrl.cluster.client`; this module parses flags and prints. The namespace defaults to the
kubeconfig context's (else ``default``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict

import typer
from rich.table import Table

from ssrl.cli.common import console, exits_on_error, out, sub_app
from ssrl.errors import SSRLError

jobs_app = sub_app("List, inspect, tail and delete the platform's Jobs and PyTorchJobs (training progress included).")

_NAMESPACE = typer.Option(None, "--namespace", "-n", help="Namespace (default: the kubeconfig context's).")
_KIND = typer.Option(None, "--kind", help="PyTorchJob or Job, when both kinds share the name.")
_NAME = typer.Argument(..., help="Job or PyTorchJob name (see `ssrl jobs ls`).")


def _namespace(namespace: str | None) -> str:
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        raise SSRLError("ssrl jobs needs the k8s extra (kubernetes is not installed): pip install 'ssrl[k8s]'") \
            from None
    from ssrl.cluster.client import default_namespace

    return namespace or default_namespace()


def _kind(kind: str | None) -> str | None:
    if kind is None:
        return None
    names = {"pytorchjob": "PyTorchJob", "job": "Job"}
    if kind.lower() not in names:
        raise SSRLError(f"--kind must be PyTorchJob or Job, got {kind!r}")
    return names[kind.lower()]


def _age(timestamp: str, now: dt.datetime | None = None) -> str:
    """``3d4h`` / ``5h2m`` / ``7m`` / ``12s`` since an RFC 3339 time; empty when unknown."""
    try:
        then = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - then).total_seconds()))
    days, hours, minutes = seconds // 86400, seconds % 86400 // 3600, seconds % 3600 // 60
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def _counts(replicas: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{role} {c.get('active', 0)}/{c.get('succeeded', 0)}/{c.get('failed', 0)}"
                     for role, c in replicas.items())


@jobs_app.command("ls")
@exits_on_error
def ls(
    namespace: str | None = _NAMESPACE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """The platform's Jobs and PyTorchJobs (label app.kubernetes.io/part-of=ssrl), oldest first."""
    from ssrl.cluster.client import list_jobs

    ns = _namespace(namespace)
    jobs = list_jobs(ns)
    if as_json:
        typer.echo(json.dumps([asdict(j) for j in jobs], indent=2, sort_keys=True))
        return
    if not jobs:
        console.print(f"no ssrl jobs in namespace {ns}", markup=False)
        return
    table = Table(box=None, header_style="bold")
    for column in ("KIND", "NAME", "COMPONENT", "PHASE", "PODS active/succeeded/failed", "STEP", "AGE"):
        table.add_column(column)
    for j in jobs:
        step = ""
        if j.progress and "step" in j.progress:
            step = f"{j.progress['step']}/{j.progress['max_steps']}" if j.progress.get("max_steps") \
                else str(j.progress["step"])
        table.add_row(j.kind, j.name, j.component, j.phase, _counts(j.replicas), step, _age(j.created))
    out.print(table)


@jobs_app.command("status")
@exits_on_error
def status(
    name: str = _NAME,
    namespace: str | None = _NAMESPACE,
    kind: str | None = _KIND,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Phase, replica counts, times and training progress (step, reward, accuracy per task) of one job."""
    from ssrl.cluster.client import progress_rows
    from ssrl.cluster.client import status as job_status

    s = job_status(name, _namespace(namespace), kind=_kind(kind))
    if as_json:
        typer.echo(json.dumps(asdict(s), indent=2, sort_keys=True))
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", f"{s.kind} {s.namespace}/{s.name}")
    table.add_row("phase", s.phase)
    if s.message:
        table.add_row("message", s.message)
    for role, counts in s.replicas.items():
        table.add_row(role, ", ".join(f"{k} {v}" for k, v in counts.items()))
    for label, value in (("created", s.created), ("started", s.started), ("completed", s.completed)):
        if value:
            table.add_row(label, value)
    for label, value in progress_rows(s.progress or {}):
        table.add_row(label, value)
    out.print(table)


@jobs_app.command("logs")
@exits_on_error
def logs(
    name: str = _NAME,
    namespace: str | None = _NAMESPACE,
    kind: str | None = _KIND,
    all_pods: bool = typer.Option(False, "--all", "-a", help="Every pod (prefixed), not only master 0 / index 0."),
    tail: int | None = typer.Option(None, "--tail", min=0, help="Only the last N lines of each pod."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the pods end."),
) -> None:
    """Log of the job's primary pod (PyTorchJob master 0, Job index 0), or of every pod with --all."""
    from ssrl.cluster.client import api_client, get_job, job_pods, pick_pods, stream_logs

    ns = _namespace(namespace)
    api = api_client()
    obj = get_job(name, ns, api, kind=_kind(kind))
    pods = pick_pods(obj["kind"], job_pods(obj, api), all_pods)
    if not pods:
        raise SSRLError(f"{obj['kind']} {ns}/{name} has no pods (yet): `ssrl jobs status {name} -n {ns}`")
    stream_logs([p["metadata"]["name"] for p in pods], ns, lambda line: typer.echo(line), api=api, tail=tail,
                follow=follow)


@jobs_app.command("delete")
@exits_on_error
def delete(
    name: str = _NAME,
    namespace: str | None = _NAMESPACE,
    kind: str | None = _KIND,
) -> None:
    """Delete a Job or PyTorchJob and, first, its pods (Foreground propagation)."""
    from ssrl.cluster.client import delete_job

    deleted = delete_job(name, _namespace(namespace), kind=_kind(kind))
    console.print(f"deleted {deleted} (its pods go first)", markup=False)
