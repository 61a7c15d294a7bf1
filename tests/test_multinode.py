"""Training across nodes, reproduced on one CPU machine: two ``torchrun`` agents (``--nnodes 2``) on loopback, each with
its own scratch folder (as two pods have two disks), gloo for NCCL, checkpoints in a real MinIO.

What a first multi-node run would hit (issue 13): optimizer shards that only the other node wrote, a commit made
before every rank finished writing, uploads that block training or fail silently, local ranks racing on the same
download, and ZeRO-3 loading a full model copy on every rank.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("deepspeed")

from ssrl.dataset.generate import GenerateConfig, run
from ssrl.store import open_store
from ssrl.store.checkpoints import latest_step, list_steps
from tests.servers import free_port

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
FAST = ["--set", "max_completion_length=12", "--set", "min_pixels=3136", "--set", "max_pixels=12544",
        "--set", "per_device_train_batch_size=4", "--set", "num_generations=2", "--set", "learning_rate=1e-3",
        "--set", "report_to=[]", "--set", "temperature=1.0", "--set", "tasks=[rotation]", "--set", "max_samples=64"]

# A reward with variance: the random tiny model earns nothing from accuracy or format, so without it the
# advantages, the loss and every gradient are 0 and a resume would match an uninterrupted run trivially.
REWARD = '''
from ssrl.recipes.rewards import completion_text


class LengthReward:
    __name__ = "length"

    def __call__(self, completions, **kwargs):
        return [len(completion_text(c)) / 64 for c in completions]
'''


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory):
    from tests.servers import cleanup, start_server

    with pytest.MonkeyPatch.context() as mp:  # its byte counters, for "downloaded once"
        mp.setenv("MINIO_PROMETHEUS_AUTH_TYPE", "public")
        server = start_server("minio", tmp_path_factory.mktemp("minio"))
    server.make_bucket("runs")
    yield server
    cleanup(server)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, synth_dir: Path) -> dict[str, Path]:
    from ssrl.recipes.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("multinode")
    build_tiny_model(root / "tiny")
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(root / "tasks"), min_pixels=3136, max_pixels=12544,
                       tasks=["rotation"]))
    (root / "pylib").mkdir()
    (root / "pylib" / "mn_reward.py").write_text(REWARD)
    return {"model": root / "tiny", "tasks": root / "tasks", "root": root}


def env_for(minio, assets: dict[str, Path], **extra: str) -> dict[str, str]:
    return {**os.environ, **minio.env(), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join([str(assets["root"] / "pylib"), os.environ.get("PYTHONPATH", "")]),
            **extra}


def launch_nodes(assets: dict[str, Path], minio, out: str, scratch: Path, *extra: str, nodes: int = 2,
                 nproc: int = 1, dataset: str | None = None) -> list[subprocess.Popen]:
    """One torchrun agent per "node", each with its own scratch folder; logs in scratch/node-<i>.log."""
    port = free_port()
    scratch.mkdir(parents=True, exist_ok=True)
    procs = []
    for node in range(nodes):
        cmd = [TORCHRUN, "--nnodes", str(nodes), "--node_rank", str(node), "--master_addr", "127.0.0.1",
               "--master_port", str(port), "--nproc_per_node", str(nproc), "-m", "ssrl", "train",
               "--model", str(assets["model"]), "--dataset", dataset or str(assets["tasks"]), "--output", out,
               *FAST, "--set", "rewards=[accuracy,mn_reward.LengthReward]", "--set", "reward_weights=[0.5,0.5]",
               "--set", f"work_dir={scratch / f'node-{node}'}", *extra]
        log = (scratch / f"node-{node}.log").open("ab")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env_for(minio, assets),
                                      start_new_session=True))
    return procs


def wait_all(procs: list[subprocess.Popen], scratch: Path, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    for i, p in enumerate(procs):
        try:
            rc = p.wait(max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            kill_all(procs)
            pytest.fail(f"node {i} still running after {timeout}s:\n{tail(scratch, i)}")
        assert rc == 0, f"node {i} exited {rc}:\n{tail(scratch, i)}"


def kill_all(procs: list[subprocess.Popen]) -> None:
    """SIGKILL each node whole, as a lost pod: torchrun and its workers (which torchrun starts in their own
    sessions, so killing torchrun's process group alone would leave them training)."""
    import psutil

    doomed = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(p.pid)
            doomed += [parent, *parent.children(recursive=True)]
    for proc in doomed:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    for p in procs:
        p.wait()
    _, alive = psutil.wait_procs(doomed, timeout=10)
    assert not alive, f"still running after SIGKILL: {alive}"


def tail(scratch: Path, node: int, n: int = 6000) -> str:
    return (scratch / f"node-{node}.log").read_text(errors="replace")[-n:]


def logged(state: dict, key: str) -> dict[int, float]:
    return {h["step"]: h[key] for h in state["log_history"] if key in h}


def weights(run_url: str, step: int, dest: Path) -> dict[str, object]:
    """The step's weights through the ordinary ``from_pretrained`` (a ZeRO-3 run must have gathered them)."""
    from transformers import AutoModelForImageTextToText

    from ssrl.store.checkpoints import pull_checkpoint

    pull_checkpoint(open_store(run_url), dest, step, weights_only=True)
    assert not any(p.name.startswith(("optimizer", "rng_state")) or "global_step" in p.name for p in dest.iterdir())
    model = AutoModelForImageTextToText.from_pretrained(dest)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "kill_after"), [("zero2", 1), ("zero3", 3)])
def test_two_nodes_resume_equals_uninterrupted(minio, assets: dict[str, Path], tmp_path: Path, stage: str,
                                               kill_after: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two nodes × two processes, killed whole (SIGKILL) once step ``kill_after`` is committed, restarted on empty
    scratch: the next steps' loss and the final weights equal an uninterrupted seeded run's. Ranks 2 and 3 wrote
    their optimizer shards (under ZeRO-3 their parameter shards too) only to node 1's disk: node 1's local rank 0
    must upload them, global rank 0 commit them, and node 1 pull them back for both its local ranks.

    One prompt per rank, so 4 per step and 2 steps per epoch: ZeRO-2 resumes inside the first epoch, ZeRO-3 inside
    the second, where the resumed epoch skips batches through accelerate's wrappers (see ``seed_each_epoch``).
    Five steps, so a kill that lands late still leaves steps to compare."""
    import torch

    for k, v in minio.env().items():
        monkeypatch.setenv(k, v)
    steps = ["--max-steps", "5", "--set", "save_steps=1", "--set", "keep_checkpoints=2", "--deepspeed", stage,
             "--set", "per_device_train_batch_size=2"]
    ref_url, cut_url = f"s3://runs/{stage}-ref", f"s3://runs/{stage}-cut"
    wait_all(launch_nodes(assets, minio, ref_url, tmp_path / "ref", *steps, nproc=2), tmp_path / "ref")
    cut = open_store(cut_url)
    procs = launch_nodes(assets, minio, cut_url, tmp_path / "cut", *steps, nproc=2)
    deadline = time.time() + 400
    while (latest_step(cut) or 0) < kill_after:
        assert all(p.poll() is None for p in procs), f"a node exited early:\n{tail(tmp_path / 'cut', 1)}"
        assert time.time() < deadline, f"step {kill_after} not committed after 400 s"
        time.sleep(0.05)
    kill_all(procs)
    done = latest_step(cut)
    assert done is not None and kill_after <= done < 5, f"the run reached step {done} before it was killed"
    committed = set(json.loads(cut.read_bytes(f"step-{done}/_COMMIT.json"))["files"])
    shards = ["optim_states", "model_states"] if stage == "zero3" else ["optim_states"]
    for r in range(4):  # every global rank's shards and RNG state, from both nodes
        wanted = [f"global_step{done}/zero_pp_rank_{r}_mp_rank_00_{s}.pt" for s in shards] + [f"rng_state_{r}.pth"]
        assert set(wanted) <= committed, (r, sorted(committed))

    for node in (0, 1):  # the pods come back on empty disks
        subprocess.run(["rm", "-rf", str(tmp_path / "cut" / f"node-{node}")], check=True)
    wait_all(launch_nodes(assets, minio, cut_url, tmp_path / "cut", *steps, "--resume", "auto", nproc=2),
             tmp_path / "cut")
    assert f"resumed from committed step {done}" in tail(tmp_path / "cut", 0, 100_000)

    ref_state = json.loads(open_store(ref_url).read_bytes("step-5/trainer_state.json"))
    cut_state = json.loads(cut.read_bytes("step-5/trainer_state.json"))
    for key in ("loss", "reward", "kl", "grad_norm"):
        after = {s: v for s, v in logged(cut_state, key).items() if s > done}
        assert after, f"no {key} logged after the resume"
        ref = {s: logged(ref_state, key)[s] for s in after}
        # Same seed, world size, gloo reduction order, one thread per rank: bit-exact here (measured max |diff| 0).
        # The tolerance only absorbs float32 rounding if a kernel's accumulation order changed on other hardware.
        assert after == pytest.approx(ref, rel=1e-5, abs=1e-7), key
    first = weights(ref_url, 5, tmp_path / "w-ref")
    resumed = weights(cut_url, 5, tmp_path / "w-cut")
    assert first.keys() == resumed.keys()
    from transformers import AutoModelForImageTextToText

    initial = AutoModelForImageTextToText.from_pretrained(assets["model"]).state_dict()
    moved = [k for k in first if not torch.equal(first[k], initial[k])]
    assert len(moved) > len(first) // 2, "training barely moved the weights: equal weights would prove nothing"
    for k in first:
        torch.testing.assert_close(resumed[k], first[k], rtol=1e-5, atol=1e-7, msg=k)
    # keep_checkpoints=2: older steps are pruned in the store, and on every node's scratch.
    assert list_steps(cut) == [4, 5] and list_steps(open_store(ref_url)) == [4, 5]
    for node in (0, 1):
        kept = sorted(p.name for p in (tmp_path / "cut" / f"node-{node}" / "trainer").glob("checkpoint-*"))
        assert kept == ["checkpoint-4", "checkpoint-5"], (node, kept)


@pytest.mark.slow
def test_single_process_resume_restores_the_weights(minio, assets: dict[str, Path], tmp_path: Path) -> None:
    """Without DeepSpeed the Trainer's own resume loaded 1 of 57 tensors (saved key names differ from the module's):
    the run went on from the base weights, and its KL to the reference model fell to ~0. Restarted from a committed
    step, it must continue as the uninterrupted run does."""
    import shutil

    import torch

    args = [*FAST, "--set", "rewards=[accuracy,mn_reward.LengthReward]", "--set", "reward_weights=[0.5,0.5]",
            "--max-steps", "3", "--set", "save_steps=1", "--set", "keep_checkpoints=5"]

    def train(out: Path, *extra: str) -> None:
        r = subprocess.run([sys.executable, "-m", "ssrl", "train", "--model", str(assets["model"]), "--dataset",
                            str(assets["tasks"]), "--output", str(out), *args, *extra], capture_output=True,
                           text=True, env=env_for(minio, assets), timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]

    train(tmp_path / "ref")
    (tmp_path / "cut").mkdir()  # the run as a crash after step 1 leaves it
    shutil.copytree(tmp_path / "ref" / "step-1", tmp_path / "cut" / "step-1")
    (tmp_path / "cut" / "latest").write_text('{"step": 1}')
    train(tmp_path / "cut", "--resume", "auto")
    ref = json.loads((tmp_path / "ref" / "step-3" / "trainer_state.json").read_text())
    cut = json.loads((tmp_path / "cut" / "step-3" / "trainer_state.json").read_text())
    for key in ("kl", "loss", "grad_norm"):
        resumed = {s: v for s, v in logged(cut, key).items() if s > 1}
        assert resumed == pytest.approx({s: logged(ref, key)[s] for s in resumed}, rel=1e-5, abs=1e-7), key
    first = weights(str(tmp_path / "ref"), 3, tmp_path / "w-ref")
    again = weights(str(tmp_path / "cut"), 3, tmp_path / "w-cut")
    for k in first:
        torch.testing.assert_close(again[k], first[k], rtol=1e-5, atol=1e-7, msg=k)


def test_resumed_epoch_draws_the_uninterrupted_prompt_order() -> None:
    """A run resumed in its third epoch skips the first two without drawing them: TRL's sampler, seeded once, then
    gave it the first epoch's order again. With ``seed_each_epoch`` it draws what an uninterrupted run draws."""
    from types import SimpleNamespace

    from trl.trainer.utils import RepeatSampler

    from ssrl.recipes.train_grpo import seed_each_epoch

    def sampler():
        return RepeatSampler(range(16), mini_repeat_count=2, seed=3)

    plain = sampler()  # TRL alone, never interrupted: one draw per epoch
    orders = [list(plain) for _ in range(3)]

    def patched() -> tuple[RepeatSampler, object]:
        callbacks: list[object] = []
        trainer = SimpleNamespace(_get_train_sampler=sampler, add_callback=callbacks.append)
        seed_each_epoch(trainer)
        return trainer._get_train_sampler(), callbacks[0]

    uninterrupted, callback = patched()
    for epoch in range(3):
        callback.on_epoch_begin(None, SimpleNamespace(epoch=float(epoch)), None)  # the Trainer, at every epoch
        assert list(uninterrupted) == orders[epoch]
    resumed, callback = patched()
    callback.on_epoch_begin(None, SimpleNamespace(epoch=2.5), None)  # resumed in the middle of the third epoch
    assert list(resumed) == orders[2] != orders[0]


def sent_bytes(minio) -> float:
    """What the server has sent in object bodies so far (MinIO's own Prometheus counter)."""
    import urllib.request

    text = urllib.request.urlopen(f"{minio.endpoint}/minio/v2/metrics/cluster", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("minio_s3_traffic_sent_bytes"))


@pytest.mark.slow
def test_one_download_per_node_weights_only_zero3_reference_model(minio, assets: dict[str, Path],
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two local ranks, model and dataset in the store: the node's first rank fetches each file once, the model
    without its optimizer state, and both ranks train from them (ZeRO-3 with the KL reference model, beta > 0).
    A restarted pod on the same disk fetches nothing again."""
    import shutil

    from ssrl.recipes.data import local_shards
    from ssrl.recipes.modeling import resolve_model
    from ssrl.store.checkpoints import save_checkpoint
    from ssrl.store.transfer import upload_tree

    for k, v in minio.env().items():
        monkeypatch.setenv(k, v)
    base = tmp_path / "base"  # a checkpoint run whose optimizer state outweighs everything a rank needs
    shutil.copytree(assets["model"], base)
    (base / "optimizer.pt").write_bytes(os.urandom(6 << 20))
    (base / "global_step1").mkdir()
    (base / "global_step1" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(os.urandom(1 << 20))
    save_checkpoint(open_store("s3://runs/base"), 1, base)
    upload_tree(assets["tasks"], open_store("s3://runs/tasks"), "")
    needed = sum(p.stat().st_size for p in assets["model"].iterdir() if p.is_file())
    needed += sum(p.stat().st_size for p in assets["tasks"].glob("shard-*.parquet"))

    scratch = tmp_path / "node"
    before = sent_bytes(minio)
    scratch.mkdir()
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "ssrl", "train", "--model", "s3://runs/base",
           "--dataset", "s3://runs/tasks", "--output", str(tmp_path / "run"), *FAST, "--max-steps", "1",
           "--set", "save_steps=1", "--set", "beta=0.01", "--deepspeed", "zero3", "--set", f"work_dir={scratch}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env_for(minio, assets), timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    sent = sent_bytes(minio) - before
    # Once: the model's files and the shards, plus commit records. Twice (each rank) would be >= 2x; the optimizer
    # state alone is 7 MiB more.
    assert needed <= sent < 1.3 * needed, (sent, needed)
    pulled = {p.name for p in (scratch / "models" / "base-step-1").iterdir() if not p.name.startswith(".")}
    assert "model.safetensors" in pulled and "optimizer.pt" not in pulled and "global_step1" not in pulled
    assert list_steps(open_store(tmp_path / "run")) == [1]  # both ranks trained (ZeRO-3 needs both to step)

    again = sent_bytes(minio)  # the pod restarts on the same disk: present and verified, nothing fetched
    resolve_model("s3://runs/base", scratch)
    local_shards("s3://runs/tasks", scratch)
    assert sent_bytes(minio) - again < 0.05 * needed


@pytest.mark.slow
def test_failed_background_upload_fails_the_run(assets: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The store dies mid-run (MinIO SIGKILLed after the first commit): training goes on until the next save or the
    end, then the run fails with one line naming the upload, and ``latest`` never names an uncommitted step."""
    from tests.servers import cleanup, start_server

    server = start_server("minio", tmp_path / "minio")
    try:
        server.make_bucket("runs")
        config = tmp_path / "store.yaml"  # fail within a second instead of retrying for a minute
        config.write_text("retries: 1\nbackoff: 0.05\ntimeout: 5\n")
        env = {**env_for(server, assets), "SSRL_STORE_CONFIG": str(config)}
        cmd = [sys.executable, "-m", "ssrl", "train", "--model", str(assets["model"]), "--dataset",
               str(assets["tasks"]), "--output", "s3://runs/dies", *FAST, "--max-steps", "40", "--set", "save_steps=1",
               "--set", f"work_dir={tmp_path / 'w'}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        first = server.data / "disk" / "runs" / "dies" / "step-1" / "_COMMIT.json"
        deadline = time.time() + 300
        while not first.exists():
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() < deadline, "no committed step after 300 s"
            time.sleep(0.05)
        server.kill()
        assert proc.poll() is None, "the run ended before the store died: the fault never reached it"
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 4, output[-3000:]
        assert "checkpoint upload to s3://runs/dies failed: step" in output, output[-3000:]
        assert "trained to step" not in output
        server.start()
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        run_store = open_store("s3://runs/dies")
        latest = latest_step(run_store)
        assert latest is not None and latest < 40
        from ssrl.store.checkpoints import pull_checkpoint

        pull_checkpoint(run_store, tmp_path / "pulled")  # every file the latest commit names is there, verified
    finally:
        cleanup(server)


def test_local_pruning_spares_checkpoints_still_queued_for_upload(tmp_path: Path) -> None:
    """Uploads behind training: step 2 just uploaded, 3 queued, 4 saved and waiting to be queued. keep=1 must not
    delete 3 or 4 before they reach the store (the newest-N rule removed both)."""
    from ssrl.recipes.callbacks import _prune_local

    for step in (1, 2, 3, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
    _prune_local(tmp_path, keep=1, uploaded=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
