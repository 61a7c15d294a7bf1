"""The fast window statistics give exactly what their definitions give: tail percentiles equal numpy's bit for bit,
window min/max equal scipy's filters, and the fallback of ``pick_flat`` draws the pixel a whole-image filter would
(depth_order's and position's samples must not move)."""

import numpy as np
import pytest
from scipy import ndimage

from ssrl.tasks.windows import _nth_true, exact_percentiles, pick, pick_flat, window_minmax, window_minmax_at


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


@pytest.mark.parametrize("valid_fraction", [1.0, 0.9, 0.3, 0.02])
def test_exact_percentiles_over_a_mask_equal_numpy_on_the_masked_values(valid_fraction: float) -> None:
    """With ``valid``, the percentiles are those of ``values[valid]`` (NaN and +-inf outside the mask never count),
    also when the mask is too sparse for the sampled threshold and numpy answers."""
    rng = np.random.default_rng(int(valid_fraction * 100))
    for _ in range(8):
        v = _values(str(rng.choice(["uniform", "ties", "heavy tails"])), int(rng.integers(8192, 300_000)), rng)
        valid = rng.random(v.size) < valid_fraction
        v[~valid & (rng.random(v.size) < 0.5)] = rng.choice([np.nan, np.inf, -np.inf])
        q = (0.5, 99.5)
        got, want = exact_percentiles(v, q, valid), list(np.percentile(v[valid], q))
        assert got == want and all(type(g) is np.float64 for g in got), (valid_fraction, v.size)


# ------------------------------------------------------------------- window statistics: the fast paths are exact
def _scipy_minmax(depth: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The definition: scipy's min/max filters, with NaN and pixels beyond the image as +-inf."""
    bad = ~np.isfinite(depth)
    hi = ndimage.maximum_filter(np.where(bad, np.inf, depth), size=size, mode="constant", cval=np.inf)
    lo = ndimage.minimum_filter(np.where(bad, -np.inf, depth), size=size, mode="constant", cval=-np.inf)
    return lo, hi


def _random_map(rng: np.random.Generator, h: int, w: int, dtype: type = np.float32) -> np.ndarray:
    d = (rng.random((h, w)) * rng.uniform(0.1, 50)).astype(dtype)
    d[rng.random((h, w)) < rng.uniform(0, 0.4)] = np.nan
    d[rng.random((h, w)) < 0.01] = rng.choice([np.inf, -np.inf])
    return d


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_window_minmax_equals_scipy_filters(dtype: type) -> None:
    rng = np.random.default_rng(3)
    for _ in range(150):
        h, w, size = int(rng.integers(1, 70)), int(rng.integers(1, 70)), int(rng.choice([1, 3, 5, 11, 15, 25]))
        d = _random_map(rng, h, w, dtype)
        got, want = window_minmax(d, size), _scipy_minmax(d, size)
        assert got[0].dtype == want[0].dtype
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), (h, w, size)


def test_window_minmax_rejects_even_sizes() -> None:
    with pytest.raises(ValueError, match="odd"):
        window_minmax(np.zeros((5, 5), np.float32), 4)


def test_window_minmax_at_equals_the_full_filter_everywhere() -> None:
    """Every pixel and some outside the image: the gathered windows give what the full filter gives."""
    rng = np.random.default_rng(4)
    for _ in range(40):
        h, w, size = int(rng.integers(1, 50)), int(rng.integers(1, 50)), int(rng.choice([1, 3, 11, 15]))
        d = _random_map(rng, h, w)
        ys, xs = np.divmod(np.arange(h * w), w)
        lo, hi = window_minmax_at(d, ys, xs, size)
        want_lo, want_hi = _scipy_minmax(d, size)
        assert np.array_equal(lo, want_lo.ravel()) and np.array_equal(hi, want_hi.ravel())
        out_lo, out_hi = window_minmax_at(d, np.array([-1, h, 0]), np.array([0, 0, w + 2]), size)
        assert (out_lo == -np.inf).all() and (out_hi == np.inf).all()


def test_pick_flat_fallback_draws_what_the_whole_image_filter_draws() -> None:
    """``tries=0`` goes straight to the exact fallback, which filters only the allowed pixels' bounding box:
    the same pixel as picking among all flat allowed pixels of the whole image, from the same generator."""
    rng = np.random.default_rng(5)
    found = 0
    for _ in range(200):
        h, w, size = int(rng.integers(5, 60)), int(rng.integers(5, 60)), int(rng.choice([3, 5, 11]))
        levels = rng.choice([1.0, 1.2, 3.0], (h // 4 + 1, w // 4 + 1))  # flat 4x4 blocks: some draws succeed
        d = np.kron(levels, np.ones((4, 4)))[:h, :w].astype(np.float32)
        d[rng.random((h, w)) < 0.03] = np.nan
        allowed = np.zeros((h, w), bool)
        y0, x0 = int(rng.integers(h)), int(rng.integers(w))
        allowed[y0 : y0 + int(rng.integers(1, h)), x0 : x0 + int(rng.integers(1, w))] = True
        allowed &= rng.random((h, w)) < 0.7
        seed = int(rng.integers(1 << 30))
        got = pick_flat(d, allowed, size, 0.5, np.random.default_rng(seed), tries=0)
        want = pick(allowed & (_scipy_minmax(d, size)[1] - _scipy_minmax(d, size)[0] < 0.5),
                    np.random.default_rng(seed))
        assert got == want, (h, w, size)
        found += got is not None
    assert found > 50  # both outcomes were exercised


def test_nth_true_is_flatnonzero_indexed() -> None:
    """pick_flat's draws find the n-th allowed pixel from per-row counts: the pixel ``np.flatnonzero`` lists n-th."""
    rng = np.random.default_rng(3)
    for h, w, p in [(1, 1, 1.0), (7, 300, 0.5), (120, 90, 0.02), (60, 1037, 0.97)]:
        mask = rng.random((h, w)) < p
        mask[0, 0] = True
        ends = np.cumsum(mask.sum(axis=1))
        n = rng.integers(ends[-1], size=500)
        ys, xs = _nth_true(mask, ends, n)
        assert np.array_equal(ys * w + xs, np.flatnonzero(mask)[n])
