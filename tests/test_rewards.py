"""The rewards on hand-written completions, adversarial ones included."""

import pytest

from ssrl.recipes.rewards import AccuracyReward, FormatReward, completion_text, get_reward
from ssrl.recipes.train_grpo import TrainConfig

CASES = [
    # (case, completion, answer, format, accuracy, training reward under the default weights)
    ("well formed", r"<think>the crop matches</think> \boxed{B}", "B", 1.0, 1.0, 1.0),
    ("paper example: no think", r"\boxed{B}", "B", 0.0, 1.0, 0.9),
    ("wrong letter", r"<think>x</think>\boxed{C}", "B", 1.0, 0.0, 0.1),
    ("case differs", r"<think>x</think>\boxed{b}", "B", 1.0, 0.0, 0.1),
    ("several boxes: the last wins", r"<think>x</think>\boxed{A} no wait \boxed{B}", "B", 1.0, 1.0, 1.0),
    ("several boxes: last is wrong", r"<think>x</think>\boxed{B} or \boxed{A}", "B", 1.0, 0.0, 0.1),
    ("nested braces", r"<think>x</think>\boxed{\text{B}}", r"\text{B}", 1.0, 1.0, 1.0),
    ("unclosed box", r"<think>x</think>\boxed{B", "B", 0.0, 0.0, 0.0),
    ("answer only inside the thinking", r"<think>it is \boxed{B}</think> I am not sure", "B", 0.0, 0.0, 0.0),
    ("empty output", "", "B", 0.0, 0.0, 0.0),
    ("spaces in tags", r"< think >x</ think > \boxed{2, 0, 1}", "2, 0, 1", 1.0, 1.0, 1.0),
    ("sequence needs the exact separator", r"<think>x</think>\boxed{2,0,1}", "2, 0, 1", 1.0, 0.0, 0.1),
    ("box padding is stripped", r"<think>x</think>\boxed{ 2, 0, 1 }", "2, 0, 1", 1.0, 1.0, 1.0),
    ("think twice, answer after the last", r"<think>a</think><think>\boxed{A}</think>\boxed{B}", "B", 1.0, 1.0, 1.0),
]


def training_reward(cfg: TrainConfig, completion: str, answer: str) -> float:
    """What GRPO optimises for one completion: the configured reward functions, weighted as configured (TRL's
    default ``sum_then_normalize`` sums weight x reward before normalising per group)."""
    scores = [get_reward(name)([completion], answer=[answer], task=["crop"])[0] for name in cfg.rewards]
    return sum(w * r for w, r in zip(cfg.reward_weights, scores, strict=True))


@pytest.mark.parametrize(("case", "completion", "answer", "fmt", "acc", "total"), CASES, ids=[c[0] for c in CASES])
def test_rewards(case: str, completion: str, answer: str, fmt: float, acc: float, total: float) -> None:
    assert FormatReward()([completion]) == [fmt]
    assert AccuracyReward()([completion], answer=[answer], task=["crop"]) == [acc]
    assert training_reward(TrainConfig(), completion, answer) == pytest.approx(total)


@pytest.mark.slow
def test_default_weights_reach_trl(tmp_path) -> None:
    """The recipe hands TRL the paper's weights in the order of its reward functions, summed before normalising."""
    pytest.importorskip("trl")
    from ssrl.recipes.train_grpo import build_grpo_args

    cfg = TrainConfig()
    args = build_grpo_args(cfg, tmp_path, gpu=False)
    assert dict(zip(cfg.rewards, args.reward_weights, strict=True)) == {"accuracy": 0.9, "format": 0.1}
    assert args.multi_objective_aggregation == "sum_then_normalize"


def test_conversational_completions_and_missing_answer() -> None:
    msg = [{"role": "assistant", "content": r"<think>x</think>\boxed{A}"}]
    assert FormatReward()([msg]) == [1.0]
    assert AccuracyReward()([msg, msg], answer=["A", None], task=["crop", "crop"]) == [1.0, None]
    assert AccuracyReward()([msg]) == [None]
    assert completion_text(None) == ""


def test_registry_and_pickling() -> None:
    import pickle

    assert get_reward("format").__name__ == "format"
    assert pickle.loads(pickle.dumps(get_reward("accuracy")))([r"\boxed{A}"], answer=["A"], task=["crop"]) == [1.0]
    assert get_reward("ssrl.recipes.rewards.FormatReward").__name__ == "format"
    with pytest.raises(ValueError, match="known rewards: accuracy, format"):
        get_reward("nope")
