"""Decoding odd and bad images, budget resizing, deterministic encoding."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin, features

from ssrl.errors import RejectError
from ssrl.sources.depth import read_depth
from ssrl.sources.discover import discover
from ssrl.sources.imageio import (
    PixelBudget,
    decode_fitted,
    decode_image,
    encode_image,
    fit_budget,
    image_to_rgb,
    probe_image,
    resize_depth,
    resize_rgb,
    smart_resize,
)
from tests.badcorpus import (
    BLUE,
    CMYK_AS_RGB,
    HW,
    RED,
    build_bad_corpus,
    encode,
    gradient,
    jpeg_with_orientation,
    png_chunk,
    png_with_declared_size,
)
from tests.conftest import REFERENCE


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("badcorpus")
    return folder, build_bad_corpus(folder)


def decode_file(folder: Path, name: str) -> np.ndarray:
    return decode_image((folder / name).read_bytes())


# --------------------------------------------------------------------------------------------- corpus


def test_every_corpus_entry_has_its_expected_outcome(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, expected = corpus
    sources = {s.id: s for s in discover([str(folder)])}
    assert sorted(sources) == sorted(expected)
    for name, outcome in expected.items():
        src = sources[name]
        kind, _, keyword = outcome.partition(":")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing may leak as a warning either
            try:
                image, hw = decode_fitted(Path(src.image).read_bytes(), PixelBudget())
            except RejectError as e:
                assert kind == "reject", f"{name}: unexpected reject {e}"
                assert keyword in str(e), f"{name}: {e!r} lacks {keyword!r}"
                continue
            assert kind != "reject", f"{name}: decoded but expected {outcome}"
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.shape[:2] == smart_resize(*hw, PixelBudget())
            if src.depth is None:
                assert kind == "ok", name
                continue
            mask = Path(src.mask).read_bytes() if src.mask else None
            try:
                read_depth(Path(src.depth).read_bytes(), src.depth, mask, image_hw=hw)
            except RejectError as e:
                assert kind == "depth_reject", f"{name}: unexpected depth reject {e}"
                assert keyword in str(e), f"{name}: {e!r} lacks {keyword!r}"
            else:
                assert kind == "ok", f"{name}: depth read but expected {outcome}"


@pytest.mark.parametrize(
    ("name", "keyword"),
    [
        ("empty.jpg", "empty file"),
        ("text.png", "not a decodable image"),
        ("truncated.jpg", "truncated image data"),
        ("corrupt.png", "corrupt"),
        ("bomb.png", "decompression bomb"),
        ("bomb_local.png", "decompression bomb"),
    ],
)
def test_bad_images_are_rejected_with_a_reason(corpus: tuple[Path, dict[str, str]], name: str, keyword: str) -> None:
    with pytest.raises(RejectError, match=keyword) as info:
        decode_file(corpus[0], name)
    assert "\n" not in str(info.value)


def test_truncated_after_header_is_truncated_not_silently_grey() -> None:
    data = encode(Image.fromarray(gradient((400, 600))), "JPEG", quality=95)
    with pytest.raises(RejectError, match="truncated"):
        decode_image(data[: len(data) * 3 // 4])


def test_bomb_checks_are_local_and_leak_no_warning() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RejectError, match="decompression bomb"):
            decode_image(png_with_declared_size(12000, 10000))  # Pillow would only warn
        with pytest.raises(RejectError, match="decompression bomb"):
            probe_image(png_with_declared_size(12000, 10000))
        small = encode(Image.fromarray(gradient()), "PNG")
        with pytest.raises(RejectError, match="decompression bomb"):
            decode_image(small, max_decode_pixels=HW[0] * HW[1] - 1)
        assert decode_image(small, max_decode_pixels=HW[0] * HW[1]).shape == (*HW, 3)
    assert limit == Image.MAX_IMAGE_PIXELS


def test_tiny_image_decodes(corpus: tuple[Path, dict[str, str]]) -> None:
    assert decode_file(corpus[0], "tiny.png").shape == (4, 4, 3)


def test_formats_decode_to_the_same_pixels(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, _ = corpus
    exact = gradient()
    for name in ("image.tif", "image.bmp", "png_named.jpg"):
        np.testing.assert_array_equal(decode_file(folder, name), exact, err_msg=name)
    lossy = ["good.jpg"] + (["image.webp"] if features.check("webp") else [])
    for name in lossy:
        diff = np.abs(decode_file(folder, name).astype(int) - exact).mean()
        assert diff < 4, name


def test_cmyk_jpeg_decodes_to_rgb(corpus: tuple[Path, dict[str, str]]) -> None:
    out = decode_file(corpus[0], "cmyk.jpg")
    np.testing.assert_allclose(out.reshape(-1, 3).mean(axis=0), CMYK_AS_RGB, atol=6)


def test_transparency_is_composited_over_white(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, _ = corpus
    pal = decode_file(folder, "palette_transparent.png")
    assert tuple(pal[0, 0]) == (255, 255, 255)  # transparent red -> white, not red
    assert tuple(pal[-1, -1]) == (0, 255, 0)
    assert tuple(decode_file(folder, "palette.png")[0, 0]) == (255, 0, 0)
    rgba = decode_file(folder, "rgba.png")
    assert tuple(rgba[0, 0]) == (255, 255, 255)
    np.testing.assert_array_equal(rgba[20:, 20:], gradient()[20:, 20:])
    la = decode_file(folder, "la.png")
    assert tuple(la[0, 0]) == (255, 255, 255)
    assert la[30, 40, 0] == la[30, 40, 1] == la[30, 40, 2] == gradient()[30, 40, 0]


def test_half_transparent_pixel_blends_with_white() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 128  # black at ~50 % opacity
    out = image_to_rgb(Image.fromarray(rgba))
    assert (np.abs(out.astype(int) - 127) <= 1).all()


def test_grey_modes(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, _ = corpus
    g16 = decode_file(folder, "gray16.png")
    np.testing.assert_array_equal(g16[..., 0], gradient()[..., 0])  # v * 257 / 257 == v
    assert (g16[..., 0] == g16[..., 2]).all()
    np.testing.assert_array_equal(decode_file(folder, "gray.png")[..., 1],
                                  np.asarray(Image.fromarray(gradient()).convert("L")))
    assert set(np.unique(decode_file(folder, "bilevel.png"))) <= {0, 255}
    f = decode_file(folder, "float.tif")
    assert np.abs(f[..., 0].astype(int) - gradient()[..., 1]).max() <= 1


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_16bit_grey_divides_by_257(dtype: str) -> None:
    arr = np.array([[0, 257, 65535, 32896]], dtype=dtype)
    img = Image.fromarray(arr)
    assert img.mode in ("I;16", "I;16B")
    np.testing.assert_array_equal(image_to_rgb(img)[0, :, 0], [0, 1, 255, 128])


def test_32bit_int_and_float_grey() -> None:
    small = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    np.testing.assert_array_equal(image_to_rgb(small)[0, :, 0], [0, 255])
    big = Image.fromarray(np.array([[0, 500_000, 1_000_000]], dtype=np.int32))
    np.testing.assert_array_equal(image_to_rgb(big)[0, :, 0], [0, 128, 255])
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32))
    np.testing.assert_array_equal(image_to_rgb(unit)[0, :, 0], [0, 128, 255, 0])


def test_exif_orientation_is_applied(corpus: tuple[Path, dict[str, str]]) -> None:
    out = decode_file(corpus[0], "exif_rotated.jpg")
    assert out.shape == (HW[1], HW[0], 3)  # orientation 6: stored 64 wide x 48 high shows 48 wide x 64 high
    # Orientation 6 rotates 90 degrees clockwise for display: the stored top-left corner goes top-right.
    np.testing.assert_allclose(out[2, -3], RED, atol=40)
    np.testing.assert_allclose(out[2, 2], BLUE, atol=40)
    np.testing.assert_allclose(out[-3, -3], BLUE, atol=40)
    assert probe_image((corpus[0] / "exif_rotated.jpg").read_bytes()) == (HW[1], HW[0])


# --------------------------------------------------------------------------------------------- draft


@pytest.fixture(scope="module")
def big_jpeg() -> np.ndarray:
    return gradient((3000, 4000))


def test_draft_decodes_big_jpeg_at_reduced_scale(big_jpeg: np.ndarray) -> None:
    data = encode(Image.fromarray(big_jpeg), "JPEG", quality=85)
    budget = PixelBudget(min_pixels=28 * 28, max_pixels=100_000)
    need = smart_resize(3000, 4000, budget)
    out = decode_image(data, target=budget)
    assert out.shape[0] >= need[0] and out.shape[1] >= need[1]
    assert out.shape[:2] == (375, 500)  # 1/8 scale: far below 3000x4000
    assert decode_image(data, target=PixelBudget()).shape[:2] == (1500, 2000)  # 1/2 still covers ~1 Mpx
    fitted, hw = decode_fitted(data, budget)
    assert hw == (3000, 4000) and fitted.shape[:2] == need
    assert np.abs(fitted.astype(int) - resize_rgb(big_jpeg, need)).mean() < 3


def test_draft_respects_exif_rotation(big_jpeg: np.ndarray) -> None:
    data = jpeg_with_orientation(big_jpeg, 6, quality=85)
    budget = PixelBudget(min_pixels=28 * 28, max_pixels=200_000)
    need = smart_resize(4000, 3000, budget)  # displayed: 4000 high x 3000 wide
    out = decode_image(data, target=budget)
    assert out.shape[0] >= need[0] and out.shape[1] >= need[1]
    assert out.shape[0] * out.shape[1] <= 4000 * 3000 // 16
    assert out.shape[0] > out.shape[1]
    fitted, hw = decode_fitted(data, budget)
    assert hw == (4000, 3000) and fitted.shape[:2] == need


def test_draft_not_used_without_target_or_for_png() -> None:
    rgb = gradient((600, 800))
    jpg = encode(Image.fromarray(rgb), "JPEG")
    assert decode_image(jpg).shape == (600, 800, 3)
    png = encode(Image.fromarray(rgb), "PNG")
    assert decode_image(png, target=PixelBudget(28 * 28, 10_000)).shape == (600, 800, 3)


# --------------------------------------------------------------------------------------------- resizing


def test_smart_resize_random_sizes_are_multiples_within_budget() -> None:
    rng = np.random.default_rng(0)
    budget = PixelBudget()
    for _ in range(3000):
        h = int(rng.integers(1, 20_000))
        w = int(np.clip(h * np.exp(rng.uniform(-np.log(200), np.log(200))), 1, 40_000))
        if max(h, w) / min(h, w) > 200:
            continue
        sh, sw = smart_resize(h, w, budget)
        assert sh % 28 == 0 and sw % 28 == 0, (h, w)
        assert budget.min_pixels <= sh * sw <= budget.max_pixels, (h, w, sh, sw)
        assert abs(np.log((sh / sw) / (h / w))) < np.log(2) or min(sh, sw) == 28, (h, w, sh, sw)


def test_smart_resize_rejects_extreme_aspect_and_empty() -> None:
    with pytest.raises(RejectError, match="aspect ratio"):
        smart_resize(10, 2010, PixelBudget())
    assert smart_resize(10, 2000, PixelBudget())  # exactly 200 is allowed
    with pytest.raises(RejectError, match="no pixels"):
        smart_resize(0, 10, PixelBudget())


def test_fit_budget_and_resize_identity() -> None:
    img = gradient((300, 500))
    out = fit_budget(img, PixelBudget())
    assert out.shape == (*smart_resize(300, 500, PixelBudget()), 3) and out.dtype == np.uint8
    assert resize_rgb(img, (300, 500)) is img
    with pytest.raises(ValueError, match="positive"):
        resize_rgb(img, (0, 5))


def test_resize_depth_nearest_keeps_nan_and_values() -> None:
    depth = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    depth[1, 2] = np.nan
    up = resize_depth(depth, (6, 8))
    assert up.dtype == np.float32 and up.shape == (6, 8)
    np.testing.assert_array_equal(up[::2, ::2], depth)
    assert np.isnan(up[2:4, 4:6]).all() and np.isnan(up).sum() == 4
    down = resize_depth(np.repeat(np.repeat(depth, 2, 0), 2, 1), (3, 4))
    np.testing.assert_array_equal(down, depth)
    assert set(np.unique(resize_depth(depth, (5, 7))[~np.isnan(resize_depth(depth, (5, 7)))])) <= set(
        depth[~np.isnan(depth)].tolist())
    assert resize_depth(depth, (3, 4)) is depth


def interlaced_png(rgb: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG (Pillow and OpenCV write none), every scanline unfiltered."""
    import struct
    import zlib

    h, w = rgb.shape[:2]
    rows = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            rows += b"".join(b"\0" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def _fast_cases() -> dict[str, bytes]:
    rgb = np.ascontiguousarray(np.concatenate([gradient((240, 320)), gradient((240, 320))[:, ::-1]], axis=0))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:50, :60, 3] = 90
    cases = {f"jpeg orientation {o}": jpeg_with_orientation(rgb, o, quality=80) for o in range(1, 9)}
    cases |= {
        "jpeg 4:4:4": encode(Image.fromarray(rgb), "JPEG", quality=95, subsampling=0),
        "jpeg grey": encode(Image.fromarray(rgb[..., 1]), "JPEG"),
        "jpeg drafted (large, turned, odd sides)": jpeg_with_orientation(
            np.ascontiguousarray(np.tile(rgb, (6, 6, 1))[:-3, :-5]), 6),
        "png rgb": encode(Image.fromarray(rgb), "PNG"),
        "png rgba (partly transparent)": encode(Image.fromarray(rgba), "PNG"),
        "png rgba (opaque)": encode(Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])), "PNG"),
        "png grey": encode(Image.fromarray(rgb[..., 0]), "PNG"),
        "png interlaced": interlaced_png(rgb[:-3, :-5]),
        "png rgba with EXIF orientation 6": encode(Image.fromarray(rgba), "PNG", exif=_exif(6)),
        "png rgb with EXIF orientation 3, level 9": encode(Image.fromarray(rgb), "PNG", exif=_exif(3),
                                                           compress_level=9),
    }
    return cases


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def assert_fast_path_equals_pillow(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast decoders (OpenCV for JPEG, libspng for PNG) took ``data`` and gave exactly Pillow's pixels."""
    import ssrl.sources.imageio as imageio

    budget = PixelBudget(28 * 28, 300_000)
    results: list[np.ndarray | None] = []
    real = imageio._decode_fast
    with monkeypatch.context() as m:
        m.setattr(imageio, "_decode_fast", lambda *a: results.append(real(*a)) or results[-1])
        fast = (decode_image(data), decode_image(data, target=budget), decode_fitted(data, budget)[0])
    assert len(results) == 3 and all(r is not None for r in results)  # the fast path decoded all three
    with monkeypatch.context() as m:
        m.setattr(imageio, "_decode_fast", lambda *a: None)  # Pillow alone
        slow = (decode_image(data), decode_image(data, target=budget), decode_fitted(data, budget)[0])
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == b.dtype == np.uint8 and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(_fast_cases()))
def test_fast_decoding_equals_pillows(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain 8-bit JPEG (OpenCV) and PNG (libspng): exactly Pillow's pixels (orientation, draft, alpha)."""
    assert_fast_path_equals_pillow(_fast_cases()[name], monkeypatch)


@pytest.mark.parametrize("name", ["RGB_img.png", "RGB-D_img3.png", "RGB-D_img1.jpg", "RGB-D_img2.jpg"])
def test_reference_images_fast_path_equals_pillow(reference: Path, name: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert_fast_path_equals_pillow((reference / name).read_bytes(), monkeypatch)


def _pillow_path_cases() -> dict[str, bytes]:
    rgb = gradient((60, 80))
    palette = Image.fromarray(rgb).quantize(16)
    rgb16 = (rgb.astype(np.uint16) * 257).astype(">u2")
    return {
        "palette": encode(palette, "PNG"),
        "rgb with tRNS": encode(Image.fromarray(rgb), "PNG", transparency=(0, 0, 0)),
        "grey 16-bit": encode(Image.fromarray(rgb16[..., 0].astype(np.uint16)), "PNG"),
        "rgb 16-bit": cv2_png(rgb16[..., ::-1].astype(np.uint16)),
        "grey 4-bit": encode(Image.fromarray(rgb[..., 0] // 17 * 17), "PNG", bits=4),  # Pillow writes L as 4-bit
        "grey + alpha": encode(Image.fromarray(rgb[..., :2].copy(), "LA"), "PNG"),
    }


def cv2_png(arr: np.ndarray) -> bytes:
    import cv2

    ok, out = cv2.imencode(".png", arr)
    assert ok
    return out.tobytes()


@pytest.mark.parametrize("name", list(_pillow_path_cases()))
def test_other_pngs_keep_pillows_conversions(name: str) -> None:
    """Palette, tRNS, 16-bit, 1/2/4-bit and grey + alpha PNGs are left to Pillow (its palette, transparency and
    bit-depth handling stays the reference); the IHDR says so before any pixel is decoded."""
    from ssrl.sources.imageio import _plain_png

    data = _pillow_path_cases()[name]
    with Image.open(io.BytesIO(data)) as img:
        assert not _plain_png(data, img)
        expected = image_to_rgb(img)
    np.testing.assert_array_equal(decode_image(data), expected)


@pytest.mark.parametrize("crc", ["stale", "recomputed"])
def test_png_with_damaged_pixel_data_is_rejected(crc: str) -> None:
    """Bytes flipped inside stored (level 0) deflate blocks still inflate; the chunk CRC, or with a recomputed
    CRC the zlib checksum, gives them away. libspng must check both (pyspng-seunglab does; the original pyspng
    ignores them and returns the damaged pixels) so the file reaches Pillow and is rejected."""
    import struct
    import zlib

    data = bytearray(encode(Image.fromarray(gradient()), "PNG", compress_level=0))
    idat = data.index(b"IDAT")
    size = struct.unpack(">I", data[idat - 4 : idat])[0]
    data[idat + 4 + 1001] ^= 0x55  # a pixel byte, not a scanline's filter type
    if crc == "recomputed":
        data[idat + 4 + size : idat + 8 + size] = struct.pack(">I", zlib.crc32(data[idat : idat + 4 + size]))
    with pytest.raises(RejectError, match="corrupt"):
        decode_image(bytes(data))


def test_truncated_files_never_take_the_fast_path() -> None:
    """libjpeg only warns about a cut-off JPEG (OpenCV would fill grey rows); such files go to Pillow and are
    rejected."""
    from ssrl.sources.imageio import _complete

    jpeg = encode(Image.fromarray(gradient()), "JPEG")
    png = encode(Image.fromarray(gradient()), "PNG")
    assert _complete(jpeg, "JPEG") and _complete(png, "PNG")
    for data, fmt in ((jpeg, "JPEG"), (png, "PNG")):
        assert not _complete(data[: len(data) * 2 // 3], fmt)
        with pytest.raises(RejectError, match="truncated"):
            decode_image(data[: len(data) * 2 // 3])


# --------------------------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_is_deterministic_and_decodable(fmt: str) -> None:
    if fmt == "webp" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    img = gradient((100, 150))
    a, b = encode_image(img, fmt), encode_image(img.copy(), fmt)
    assert a == b
    back = decode_image(a)
    assert back.shape == img.shape
    if fmt == "png":
        np.testing.assert_array_equal(back, img)
    with Image.open(io.BytesIO(a)) as im:
        assert "exif" not in im.info


def test_jpeg_is_baseline_444_and_equals_pillows_encoding() -> None:
    """OpenCV encodes exactly what Pillow would with the same settings: full-resolution chroma, quality 95."""
    img = gradient((120, 170))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95, subsampling=0, optimize=False, progressive=False)
    assert encode_image(img) == buf.getvalue()
    with Image.open(io.BytesIO(encode_image(img, quality=80))) as im:
        assert im.format == "JPEG" and JpegImagePlugin.get_sampling(im) == 0  # 4:4:4


def test_encode_rejects_unknown_format_and_bad_arrays() -> None:
    with pytest.raises(ValueError, match="png, jpeg, webp"):
        encode_image(gradient(), "gif")
    with pytest.raises(ValueError, match="uint8"):
        encode_image(np.zeros((4, 4, 3), np.float32))
    assert encode_image(gradient(), "JPG")[:2] == b"\xff\xd8"


# --------------------------------------------------------------------------------------------- reference


def test_reference_images_decode() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} not present")
    for path in sorted(REFERENCE.glob("*.*")):
        if path.suffix.lower() not in (".jpg", ".png"):
            continue
        data = path.read_bytes()
        img = decode_image(data)
        with Image.open(path) as im:
            assert img.shape == (im.size[1], im.size[0], 3), path.name
        fitted, hw = decode_fitted(data, PixelBudget())
        assert hw == img.shape[:2] and fitted.shape[:2] == smart_resize(*hw, PixelBudget())
    rgba = decode_image((REFERENCE / "RGB_img.png").read_bytes())  # RGBA: composited, not dropped
    assert rgba.dtype == np.uint8


@pytest.mark.parametrize("scale", [0.5, 0.7, 0.75, 0.8, 0.9])
def test_budget_resize_stays_close_to_lanczos(scale: float) -> None:
    """Mild shrinks use bilinear instead of area averaging (4x cheaper): on noisy synthetic renders, the worst
    case for it, it stays within 1.5 dB PSNR of area averaging's fidelity to a Lanczos resize, above 40 dB."""
    import cv2

    from ssrl.sources.synth import SynthConfig, render_scene

    image = render_scene(np.random.default_rng(0), SynthConfig(width=600, height=450)).image
    h, w = round(450 * scale), round(600 * scale)
    lanczos = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS)).astype(np.float64)

    def psnr(x: np.ndarray) -> float:
        return float(10 * np.log10(255**2 / np.mean((x.astype(np.float64) - lanczos) ** 2)))

    ours, area = psnr(resize_rgb(image, (h, w))), psnr(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA))
    assert ours > 40 and ours >= area - 1.5, (ours, area)
