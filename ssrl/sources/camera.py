"""Pinhole intrinsics from a source's ``camera.json``, so the position task back-projects with the real focal length.

The file is a JSON object with ``fx`` and ``cx`` in pixels (``fy``, ``cy`` and anything else are ignored);
``width`` and ``height`` name the resolution the numbers refer to, and default to the image's own size. This is
what ``ssrl synth`` writes; for other datasets write one per image (``<stem>.camera.json``) or one per folder
(``camera.json``), or name another file with ``camera_files`` in the generator's config.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ssrl.errors import RejectError

__all__ = ["Intrinsics", "read_intrinsics"]


@dataclass(frozen=True)
class Intrinsics:
    """Focal length and principal point column, in pixels of the image they were scaled to."""

    fx: float
    cx: float


def read_intrinsics(data: bytes, image_hw: tuple[int, int], fitted_hw: tuple[int, int]) -> Intrinsics:
    """Parse ``camera.json`` for an image of original size ``image_hw`` and scale it to ``fitted_hw``.

    Pixel centres sit at x + 0.5 in both sizes, so both fx and cx scale by the width ratio.

    >>> read_intrinsics(b'{"fx": 500, "cx": 320, "width": 640, "height": 480}', (480, 640), (240, 320))
    Intrinsics(fx=250.0, cx=160.0)
    >>> read_intrinsics(b'{"fx": 0, "cx": 1}', (10, 10), (10, 10))
    Traceback (most recent call last):
    ...
    ssrl.errors.RejectError: camera: fx must be a positive number, got 0
    """
    try:
        cam = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise RejectError(f"camera: not valid JSON ({e})") from None
    if not isinstance(cam, dict):
        raise RejectError(f"camera: expected a JSON object, got {type(cam).__name__}")
    h, w = image_hw
    values = {}
    for key, default, positive in (("fx", None, True), ("cx", None, False), ("width", w, True), ("height", h, True)):
        v = cam.get(key, default)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
        if not ok:
            raise RejectError(f"camera: {key} must be a {'positive ' if positive else ''}number, got {v!r}")
        values[key] = float(v)
    if abs(values["width"] / values["height"] - w / h) > 0.01 * w / h:
        raise RejectError(f"camera: intrinsics for {values['width']:g}x{values['height']:g} do not fit an image "
                          f"{w}x{h} (width x height)")
    scale = fitted_hw[1] / values["width"]
    return Intrinsics(fx=values["fx"] * scale, cx=values["cx"] * scale)
