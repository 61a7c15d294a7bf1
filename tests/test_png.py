"""The zlib-ng + numpy PNG reader: Pillow's pixels for None/Sub/Up rows, libspng for the rest, nothing damaged."""

from __future__ import annotations

import io
import itertools
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ssrl.sources.imageio import decode_image, image_to_rgb
from ssrl.sources.png import decode_unfiltered
from tests.badcorpus import gradient, png_chunk

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPE = {1: 0, 3: 2, 4: 6}


def image(channels: int, hw: tuple[int, int] = (61, 83)) -> np.ndarray:
    """Smooth gradient plus noise, so every filter type changes the bytes and wraps mod 256 somewhere."""
    rng = np.random.default_rng(channels)
    rgb = gradient(hw).astype(np.int16) + rng.integers(-40, 40, (*hw, 3))
    arr = np.clip(np.dstack([rgb, rng.integers(0, 256, hw)]), 0, 255).astype(np.uint8)
    return arr[..., 0] if channels == 1 else np.ascontiguousarray(arr[..., :channels])


def pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


def filter_rows(arr: np.ndarray, kinds: list[int]) -> bytes:
    """Scanlines of ``arr`` with the given filter type per row (0 None, 1 Sub, 2 Up), as an encoder writes them."""
    h = arr.shape[0]
    rows = arr.reshape(h, -1).astype(np.int16)
    bpp = 1 if arr.ndim == 2 else arr.shape[2]
    out = b""
    for y, kind in enumerate(kinds):
        pred = np.zeros_like(rows[y])
        if kind == 1:
            pred[bpp:] = rows[y, :-bpp]
        elif kind == 2 and y:
            pred = rows[y - 1]
        out += bytes([kind]) + ((rows[y] - pred) % 256).astype(np.uint8).tobytes()
    return out


def build_png(arr: np.ndarray, stream: bytes, *, ihdr: bytes | None = None, idat_parts: int = 1,
              between: bytes = b"") -> bytes:
    """A PNG of ``arr``'s size holding ``stream`` in ``idat_parts`` IDAT chunks (``between`` after the first)."""
    h, w = arr.shape[:2]
    ihdr = ihdr or struct.pack(">IIBBBBB", w, h, 8, COLOUR_TYPE[1 if arr.ndim == 2 else arr.shape[2]], 0, 0, 0)
    cut = np.linspace(0, len(stream), idat_parts + 1).astype(int)
    idats = [png_chunk(b"IDAT", stream[a:b]) for a, b in itertools.pairwise(cut)]
    return (SIGNATURE + png_chunk(b"IHDR", ihdr) + idats[0] + between + b"".join(idats[1:])
            + png_chunk(b"IEND", b""))


def row_filters(data: bytes) -> set[int]:
    """The filter types the PNG's rows use (inflated with zlib, independently of the reader under test)."""
    with Image.open(io.BytesIO(data)) as img:
        w, channels = img.width, len(img.getbands())
    pos, stream = 8, b""
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        stream += data[pos + 8 : pos + 8 + length] if kind == b"IDAT" else b""
        pos += 12 + length
    return set(zlib.decompress(stream)[:: 1 + w * channels])


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("flag", ["NONE", "SUB", "UP"])
def test_libpng_files_with_none_sub_up_rows_decode_to_pillows_pixels(channels: int, flag: str) -> None:
    """PNGs as libpng writes them (OpenCV, one filter forced) decode here, exactly as Pillow decodes them."""
    arr = image(channels)
    bgr = arr if channels == 1 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA)
    ok, out = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_FILTER, getattr(cv2, f"IMWRITE_PNG_FILTER_{flag}")])
    data = out.tobytes()
    assert ok and row_filters(data) - {0} == {"NONE": set(), "SUB": {1}, "UP": {2}}[flag]
    got = decode_unfiltered(data)
    assert got is not None
    np.testing.assert_array_equal(got, pillow(data))
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_mixed_rows_and_runs_of_up(channels: int) -> None:
    """Random per-row None/Sub/Up (Up runs after Sub rows, an Up first row, the last row), split over IDATs."""
    arr = image(channels)
    kinds = [2, 2, 1, 2, 2, 2, 0, 1, 1, 2, *np.random.default_rng(7).integers(0, 3, arr.shape[0] - 11).tolist(), 2]
    data = build_png(arr, zlib.compress(filter_rows(arr, kinds), 9), idat_parts=5)
    assert row_filters(data) == {0, 1, 2}
    np.testing.assert_array_equal(decode_unfiltered(data), arr)
    with Image.open(io.BytesIO(data)) as img:  # through the whole decoder: grey, alpha over white
        np.testing.assert_array_equal(decode_image(data), image_to_rgb(img))


@pytest.mark.parametrize("flag", ["AVG", "PAETH"])
def test_average_and_paeth_rows_are_left_to_libspng(flag: str) -> None:
    arr = image(3)
    data = cv2.imencode(".png", arr[..., ::-1], [cv2.IMWRITE_PNG_FILTER, getattr(cv2, f"IMWRITE_PNG_FILTER_{flag}")])[
        1].tobytes()
    assert row_filters(data) & {3, 4}
    assert decode_unfiltered(data) is None
    np.testing.assert_array_equal(decode_image(data), arr)  # through libspng


def test_a_paeth_row_after_the_peeked_rows_still_falls_back() -> None:
    arr = image(3)
    kinds = [1] * 40 + [0] * (arr.shape[0] - 40)
    rows = bytearray(filter_rows(arr, kinds))
    rows[40 * (1 + arr.shape[1] * 3)] = 4  # row 40 claims Paeth: its bytes no longer decode to arr
    assert decode_unfiltered(build_png(arr, zlib.compress(bytes(rows)))) is None


def test_the_papers_rgb_sample_takes_this_path(reference: Path) -> None:
    data = (reference / "RGB_img.png").read_bytes()
    got = decode_unfiltered(data)
    assert got is not None and got.shape == (1186, 902, 4)
    np.testing.assert_array_equal(got, pillow(data))


def test_the_diode_sample_is_left_to_libspng(reference: Path) -> None:
    assert decode_unfiltered((reference / "RGB-D_img3.png").read_bytes()) is None  # Paeth rows


def _damaged() -> dict[str, bytes]:
    arr = image(3)
    rows = filter_rows(arr, [1] * arr.shape[0])
    stream = zlib.compress(rows)
    good = build_png(arr, stream, idat_parts=3)
    h, w = arr.shape[:2]
    bad_crc = bytearray(good)
    bad_crc[good.index(b"IDAT") + 20] ^= 1
    bad_adler = bytearray(stream)
    bad_adler[-1] ^= 1
    return {
        "chunk CRC": bytes(bad_crc),
        "zlib checksum (CRC recomputed)": build_png(arr, bytes(bad_adler)),
        "stream shorter than the header says": build_png(arr, zlib.compress(rows[:-7])),
        "stream longer than the header says": build_png(arr, zlib.compress(rows + b"\0" * 50)),
        "stream cut before its end": build_png(arr, stream[:-9]),
        "zlib checksum missing": build_png(arr, stream[:-4]),
        "IDAT chunks not consecutive": build_png(arr, stream, idat_parts=2, between=png_chunk(b"tEXt", b"a\0b")),
        "interlaced": build_png(arr, stream, ihdr=struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)),
        "16-bit": build_png(arr, stream, ihdr=struct.pack(">IIBBBBB", w // 2, h, 16, 2, 0, 0, 0)),
        "filter type 5": build_png(arr, zlib.compress(b"\5" + rows[1:])),
        "no IEND": build_png(arr, stream)[:-12],
        "not a PNG": b"GIF89a" + good[6:],
    }


@pytest.mark.parametrize("name", list(_damaged()))
def test_damaged_or_unusual_files_are_not_decoded_here(name: str) -> None:
    """Each one is left to libspng, which decodes what is valid and refuses the rest (then Pillow rejects)."""
    assert decode_unfiltered(_damaged()[name]) is None


def test_a_deflate_bomb_is_stopped_at_the_declared_size() -> None:
    """A 4x4 header over 64 MB of zeros: the inflate stops one byte past 4 rows, allocating kilobytes."""
    arr = np.zeros((4, 4, 3), np.uint8)
    data = build_png(arr, zlib.compress(b"\0" * (64 << 20), 9))
    tracemalloc.start()
    try:
        assert decode_unfiltered(data) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
