"""Depth readers (MegaDepth HDF5, DIODE .npy + mask, 16-bit PNG) and their validation."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest
from PIL import Image

from ssrl.errors import RejectError
from ssrl.sources.depth import DepthFormat, read_depth, validate_depth
from ssrl.sources.imageio import probe_image
from tests.badcorpus import HW, encode, good_depth, h5_bytes, npy_bytes
from tests.conftest import REFERENCE


def expect_nan_where_invalid(out: np.ndarray, source: np.ndarray) -> None:
    assert out.dtype == np.float32 and out.shape == source.shape
    valid = np.isfinite(source) & (source > 0)
    np.testing.assert_array_equal(np.isnan(out), ~valid)
    np.testing.assert_allclose(out[valid], source[valid], rtol=1e-6)


# --------------------------------------------------------------------------------------------- validate


def test_validate_marks_invalid_as_nan() -> None:
    d = good_depth()
    d[5, 5], d[6, 6], d[7, 7], d[8, 8] = np.nan, np.inf, -np.inf, -3.0
    expect_nan_where_invalid(validate_depth(d), d)


def test_validate_squeezes_trailing_channel_and_casts() -> None:
    d = good_depth().astype(np.float64)[..., None]
    out = validate_depth(d, image_hw=HW)
    assert out.shape == HW and out.dtype == np.float32
    assert validate_depth(np.ones((3, 3), np.uint16)).dtype == np.float32


@pytest.mark.parametrize("shape", [(4, 4, 3), (4,), (2, 4, 4)])
def test_validate_rejects_non_2d(shape: tuple[int, ...]) -> None:
    with pytest.raises(RejectError, match="2-D"):
        validate_depth(np.ones(shape))


def test_validate_rejects_shape_mismatch_with_exact_message() -> None:
    with pytest.raises(RejectError, match=r"^depth 100x80 does not match image 120x90"):
        validate_depth(np.ones((100, 80)), image_hw=(120, 90))


@pytest.mark.parametrize("fill", [0.0, np.nan, np.inf, -1.0])
def test_validate_rejects_no_valid_pixels(fill: float) -> None:
    with pytest.raises(RejectError, match="no valid pixels"):
        validate_depth(np.full((8, 8), fill))


def test_validate_min_valid_fraction_is_a_parameter() -> None:
    d = np.zeros((10, 10))
    d[0, :5] = 1.0  # 5 % valid
    with pytest.raises(RejectError, match="too few valid pixels"):
        validate_depth(d, min_valid_fraction=0.1)
    assert np.count_nonzero(~np.isnan(validate_depth(d, min_valid_fraction=0.05))) == 5


def test_validate_rejects_non_numeric() -> None:
    with pytest.raises(RejectError, match="numeric"):
        validate_depth(np.array([["a", "b"]]))


# --------------------------------------------------------------------------------------------- HDF5


def test_h5_reads_megadepth_style() -> None:
    d = good_depth()
    expect_nan_where_invalid(read_depth(h5_bytes(d), "x.h5", image_hw=HW), d)
    expect_nan_where_invalid(read_depth(h5_bytes(d), "X.HDF5"), d)


def test_h5_key_is_configurable_and_nested_keys_work() -> None:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("data/z", data=good_depth())
    out = read_depth(buf.getvalue(), "x.h5", fmt=DepthFormat(h5_key="data/z"))
    assert out.shape == HW


def test_h5_wrong_key_lists_the_datasets_present() -> None:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("z", data=good_depth())
        f.create_dataset("grp/d2", data=good_depth())
        f.create_group("depth_group")
    with pytest.raises(RejectError, match=r"no dataset 'depth' \(datasets present: grp/d2, z\)"):
        read_depth(buf.getvalue(), "x.h5")
    with pytest.raises(RejectError, match="no dataset 'grp'"):  # a group is not a dataset
        read_depth(buf.getvalue(), "x.h5", fmt=DepthFormat(h5_key="grp"))


@pytest.mark.parametrize("data", [b"plain text, not HDF5" * 5, b"\x89HDF\r\n\x1a\n" + b"\x00" * 40])
def test_h5_not_hdf5_is_rejected(data: bytes) -> None:
    with pytest.raises(RejectError, match="not an HDF5 file"):
        read_depth(data, "x.h5")


def test_h5_declared_size_limit() -> None:
    with pytest.raises(RejectError, match="above the limit"):
        read_depth(h5_bytes(good_depth()), "x.h5", fmt=DepthFormat(max_pixels=100))


# --------------------------------------------------------------------------------------------- DIODE


def test_npy_with_diode_mask() -> None:
    d = good_depth()
    mask = np.ones(HW, np.float32)
    mask[10:20, 10:20] = 0
    out = read_depth(npy_bytes(d[..., None]), "x_depth.npy", npy_bytes(mask), image_hw=HW)
    expected = d.copy()
    expected[10:20, 10:20] = 0
    expect_nan_where_invalid(out, expected)


def test_npy_wider_mask_is_cropped_to_depth_width() -> None:
    d = good_depth()
    wide = np.ones((HW[0], HW[1] + 5), np.uint8)
    wide[:, 3] = 0
    wide[:, HW[1]:] = 0  # columns past the depth's width are dropped, not shifted in
    out = read_depth(npy_bytes(d), "x.npy", npy_bytes(wide))
    assert np.isnan(out[:, 3]).all() and np.isfinite(out[1:, 4:]).all()


@pytest.mark.parametrize("mask_shape", [(HW[0], HW[1] - 1), (HW[0] + 1, HW[1]), (HW[0], HW[1], 2)])
def test_npy_mismatched_mask_is_rejected(mask_shape: tuple[int, ...]) -> None:
    with pytest.raises(RejectError, match="mask"):
        read_depth(npy_bytes(good_depth()), "x.npy", npy_bytes(np.ones(mask_shape)))


def test_npy_object_array_is_never_unpickled() -> None:
    evil = np.array([{"a": 1}, None], dtype=object)
    with pytest.raises(RejectError, match="pickle"):
        read_depth(npy_bytes(evil, allow_pickle=True), "x.npy")
    with pytest.raises(RejectError, match="pickle"):
        read_depth(npy_bytes(good_depth()), "x.npy", npy_bytes(evil, allow_pickle=True))


def npy_file(arr: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version)
    return buf.getvalue()


@pytest.mark.parametrize(
    "arr",
    [
        good_depth(),
        np.asfortranarray(good_depth().astype(np.float64)),
        good_depth().astype(">f4"),
        (good_depth() * 1000).astype(np.uint16)[..., None],
    ],
    ids=["float32", "float64 Fortran order", "big-endian float32", "uint16 (H, W, 1)"],
)
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npy_read_in_place_equals_np_load(arr: np.ndarray, version: tuple[int, int]) -> None:
    """The .npy reader parses the header and views the data in place; the result is np.load's, validated."""
    data = npy_file(arr, version)
    mask = np.ones(HW, np.uint8)
    mask[3:9, 4:7] = 0
    out = read_depth(data, "x.npy", npy_file(mask, version), image_hw=HW)
    expected = np.load(io.BytesIO(data)).astype(np.float32)
    expected = expected[..., 0] if expected.ndim == 3 else expected
    expected[(mask == 0) | (expected <= 0)] = np.nan
    assert out.flags.writeable and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def test_npy_data_shorter_than_its_header_declares_is_corrupt() -> None:
    data = npy_file(good_depth())
    with pytest.raises(RejectError, match=r"corrupt: \d+ bytes of data, the header declares"):
        read_depth(data[:-4], "x.npy")


@pytest.mark.parametrize(
    ("data", "keyword"),
    [
        (b"", "empty"),
        (b"\x80\x04K\x01.", "not a .npy"),  # a raw pickle
        (npy_bytes(good_depth())[:100], "corrupt"),
        (npy_bytes(np.array(["a", "b"])), "numeric"),
        (npy_bytes(np.ones((4, 4), np.complex64)), "numeric"),
    ],
)
def test_npy_bad_files(data: bytes, keyword: str) -> None:
    with pytest.raises(RejectError, match=keyword):
        read_depth(data, "x.npy")


# --------------------------------------------------------------------------------------------- PNG


def test_png16_millimetres_to_metres() -> None:
    mm = np.array([[0, 1000, 65535], [1500, 2, 3]], np.uint16)
    out = read_depth(encode(Image.fromarray(mm), "PNG"), "x_depth.png")
    np.testing.assert_allclose(out, [[np.nan, 1.0, 65.535], [1.5, 0.002, 0.003]], rtol=1e-6)
    scaled = read_depth(encode(Image.fromarray(mm), "PNG"), "x_depth.png", fmt=DepthFormat(png_scale=1.0))
    assert scaled[0, 2] == 65535


@pytest.mark.parametrize("mode", ["L", "RGB", "P"])
def test_png_8bit_is_rejected(mode: str) -> None:
    img = Image.new(mode, (8, 8), 3 if mode != "RGB" else (3, 3, 3))
    with pytest.raises(RejectError, match="depth PNG must be 16-bit"):
        read_depth(encode(img, "PNG"), "x_depth.png")


def test_png_not_png_is_rejected() -> None:
    with pytest.raises(RejectError, match="not a PNG"):
        read_depth(b"GIF89a whatever", "x.png")
    jpeg = encode(Image.new("L", (8, 8)), "JPEG")
    with pytest.raises(RejectError, match="not a PNG"):
        read_depth(jpeg, "x.png")


def test_unknown_extension_and_empty() -> None:
    with pytest.raises(RejectError, match=r"unsupported depth format '\.exr'"):
        read_depth(b"abc", "x.exr")
    with pytest.raises(RejectError, match="empty depth file"):
        read_depth(b"", "x.h5")


# --------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize(
    ("image", "depth", "mask"),
    [
        ("RGB-D_img1.jpg", "RGB-D_depth1.h5", None),
        ("RGB-D_img2.jpg", "RGB-D_depth2.h5", None),
        ("RGB-D_img3.png", "RGB-D_depth3.npy", "RGB-D_depth_mask3.npy"),
    ],
)
def test_reference_depths(image: str, depth: str, mask: str | None) -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} not present")
    hw = probe_image((REFERENCE / image).read_bytes())
    mask_data = (REFERENCE / mask).read_bytes() if mask else None
    out = read_depth((REFERENCE / depth).read_bytes(), depth, mask_data, image_hw=hw)
    assert out.shape == hw and out.dtype == np.float32
    valid = ~np.isnan(out)
    assert 0.01 <= valid.mean() < 1.0 and (out[valid] > 0).all()
    if mask:
        raw_mask = np.load(REFERENCE / mask)
        assert not valid[raw_mask[:, : hw[1]] == 0].any()
