"""The HDF5 depth reader's own chunk path (zlib-ng inflate) returns exactly what h5py returns, and hands every
layout or filter it does not handle back to h5py."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from zlib_ng import zlib_ng

from ssrl.errors import RejectError
from ssrl.sources.depth import _read_h5_chunks, read_depth


def depth_like(shape: tuple[int, ...], dtype: str = "<f4", seed: int = 0) -> np.ndarray:
    """MegaDepth-like values: smooth depth with a zeroed (invalid) band, so chunks compress unevenly."""
    rng = np.random.default_rng(seed)
    arr = rng.uniform(1.0, 80.0, size=shape)
    arr[: shape[0] // 3] = 0.0
    return arr.astype(dtype)


def h5_file(arr: np.ndarray, *, userblock: int = 0, **dataset: Any) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w", userblock_size=userblock) as f:
        f.create_dataset("depth", data=arr, **dataset)
    return buf.getvalue()


def both_reads(data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """(h5py's read, the chunk path's read or None when it declines)."""
    with h5py.File(io.BytesIO(data), "r") as f:
        return np.asarray(f["depth"][()]), _read_h5_chunks(f["depth"], data)


def assert_identical(fast: np.ndarray | None, ref: np.ndarray) -> None:
    assert fast is not None, "the chunk path declined a dataset it handles"
    assert fast.dtype == ref.dtype and fast.shape == ref.shape
    assert fast.tobytes() == ref.tobytes()  # bit for bit, NaN payloads and signed zeros included


@pytest.mark.parametrize("name", ["RGB-D_depth1.h5", "RGB-D_depth2.h5"])
def test_reference_megadepth_files_read_bit_identical(reference: Path, name: str) -> None:
    ref, fast = both_reads((reference / name).read_bytes())
    assert_identical(fast, ref)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((130, 200), (64, 64)),  # partial edge chunks on both axes
        ((128, 192), (64, 64)),  # whole chunks only
        ((97, 61), (7, 13)),  # many small chunks, odd sizes
        ((50, 70), (50, 70)),  # one chunk
        ((40, 33), (1, 33)),  # row chunks
        ((60, 45, 1), (16, 16, 1)),  # (H, W, 1) depth
    ],
)
def test_chunk_shapes_and_shuffle_read_bit_identical(shape: tuple[int, ...], chunks: tuple[int, ...],
                                                     shuffle: bool) -> None:
    arr = depth_like(shape)
    arr.flat[5] = np.nan
    ref, fast = both_reads(h5_file(arr, chunks=chunks, compression="gzip", compression_opts=9, shuffle=shuffle))
    assert_identical(fast, ref)
    np.testing.assert_array_equal(fast, arr)


@pytest.mark.parametrize("dtype", ["<f8", ">f4", "<u2", ">i2", "u1", "i1"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_dtypes_and_byte_orders_read_bit_identical(dtype: str, shuffle: bool) -> None:
    arr = depth_like((70, 90), dtype, seed=1)
    ref, fast = both_reads(h5_file(arr, chunks=(32, 32), compression="gzip", compression_opts=1, shuffle=shuffle))
    assert_identical(fast, ref)


@pytest.mark.parametrize("dataset", [{"chunks": (32, 32)}, {"chunks": (32, 32), "compression": "gzip"}])
@pytest.mark.parametrize("userblock", [0, 1024])
def test_unfiltered_chunks_and_userblock_read_bit_identical(dataset: dict[str, Any], userblock: int) -> None:
    ref, fast = both_reads(h5_file(depth_like((90, 70)), userblock=userblock, **dataset))
    assert_identical(fast, ref)


def write_chunks_directly(arr: np.ndarray, chunks: tuple[int, int], masks: Callable[[int], int]) -> bytes:
    """Shuffle + deflate pipeline where chunk i skips the filters in ``masks(i)`` (as HDF5 does when an
    optional filter fails), written with ``write_direct_chunk``."""
    import zlib

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        ds = f.create_dataset("depth", shape=arr.shape, dtype=arr.dtype, chunks=chunks, shuffle=True,
                              compression="gzip")
        offsets = [(y, x) for y in range(0, arr.shape[0], chunks[0]) for x in range(0, arr.shape[1], chunks[1])]
        for i, (y, x) in enumerate(offsets):
            block = np.zeros(chunks, arr.dtype)
            part = arr[y : y + chunks[0], x : x + chunks[1]]
            block[: part.shape[0], : part.shape[1]] = part
            raw, mask = block.tobytes(), masks(i)
            if not mask & 1:  # filter 0: shuffle
                raw = np.frombuffer(raw, np.uint8).reshape(-1, arr.dtype.itemsize).T.tobytes()
            if not mask & 2:  # filter 1: deflate
                raw = zlib.compress(raw, 6)
            ds.id.write_direct_chunk((y, x), raw, filter_mask=mask)
    return buf.getvalue()


def test_per_chunk_filter_mask_is_honoured() -> None:
    arr = depth_like((100, 100))
    ref, fast = both_reads(write_chunks_directly(arr, (32, 32), lambda i: i % 4))
    np.testing.assert_array_equal(ref, arr)  # h5py itself agrees on the file
    assert_identical(fast, ref)


@pytest.mark.parametrize(
    "dataset",
    [
        {},  # contiguous
        {"chunks": (32, 32), "compression": "gzip", "fletcher32": True},
        {"chunks": (32, 32), "compression": "lzf"},
        {"chunks": (32, 32), "scaleoffset": 3},
        {"compression": "gzip", "chunks": (32, 32), "shuffle": True, "fletcher32": True},
    ],
    ids=["contiguous", "fletcher32", "lzf", "scaleoffset", "shuffle-gzip-fletcher32"],
)
def test_unhandled_layouts_and_filters_fall_back_to_h5py(dataset: dict[str, Any]) -> None:
    arr = depth_like((90, 70))
    data = h5_file(arr, **dataset)
    ref, fast = both_reads(data)
    assert fast is None
    out = read_depth(data, "x.h5")
    np.testing.assert_array_equal(out, np.where(ref > 0, ref, np.nan).astype(np.float32))


def test_unallocated_chunks_fall_back_to_h5py_fill_value() -> None:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        ds = f.create_dataset("depth", shape=(100, 100), dtype="<f4", chunks=(32, 32), compression="gzip",
                              fillvalue=7.0)
        ds[:40, :40] = depth_like((40, 40))
    ref, fast = both_reads(buf.getvalue())
    assert fast is None and (ref[90:, 90:] == 7.0).all()


def test_corrupt_chunk_is_a_reject() -> None:
    arr = depth_like((64, 64))
    data = bytearray(h5_file(arr, chunks=(64, 64), compression="gzip"))
    with h5py.File(io.BytesIO(bytes(data)), "r") as f:
        stored: list[Any] = []
        f["depth"].id.chunk_iter(stored.append)
    start = stored[0].byte_offset + 2  # past the zlib header, into the deflate stream
    data[start : start + 64] = bytes(64)
    with h5py.File(io.BytesIO(bytes(data)), "r") as f, pytest.raises(zlib_ng.error):
        _read_h5_chunks(f["depth"], bytes(data))
    with pytest.raises(RejectError, match="corrupt"):  # h5py, asked next, fails too and says why
        read_depth(bytes(data), "x.h5")


def test_a_chunk_that_inflates_past_its_size_is_rejected_without_inflating_it_all() -> None:
    """A deflate bomb in one chunk (64 MB of zeros in ~64 kB): refused with the chunk named, after inflating at most
    one chunk's size, instead of handed to h5py, whose filter grows its buffer to the whole bomb."""
    import zlib

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        ds = f.create_dataset("depth", shape=(64, 64), dtype="f4", chunks=(64, 64), compression="gzip")
        ds.id.write_direct_chunk((0, 0), zlib.compress(bytes(64 << 20), 9))
    with pytest.raises(RejectError, match="inflates past"):
        read_depth(buf.getvalue(), "x.h5")


def test_inflate_chunk_equals_zlib_on_both_sides_of_the_library_switch() -> None:
    """Nearly empty chunks go to zlib-ng, chunks with content to libdeflate: the bytes are zlib's either way, and
    a chunk longer than its size comes back one byte long (the caller's bomb check) from both."""
    import zlib

    from ssrl.sources.depth import _inflate_chunk

    rng = np.random.default_rng(5)
    sizes = set()
    for valid in (0.0, 0.001, 0.01, 0.1, 0.5, 1.0):
        chunk = np.where(rng.random(4096) < valid, rng.random(4096), 0).astype("<f4").tobytes()
        stream = zlib.compress(chunk, 9)
        sizes.add(len(stream) >= 1024)
        assert _inflate_chunk(stream, len(chunk)) == chunk
        assert len(_inflate_chunk(stream, len(chunk) - 100)) == len(chunk) - 99
    assert sizes == {False, True}  # both libraries were used
