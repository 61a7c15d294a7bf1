"""Fast pixels for PNGs whose scanlines need no sequential unfiltering.

A PNG decode is an inflate plus per-row unfiltering. libspng inflates with zlib, most of its time on a
photo; libdeflate inflates the same stream ~2x faster into a buffer of the size the header declares. The
None, Sub and Up filters undo as whole-array numpy operations (Sub is a running sum along the row, Up one
down a run of rows), so such PNGs (the paper's own RGB sample has only None rows) decode here ~2x faster
than libspng. Average and Paeth depend on the pixel just decoded to their left, which only a compiled loop
does quickly: those files, and anything this reader does not fully check, are left to libspng
(``decode_unfiltered`` returns None). zlib-ng checks the chunk CRCs and peeks at the first rows' filters.

Why not ISA-L, which inflates as fast: on AVX-512 machines it leaves the CPU in a state that made the next
OpenCV resize 3x slower (1.9 -> 5.9 ms), costing more per sample than it saved (bench/README.md); libdeflate
and zlib-ng do not.
"""

from __future__ import annotations

import struct

import deflate
import numpy as np
from zlib_ng import zlib_ng

__all__ = ["decode_unfiltered"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 6: 4}  # grey, RGB, RGBA
_PEEK_ROWS = 16


def _chunks(data: bytes) -> tuple[bytes, list[memoryview]] | None:
    """(IHDR payload, IDAT payloads) with every chunk's CRC checked, up to IEND; None for any damage."""
    view = memoryview(data)
    pos, ihdr, idat, idat_done = len(_SIGNATURE), b"", [], False
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data) or zlib_ng.crc32(view[pos + 4 : end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        payload = view[pos + 8 : end - 4]
        if kind == b"IHDR":
            ihdr = bytes(payload)
        elif kind == b"IDAT":
            if idat_done:  # IDAT chunks must be consecutive
                return None
            idat.append(payload)
        elif idat:
            idat_done = True
        if kind == b"IEND":
            return (ihdr, idat) if len(ihdr) == 13 and idat else None
        pos = end
    return None


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray | None:
    """Undo None/Sub/Up on (H, 1 + W*C) scanlines; None when a row uses Average or Paeth (or a bad type)."""
    kinds = rows[:, 0]
    if kinds.max(initial=0) > 2:
        return None
    pix = rows[:, 1:]
    if not kinds.any():
        return pix
    out = pix.copy()
    sub = np.flatnonzero(kinds == 1)
    if sub.size:  # left neighbour, same channel: a running sum along the row, mod 256
        h, n = len(sub), pix.shape[1]
        out[sub] = np.cumsum(pix[sub].reshape(h, n // bpp, bpp), axis=1, dtype=np.uint8).reshape(h, n)
    up = kinds == 2
    if up.any():  # the row above: a running sum down each run of Up rows, starting from the row before the run
        edges = np.flatnonzero(np.diff(np.concatenate(([False], up, [False])).astype(np.int8)))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            run = np.cumsum(pix[start:stop], axis=0, dtype=np.uint8)
            if start:
                run += out[start - 1]
            out[start:stop] = run
    return out


def decode_unfiltered(data: bytes) -> np.ndarray | None:
    """(H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA of a non-interlaced 8-bit PNG whose rows use only the None,
    Sub and Up filters, exactly as libspng and Pillow decode it (no gamma, sBIT or tRNS transform); None for
    every other PNG and for any damage (chunk CRC, zlib checksum, size), which libspng then decodes or refuses.

    The caller has checked the declared size against its decompression-bomb limit; the inflate writes at most
    the size the header declares, however far the stream would run. The result may be a read-only view.
    """
    if not data.startswith(_SIGNATURE):
        return None
    parsed = _chunks(data)
    if parsed is None:
        return None
    ihdr, idat = parsed
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", ihdr)
    channels = _CHANNELS.get(colour)
    if depth != 8 or channels is None or (compression, filtering, interlace) != (0, 0, 0) or not width * height:
        return None
    stride = 1 + width * channels
    stream = b"".join(idat)
    try:
        head = zlib_ng.decompressobj().decompress(stream, min(height, _PEEK_ROWS) * stride)
        if max(head[::stride], default=0) > 2:  # Average/Paeth already at the top: libspng, without inflating
            return None
        # into a buffer of exactly the declared size: a stream that runs on fails, however far it would run;
        # libdeflate checks the zlib checksum
        raw = deflate.zlib_decompress(stream, height * stride)
    except (zlib_ng.error, deflate.DeflateError):
        return None
    if len(raw) != height * stride:  # the stream ended early
        return None
    pixels = _unfilter(np.frombuffer(raw, np.uint8).reshape(height, stride), channels)
    if pixels is None:
        return None
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, channels)
