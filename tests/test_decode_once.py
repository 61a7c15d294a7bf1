"""Each source is decoded once, and its depth read once, for all its tasks (issue 14 §3: "keep decode-once")."""

from __future__ import annotations

from pathlib import Path

import pytest

import ssrl.dataset.generate as generate
from ssrl.dataset.generate import GenerateConfig, _Context, process_source
from ssrl.sources.discover import Source
from ssrl.tasks import DEFAULT_TASKS
from tests.conftest import REFERENCE


@pytest.mark.slow
@pytest.mark.skipif(not (REFERENCE / "RGB-D_img3.png").is_file(), reason="reference samples not present")
def test_five_tasks_one_decode_one_depth_read(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"decode": 0, "depth": 0}
    real_decode, real_depth = generate.decode_fitted, generate.read_depth

    def decode(*a: object, **k: object) -> object:
        calls["decode"] += 1
        return real_decode(*a, **k)

    def depth(*a: object, **k: object) -> object:
        calls["depth"] += 1
        return real_depth(*a, **k)

    monkeypatch.setattr(generate, "decode_fitted", decode)
    monkeypatch.setattr(generate, "read_depth", depth)
    r = Path(REFERENCE)
    source = Source("RGB-D_img3.png", str(r / "RGB-D_img3.png"), str(r / "RGB-D_depth3.npy"),
                    str(r / "RGB-D_depth_mask3.npy"))
    rows, rejects, _ = process_source(source, _Context.build(GenerateConfig(inputs=["x"], tasks=list(DEFAULT_TASKS))))
    assert len(rows) + len(rejects) == len(DEFAULT_TASKS) and len(rows) >= 4
    assert calls == {"decode": 1, "depth": 1}
