import numpy as np
import pytest

from ssrl.dataset.report import uniformity
from ssrl.tasks import DEFAULT_TASKS, available_tasks, get_task, register_task, registry
from ssrl.tasks.base import Scene
from tests.conftest import textured


def ramp_scene(h: int = 168, w: int = 224, seed: int = 0) -> Scene:
    depth = (np.linspace(1, 8, w, dtype=np.float32)[None, :] + np.linspace(0, 4, h, dtype=np.float32)[:, None])
    return Scene("ramp", textured(h, w, seed), np.round(depth * 4) / 4)  # terraces: flat windows at every depth


def test_known_tasks_and_errors() -> None:
    assert set(DEFAULT_TASKS) < set(available_tasks()) and "rotation" in available_tasks()
    with pytest.raises(ValueError, match="known tasks: crop, depth_order"):
        get_task("jigsaw")
    with pytest.raises(ValueError, match="already registered"):
        register_task("shuffle", "ssrl.tasks.flip")
    with pytest.raises(TypeError):
        registry["x"] = "y"  # read-only view


def test_register_a_new_task_without_touching_others() -> None:
    register_task("shuffle3x3", "tests.tasks.extra_task")
    try:
        t = get_task("shuffle3x3")
        s = t.generate(ramp_scene(), np.random.default_rng(0), t.Config())
        assert s.meta["rows"] == 3 and t.verify(f"<think></think>\\boxed{{{s.answer}}}", s) == 1.0
    finally:
        register_task("shuffle3x3", "tests.tasks.extra_task", clobber=True)


@pytest.mark.parametrize("name", sorted(available_tasks()))
def test_round_trip_and_determinism(name: str) -> None:
    task = get_task(name)
    scene = ramp_scene()
    a = task.generate(scene, np.random.default_rng(5), task.Config())
    b = task.generate(scene, np.random.default_rng(5), task.Config())
    assert a.answer == b.answer and a.meta == b.meta
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    assert task.verify(f"<think>reasoning</think>\\boxed{{{a.answer}}}", a) == 1.0
    assert task.verify(f"<think>reasoning</think>\\boxed{{{a.answer}}}", {"answer": a.answer}) == 1.0
    assert task.verify("<think>x</think>\\boxed{zz}", a) == 0.0
    assert task.verify("", a) == 0.0
    assert task.verify("anything", {"answer": None}) is None
    assert task.answer_from_meta(a.meta) == a.answer
    assert a.problem.count("<image>") == len(a.images) and a.problem.endswith("\\boxed{}.")


@pytest.mark.parametrize("name", ["flip", "crop", "position", "rotation", "depth_order"])
def test_answers_are_uniform(name: str) -> None:
    """Correct option letters (or labels) are balanced: chi-square against the uniform law."""
    task = get_task(name)
    scene = ramp_scene(112, 140)
    answers: dict[str, int] = {}
    space = 0
    for seed in range(400):
        s = task.generate(scene, np.random.default_rng(seed), task.Config())
        answers[s.answer] = answers.get(s.answer, 0) + 1
        space = task.answer_space_size(s.meta)
    result = uniformity(answers, space)
    assert result["distinct"] == space
    assert result["p_value"] > 1e-3, (answers, result)
