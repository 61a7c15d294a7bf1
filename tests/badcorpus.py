"""A corpus of bad and odd inputs, written at test time (nothing binary is committed), for reuse by tests.

``build_bad_corpus(folder)`` writes the files and returns ``{image file name: expected outcome}``. Only
images (sources) are keys; depth maps and masks sit beside them, named so that ``discover([folder])`` with the
default rules pairs them. The expected outcome is of this pipeline::

    image, hw = decode_fitted(image_bytes, PixelBudget())
    if source.depth: read_depth(depth_bytes, source.depth, mask_bytes, image_hw=hw)

- ``"ok"``: both steps succeed;
- ``"reject:<keyword>"``: ``decode_fitted`` raises ``RejectError`` whose reason contains ``<keyword>``;
- ``"depth_reject:<keyword>"``: the image decodes, ``read_depth`` raises ``RejectError`` containing it.

Whether a source with a rejected depth is skipped or used without depth is the generator's decision.
"""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, features

OK = "ok"
#: Size of the ordinary test images (height, width); non-square so orientation mistakes show.
HW = (48, 64)
#: Colour of the top-left 8x8 block of ``exif_rotated.jpg`` as stored; the rest is BLUE.
RED = (255, 0, 0)
BLUE = (0, 0, 255)
#: CMYK value written to ``cmyk.jpg`` and the RGB it must decode to.
CMYK_VALUE = (0, 255, 255, 0)
CMYK_AS_RGB = (255, 0, 0)
#: DIODE's masks can be wider than the depth map; the reader crops them.
DIODE_MASK_EXTRA_COLUMNS = 3


def gradient(hw: tuple[int, int] = HW) -> np.ndarray:
    """A smooth, non-symmetric uint8 RGB test image (compresses well, survives JPEG)."""
    h, w = hw
    y, x = np.ogrid[0:h, 0:w]
    out = np.empty((h, w, 3), np.uint8)
    out[..., 0] = x * 255 // max(w - 1, 1)
    out[..., 1] = y * 255 // max(h - 1, 1)
    out[..., 2] = (x + y) * 127 // max(h + w - 2, 1)
    return out


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body and the CRC over type + body."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to declare ``width`` x ``height`` (CRC fixed): a bomb header."""
    data = bytearray(encode(Image.new("1", (1, 1)), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def jpeg_with_orientation(rgb: np.ndarray, orientation: int, **kw: object) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(rgb), "JPEG", exif=exif.tobytes(), **kw)


def corrupt_png(data: bytes) -> bytes:
    """Flip bytes inside the first IDAT chunk's compressed data."""
    out = bytearray(data)
    start = out.index(b"IDAT") + 4
    for i in range(start + 4, min(start + 40, len(out) - 12)):
        out[i] ^= 0xFF
    return bytes(out)


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def h5_bytes(arr: np.ndarray, key: str = "depth") -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset(key, data=arr)
    return buf.getvalue()


def good_depth(hw: tuple[int, int] = HW) -> np.ndarray:
    """Metres, increasing downwards, with a few invalid (0) pixels."""
    d = np.linspace(1.0, 10.0, hw[0] * hw[1], dtype=np.float32).reshape(hw)
    d[0, :5] = 0.0
    return d


def _images() -> dict[str, tuple[bytes, str]]:
    """Image files: name -> (bytes, expected outcome)."""
    rgb = gradient()
    pil = Image.fromarray(rgb)
    good_jpeg = encode(pil, "JPEG", quality=90)
    good_png = encode(pil, "PNG")
    rotated = np.zeros((*HW, 3), np.uint8)
    rotated[:] = BLUE
    rotated[:8, :8] = RED
    palette = Image.new("P", (HW[1], HW[0]), 1)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(0, (0, 0, 16, 16))  # index 0 (red) is transparent in the _transparent variant
    alpha = np.full(HW, 255, np.uint8)
    alpha[:16, :16] = 0
    out: dict[str, tuple[bytes, str]] = {
        "good.jpg": (good_jpeg, OK),
        "empty.jpg": (b"", "reject:empty file"),
        "text.png": (b"this is a text file, not an image\n" * 20, "reject:not a decodable image"),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "reject:truncated"),
        "corrupt.png": (corrupt_png(good_png), "reject:corrupt"),
        # Pillow's own hard limit (2 x MAX_IMAGE_PIXELS) fires in Image.open:
        "bomb.png": (png_with_declared_size(20000, 20000), "reject:decompression bomb"),
        # Above our 100 Mpx default but below Pillow's hard limit: our header check must catch it.
        "bomb_local.png": (png_with_declared_size(12000, 10000), "reject:decompression bomb"),
        "tiny.png": (encode(Image.fromarray(gradient((4, 4))), "PNG"), OK),
        "elongated.png": (encode(Image.fromarray(gradient((2, 500))), "PNG"), "reject:aspect ratio"),
        "png_named.jpg": (good_png, OK),  # content, not extension, decides the format
        "cmyk.jpg": (encode(Image.new("CMYK", (HW[1], HW[0]), CMYK_VALUE), "JPEG", quality=95), OK),
        "palette.png": (encode(palette, "PNG"), OK),
        "palette_transparent.png": (encode(palette, "PNG", transparency=0), OK),
        "la.png": (encode(Image.merge("LA", [Image.fromarray(rgb[..., 0]), Image.fromarray(alpha)]), "PNG"), OK),
        "rgba.png": (encode(Image.fromarray(np.dstack([rgb, alpha])), "PNG"), OK),
        "gray.png": (encode(pil.convert("L"), "PNG"), OK),
        "gray16.png": (encode(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"), OK),
        "bilevel.png": (encode(pil.convert("1"), "PNG"), OK),
        "image.tif": (encode(pil, "TIFF"), OK),
        "float.tif": (encode(Image.fromarray(rgb[..., 1].astype(np.float32) / 255), "TIFF"), OK),
        "image.bmp": (encode(pil, "BMP"), OK),
        "exif_rotated.jpg": (jpeg_with_orientation(rotated, 6, quality=95), OK),
    }
    if features.check("webp"):
        out["image.webp"] = (encode(pil, "WEBP", quality=90), OK)
    return out


def _pairs() -> dict[str, tuple[bytes, dict[str, bytes], str]]:
    """RGB-D sources: image name -> (image bytes, {companion file name: bytes}, expected outcome)."""
    png = encode(Image.fromarray(gradient()), "PNG")
    jpg = encode(Image.fromarray(gradient()), "JPEG", quality=90)
    d = good_depth()
    nonfinite = np.full(HW, np.nan, np.float32)
    nonfinite[::2] = np.inf
    sparse = np.zeros(HW, np.float32)
    sparse[0, 0] = 5.0  # 1 of 3072 pixels valid: 0.03 %
    wide_mask = np.ones((HW[0], HW[1] + DIODE_MASK_EXTRA_COLUMNS), np.float32)
    wide_mask[:, :4] = 0
    obj = np.array([{"depth": 1}, None], dtype=object)
    mm = np.clip(d * 1000, 0, 65535).astype(np.uint16)
    return {
        "diode_good.png": (png, {"diode_good_depth.npy": npy_bytes(d[..., None]),
                                 "diode_good_depth_mask.npy": npy_bytes(wide_mask)}, OK),
        "mega_good.jpg": (jpg, {"mega_good.h5": h5_bytes(d)}, OK),
        "png16_good.png": (png, {"png16_good_depth.png": encode(Image.fromarray(mm), "PNG")}, OK),
        "depth_nonfinite.png": (png, {"depth_nonfinite_depth.npy": npy_bytes(nonfinite)}, "depth_reject:no valid"),
        "depth_zero.jpg": (jpg, {"depth_zero.h5": h5_bytes(np.zeros(HW, np.float32))}, "depth_reject:no valid"),
        "depth_sparse.png": (png, {"depth_sparse_depth.npy": npy_bytes(sparse)}, "depth_reject:too few valid"),
        "depth_shape.png": (png, {"depth_shape_depth.npy": npy_bytes(good_depth((HW[0] - 8, HW[1])))},
                            "depth_reject:does not match image"),
        "depth_wrongkey.jpg": (jpg, {"depth_wrongkey.h5": h5_bytes(d, key="z")}, "depth_reject:no dataset 'depth'"),
        "depth_nothdf5.jpg": (jpg, {"depth_nothdf5.h5": b"not hdf5 at all" * 10}, "depth_reject:not an HDF5"),
        "depth_pickle.png": (png, {"depth_pickle_depth.npy": npy_bytes(obj, allow_pickle=True)},
                             "depth_reject:pickle"),
        "depth_notnpy.png": (png, {"depth_notnpy_depth.npy": pickle.dumps([1, 2, 3])}, "depth_reject:not a .npy"),
        "depth_8bit.png": (png, {"depth_8bit_depth.png": encode(Image.fromarray(gradient()[..., 0]), "PNG")},
                           "depth_reject:16-bit"),
        "depth_maskshape.png": (png, {"depth_maskshape_depth.npy": npy_bytes(d),
                                      "depth_maskshape_depth_mask.npy": npy_bytes(np.ones((HW[0] - 1, HW[1])))},
                                "depth_reject:mask"),
    }


def build_bad_corpus(folder: Path) -> dict[str, str]:
    """Write the corpus into ``folder`` (created if needed); return {image file name: expected outcome}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    for name, (data, outcome) in _images().items():
        (folder / name).write_bytes(data)
        expected[name] = outcome
    for name, (data, companions, outcome) in _pairs().items():
        (folder / name).write_bytes(data)
        for other, payload in companions.items():
            (folder / other).write_bytes(payload)
        expected[name] = outcome
    return expected

