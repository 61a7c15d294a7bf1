"""ssrl eval: extraction and scoring on hand-written predictions, benchmarks built here run end to end with the
tiny model (TSV with base64 images, JSONL, held-out pretext tasks), re-scoring, bad files, ranks, a real S3."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ssrl.evals.items import BenchmarkError, iter_items, validate
from ssrl.evals.scoring import extract_choice, score_prediction, summarize
from tests.conftest import textured


def env() -> dict[str, str]:
    """Read at call time, so the S3 fixture's credentials reach the subprocess."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
SMALL = ["--set", "min_pixels=3136", "--set", "max_pixels=12544", "--max-new-tokens", "12"]
OPTS = {"A": "left of the chair", "B": "right of the chair", "C": "behind the chair", "D": "in front of the chair"}


# ------------------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize(("response", "expected"), [
    (r"<think>it is left</think> \boxed{B}", "B"),
    (r"<think>\boxed{A}</think> so \boxed{C}", "C"),           # the box inside the reasoning is not the answer
    (r"\boxed{A} hmm, no: \boxed{D}", "D"),                       # several candidates: the last box wins
    (r"\boxed{(B)}", "B"),
    (r"\boxed{B. right of the chair}", "B"),
    (r"\boxed{\text{right of the chair}}", "B"),                  # the option text instead of its letter
    ("Answer: C", "C"),
    ("The answer is (D).", "D"),
    ("I think (A)", "A"),
    ("B", "B"),
    ("The cat is right of the chair.", "B"),
    ("Option C", "C"),
    (r"<think>x</think> \boxed{E}", None),                        # not an option
    ("left of the chair or right of the chair?", None),          # two options named: ambiguous
    ("the answer is a chair", None),                             # lowercase 'a' is a word, not a letter
    ("", None),
    (r"\boxed{", None),
    # The shapes VLMEvalKit's matching (can_infer_option / can_infer_text) accepts, and Qwen/R1-style ones.
    ("**Answer:** D", "D"),                                      # markdown emphasis around the keyword
    ("**Answer: D**", "D"),
    ("Answer: (B)", "B"),
    ("The answer is C.", "C"),
    ("The correct answer is **B**.", "B"),
    ("The correct option is D", "D"),
    ("Final answer: [A]", "A"),
    ("### Answer\nC", "C"),
    (r"$\boxed{\text{B}}$", "B"),
    (r"The final answer is $\boxed{C}$.", "C"),
    ("<answer>D</answer>", "D"),
    ("<think>A is closer</think><answer>B</answer>", "B"),
    ("B. right of the chair", "B"),
    ("C) behind the chair", "C"),
    ("(D) in front of the chair", "D"),
    ("I choose B.", "B"),
    ("A is correct.", "A"),                                     # "A" followed by a verb is the option
    ("A cup is right of the chair.", "B"),                      # "A cup": an article, then one option's text
    ("**right of the chair**", "B"),
    # Ambiguous: never a guess.
    ("A or B", None),
    ("Answer: B or C", None),
    ("The answer is B, C", None),
    (r"\boxed{A, B}", None),
    ("A. left of the chair\nB. right of the chair", None),      # options listed back, none chosen
    ("Either (A) or (C).", None),
])
def test_extract_choice(response: str, expected: str | None) -> None:
    assert extract_choice(response, OPTS) == expected


def test_scoring_hand_written_predictions_known_accuracy() -> None:
    preds = [
        {"id": "1", "category": "spatial", "answer": "A", "options": OPTS, "response": r"<think>.</think>\boxed{A}"},
        {"id": "2", "category": "spatial", "answer": "B", "options": OPTS, "response": "Answer: B"},
        {"id": "3", "category": "spatial", "answer": "C", "options": OPTS, "response": r"\boxed{D}"},
        {"id": "4", "category": "depth", "answer": "D", "options": OPTS, "response": "in front of the chair"},
        {"id": "5", "category": "depth", "answer": "A", "options": OPTS, "response": "no idea"},
        {"id": "6", "category": "shuffle", "task": "shuffle", "answer": "2, 0, 1", "options": {},
         "response": r"<think>.</think>\boxed{2, 0, 1}"},
        {"id": "7", "category": "shuffle", "task": "shuffle", "answer": "2, 0, 1", "options": {},
         "response": r"\boxed{2,0,1}"},                          # the training reward: exact match only
        {"id": "8", "category": "flip", "task": "flip", "answer": "B", "options": {}, "response": "garbage"},
    ]
    s = summarize([score_prediction(dict(p)) for p in preds])
    assert (s["n"], s["correct"]) == (8, 4) and s["accuracy"] == 0.5
    assert s["per_category"]["spatial"] == {"n": 3, "correct": 2, "accuracy": 2 / 3}
    assert s["per_category"]["depth"]["correct"] == 1 and s["per_category"]["shuffle"]["correct"] == 1
    assert s["unparsed"] == ["5", "8"]


# ------------------------------------------------------------------------------------------ benchmarks
def b64png(seed: int, size: tuple[int, int] = (56, 56)) -> str:
    buf = io.BytesIO()
    Image.fromarray(textured(size[1], size[0], seed)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_tsv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    lines = ["\t".join(columns)] + ["\t".join(r.get(c, "") for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


TSV_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]


def tsv_rows(n: int = 6) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        row = {"index": str(i), "question": f"Where is object {i}?", "hint": "nan" if i % 2 else "Look closely",
               "A": "left", "B": "right", "C": "above", "D": "below" if i % 3 else "", "answer": "ABC"[i % 3],
               "category": "relation" if i % 2 else "depth", "image": b64png(i)}
        rows.append(row)
    rows[3]["image"] = json.dumps([b64png(30), b64png(31)])   # multi-image row
    rows[4]["image"] = "0"                                      # VLMEvalKit: refers to row 0's image
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from ssrl.recipes.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("eval") / "tiny")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssrl.dataset.generate import GenerateConfig, run
    from ssrl.sources.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("heldout")
    synthesize(root / "src", 3, seed=1234, cfg=SynthConfig(width=336, height=252))
    run(GenerateConfig(inputs=[str(root / "src")], output=str(root / "tasks"), min_pixels=3136, max_pixels=12544))
    return root / "tasks"


def test_tsv_items_follow_the_training_prompt(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "MiniBench.tsv", tsv_rows(), TSV_COLUMNS)
    assert validate(str(path), tmp_path) == 6
    items = list(iter_items(str(path), tmp_path))
    assert [it.id for it in items] == ["0", "1", "2", "3", "4", "5"]
    assert [len(it.images) for it in items] == [1, 1, 1, 2, 1, 1]
    assert items[4].images == items[0].images
    assert items[0].options == {"A": "left", "B": "right", "C": "above"}        # empty D dropped
    assert items[0].problem.startswith("<image>Hint: Look closely Where is object 0? Options: A. left B. right")
    assert "Hint" not in items[1].problem                                        # 'nan' hint
    assert items[3].problem.startswith("<image><image>")
    assert items[0].problem.endswith("The final answer MUST BE put in \\boxed{}.")
    assert [it.id for it in iter_items(str(path), tmp_path, limit=2)] == ["0", "1"]


def test_jsonl_items(tmp_path: Path) -> None:
    Image.fromarray(textured(56, 56, 5)).save(tmp_path / "a.png")
    lines = [{"id": "q1", "question": "Which?", "options": ["left", "right"], "answer": "B", "images": ["a.png"],
              "category": "rel"},
             {"question": "<image>Is it near?", "options": {"A": "yes", "B": "no"}, "answer": "A",
              "image": "data:image/png;base64," + b64png(6)}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    items = list(iter_items(str(tmp_path / "b.jsonl"), tmp_path))
    assert [it.id for it in items] == ["q1", "2"] and items[0].options == {"A": "left", "B": "right"}
    assert items[1].problem.count("<image>") == 1 and len(items[1].images) == 1


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda rows, cols: (rows, [c for c in cols if c != "answer"]), "missing column(s) ['answer']"),
    (lambda rows, cols: ([{**r, "image": "@@not base64@@"} if r["index"] == "2" else r for r in rows], cols),
     "line 4 (index 2): image is not valid base64"),
    (lambda rows, cols: ([{**r, "image": base64.b64encode(b"not an image").decode()} if r["index"] == "1" else r
                          for r in rows], cols), "line 3 (index 1): image does not decode"),
    (lambda rows, cols: ([{**r, "answer": "Z"} if r["index"] in ("1", "5") else r for r in rows], cols),
     "answer 'Z' is not one of the options"),
])
def test_bad_tsv_files_give_clear_errors(tmp_path: Path, mutate, message: str) -> None:
    rows, cols = mutate(tsv_rows(), list(TSV_COLUMNS))
    path = write_tsv(tmp_path / "bad.tsv", rows, cols)
    with pytest.raises(BenchmarkError) as e:
        validate(str(path), tmp_path)
    assert message in str(e.value)
    if "'Z'" in message:  # every bad row is listed at once
        assert "line 3" in str(e.value) and "line 7" in str(e.value)


def test_bad_files_fail_before_any_model_loads(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "C", "options": ["x", "y"]}\nnot json\n')
    r = subprocess.run([sys.executable, "-m", "ssrl", "eval", "-m", str(tmp_path / "no-model"), "-b",
                        str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "out")], capture_output=True, text=True,
                       env=env())
    assert r.returncode == 1
    assert "line 1: answer 'C' is not one of the options" in r.stderr and "line 2:" in r.stderr
    assert not (tmp_path / "out").exists()
    r = subprocess.run([sys.executable, "-m", "ssrl", "eval", "-b", "x.tsv"], capture_output=True, text=True, env=env())
    assert r.returncode == 2 and "no model" in r.stderr


# ------------------------------------------------------------------------------------------ end to end
def run_eval(*args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [*(launcher or [sys.executable, "-m"]), "ssrl", "eval", *args, *SMALL]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)


@pytest.mark.slow
def test_eval_end_to_end_two_models_tsv_and_heldout_tasks(tiny: Path, heldout: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    bench = write_tsv(tmp_path / "MiniBench.tsv", tsv_rows(), TSV_COLUMNS)
    out = tmp_path / "evals" / "run"
    r = run_eval("-m", f"base={tiny}", "-b", str(bench), "-b", str(heldout), "-o", str(out), "--batch-size", "4",
                 "--set", f"work_dir={tmp_path / 'work'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| **overall** |" in r.stdout and "results.md" in r.stdout
    preds = [json.loads(x) for x in (out / "predictions" / "base" / "MiniBench.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == ["0", "1", "2", "3", "4", "5"]
    assert all(p["correct"] == (extract_choice(p["response"], p["options"]) == p["answer"]) for p in preds)
    results = json.loads((out / "results.json").read_text())
    mini = results["benchmarks"]["MiniBench"]["base"]
    assert mini["n"] == 6 and mini["correct"] == sum(p["correct"] for p in preds)
    assert set(mini["per_category"]) == {"depth", "relation"}
    tasks = results["benchmarks"]["tasks"]["base"]
    assert set(tasks["per_category"]) == {"shuffle", "flip", "crop", "depth_order", "position"}
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "_COMMIT.json").read_text())["kind"] == "eval"
    timing = {(t["model"], t["benchmark"]): t for t in results["timing"]}
    assert timing[("base", "MiniBench")]["samples"] == 6 and 0 <= timing[("base", "MiniBench")]["outside_share"] < 1

    # A second model later joins the same report; the first model's predictions stay.
    r = run_eval("-m", f"other={tiny}", "-b", str(bench), "-o", str(out), "--limit", "2",
                 "--set", f"work_dir={tmp_path / 'work'}")
    assert r.returncode == 0, r.stderr[-3000:]
    results2 = json.loads((out / "results.json").read_text())
    assert results2["models_order"] == ["base", "other"] and results2["benchmarks"]["MiniBench"]["other"]["n"] == 2
    assert results2["benchmarks"]["MiniBench"]["base"] == mini
    assert "| category | base | other | Δ (last − first) |" in (out / "results.md").read_text()

    # Re-scoring the saved predictions (no model) gives the same numbers.
    r = subprocess.run([sys.executable, "-m", "ssrl", "eval", "score", str(out)], capture_output=True, text=True,
                       env=env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["benchmarks"] == results2["benchmarks"]


@pytest.mark.slow
def test_eval_data_parallel_ranks_match_one_process(tiny: Path, heldout: Path, tmp_path: Path) -> None:
    common = ["-m", f"m={tiny}", "-b", str(heldout), "--batch-size", "1", "--limit", "6"]
    one = run_eval(*common, "-o", str(tmp_path / "one"), "--set", f"work_dir={tmp_path / 'w1'}")
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_eval(*common, "-o", str(tmp_path / "two"), "--set", f"work_dir={tmp_path / 'w2'}",
                   launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m"])
    assert two.returncode == 0, two.stderr[-3000:]
    read = lambda d: (d / "predictions" / "m" / "tasks.jsonl").read_text()  # noqa: E731
    assert read(tmp_path / "one") == read(tmp_path / "two")
    timing = json.loads((tmp_path / "two" / "results.json").read_text())["timing"][0]
    assert timing["ranks"] == 2 and timing["samples"] == 6


@pytest.mark.slow
def test_eval_with_model_benchmark_and_report_in_s3(tiny: Path, s3: str, tmp_path: Path) -> None:
    from ssrl.store import open_store
    from ssrl.store.transfer import commit, read_commit, upload_tree

    models = open_store(f"{s3}/models/tiny")
    commit(models, "", upload_tree(tiny, models))
    bench = write_tsv(tmp_path / "Mini.tsv", tsv_rows()[:3], TSV_COLUMNS)
    open_store(f"{s3}/benchmarks").put_file("Mini.tsv", bench)
    r = run_eval("-m", f"{s3}/models/tiny", "-b", f"{s3}/benchmarks/Mini.tsv", "-o", f"{s3}/evals/run",
                 "--set", f"work_dir={tmp_path / 'work'}")
    assert r.returncode == 0, r.stderr[-3000:]
    store = open_store(f"{s3}/evals/run")
    record = read_commit(store, "")
    assert {"results.json", "results.md", "results.png", "predictions/tiny/Mini.jsonl"} <= set(record["files"])
    assert json.loads(store.read_bytes("results.json"))["benchmarks"]["Mini"]["tiny"]["n"] == 3


def test_holdout_split_training_and_evaluation_see_disjoint_sources(synth_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from ssrl.dataset.generate import GenerateConfig, run
    from ssrl.dataset.shards import in_holdout, iter_rows
    from ssrl.recipes.data import load_task_dataset

    run(GenerateConfig(inputs=[str(synth_dir)], output=str(tmp_path / "tasks"), min_pixels=3136, max_pixels=12544))
    rows = list(iter_rows(str(tmp_path / "tasks")))
    held = {r["source_id"] for r in rows if in_holdout(r["source_id"], 0.4)}
    assert held and held != {r["source_id"] for r in rows}  # both sides non-empty for these 8 scenes
    items = list(iter_items(str(tmp_path / "tasks"), tmp_path, holdout=0.4))
    assert [it.id for it in items] == [r["id"] for r in rows if r["source_id"] in held]
    train = load_task_dataset(str(tmp_path / "tasks"), tmp_path / "cache", holdout=0.4)
    assert len(train) == len(rows) - len(items)
    assert sorted(train["answer"]) == sorted(r["answer"] for r in rows if r["source_id"] not in held)
    assert validate(str(tmp_path / "tasks"), tmp_path, holdout=0.4) == len(items)


def test_missing_model_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "ok.jsonl").write_text('{"question": "q", "options": ["x", "y"], "answer": "A"}\n')
    r = subprocess.run([sys.executable, "-m", "ssrl", "eval", "-m", str(tmp_path / "missing"), "-b",
                        str(tmp_path / "ok.jsonl"), "-o", str(tmp_path / "out"),
                        "--set", f"work_dir={tmp_path / 'w'}"], capture_output=True, text=True, env=env())
    assert r.returncode == 1 and "does not exist" in r.stderr and "internal error" not in r.stderr
    assert not (tmp_path / "out").exists()
