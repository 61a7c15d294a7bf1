"""``ssrl store``, ``ssrl model`` and ``ssrl ckpt``: move data, base models and checkpoints between this machine and
a store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ssrl.cli.common import console, out, progress_bar

store_app = typer.Typer(help="Upload to, list and create buckets in a store (local folder or s3://).",
                        no_args_is_help=True)
ckpt_app = typer.Typer(help="List and pull committed checkpoints of a training run.", no_args_is_help=True)
model_app = typer.Typer(help="Put a Hugging Face model folder into a store as a committed model.",
                        no_args_is_help=True)


@store_app.command("upload")
def upload(
    local: Path = typer.Argument(..., help="Folder (or file) to upload."),
    url: str = typer.Argument(..., help="Destination: s3://bucket/prefix or a folder."),
    workers: int = typer.Option(4, "--workers", "-w", min=1, help="Parallel transfers."),
    force: bool = typer.Option(False, "--force", help="Send files even when the store has the same checksum."),
) -> None:
    """Upload, skipping files whose checksum the store already has."""
    from ssrl.store import open_store
    from ssrl.store.transfer import upload_tree

    store = open_store(url)
    if local.is_file():
        store.put_file(local.name, local)
        console.print(f"uploaded {local} -> {store.object_url(local.name)}")
        return
    total = sum(p.stat().st_size for p in local.rglob("*") if p.is_file() and not p.name.startswith("."))
    with progress_bar("bytes") as (set_total, advance):
        set_total(total)
        files = upload_tree(local, store, workers=workers, skip_unchanged=not force, progress=advance)
    sent = sum(f["uploaded"] for f in files.values())
    console.print(f"{sent} uploaded, {len(files) - sent} unchanged -> {store.url}")


@store_app.command("ls")
def ls(url: str = typer.Argument(..., help="s3://bucket/prefix or a folder.")) -> None:
    """List objects under a URL with their sizes."""
    from ssrl.store import open_store

    store = open_store(url)
    items = store.list_sizes()
    for key, size in items:
        out.print(f"{size:>14,}  {key}", markup=False, highlight=False)
    console.print(f"{len(items)} objects, {sum(s for _, s in items):,} bytes under {store.url}")


@store_app.command("mb")
def make_bucket(url: str = typer.Argument(..., help="s3://bucket")) -> None:
    """Create a bucket (no-op when it exists)."""
    from ssrl.store import open_store
    from ssrl.store.s3 import S3Store

    store = open_store(url)
    if not isinstance(store, S3Store):
        raise typer.BadParameter("mb needs an s3:// URL")
    console.print(f"{'created' if store.make_bucket() else 'exists'}: s3://{store.bucket}")


@store_app.command("provision")
def provision(url: str = typer.Argument(..., help="s3://bucket")) -> None:
    """MinIO: create the bucket and a scoped user per role whose keys are in the environment
    (SSRL_STORE_{GENERATOR,TRAINER,EVAL,READER}_{ACCESS,SECRET}_KEY), as the chart's bucket-init Job does."""
    from ssrl.cluster.store_users import provision as provision_users

    for line in provision_users(url):
        console.print(line, markup=False)


@ckpt_app.command("ls")
def ckpt_ls(run_url: str = typer.Argument(..., help="The run's folder, e.g. s3://ssrl/checkpoints/run-1")) -> None:
    """Committed checkpoints of a run (half-written ones are never listed)."""
    from ssrl.store import open_store
    from ssrl.store.checkpoints import latest_step, list_steps, step_prefix
    from ssrl.store.transfer import read_commit

    run = open_store(run_url)
    steps = list_steps(run)
    latest = latest_step(run)
    table = Table(title=f"checkpoints in {run.url}", title_justify="left")
    for col in ("step", "files", "bytes", "latest"):
        table.add_column(col, justify="right")
    for step in steps:
        record = read_commit(run, step_prefix(step)) or {"files": {}}
        size = sum(f["size"] for f in record["files"].values())
        table.add_row(str(step), str(len(record["files"])), f"{size:,}", "*" if step == latest else "")
    out.print(table)


@ckpt_app.command("pull")
def ckpt_pull(
    run_url: str = typer.Argument(..., help="The run's folder, e.g. s3://ssrl/checkpoints/run-1"),
    dest: Path = typer.Argument(..., help="Local folder; loads with from_pretrained afterwards."),
    step: int | None = typer.Option(None, "--step", help="Step to pull (default: latest)."),
    weights_only: bool = typer.Option(False, "--weights-only", help="The model alone (safetensors, config, "
                                      "processor, tokenizer, chat template): no optimizer, scheduler or RNG state."),
) -> None:
    """Download a committed checkpoint, verifying every checksum."""
    from ssrl.store import open_store
    from ssrl.store.checkpoints import pull_checkpoint

    with progress_bar("bytes") as (_, advance):
        got = pull_checkpoint(open_store(run_url), dest, step, progress=advance, weights_only=weights_only)
    console.print(f"step {got}{' (weights only)' if weights_only else ''} -> {dest}")


@model_app.command("push")
def model_push(
    folder: Path = typer.Argument(..., help="A Hugging Face model folder (config.json, safetensors, processor)."),
    url: str = typer.Argument(..., help="Destination, e.g. s3://ssrl/models/base (what train.model names)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Upload pickled files (.bin/.pt) as they are "
                                      "instead of refusing the folder; ssrl never loads them."),
    workers: int = typer.Option(4, "--workers", "-w", min=1, help="Parallel transfers."),
) -> None:
    """Check a model folder, upload it and commit it, so `ssrl train` / `ssrl eval` accept its URL."""
    from ssrl.store import open_store
    from ssrl.store.models import push_model

    store = open_store(url)
    with progress_bar("bytes") as (set_total, advance):
        set_total(sum(p.stat().st_size for p in folder.rglob("*")  # what upload_tree sends: no hidden files
                      if p.is_file() and not any(x.startswith(".") for x in p.relative_to(folder).parts)))
        record = push_model(folder, store, allow_pickle=allow_pickle, workers=workers, progress=advance)
    size = sum(f["size"] for f in record["files"].values())
    console.print(f"{record['model_type']} model, {len(record['files'])} files, {size:,} bytes -> {store.url} "
                  "(committed)")
