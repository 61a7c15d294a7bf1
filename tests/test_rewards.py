"""The rewards on hand-written completions, adversarial ones included."""

import pytest

from ssrl.recipes.rewards import AccuracyReward, FormatReward, completion_text, get_reward

CASES = [
    # (case, completion, answer, format, accuracy)
    ("well formed", r"<think>the crop matches</think> \boxed{B}", "B", 1.0, 1.0),
    ("paper example: no think", r"\boxed{B}", "B", 0.0, 1.0),
    ("wrong letter", r"<think>x</think>\boxed{C}", "B", 1.0, 0.0),
    ("case differs", r"<think>x</think>\boxed{b}", "B", 1.0, 0.0),
    ("several boxes: the last wins", r"<think>x</think>\boxed{A} no wait \boxed{B}", "B", 1.0, 1.0),
    ("several boxes: last is wrong", r"<think>x</think>\boxed{B} or \boxed{A}", "B", 1.0, 0.0),
    ("nested braces", r"<think>x</think>\boxed{\text{B}}", r"\text{B}", 1.0, 1.0),
    ("unclosed box", r"<think>x</think>\boxed{B", "B", 0.0, 0.0),
    ("answer only inside the thinking", r"<think>it is \boxed{B}</think> I am not sure", "B", 0.0, 0.0),
    ("empty output", "", "B", 0.0, 0.0),
    ("spaces in tags", r"< think >x</ think > \boxed{2, 0, 1}", "2, 0, 1", 1.0, 1.0),
    ("sequence needs the exact separator", r"<think>x</think>\boxed{2,0,1}", "2, 0, 1", 1.0, 0.0),
    ("box padding is stripped", r"<think>x</think>\boxed{ 2, 0, 1 }", "2, 0, 1", 1.0, 1.0),
    ("think twice, answer after the last", r"<think>a</think><think>\boxed{A}</think>\boxed{B}", "B", 1.0, 1.0),
]


@pytest.mark.parametrize(("case", "completion", "answer", "fmt", "acc"), CASES, ids=[c[0] for c in CASES])
def test_rewards(case: str, completion: str, answer: str, fmt: float, acc: float) -> None:
    assert FormatReward()([completion]) == [fmt]
    assert AccuracyReward()([completion], answer=[answer], task=["crop"]) == [acc]
    weighted = 0.9 * acc + 0.1 * fmt
    assert weighted == pytest.approx({(1, 1): 1.0, (0, 1): 0.9, (1, 0): 0.1, (0, 0): 0.0}[(fmt, acc)])


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
