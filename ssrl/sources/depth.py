"""Depth readers for the formats of the paper's RGB-D datasets: MegaDepth HDF5, DIODE .npy, 16-bit PNG.

Every reader returns float32 (H, W), larger = farther, NaN where invalid, and raises ``RejectError`` with a
one-line reason on bad input. Readers take bytes (sources may live in an object store) and dispatch on the
file name's extension.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from operator import add, sub
from pathlib import PurePath
from typing import Any

import deflate
import numpy as np
from zlib_ng import zlib_ng

from ssrl.errors import RejectError

__all__ = ["DEPTH_EXTENSIONS", "DepthFormat", "read_depth", "validate_depth"]

DEPTH_EXTENSIONS = (".h5", ".hdf5", ".npy", ".png")
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class DepthFormat:
    """How to read depth files; defaults match MegaDepth, DIODE and millimetre 16-bit PNGs."""

    h5_key: str = "depth"
    png_scale: float = 0.001  # PNG value * scale = depth (millimetres -> metres)
    min_valid_fraction: float = 0.01  # sparser maps give too few pixels to ask depth questions about
    max_pixels: int = 100_000_000  # refuse declared sizes above this before reading the data


def validate_depth(depth: np.ndarray, image_hw: tuple[int, int] | None = None, *,
                   min_valid_fraction: float = 0.01, valid: np.ndarray | None = None) -> np.ndarray:
    """Normalise to float32 (H, W) with NaN for invalid (NaN, +-Inf, <= 0, or False in the optional boolean
    ``valid`` mask of the same shape) and check it is usable. Always returns a new array.

    >>> validate_depth(np.array([[0.0, 1.0], [np.inf, 2.0]])).tolist()
    [[nan, 1.0], [nan, 2.0]]
    >>> validate_depth(np.ones((100, 80)), image_hw=(120, 90))
    Traceback (most recent call last):
    ...
    ssrl.errors.RejectError: depth 100x80 does not match image 120x90 (height x width)
    """
    arr = np.asarray(depth)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise RejectError(f"depth must be 2-D (H, W) or (H, W, 1), got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "biuf":
        raise RejectError(f"depth must be numeric, got dtype {arr.dtype}")
    if image_hw is not None and tuple(arr.shape) != tuple(image_hw):
        h, w = arr.shape
        raise RejectError(f"depth {h}x{w} does not match image {image_hw[0]}x{image_hw[1]} (height x width)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float64 beyond float32 range -> inf -> invalid
        out = arr.astype(np.float32, copy=True)
    ok = np.isfinite(out)
    ok &= out > 0
    if valid is not None:
        ok &= valid
    out[~ok] = np.nan
    n_valid = int(np.count_nonzero(ok))
    if n_valid == 0:
        raise RejectError("depth has no valid pixels (all zero, negative, NaN or Inf)")
    fraction = n_valid / ok.size
    if fraction < min_valid_fraction:
        raise RejectError(
            f"depth has too few valid pixels: {fraction:.2%} (minimum {min_valid_fraction:.2%})"
        )
    return np.ascontiguousarray(out)


def read_depth(depth_data: bytes, depth_name: str, mask_data: bytes | None = None, *,
               fmt: DepthFormat = DepthFormat(), image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a depth file's bytes (format from ``depth_name``'s extension), apply the optional validity mask
    (a ``.npy``, nonzero = valid) and validate; float32 (H, W), NaN = invalid."""
    ext = PurePath(depth_name).suffix.lower()
    if ext not in DEPTH_EXTENSIONS:
        raise RejectError(f"unsupported depth format {ext or '(no extension)'!r} for {depth_name!r}; "
                          f"expected one of {', '.join(DEPTH_EXTENSIONS)}")
    if not depth_data:
        raise RejectError(f"empty depth file {depth_name!r}")
    if ext in (".h5", ".hdf5"):
        depth = _read_h5(depth_data, fmt)
    elif ext == ".npy":
        depth = _read_npy(depth_data, "depth")
    else:
        depth = _read_png(depth_data, fmt)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    valid = _mask_valid(depth, _read_npy(mask_data, "mask")) if mask_data is not None else None
    return validate_depth(depth, image_hw, min_valid_fraction=fmt.min_valid_fraction, valid=valid)


# --------------------------------------------------------------------------------------------- readers


def _check_pixels(shape: tuple[int, ...], fmt: DepthFormat, what: str) -> None:
    n = int(np.prod(shape, dtype=np.int64))
    if n > fmt.max_pixels:
        raise RejectError(f"{what} declares {'x'.join(map(str, shape))} = {n} values, above the limit "
                          f"of {fmt.max_pixels}")


def _read_h5(data: bytes, fmt: DepthFormat) -> np.ndarray:
    """MegaDepth: one float dataset (default key ``depth``), 0 = invalid."""
    import h5py  # imported lazily: only RGB-D sources need it

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            node = f.get(fmt.h5_key)
            if not isinstance(node, h5py.Dataset):
                keys = _h5_datasets(f)
                found = ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else "") if keys else "none"
                raise RejectError(f"HDF5 has no dataset {fmt.h5_key!r} (datasets present: {found})")
            if node.dtype.kind not in "biuf":
                raise RejectError(f"HDF5 dataset {fmt.h5_key!r} is not numeric (dtype {node.dtype})")
            _check_pixels(node.shape, fmt, f"HDF5 dataset {fmt.h5_key!r}")
            try:
                fast = _read_h5_chunks(node, data)
            except RejectError:
                raise
            except Exception:  # a chunk that does not inflate to its size: h5py reads it or says why it cannot
                fast = None
            return fast if fast is not None else np.asarray(node[()])
    except RejectError:
        raise
    except Exception as e:
        raise RejectError(f"depth .h5 is not an HDF5 file or is corrupt: {_short(e)}") from None


def _h5_pipeline(node: Any) -> list[int] | None:
    """The filter ids of a chunked dataset if every one is shuffle or deflate, else None (h5py reads it)."""
    import h5py

    plist = node.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CHUNKED:
        return None
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    handled = (h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE)
    return filters if all(f in handled for f in filters) else None


def _read_h5_chunks(node: Any, data: bytes) -> np.ndarray | None:
    """A chunked shuffle/deflate dataset read straight from the file's bytes, inflated by ``_inflate_chunk``.

    Why: MegaDepth stores depth as float32 gzip-9 in 64x64 chunks, and inflating them is most of the position
    task's cost; read this way they come 1.9-3.5x faster than through h5py (bench/README.md, "Decoders").
    The result is the array ``node[()]`` returns, bit for bit. None (h5py then reads the dataset) for anything
    else: another layout or filter (fletcher32, szip, lzf, scale-offset ...), unallocated chunks (their fill
    value), or chunk addresses that do not point at the chunk's bytes.
    """
    import h5py

    pipeline = _h5_pipeline(node)
    dsid = node.id
    if pipeline is None or not hasattr(dsid, "chunk_iter") or node.size == 0:
        return None
    shape, chunks, dtype = node.shape, node.chunks, node.dtype
    grid = [-(-n // c) for n, c in zip(shape, chunks, strict=True)]
    stored: list[Any] = []
    dsid.chunk_iter(stored.append)
    end = len(data)
    if len(stored) != int(np.prod(grid)) or any(s.byte_offset + s.size > end for s in stored):
        return None
    first = stored[0]
    if dsid.read_direct_chunk(first.chunk_offset)[1] != data[first.byte_offset : first.byte_offset + first.size]:
        return None  # addresses relative to something else than the file's start: let HDF5 resolve them
    nbytes = int(np.prod(chunks)) * dtype.itemsize
    origin = (0,) * len(shape)
    view = memoryview(data)
    out = np.empty(shape, dtype)
    for info in stored:
        raw: Any = view[info.byte_offset : info.byte_offset + info.size]
        for i in reversed(range(len(pipeline))):  # undo the filters in reverse order of writing
            if info.filter_mask & (1 << i):
                continue  # this filter was skipped for this chunk (an optional filter that did not help)
            if pipeline[i] == h5py.h5z.FILTER_DEFLATE:
                raw = _inflate_chunk(raw, nbytes)
            elif dtype.itemsize > 1:  # shuffle: byte k of every element was stored together
                raw = np.frombuffer(raw, np.uint8).reshape(dtype.itemsize, -1).T.tobytes()
        if len(raw) > nbytes:  # h5py's inflate would grow its buffer to the bomb's full size: refuse here
            raise RejectError(f"HDF5 chunk at {info.chunk_offset} inflates past its {nbytes} bytes")
        if len(raw) != nbytes:
            raise ValueError(f"chunk at {info.chunk_offset} holds {len(raw)} bytes, expected {nbytes}")
        offset = info.chunk_offset  # edge chunks are stored whole: both slices stop at the dataset's edge
        block = np.frombuffer(raw, dtype).reshape(chunks)[tuple(map(slice, origin, map(sub, shape, offset)))]
        out[tuple(map(slice, offset, map(add, offset, chunks)))] = block
    return out


def _inflate_chunk(raw: Any, nbytes: int) -> bytes:
    """One deflated chunk, at most ``nbytes + 1`` bytes (one more shows a chunk that inflates past its size).

    libdeflate inflates chunks with content ~1.3x faster than zlib-ng, but spends ~25 us setting up against
    zlib-ng's 3 us, and MegaDepth's invalid regions are hundreds of nearly empty chunks: those (under 1 kB
    compressed) and any chunk libdeflate refuses (corrupt, or longer than ``nbytes``) go to zlib-ng, which says
    which it is. Both maps of the paper's sample files: 14.2 -> 11.6 ms.
    """
    if len(raw) >= 1024:
        try:
            return deflate.zlib_decompress(raw, nbytes)
        except deflate.DeflateError:
            pass
    return zlib_ng.decompressobj().decompress(raw, nbytes + 1)  # bounded: a bomb stops at its size


def _h5_datasets(f: Any) -> list[str]:
    """Every dataset path in the file, sorted, to tell users which key to configure."""
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


def _read_npy(data: bytes, what: str) -> np.ndarray:
    """DIODE depth/mask ``.npy`` as a read-only view of ``data``: no copy (``validate_depth`` makes the one
    copy; ``np.load`` would add another, 3 MB per DIODE map). Never unpickles (object arrays are refused)."""
    from numpy.lib import format as npy

    if not data:
        raise RejectError(f"empty {what} file")
    if not data.startswith(_NPY_MAGIC):
        raise RejectError(f"{what} is not a .npy file")
    fp = io.BytesIO(data)
    try:
        version = npy.read_magic(fp)
        read_header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
        if read_header is None:  # 3.0 only stores non-Latin-1 field names: never a numeric map
            raise ValueError(f"unsupported .npy version {version[0]}.{version[1]}")
        shape, fortran, dtype = read_header(fp)
    except Exception as e:
        raise RejectError(f"{what} .npy is corrupt: {_short(e)}") from None
    if dtype.hasobject:
        raise RejectError(f"{what} .npy holds pickled Python objects; refusing to unpickle")
    if dtype.kind not in "biuf":
        raise RejectError(f"{what} .npy must be numeric, got dtype {dtype}")
    count, offset = int(np.prod(shape, dtype=np.int64)), fp.tell()
    if len(data) - offset < count * dtype.itemsize:
        raise RejectError(f"{what} .npy is corrupt: {len(data) - offset} bytes of data, the header declares "
                          f"{count * dtype.itemsize}")
    arr = np.frombuffer(data, dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


def _read_png(data: bytes, fmt: DepthFormat) -> np.ndarray:
    """16-bit grey PNG, value * ``png_scale``, 0 = invalid. 8-bit PNGs are refused: too coarse for depth."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb warnings included: our own limit decides below
            with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
                _check_pixels((img.size[1], img.size[0]), fmt, "depth PNG")
                mode = img.mode
                if mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                    raise RejectError(f"depth PNG must be 16-bit grey, got mode {mode}")
                img.load()
                arr = np.asarray(img)
    except RejectError:
        raise
    except UnidentifiedImageError:
        raise RejectError("depth .png is not a PNG image") from None
    except Exception as e:
        raise RejectError(f"depth PNG is not decodable: {_short(e)}") from None
    return arr.astype(np.float32) * np.float32(fmt.png_scale)


def _mask_valid(depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """True where the mask is nonzero (and not NaN). DIODE quirk: masks can be wider than the depth; crop them
    to its width."""
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or depth.ndim != 2:
        raise RejectError(f"mask must be 2-D, got shape {tuple(mask.shape)} for depth {tuple(depth.shape)}")
    if mask.shape[1] > depth.shape[1]:
        mask = mask[:, : depth.shape[1]]
    if mask.shape != depth.shape:
        raise RejectError(f"mask {mask.shape[0]}x{mask.shape[1]} does not match depth "
                          f"{depth.shape[0]}x{depth.shape[1]} (height x width)")
    valid = mask != 0
    if mask.dtype.kind == "f":
        valid &= ~np.isnan(mask)
    return valid


def _short(e: BaseException) -> str:
    return (" ".join(str(e).split()) or type(e).__name__)[:200]
