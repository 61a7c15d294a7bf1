"""Tail percentiles equal numpy's bit for bit (depth_order's normalisation, and so its samples, must not move)."""

import numpy as np
import pytest

from ssrl.tasks.windows import exact_percentiles


def _values(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "ties":
        v = rng.integers(0, 40, n)
    elif kind == "heavy tails":
        v = rng.standard_cauchy(n) * 10
    elif kind == "descending":
        v = np.sort(rng.random(n))[::-1]
    else:
        v = rng.random(n)
    return v.astype(np.float32)


@pytest.mark.parametrize("kind", ["uniform", "ties", "heavy tails", "descending", "small"])
def test_exact_percentiles_equal_numpy(kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    for _ in range(12):
        n = int(rng.integers(100, 5000)) if kind == "small" else int(rng.integers(8192, 200_000))
        v = _values(kind, n, rng)
        for q in [(0.5, 99.5), (0.0, 100.0), (float(rng.uniform(0, 10)), float(rng.uniform(90, 100)))]:
            got, want = exact_percentiles(v, q), list(np.percentile(v, q))
            assert got == want and all(type(g) is np.float64 for g in got), (kind, n, q)


def test_a_misjudged_tail_falls_back_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The largest values sit exactly at the sampled positions, so the sample puts the tail's threshold too
    high: the full np.percentile answers, and the result is still numpy's."""
    n = 100_000
    v = np.zeros(n, np.float32)
    v[:: n // 2048] = np.arange(len(v[:: n // 2048]), dtype=np.float32) + 1000
    calls = []
    real = np.percentile
    monkeypatch.setattr(np, "percentile", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = exact_percentiles(v, (0.5, 99.5))
    assert calls, "the fallback did not run"
    assert got == list(real(v, (0.5, 99.5)))
