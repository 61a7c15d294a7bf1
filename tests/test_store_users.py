"""Scoped store users (``ssrl store provision``, run by the chart's bucket-init Job) against a real MinIO: each
role can do what its workload does (a real generation as the generator, a real checkpoint commit as the trainer,
a pull as the reader) and nothing outside its prefixes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("minio")

import yaml

from ssrl.cluster.store_users import ROLES, policy, role_env
from ssrl.errors import ConfigError, StoreError
from tests.servers import ROOT, cleanup, start_server

BUCKET = "ssrl"
KEYS = {role: (f"ssrl-{role}", f"{role}-secret-0123456789") for role in ROLES}


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory):
    server = start_server("minio", tmp_path_factory.mktemp("minio-users"))
    try:
        env = {**server.env()}
        for role, (access, secret) in KEYS.items():
            access_var, secret_var = role_env(role)
            env[access_var], env[secret_var] = access, secret
        for _ in range(2):  # a second run (every helm upgrade) changes nothing and fails nothing
            r = subprocess.run([sys.executable, "-m", "ssrl", "store", "provision", f"s3://{BUCKET}"], env=env,
                               capture_output=True, text=True, cwd=ROOT, timeout=120)
            assert r.returncode == 0, r.stdout + r.stderr
            assert all(f"user ssrl-{role} ({role}" in r.stderr for role in ROLES), r.stderr
            assert not any(secret in r.stdout + r.stderr for _, secret in KEYS.values())
        yield server
    finally:
        cleanup(server)


@pytest.fixture
def as_role(minio, monkeypatch: pytest.MonkeyPatch):
    """Open the bucket with one role's credentials (or the root's: role None)."""
    from ssrl.store import _root_store, open_store

    def open_as(role: str | None):
        for key, value in minio.env().items():
            monkeypatch.setenv(key, value)
        if role:
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEYS[role][0])
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEYS[role][1])
        _root_store.cache_clear()
        return open_store(f"s3://{BUCKET}")

    yield open_as
    _root_store.cache_clear()


PREFIXES = ["sources", "tasks", "models", "checkpoints", "evals"]


@pytest.mark.parametrize("role", list(ROLES))
def test_each_role_reads_and_writes_only_its_prefixes(as_role, role):
    root = as_role(None)
    for prefix in PREFIXES:
        root.write_bytes(f"{prefix}/seed.txt", b"seed")
    store = as_role(role)
    reads, writes = ROLES[role]
    for prefix in PREFIXES:
        readable = "*" in reads or f"{prefix}/" in reads
        writable = f"{prefix}/" in writes
        if readable:
            assert store.read_bytes(f"{prefix}/seed.txt") == b"seed", (role, prefix)
        else:
            with pytest.raises(StoreError):
                store.read_bytes(f"{prefix}/seed.txt")
        if writable:
            store.write_bytes(f"{prefix}/{role}.txt", b"ok")
            assert root.read_bytes(f"{prefix}/{role}.txt") == b"ok"
        else:
            with pytest.raises(StoreError):
                store.write_bytes(f"{prefix}/{role}.txt", b"no")
            assert not root.exists(f"{prefix}/{role}.txt"), (role, prefix)
    assert store.list("") is not None  # listing key names is allowed to every role


def test_the_workloads_run_under_their_roles(as_role, synth_dir: Path, tmp_path: Path):
    """A real generation (sources -> tasks) as the generator, a checkpoint commit as the trainer, a pull as the
    reader: the policies cover what the code does (HEAD, multipart, commit records, latest pointer)."""
    from ssrl.dataset.generate import GenerateConfig, run
    from ssrl.store.checkpoints import pull_checkpoint, save_checkpoint
    from ssrl.store.transfer import upload_tree

    upload_tree(synth_dir, as_role(None), "sources/synth")
    as_role("generator")
    run(GenerateConfig(inputs=[f"s3://{BUCKET}/sources/synth"], output=f"s3://{BUCKET}/tasks/users",
                       min_pixels=3136, max_pixels=12544, tasks=["shuffle", "depth_order"]))
    assert as_role("trainer").exists("tasks/users/manifest.json")
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"\0" * 1024)
    (ckpt / "config.json").write_text("{}")
    run_store = as_role("trainer").join("checkpoints", "users")
    save_checkpoint(run_store, 1, ckpt)
    assert pull_checkpoint(as_role("reader").join("checkpoints", "users"), tmp_path / "pulled") == 1
    assert (tmp_path / "pulled" / "model.safetensors").read_bytes() == b"\0" * 1024
    with pytest.raises(StoreError):  # the reader cannot move `latest` or prune
        save_checkpoint(as_role("reader").join("checkpoints", "users"), 2, ckpt)


def test_policy_documents_are_prefix_scoped():
    doc = policy("b", "trainer")
    resources = {a: s["Resource"] for s in doc["Statement"] for a in s["Action"]}
    assert resources["s3:PutObject"] == ["arn:aws:s3:::b/checkpoints/*"]
    assert set(resources["s3:GetObject"]) == {"arn:aws:s3:::b/tasks/*", "arn:aws:s3:::b/models/*",
                                             "arn:aws:s3:::b/checkpoints/*"}
    assert "s3:PutObject" not in {a for s in policy("b", "reader")["Statement"] for a in s["Action"]}


def test_bad_provision_input_is_one_line():
    from ssrl.cluster.store_users import provision

    for url in ("s3://b/prefix", "/local/folder", "s3://"):
        with pytest.raises(ConfigError, match="bucket URL"):
            provision(url, env={})
    with pytest.raises(ConfigError, match="set both"):
        provision("s3://b", env={"SSRL_STORE_TRAINER_ACCESS_KEY": "t"})
    with pytest.raises(ConfigError, match="at least 8"):
        provision("s3://b", env={"SSRL_STORE_TRAINER_ACCESS_KEY": "t", "SSRL_STORE_TRAINER_SECRET_KEY": "short"})
    with pytest.raises(ConfigError, match="SSRL_S3_ENDPOINT"):
        provision("s3://b", env={})


# ---------------------------------------------------------------------------------------------------------------
# each workload gets its own Secret (chart and k8s/), and k8s/ ships no password


def _secret_refs(objs: list[dict]) -> dict[str, set[str]]:
    """component -> the Secrets its containers' env reads."""
    from tests.test_deploy import containers

    refs: dict[str, set[str]] = {}
    for obj in objs:
        spec = obj.get("spec") or {}
        templates = [r["template"] for r in spec.get("pytorchReplicaSpecs", {}).values()] or [spec.get("template", obj)]
        component = (templates[0]["metadata"].get("labels") or {}).get("app.kubernetes.io/component", "?")
        for _, _, c in containers(obj):
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.setdefault(component, set()).add(ref["name"])
    return refs


def _check_roles(objs: list[dict], root: str, prefix: str) -> None:
    from tests.test_deploy import containers

    refs = _secret_refs(objs)
    expected = {"generate": f"{prefix}-generator", "train": f"{prefix}-trainer", "eval": f"{prefix}-eval"}
    for component, secret in expected.items():
        assert refs[component] == {secret}, (component, refs[component])
    assert refs["minio"] == {root}
    assert refs["bucket-init"] == {root} | {f"{prefix}-{r}" for r in ROLES}
    users = {o["metadata"]["name"] for o in objs if o["kind"] == "Secret"}
    assert {root} | {f"{prefix}-{r}" for r in ROLES} <= users
    init = next(c for o in objs if o["metadata"]["name"].endswith("bucket-init") for _, _, c in containers(o))
    assert init["args"][:2] == ["store", "provision"]


def test_chart_hands_each_workload_its_own_user():
    from tests.test_deploy import helm_render

    objs = helm_render("default-values.yaml")
    _check_roles(objs, "r-ssrl-store", "r-ssrl-store")
    test_pod = next(o for o in objs if o["kind"] == "Pod")
    assert _secret_refs([test_pod]) == {"test": {"r-ssrl-store-reader"}}
    external = _secret_refs(helm_render("external-minio-values.yaml"))
    assert set().union(*external.values()) == {"s3-credentials"}  # an external store's users are the operator's


def test_k8s_hands_each_workload_its_own_user_and_ships_no_password():
    from tests.test_deploy import K8S, kustomize_render

    for overlay in ("base", "overlays/prod"):
        _check_roles(kustomize_render(overlay), "ssrl-store", "ssrl-store")
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (doc and doc.get("kind") == "Secret"), f"{path} ships a Secret"
    assert (K8S / "base" / "secrets" / ".gitignore").read_text().split()[-1] == "*.env"
