"""What the trainer hands vLLM, checked against the pinned vLLM release's own field names (issue 13 item 2).

vLLM cannot be installed beside the suite's torch (each release pins its own), so its wheel is downloaded once
(``pip download --no-deps``, cached in ~/.cache/ssrl/wheels) and ``SamplingParams`` and the server's
``CompletionRequest`` are read from its source with ``ast``. Colocate mode: TRL builds ``SamplingParams(**kwargs)``
from its own keys plus ``generation_kwargs``. Server mode: TRL's real ``VLLMClient.generate`` posts to a local
HTTP server that records the requests, and every field it sends must be one vLLM knows (the server would reject
or silently ignore the others). A download failure fails the test; it never skips.

No TRL-supported vLLM release pins the torch docker/trainer-constraints.txt pins, so the image's vLLM variant installs
its own closure, docker/trainer-vllm-constraints.txt, with docker/trainer-vllm.lock.json recording the wheel and its
Requires-Dist (both written by ``docker/lock-trainer.py --vllm``): the lock tests below read only those files.
"""

from __future__ import annotations

import ast
import hashlib
import http.server
import json
import re
import subprocess
import sys
import threading
import tomllib
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("trl")

import trl
from trl import GRPOConfig  # noqa: F401 -- TRL's trainer imports take ~10 s: once at collection, not in a test

from ssrl.recipes.train_grpo import TrainConfig, build_grpo_args, suppression_kwargs
from tests.servers import JSONHandler

ROOT = Path(__file__).resolve().parents[1]
WHEELS = Path("~/.cache/ssrl/wheels").expanduser()
VISION = [151652, 151653, 151655, 151656]  # Qwen2.5-VL's vision start/end, image and video token ids
#: The first test to use the wheel downloads it (~320 MB) when ~/.cache/ssrl/wheels lacks it.
DOWNLOADS = pytest.mark.timeout(900)
VLLM_CONSTRAINTS = ROOT / "docker" / "trainer-vllm-constraints.txt"
VLLM_LOCK = ROOT / "docker" / "trainer-vllm.lock.json"
REGENERATE = "regenerate: .venv/bin/python docker/lock-trainer.py --vllm <the pin>"


def pinned_vllm() -> str:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["vllm"]
    (spec,) = extra
    assert spec.startswith("vllm=="), f"pin one release: {spec}"
    return spec.removeprefix("vllm==")


def trl_vllm_range() -> tuple[str, str]:
    """The range TRL's own import check accepts (trl/import_utils.py, read from the installed TRL)."""
    source = (Path(trl.__file__).parent / "import_utils.py").read_text()
    m = re.search(r'Version\("([\d.]+)"\) <= _vllm_base_version <= Version\("([\d.]+)"\)', source)
    assert m, "TRL's supported vLLM range moved: read trl/import_utils.py and update this test"
    return m.group(1), m.group(2)


def version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


@pytest.fixture(scope="module")
def wheel() -> zipfile.ZipFile:
    pin = pinned_vllm()
    found = sorted(WHEELS.glob(f"vllm-{pin}-*.whl"))
    if not found:
        WHEELS.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", f"vllm=={pin}", "--no-deps", "--only-binary",
                            ":all:", "-d", str(WHEELS)], capture_output=True, text=True, timeout=1200)
        found = sorted(WHEELS.glob(f"vllm-{pin}-*.whl"))
        if r.returncode or not found:
            pytest.fail(f"cannot download vllm=={pin} to read its SamplingParams:\n{r.stderr[-2000:]}")
    lock = json.loads(VLLM_LOCK.read_text())
    assert hashlib.sha256(found[0].read_bytes()).hexdigest() == lock["sha256"], f"{found[0]} is not the locked wheel"
    with zipfile.ZipFile(found[0]) as z:
        yield z


def fields(wheel: zipfile.ZipFile, path: str, cls: str) -> set[str]:
    """Public annotated fields of a class (msgspec Struct or pydantic model) in the wheel's source."""
    tree = ast.parse(wheel.read(path).decode())
    node = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls), None)
    assert node is not None, f"{cls} is not in {path} of {wheel.filename}"
    names = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    names = {n for n in names if not n.startswith("_")}
    assert len(names) > 10, names
    return names


def colocate_keys() -> set[str]:
    """The keys TRL's colocate branch puts in SamplingParams before adding generation_kwargs (its dict literal with
    "n": 1, read from the installed TRL)."""
    source = (Path(trl.__file__).parent / "generation" / "vllm_generation.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and any(
                isinstance(t, ast.Name) and t.id == "generation_kwargs" for t in node.targets):
            keys = {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
            if "n" in keys and "max_tokens" in keys:
                return keys
    raise AssertionError("TRL's colocate SamplingParams dict moved: read trl/generation/vllm_generation.py")


def rollout_args(**overrides: Any) -> Any:
    """GRPOConfig as ``ssrl train`` builds it with vLLM on, vision tokens suppressed as main() does."""
    cfg = TrainConfig(use_vllm="true", bf16="false", max_prompt_length=3000, max_completion_length=1000, **overrides)
    args = build_grpo_args(cfg, Path("/nonexistent"), gpu=False)
    args.generation_kwargs = {**(args.generation_kwargs or {}), **suppression_kwargs(VISION, args.use_vllm)}
    return args


def test_pinned_vllm_is_in_trl_range_and_the_image_builds_it() -> None:
    low, high = trl_vllm_range()
    pin = pinned_vllm()
    assert version(low) <= version(pin) <= version(high), f"vllm=={pin} is outside TRL's {low}-{high}"
    dockerfile = (ROOT / "docker" / "trainer.Dockerfile").read_text()
    assert re.findall(r"VLLM_VERSION=(\d[\d.]*)", dockerfile) == [pin], "the Dockerfile's vLLM build names the pin"


def pins(path: Path) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    return {canonicalize_name(n): v.strip() for n, v in (line.split("==") for line in path.read_text().splitlines()
                                                          if line.strip() and not line.startswith("#"))}


def unmet(requirements: list[str], pinned: dict[str, str], env: dict[str, str]) -> list[str]:
    """The requirements (those whose markers hold in ``env``, no extras) that ``pinned`` does not satisfy."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        have = pinned.get(canonicalize_name(req.name))
        if have is None or not req.specifier.contains(have, prereleases=True):
            out.append(f"{text} (pinned: {have})")
    return out


def test_vllm_variant_pins_hold_vllms_requirements_and_ssrls() -> None:
    """The vLLM image variant installs the pinned vLLM with exactly the torch (and the rest) its wheel requires, the
    TRL whose supported range the test above read, and what ssrl[s3,train,k8s] requires."""
    lock, variant = json.loads(VLLM_LOCK.read_text()), pins(VLLM_CONSTRAINTS)
    assert lock["vllm"] == pinned_vllm() == variant["vllm"], f"the lock, pyproject and the variant differ: {REGENERATE}"
    assert lock["wheel"].startswith(f"vllm-{lock['vllm']}-") and len(lock["sha256"]) == 64
    assert not unmet(lock["requires_dist"], variant, lock["environment"]), REGENERATE
    assert variant["torch"] in {r.split("==")[1] for r in lock["requires_dist"] if r.startswith("torch==")}
    assert variant["trl"] == trl.__version__, "the variant's TRL is not the one whose vLLM range was checked"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ours = [*project["dependencies"], *(r for e in ("s3", "train", "k8s") for r in project["optional-dependencies"][e])]
    assert not unmet(ours, variant, lock["environment"])


def test_vllm_variant_is_the_main_pins_but_what_vllm_moves() -> None:
    """The main pins cannot take the pinned vLLM (its torch differs: installing it over them would silently replace
    torch), and the variant keeps every main pin except those the lock names, each with the requirement that moved
    it: regenerating one file without the other fails here."""
    lock, main, variant = json.loads(VLLM_LOCK.read_text()), pins(ROOT / "docker" / "trainer-constraints.txt"), \
        pins(VLLM_CONSTRAINTS)
    assert any(r.startswith("torch") for r in unmet(lock["requires_dist"], main, lock["environment"])), \
        "the main pins now satisfy vLLM: drop the variant and install vLLM under docker/trainer-constraints.txt"
    differ = {n: {"main": main[n], "vllm": variant[n]} for n in main if n in variant and variant[n] != main[n]}
    assert differ == {n: {"main": m["main"], "vllm": m["vllm"]} for n, m in lock["moved"].items()}, REGENERATE
    assert {"torch", "torchvision", "transformers"} <= set(lock["moved"])
    assert all(" requires " in m["why"] or m["why"] == "follows the moved pins" for m in lock["moved"].values())


def test_use_vllm_true_from_the_command_line_and_yaml(tmp_path: Path) -> None:
    """YAML reads `true` as a bool; the auto/true/false fields used to turn it into 'True' and refuse it."""
    from ssrl.config import load_config

    (tmp_path / "train.yaml").write_text("use_vllm: true\nbf16: false\n")
    assert load_config(TrainConfig, None, ["use_vllm=true", "bf16=false"]).use_vllm == "true"
    from_yaml = load_config(TrainConfig, tmp_path / "train.yaml")
    assert (from_yaml.use_vllm, from_yaml.bf16) == ("true", "false")


def test_vllm_context_is_prompt_plus_completion() -> None:
    assert rollout_args().vllm_max_model_length == 4000
    assert rollout_args(extra={"vllm_max_model_length": 8192}).vllm_max_model_length == 8192


@DOWNLOADS
def test_colocate_sampling_params_accept_every_key(wheel: zipfile.ZipFile) -> None:
    known = fields(wheel, "vllm/sampling_params.py", "SamplingParams")
    args = rollout_args()
    assert "suppress_tokens" not in known  # what the trainer used to send
    sent = colocate_keys() | set(args.generation_kwargs)
    assert sent <= known, f"SamplingParams has no {sorted(sent - known)}"
    assert args.generation_kwargs["logit_bias"] == {t: -100.0 for t in VISION}
    # without vLLM, transformers' generate keeps its own field
    assert suppression_kwargs(VISION, use_vllm=False) == {"suppress_tokens": VISION}


class Recorder(JSONHandler):
    requests: ClassVar[list[tuple[str, dict]]] = []

    def do_GET(self) -> None:  # /v1/models
        self._answer({"data": [{"id": "tiny"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Recorder.requests.append((self.path, body))
        n = body.get("n", body.get("sampling_params", {}).get("n", 1))
        self._answer({"choices": [{"token_ids": [7], "prompt_token_ids": [1, 2, 3], "logprobs": None}] * n})



@DOWNLOADS
def test_server_requests_carry_only_fields_vllm_knows(wheel: zipfile.ZipFile) -> None:
    """TRL's real client, as its server-mode rollout calls it: with images (token ids + features, the
    /inference/v1/generate endpoint whose sampling_params is a SamplingParams) and without (/v1/completions)."""
    import requests
    from trl.generation.vllm_client import VLLMClient

    sampling = fields(wheel, "vllm/sampling_params.py", "SamplingParams")
    completion = fields(wheel, "vllm/entrypoints/openai/completion/protocol.py", "CompletionRequest")
    args = rollout_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # __init__ refuses without vllm installed; the request path under test is generate(), not the constructor
        client = VLLMClient.__new__(VLLMClient)
        client.session, client.base_url = requests.Session(), f"http://127.0.0.1:{server.server_address[1]}"
        client.model = client._get(f"{client.base_url}/v1/models")["data"][0]["id"]
        call = {"n": args.num_generations, "repetition_penalty": args.repetition_penalty,
                "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
                "min_p": args.min_p or 0.0, "max_tokens": args.max_completion_length, "logprobs": 0,
                "structured_outputs_regex": None, "generation_kwargs": args.generation_kwargs}
        client.generate(prompts=[[1, 2, 3]], features=[{"mm": "features"}], **call)
        client.generate(prompts=[[1, 2, 3]], **call)
    finally:
        server.shutdown()
    (gen_path, gen), (comp_path, comp) = Recorder.requests[-2:]
    assert gen_path == "/inference/v1/generate" and comp_path == "/v1/completions"
    assert set(gen["sampling_params"]) <= sampling, f"SamplingParams has no {set(gen['sampling_params']) - sampling}"
    assert set(comp) <= completion, f"CompletionRequest has no {sorted(set(comp) - completion)}"
    for body in (gen["sampling_params"], comp):  # JSON keys: vLLM converts them back to token ids
        assert body["logit_bias"] == {str(t): -100.0 for t in VISION}


# ------------------------------------------------------------------ GPU checks (the trainer image's vLLM variant)
def _gpu_vllm() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


GPU_VLLM = pytest.mark.skipif(not _gpu_vllm(), reason="needs a CUDA GPU and vLLM "
                              "(pip install -c docker/trainer-vllm-constraints.txt '.[vllm]')")


@pytest.mark.slow
@GPU_VLLM
def test_gpu_logit_bias_keeps_vision_tokens_out_of_vllm_samples(tmp_path: Path) -> None:
    """The random tiny model samples its vision tokens (vocabulary 1024: ~16 expected in 4096 tokens) unless the
    trainer's suppression is applied, through the real SamplingParams TRL's colocate mode builds."""
    from transformers import AutoConfig
    from vllm import LLM, SamplingParams

    from ssrl.recipes.modeling import vision_token_ids
    from ssrl.recipes.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny")
    vision = set(vision_token_ids(AutoConfig.from_pretrained(tmp_path / "tiny")))
    llm = LLM(model=str(tmp_path / "tiny"), max_model_len=256, gpu_memory_utilization=0.2, enforce_eager=True, seed=0)

    def sampled(extra: dict[str, Any]) -> set[int]:
        params = SamplingParams(n=64, temperature=1.0, max_tokens=64, ignore_eos=True, seed=0, **extra)
        return {t for o in llm.generate([{"prompt_token_ids": [10, 11, 12, 13]}], params)[0].outputs
                for t in o.token_ids}

    assert sampled({}) & vision, "the control run sampled no vision token: the check below would prove nothing"
    assert not sampled(suppression_kwargs(sorted(vision), use_vllm=True)) & vision


#: ``ssrl train`` under torchrun with TRL's colocate SamplingParams recorded (n, temperature, top_p: one JSON line
#: each, to argv[1]) and built for real.
RECORDING_TRAIN = """
import json, sys
import trl.generation.vllm_generation as vg
from ssrl.cli import main
real = vg.SamplingParams
def record(**kw):
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps([kw["n"], kw["temperature"], kw["top_p"]]) + "\\n")
    return real(**kw)
vg.SamplingParams = record
sys.exit(main(sys.argv[2:]))
"""


def gpu_train(tmp_path: Path, synth_dir: Path, *sets: str) -> list[tuple[int, float, float]]:
    """One-process torchrun of ``ssrl train`` with colocated vLLM rollouts on the tiny model (flip tasks, 2 steps);
    returns the SamplingParams TRL built."""
    import os

    from ssrl.dataset.generate import GenerateConfig, run
    from ssrl.recipes.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny")
    run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "tasks"), tasks=["flip"], min_pixels=3136,
                       max_pixels=12544))
    (tmp_path / "train.py").write_text(RECORDING_TRAIN)
    torchrun = Path(sys.executable).parent / "torchrun"
    flags = ["use_vllm=true", "max_prompt_length=1024", "max_completion_length=16", "min_pixels=3136",
             "max_pixels=12544", "per_device_train_batch_size=2", "num_generations=2", "report_to=[]",
             "extra={vllm_gpu_memory_utilization: 0.2}", *sets]
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "1", str(tmp_path / "train.py"),
                        str(tmp_path / "sampling.jsonl"), "train", "--model", str(tmp_path / "tiny"), "--dataset",
                        str(tmp_path / "tasks"), "--output", str(tmp_path / "run"), "--max-steps", "2",
                        *(a for f in flags for a in ("--set", f))],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert r.returncode == 0, r.stderr[-4000:]
    return [tuple(json.loads(x)) for x in (tmp_path / "sampling.jsonl").read_text().splitlines()]


@pytest.mark.slow
@GPU_VLLM
def test_gpu_grpo_step_with_vllm_colocate(tmp_path: Path, synth_dir: Path) -> None:
    """GRPO steps with colocated vLLM rollouts on the tiny model: the kwargs above reach a real SamplingParams."""
    assert gpu_train(tmp_path, synth_dir, "save_steps=1")
    assert (tmp_path / "run" / "step-1" / "_COMMIT.json").exists()


@pytest.mark.slow
@GPU_VLLM
def test_gpu_validation_with_vllm_colocate_samples_at_paper_settings(tmp_path: Path, synth_dir: Path) -> None:
    """Validation every step through colocated vLLM: its SamplingParams at temperature 0.6 / top_p 0.95 (n=1:
    colocate mode samples each repeated prompt once, and eval repeats none), the rollouts' at 1.0 / 1.0, and
    eval_accuracy/flip after each validation in metrics.jsonl."""
    built = gpu_train(tmp_path, synth_dir, "eval_steps=1", "holdout=0.4", "val_samples=2", "save_steps=2")
    held_out = [s for s in built if s[1:] != (1.0, 1.0)]
    assert len(held_out) >= 2 and set(held_out) == {(1, 0.6, 0.95)}
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "eval_accuracy/flip" in x] == [1, 2]
