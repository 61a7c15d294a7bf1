"""Decoding users' images safely, resizing them to a VLM pixel budget, and encoding them deterministically.

Every bad input (empty, not an image, truncated, corrupt, decompression bomb, unusable mode) becomes a
``RejectError`` with a one-line reason, so the generator can skip it and report why; no Pillow exception,
warning or traceback escapes. Pillow's global settings (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``) are never changed.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import pyspng
from PIL import Image, ImageOps, UnidentifiedImageError

from ssrl.errors import RejectError
from ssrl.sources.png import decode_unfiltered

__all__ = [
    "MAX_ASPECT_RATIO",
    "PixelBudget",
    "decode_fitted",
    "decode_image",
    "encode_image",
    "fit_budget",
    "image_to_rgb",
    "probe_image",
    "resize_depth",
    "resize_rgb",
    "smart_resize",
]

#: Qwen2-VL refuses more elongated images; so do we (such images make degenerate crops and tiles).
MAX_ASPECT_RATIO = 200
#: Formats we let Pillow open. Deliberately excludes EPS/PS (Pillow shells out to Ghostscript) and exotic
#: plugins; MPO is how Pillow opens many phone JPEGs.
SAFE_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "DIB", "TIFF", "GIF", "PPM", "TGA", "AVIF")
ENCODE_FORMATS = ("png", "jpeg", "webp")
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that transpose width and height
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: Shrinking by more than 1.35x uses area averaging (antialiased); milder resizes use bit-exact bilinear at a
#: quarter of the cost (a 1600x1064 MegaDepth photo to the budget, a 1.33x shrink: 3 against 12 ms). Measured
#: against a Lanczos resize at 1.33x, bilinear is 0.9-1.1 dB PSNR closer than area averaging on the paper's
#: photos and up to 1.4 dB further on synthetic renders with per-pixel noise; both stay above 43 dB.
AREA_BELOW = 1 / 1.35

# The generator runs one process per core; OpenCV's own thread pool would only oversubscribe them.
cv2.setNumThreads(1)


@dataclass(frozen=True)
class PixelBudget:
    """Pixel range a VLM image may have; sides are multiples of ``factor`` (patch 14 x merge 2 for Qwen2-VL)."""

    min_pixels: int = 262_144
    max_pixels: int = 1_003_520
    factor: int = 28

    def __post_init__(self) -> None:
        if self.factor < 1 or self.min_pixels < 1 or self.max_pixels < self.min_pixels:
            raise ValueError(f"invalid PixelBudget {self}: need factor >= 1 and 1 <= min_pixels <= max_pixels")


def smart_resize(height: int, width: int, budget: PixelBudget) -> tuple[int, int]:
    """Qwen2-VL's resize rule: sides multiples of ``factor``, area within budget, aspect ratio kept.

    Using the model's own rule means the processor will not resize our images again.

    >>> smart_resize(1064, 1600, PixelBudget())
    (812, 1204)
    >>> smart_resize(100, 100, PixelBudget())
    (532, 532)
    >>> smart_resize(600, 800, PixelBudget())
    (588, 812)
    >>> smart_resize(10, 3000, PixelBudget())
    Traceback (most recent call last):
    ...
    ssrl.errors.RejectError: aspect ratio 300.0 exceeds 200 (image 10x3000)
    """
    if height < 1 or width < 1:
        raise RejectError(f"image has no pixels ({height}x{width})")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise RejectError(f"aspect ratio {ratio:.1f} exceeds {MAX_ASPECT_RATIO} (image {height}x{width})")
    f = budget.factor
    h_bar = max(f, round(height / f) * f)
    w_bar = max(f, round(width / f) * f)
    if h_bar * w_bar > budget.max_pixels:
        beta = math.sqrt(height * width / budget.max_pixels)
        h_bar = max(f, math.floor(height / beta / f) * f)
        w_bar = max(f, math.floor(width / beta / f) * f)
    elif h_bar * w_bar < budget.min_pixels:
        beta = math.sqrt(budget.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return h_bar, w_bar


# --------------------------------------------------------------------------------------------- decoding


class _Guard(warnings.catch_warnings):
    """Records every warning raised inside (none leaks, none is turned into an error by ``-W error``).

    Pillow warns about odd but decodable files (corrupt EXIF, palette transparency); callers only look for
    ``DecompressionBombWarning``. ``catch_warnings`` is process-global state: warnings that other threads
    emit meanwhile are swallowed too.
    """

    def __init__(self) -> None:
        super().__init__(record=True)

    def __enter__(self) -> list[warnings.WarningMessage]:
        caught = super().__enter__()
        warnings.simplefilter("always")
        assert caught is not None
        return caught


def _bomb_warned(caught: list[warnings.WarningMessage]) -> bool:
    return any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)


def _allowed_formats() -> list[str]:
    Image.init()
    return [f for f in SAFE_FORMATS if f in Image.OPEN]


def _open(data: bytes, max_decode_pixels: int) -> Image.Image:
    """Read only the header; reject empty data, non-images and declared sizes above the local limit.

    Pillow's own bomb warning (above its global limit) is ignored here because our local ``img.size``
    check decides; Pillow's hard ``DecompressionBombError`` (2x its global limit) is still a reject.
    """
    if not data:
        raise RejectError("empty file")
    try:
        img = Image.open(io.BytesIO(data), formats=_allowed_formats())
    except Image.DecompressionBombError as e:
        raise RejectError(f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise RejectError(f"not a decodable image: unrecognised format ({len(data)} bytes)") from None
    except Exception as e:  # a plugin choking on a malformed header: any error means "cannot use"
        raise _data_error(e) from None
    w, h = img.size
    if w < 1 or h < 1:
        raise RejectError(f"not a decodable image: declared size {w}x{h}")
    if w * h > max_decode_pixels:
        raise RejectError(
            f"decompression bomb: declared size {w}x{h} = {w * h} pixels exceeds the limit of {max_decode_pixels}"
        )
    return img


def _data_error(e: BaseException) -> RejectError:
    text = _short(e)
    if "truncated" in text.lower():
        return RejectError(f"truncated image data: {text}")
    return RejectError(f"not a decodable image: corrupt data ({text})")


def _short(e: BaseException) -> str:
    """One line naming the error, for reasons shown to users."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:200]


def _orientation(img: Image.Image) -> int:
    """EXIF orientation (1-8); corrupt EXIF counts as upright.

    Before ``load()`` only header metadata is consulted: Pillow's PNG ``getexif`` would otherwise decode the
    whole image to look for an eXIf chunk after the pixel data (and swallow decoding errors).
    """
    if img.format == "PNG" and img.tile and "exif" not in img.info:  # tile is emptied by load()
        return 1
    try:
        value = int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _oriented_hw(stored_wh: tuple[int, int], orientation: int) -> tuple[int, int]:
    """Displayed (height, width) of an image stored as (width, height)."""
    w, h = stored_wh
    return (w, h) if orientation in _SWAPS_AXES else (h, w)


def _is_jpeg(img: Image.Image) -> bool:
    return img.format in ("JPEG", "MPO")


def _draft_scale(img: Image.Image, need_hw: tuple[int, int]) -> int:
    """The libjpeg reduction (1, 2, 4 or 8) that still yields at least ``need_hw`` (oriented height, width).

    Scaling works in stored orientation, so for EXIF orientations 5-8 the needed sides swap. The rule is
    Pillow's ``draft``: the largest reduction whose result is still at least the requested size.
    """
    if not _is_jpeg(img):
        return 1
    need_h, need_w = need_hw
    stored_w, stored_h = (need_h, need_w) if _orientation(img) in _SWAPS_AXES else (need_w, need_h)
    if img.size[0] < 2 * stored_w or img.size[1] < 2 * stored_h:
        return 1
    scale = min(img.size[0] // stored_w, img.size[1] // stored_h)
    return next(s for s in (8, 4, 2, 1) if scale >= s)


def _draft(img: Image.Image, need_hw: tuple[int, int]) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below ``need_hw`` (see ``_draft_scale``)."""
    if _draft_scale(img, need_hw) > 1:
        need_h, need_w = need_hw
        img.draft("RGB", (need_h, need_w) if _orientation(img) in _SWAPS_AXES else (need_w, need_h))


#: EXIF orientation -> the numpy view ``ImageOps.exif_transpose`` would produce.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _complete(data: bytes, fmt: str) -> bool:
    """The file ends as a whole JPEG (EOI marker) or PNG (IEND chunk) does; anything else goes to Pillow,
    which rejects truncated files (libjpeg only warns about them, and OpenCV would return grey rows)."""
    if fmt == "JPEG":
        return data.rstrip(b"\0").endswith(b"\xff\xd9")
    return data[-12:] == b"\0\0\0\0IEND\xaeB`\x82"


def _plain_png(data: bytes, img: Image.Image) -> bool:
    """An 8-bit grey, RGB or RGBA PNG without tRNS transparency, as the IHDR chunk declares it.

    Other PNGs (palette, 1/2/4- and 16-bit, tRNS) keep Pillow's conversions; Pillow has already checked that
    the file starts with the signature and an IHDR chunk (bit depth at byte 24, colour type at byte 25).
    """
    return data[24] == 8 and data[25] in (0, 2, 6) and img.mode in ("L", "RGB", "RGBA") and (
        "transparency" not in img.info)


def _jpeg_cv2(data: bytes, img: Image.Image, need_hw: tuple[int, int] | None) -> np.ndarray | None:
    """Grey (H, W) or RGB (H, W, 3) of a baseline 8-bit JPEG via OpenCV, at the ``_draft_scale`` reduction."""
    scale = _draft_scale(img, need_hw) if need_hw else 1
    grey = img.mode == "L"
    flag = {1: cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR_RGB,
            2: cv2.IMREAD_REDUCED_GRAYSCALE_2 if grey else cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_GRAYSCALE_4 if grey else cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_GRAYSCALE_8 if grey else cv2.IMREAD_REDUCED_COLOR_8}[scale]
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.dtype != np.uint8:
        return None
    if arr.ndim == 3 and scale > 1:  # reduced colour reads come out in OpenCV's BGR order
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    return arr


def _png_spng(data: bytes) -> np.ndarray | None:
    """Grey (H, W), RGB or RGBA of a ``_plain_png`` via libspng: 1.2-1.7x faster than OpenCV's libpng on the
    paper's PNGs (bench/README.md, "Decoders"). No gamma, sBIT or tRNS transform, like Pillow."""
    try:
        arr = pyspng.load(data)
    except Exception:  # libspng refuses a damaged file: Pillow then rejects it with its own reason
        return None
    return arr if arr.dtype == np.uint8 else None


def _decode_fast(data: bytes, img: Image.Image, need_hw: tuple[int, int] | None) -> np.ndarray | None:
    """Pixels of a plain 8-bit JPEG (OpenCV) or PNG (``ssrl.sources.png`` when its rows need no sequential
    unfiltering, else libspng), identical to Pillow's, without a copy out of a Pillow image; None for every
    other case, which Pillow then decodes or rejects with its reason.

    Pillow has already checked the header (format, declared size) and read the EXIF orientation.
    """
    if img.format == "JPEG" and img.mode in ("RGB", "L") and _complete(data, "JPEG"):
        arr = _jpeg_cv2(data, img, need_hw)
    elif img.format == "PNG" and _plain_png(data, img) and _complete(data, "PNG"):
        arr = decode_unfiltered(data)
        if arr is None:
            arr = _png_spng(data)
    else:
        return None
    if arr is None:
        return None
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.shape[2] == 4 and arr[..., 3].min() == 255:  # opaque (many RGBA PNGs): drop alpha
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2RGB)
    elif arr.shape[2] == 4:
        arr = _over_white(arr)
    orientation = _orientation(img)
    return np.ascontiguousarray(_ORIENT[orientation](arr)) if orientation != 1 else np.ascontiguousarray(arr)


def _load(img: Image.Image) -> Image.Image:
    """Decode the pixels and apply EXIF orientation; truncation and corruption become rejects."""
    try:
        img.load()
    except Image.DecompressionBombError as e:
        raise RejectError(f"decompression bomb: {_short(e)}") from None
    except Exception as e:
        raise _data_error(e) from None
    if _orientation(img) == 1:
        return img  # exif_transpose would copy the whole image for nothing
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # unreadable orientation metadata: keep the pixels as stored, like most viewers do
        return img


def _grey_to_uint8(img: Image.Image) -> np.ndarray:
    """16/32-bit integer and float grey to 8 bits.

    16-bit is divided by 257 (65535 -> 255): the fixed mapping viewers use, so the image looks as the user
    sees it and brightness is comparable across images (stretching by each image's max would brighten dark
    frames and amplify their noise). 32-bit integer and float have no standard white level: integers that fit
    in 16 bits are treated as 16-bit, others (and floats above 1) are scaled by their actual maximum; floats in
    [0, 1] are taken as normalised.
    """
    a = np.asarray(img)
    if img.mode in _UINT16_MODES:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    a = np.clip(a, 0.0, None)
    top = float(a.max()) if a.size else 0.0
    if img.mode == "I" and top <= 65535:
        scale = 1.0 / 257.0
    elif img.mode == "F" and top <= 1.0:
        scale = 255.0
    else:
        scale = 255.0 / top if top > 0 else 0.0
    return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite RGBA over white (transparent areas are usually meant as background, not black)."""
    if rgba[..., 3].min() == 255:  # opaque (many RGBA PNGs): skip the arithmetic
        return rgba[..., :3]
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:4].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def image_to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to a contiguous uint8 (H, W, 3) RGB array; alpha is composited over white."""
    mode = img.mode
    try:
        if mode in _UINT16_MODES or mode in ("I", "F"):
            grey = _grey_to_uint8(img)
            return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
        if mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = img if mode == "RGBA" else img.convert("RGBA")
            if rgba.getextrema()[3] == (255, 255):  # opaque (many RGBA PNGs): Pillow drops alpha in C
                return np.asarray(rgba.convert("RGB"))
            return np.ascontiguousarray(_over_white(np.asarray(rgba)))
        if mode != "RGB":
            img = img.convert("RGB")
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    except RejectError:
        raise
    except Exception as e:
        raise RejectError(f"unsupported image mode {mode}: {_short(e)}") from None


def _decode(data: bytes, budget: PixelBudget | None, max_decode_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Shared path: header check, optional draft, decode, orient, convert; returns (rgb, oriented (H, W))."""
    with _Guard() as caught:
        img = _open(data, max_decode_pixels)
        with img:
            caught.clear()  # warnings about the declared size were handled by the local check
            stored_wh = img.size  # before draft shrinks it
            # JPEG EXIF sits in the header, before the pixels
            need = smart_resize(*_oriented_hw(stored_wh, _orientation(img)), budget) if budget is not None else None
            fast = _decode_fast(data, img, need)
            if fast is not None:
                return fast, _oriented_hw(stored_wh, _orientation(img))
            if need is not None:
                _draft(img, need)
            oriented = _load(img)
            if _bomb_warned(caught):
                raise RejectError("decompression bomb: a frame or tile is larger than the declared size")
            hw = _oriented_hw(stored_wh, _orientation(img))
            rgb = image_to_rgb(oriented)
    return rgb, hw


def probe_image(data: bytes, *, max_decode_pixels: int = 100_000_000) -> tuple[int, int]:
    """Oriented (height, width) from the header alone (no pixel decoding); rejects like ``_open``.

    A PNG whose eXIf chunk follows the pixel data is reported unrotated here (finding it needs a full
    decode); ``decode_fitted`` returns the authoritative size.
    """
    with _Guard(), _open(data, max_decode_pixels) as img:
        return _oriented_hw(img.size, _orientation(img))


def decode_image(data: bytes, *, target: PixelBudget | None = None,
                 max_decode_pixels: int = 100_000_000) -> np.ndarray:
    """Decode bytes to uint8 (H, W, 3) RGB, EXIF orientation applied.

    With ``target``, JPEGs much larger than the budget are decoded at a reduced DCT scale that is still at
    least ``smart_resize`` of the oriented size, so huge photos are never decoded in full. The result is then
    NOT yet at the budget size: use ``decode_fitted`` (or ``resize_rgb`` to ``smart_resize`` of the original
    size) for that; ``fit_budget`` on a drafted image may round to a size one factor-step different.
    """
    rgb, _ = _decode(data, target, max_decode_pixels)
    return rgb


def decode_fitted(data: bytes, budget: PixelBudget, *,
                  max_decode_pixels: int = 100_000_000) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode (drafting JPEGs) and resize to ``smart_resize`` of the original oriented size.

    Returns ``(image, (H, W))`` where (H, W) is the original oriented size: the size a depth map paired with
    this image must have (check it with ``read_depth(..., image_hw=(H, W))``, then ``resize_depth`` it to
    ``image.shape[:2]``). The output size does not depend on whether drafting happened.
    """
    rgb, hw = _decode(data, budget, max_decode_pixels)
    return resize_rgb(rgb, smart_resize(*hw, budget)), hw


# --------------------------------------------------------------------------------------------- resizing


def _check_size(size_hw: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(s) for s in size_hw)
    if h < 1 or w < 1:
        raise ValueError(f"target size must be positive, got {size_hw}")
    return h, w


def resize_rgb(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize uint8 (H, W, 3) to ``size_hw``; identity when equal.

    OpenCV, 15-40x faster than Pillow's Lanczos here (bench/README.md): area averaging when shrinking by more
    than 1.35x (antialiased; large JPEGs arrive here already drafted to under 2x), else ``INTER_LINEAR_EXACT``,
    whose fixed-point result is the same on every CPU (see ``AREA_BELOW``).
    """
    h, w = _check_size(size_hw)
    if image.shape[:2] == (h, w):
        return image
    scale = min(h / image.shape[0], w / image.shape[1])
    interpolation = cv2.INTER_AREA if scale < AREA_BELOW else cv2.INTER_LINEAR_EXACT
    return cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=interpolation)


def fit_budget(image: np.ndarray, budget: PixelBudget) -> np.ndarray:
    """Resize an RGB array to ``smart_resize`` of its own size."""
    return resize_rgb(image, smart_resize(image.shape[0], image.shape[1], budget))


def resize_depth(depth: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of float32 (H, W) depth; identity when equal.

    Nearest (sampling at pixel centres) never blends across depth edges or invalid NaN pixels, so every output
    value is a real measurement or NaN.
    """
    h, w = _check_size(size_hw)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth must be 2-D, got shape {depth.shape}")
    src_h, src_w = depth.shape
    if (src_h, src_w) == (h, w):
        return depth
    rows = np.minimum(((np.arange(h) + 0.5) * (src_h / h)).astype(np.intp), src_h - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * (src_w / w)).astype(np.intp), src_w - 1)
    return np.take(np.take(depth, rows, axis=0), cols, axis=1)  # two 1-D gathers: 3x faster than one 2-D


# --------------------------------------------------------------------------------------------- encoding


def encode_image(image: np.ndarray, fmt: str = "jpeg", *, quality: int = 95, png_compress_level: int = 1) -> bytes:
    """Encode uint8 (H, W, 3) or (H, W) deterministically: same array, same bytes (no metadata, no time).

    JPEG keeps full-resolution chroma (4:4:4), so thin coloured patch borders and marker edges stay sharp; at
    quality 95 it is 3-4x smaller than PNG and ~10x faster to encode. JPEG goes through OpenCV: the same
    libjpeg-turbo settings as Pillow give the same bytes in 2/3 of the time (no copy of the array into a Pillow
    image). PNG level 1 is ~5x faster than the default level and only slightly larger.
    """
    key = fmt.lower().lstrip(".")
    key = "jpeg" if key == "jpg" else key
    if key not in ENCODE_FORMATS:
        raise ValueError(f"unsupported encode format {fmt!r}; allowed: {', '.join(ENCODE_FORMATS)}")
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"encode_image needs uint8 (H, W, 3) or (H, W), got {arr.dtype} {arr.shape}")
    if key == "jpeg":
        bgr = arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
        ok, out = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 0,
                                             cv2.IMWRITE_JPEG_PROGRESSIVE, 0, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                             cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
        if not ok:
            raise ValueError(f"OpenCV could not encode a {arr.shape} array as JPEG")
        return out.tobytes()
    img = Image.fromarray(np.ascontiguousarray(arr))
    buf = io.BytesIO()
    if key == "png":
        img.save(buf, "PNG", compress_level=png_compress_level)
    else:
        img.save(buf, "WEBP", quality=quality, method=4)
    return buf.getvalue()
