"""Synthetic RGB-D scenes: demos need no downloads, and depth/position tasks can be checked against exact geometry.

A vectorised numpy ray caster (loops run over objects, never pixels). Camera convention, relied on elsewhere:
pinhole at the origin, +X right, +Y down, +Z forward; pixel (y, x) has its centre at (x + 0.5, y + 0.5);
fx = fy = f, cx = W / 2, cy = H / 2; the ray through a pixel centre is ((x + 0.5 - cx) / f, (y + 0.5 - cy) / f, 1).
Because that ray has unit Z, the ray parameter of a hit *is* its z-depth. The ground is the plane Y = +camera
height, the camera is axis-aligned, so ``points`` are camera-frame coordinates directly. The scene ends at a
fronto-parallel wall or skyline at ``far_z`` and always holds near, middle and far objects with flat, unoccluded
faces, so depth ordering finds flat windows in every band.

>>> scene = render_scene(np.random.default_rng(0), SynthConfig(width=64, height=48))
>>> scene.image.shape, scene.depth.dtype, scene.points.shape, scene.cx
((48, 64, 3), dtype('float32'), (48, 64, 3), 32.0)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from ssrl.errors import ConfigError

__all__ = ["SynthConfig", "SynthScene", "render_scene", "synthesize", "write_scene"]

_EPS = 1e-6
_LATTICE = 64  # side of the periodic value-noise lattice shared by all surfaces of a scene
_GROUND_COLOURS = np.array([[0.32, 0.45, 0.22], [0.62, 0.55, 0.40], [0.36, 0.36, 0.38], [0.55, 0.53, 0.50],
                            [0.45, 0.33, 0.24]])
_PATTERNS = ("noise", "stripes", "checker", "windows")
_CUBE = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)


@dataclass
class SynthConfig:
    """Scene-generator knobs; every range is sampled uniformly per scene."""

    width: int = 640
    height: int = 480
    min_objects: int = 4
    max_objects: int = 9
    fov_deg: tuple[float, float] = (55.0, 75.0)
    """Horizontal field of view; f = (W / 2) / tan(fov / 2)."""
    sky_probability: float = 0.5
    """Chance the scene is open: a skyline at ``far_z`` with sky above it; otherwise a full wall closes it."""
    camera_height: tuple[float, float] = (1.2, 2.0)
    far_z: tuple[float, float] = (24.0, 40.0)
    """Depth of the back wall or skyline, where the ground ends: the scene's maximum depth."""
    shadows: bool = True
    noise_sigma: tuple[float, float] = (1.0, 3.0)
    """Sensor noise (grey levels) so no patch is exactly flat or mirror-symmetric."""

    def __post_init__(self) -> None:
        problems = []
        if self.width < 8 or self.height < 8:
            problems.append(f"synth image must be at least 8x8, got {self.width}x{self.height}")
        if not 0 <= self.min_objects <= self.max_objects:
            problems.append(f"synth needs 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        for name, lo_min, hi_max in (("fov_deg", 1.0, 170.0), ("camera_height", 0.1, 100.0),
                                     ("far_z", 10.0, 1e4), ("noise_sigma", 0.0, 100.0)):
            lo, hi = getattr(self, name)
            if not lo_min <= lo <= hi <= hi_max:
                problems.append(f"synth.{name} must satisfy {lo_min} <= lo <= hi <= {hi_max}, got {(lo, hi)}")
        if not 0.0 <= self.sky_probability <= 1.0:
            problems.append(f"synth.sky_probability must be in [0, 1], got {self.sky_probability}")
        if problems:
            raise ConfigError(problems)


@dataclass
class SynthScene:
    """A rendered scene with exact geometry; ``depth`` and ``points`` are NaN where the ray hits sky."""

    image: np.ndarray
    depth: np.ndarray
    points: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    objects: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- textures
def _lattice(rng: np.random.Generator) -> np.ndarray:
    """Random float32 lattice with its first row and column repeated, so bilinear lookups never wrap."""
    core = rng.random((_LATTICE, _LATTICE), dtype=np.float32)
    return np.pad(core, ((0, 1), (0, 1)), mode="wrap")


def _value_noise(lattice: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Smooth periodic noise in [0, 1]: aperiodic over any visible patch, unlike a sinusoid, so no symmetry."""
    n = lattice.shape[0] - 1
    i0, j0 = np.floor(s), np.floor(t)
    fs, ft = s - i0, t - j0
    fs, ft = fs * fs * (3 - 2 * fs), ft * ft * (3 - 2 * ft)
    idx = (j0.astype(np.int32) & (n - 1)) * (n + 1) + (i0.astype(np.int32) & (n - 1))
    flat = lattice.ravel()
    a, b = flat.take(idx), flat.take(idx + 1)
    c, d = flat.take(idx + n + 1), flat.take(idx + n + 2)
    return a + (b - a) * fs + (c - a) * ft + (a - b - c + d) * fs * ft


def _fbm(lattice: np.ndarray, s: np.ndarray, t: np.ndarray, octaves: int = 3) -> np.ndarray:
    """Multi-scale noise in [0, 1] so texture shows at both near and far distances."""
    s, t = s.astype(np.float32), t.astype(np.float32)
    total, norm = np.zeros_like(s), 0.0
    for k in range(octaves):
        amp, scale = 0.5**k, np.float32(2.0**k)
        total += np.float32(amp) * _value_noise(lattice, s * scale + np.float32(17.1 * k),
                                                t * scale + np.float32(31.7 * k))
        norm += amp
    return total / np.float32(norm)


@dataclass
class _Material:
    colour: np.ndarray  # (3,) albedo in [0, 1]
    alt: np.ndarray  # (3,) second colour for patterns
    pattern: str
    scale: float  # metres per pattern cell
    offset: np.ndarray  # (2,) noise offset so objects sharing the lattice look different
    angle: float

    def albedo(self, lattice: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Albedo (N, 3) from surface coordinates in metres."""
        grain = _fbm(lattice, s * 1.7 + self.offset[0], t * 1.7 + self.offset[1])
        u, v = s / self.scale, t / self.scale
        if self.pattern == "stripes":
            mix = np.floor(u * np.cos(self.angle) + v * np.sin(self.angle)) % 2
        elif self.pattern == "checker":
            mix = (np.floor(u) + np.floor(v)) % 2
        elif self.pattern == "windows":
            fu, fv = u - np.floor(u), v - np.floor(v)
            mix = (fu > 0.25) & (fu < 0.7) & (fv > 0.3) & (fv < 0.75)
        else:
            mix = np.zeros_like(s)
        colour, alt = self.colour.astype(np.float32), self.alt.astype(np.float32)
        base = colour + (alt - colour) * mix.astype(np.float32)[:, None]
        return base * (np.float32(0.65) + np.float32(0.6) * grain)[:, None]


def _material(rng: np.random.Generator, pattern: str | None = None, colour: np.ndarray | None = None) -> _Material:
    colour = rng.uniform(0.12, 0.9, 3) if colour is None else colour
    alt = np.clip(colour * rng.uniform(0.45, 0.8) + rng.uniform(-0.08, 0.08, 3), 0.02, 1.0)
    return _Material(colour=colour, alt=alt, pattern=pattern or _PATTERNS[rng.integers(3)],
                     scale=float(rng.uniform(0.4, 1.5)), offset=rng.uniform(0, _LATTICE, 2),
                     angle=float(rng.uniform(0, np.pi)))


def _rounded(values: Any) -> list[float]:
    return [round(float(v), 5) for v in np.atleast_1d(values)]


# --------------------------------------------------------------------------------------------- geometry
@dataclass
class _Ground:
    """The plane Y = height below the camera, ending at z = far_z (the horizon never reaches infinite depth)."""

    height: float
    far_z: float
    material: _Material

    def region(self, f: float, cx: float, cy: float, w: int, h: int) -> tuple[int, int, int, int]:
        return int(np.floor(cy)), h, 0, w

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        dy = d[..., 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.height - o[..., 1]) / dy
        z = o[..., 2] + t * d[..., 2]
        return np.where((dy > 0) & (t > _EPS) & (z <= self.far_z), t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.array([0.0, -1.0, 0.0]), p.shape)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return p[:, 0], p[:, 2]

    def describe(self) -> dict[str, Any]:
        return {"type": "ground", "y": round(self.height, 5), "max_z": round(self.far_z, 5),
                "color": _rounded(self.material.colour), "pattern": self.material.pattern}


@dataclass
class _Wall:
    """A fronto-parallel back plane at the scene's far depth: one exactly flat depth over much of the image.

    With ``skyline`` (heights above the ground, metres, one per ``cell`` metres of X) it is a silhouette of
    hills or buildings with sky above, so open scenes still end in a flat far band instead of a bare horizon.
    """

    z: float
    ground_y: float
    material: _Material
    skyline: np.ndarray | None = None
    cell: float = 1.0
    blocky: bool = False

    def region(self, f: float, cx: float, cy: float, w: int, h: int) -> tuple[int, int, int, int]:
        if self.skyline is None:
            return 0, h, 0, w
        top = cy + f * (self.ground_y - self.skyline.max()) / self.z
        return max(int(np.floor(top)) - 1, 0), h, 0, w

    def _height(self, x: np.ndarray) -> np.ndarray:
        assert self.skyline is not None
        n, s = len(self.skyline), x / self.cell
        i0 = np.floor(s)
        frac = np.zeros_like(s) if self.blocky else s - i0
        i0 = i0.astype(np.int64) % n
        a, b = self.skyline[i0], self.skyline[(i0 + 1) % n]
        return a + (b - a) * frac * frac * (3 - 2 * frac)

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        dz = d[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.z - o[..., 2]) / dz
        ok = (dz > 0) & (t > _EPS)
        if self.skyline is not None:
            x, y = o[..., 0] + t * d[..., 0], o[..., 1] + t * d[..., 1]
            ok &= y >= self.ground_y - self._height(x)
        return np.where(ok, t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.array([0.0, 0.0, -1.0], dtype=p.dtype), p.shape)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return p[:, 0], -p[:, 1]

    def describe(self) -> dict[str, Any]:
        out = {"type": "wall" if self.skyline is None else "skyline", "z": round(self.z, 5),
               "color": _rounded(self.material.colour), "pattern": self.material.pattern}
        if self.skyline is not None:
            out["max_height"] = round(float(self.skyline.max()), 5)
        return out


def _backdrop(rng: np.random.Generator, cam: _Camera, open_sky: bool) -> _Wall:
    """A closed wall, or for open scenes a skyline (blocky city or smooth hills) hazed towards the sky."""
    if not open_sky:
        return _Wall(cam.far_z, cam.cam_h, _material(rng, ("noise", "stripes", "checker")[rng.integers(3)]))
    blocky = bool(rng.random() < 0.5)
    heights = rng.uniform(1.0, 9.0 if blocky else 5.0, 32)
    haze = np.array([0.62, 0.68, 0.78])
    colour = 0.55 * rng.uniform(0.15, 0.8, 3) + 0.45 * haze
    return _Wall(cam.far_z, cam.cam_h, _material(rng, "windows" if blocky else "noise", colour), heights,
                 float(rng.uniform(3.0, 8.0) if blocky else rng.uniform(6.0, 15.0)), blocky)


def _project_region(corners: np.ndarray, f: float, cx: float, cy: float, w: int, h: int) -> tuple[int, int, int, int]:
    """Pixel rectangle holding a convex body's projection, from its bounding corners (all in front of the camera)."""
    if corners[:, 2].min() <= 0.05:
        return 0, h, 0, w
    px = f * corners[:, 0] / corners[:, 2] + cx
    py = f * corners[:, 1] / corners[:, 2] + cy
    c0, c1 = int(np.floor(px.min())) - 1, int(np.floor(px.max())) + 2
    r0, r1 = int(np.floor(py.min())) - 1, int(np.floor(py.max())) + 2
    return max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)


@dataclass
class _Box:
    """A box resting on the ground, rotated by ``yaw`` about the vertical axis."""

    center: np.ndarray
    half: np.ndarray
    yaw: float
    material: _Material
    kind: str = "box"

    def _local(self, v: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.stack([c * v[..., 0] - s * v[..., 2], v[..., 1], s * v[..., 0] + c * v[..., 2]], axis=-1)

    def _world(self, v: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.stack([c * v[..., 0] + s * v[..., 2], v[..., 1], -s * v[..., 0] + c * v[..., 2]], axis=-1)

    def corners(self) -> np.ndarray:
        return self._world(_CUBE * self.half) + self.center

    def region(self, f: float, cx: float, cy: float, w: int, h: int) -> tuple[int, int, int, int]:
        return _project_region(self.corners(), f, cx, cy, w, h)

    def slab(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entry and exit ray parameters (slab method); entry > exit means a miss."""
        ol, dl = self._local(o - self.center), self._local(d)
        dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        t1, t2 = (-self.half - ol) / dl, (self.half - ol) / dl
        return np.minimum(t1, t2).max(axis=-1), np.maximum(t1, t2).min(axis=-1)

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        t_in, t_out = self.slab(o, d)
        return np.where((t_in <= t_out) & (t_in > _EPS), t_in, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        q = self._local(p - self.center) / self.half
        axis = np.abs(q).argmax(axis=-1)
        n = np.zeros_like(q)
        rows = np.arange(len(q))
        n[rows, axis] = np.sign(q[rows, axis])
        return self._world(n)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = self._local(p - self.center)
        axis = np.abs(q / self.half).argmax(axis=-1)
        s = np.choose(axis, [q[:, 2], q[:, 0], q[:, 0]]) + 13.7 * axis
        t = np.choose(axis, [-q[:, 1], q[:, 2], -q[:, 1]])
        return s, t

    def bound(self) -> tuple[np.ndarray, float]:
        return self.center, float(np.linalg.norm(self.half))

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind, "center": _rounded(self.center), "size": _rounded(2 * self.half),
                "yaw_deg": round(float(np.degrees(self.yaw)), 5), "color": _rounded(self.material.colour),
                "pattern": self.material.pattern}


@dataclass
class _Sphere:
    center: np.ndarray
    radius: float
    material: _Material

    def corners(self) -> np.ndarray:
        """Corners of the bounding cube: their projection bounds the sphere's."""
        return self.center + self.radius * _CUBE

    def region(self, f: float, cx: float, cy: float, w: int, h: int) -> tuple[int, int, int, int]:
        return _project_region(self.corners(), f, cx, cy, w, h)

    def _roots(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        oc = o - self.center
        a = (d * d).sum(axis=-1)
        b = (oc * d).sum(axis=-1)
        disc = b * b - a * ((oc * oc).sum(axis=-1) - self.radius**2)
        root = np.sqrt(np.maximum(disc, 0.0))
        return (-b - root) / a, (-b + root) / a, disc >= 0

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        t0, _, ok = self._roots(o, d)
        return np.where(ok & (t0 > _EPS), t0, np.inf)

    def slab(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t0, t1, ok = self._roots(o, d)
        return np.where(ok, t0, np.inf), np.where(ok, t1, -np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return (p - self.center) / self.radius

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = p - self.center
        return np.arctan2(q[:, 0], q[:, 2]) * self.radius, -q[:, 1]

    def bound(self) -> tuple[np.ndarray, float]:
        return self.center, self.radius

    def describe(self) -> dict[str, Any]:
        return {"type": "sphere", "center": _rounded(self.center), "radius": round(self.radius, 5),
                "color": _rounded(self.material.colour), "pattern": self.material.pattern}


_Solid = _Box | _Sphere
_Surface = _Ground | _Wall | _Box | _Sphere


# --------------------------------------------------------------------------------------------- layout
@dataclass
class _Camera:
    width: int
    height: int
    f: float
    cam_h: float
    far_z: float

    @property
    def tan_half(self) -> float:
        return self.width / 2 / self.f

    @property
    def ground_min_z(self) -> float:
        """z-depth of the ground at the bottom image row: the nearest the floor ever gets."""
        return self.cam_h * self.f / (self.height / 2 - 0.5)


class _Layout:
    """Places solids on the ground: footprints never intersect, and nothing stands in front of a protected
    (depth-band anchor) object's columns, so each band keeps an unoccluded flat face."""

    def __init__(self, rng: np.random.Generator, cam: _Camera) -> None:
        self.rng, self.cam = rng, cam
        self.footprints: list[tuple[float, float, float]] = []
        self.protected: list[tuple[int, int, float]] = []  # column span and far z of anchors
        self.solids: list[_Solid] = []

    def _accept(self, solid: _Solid, x: float, z: float, r: float, protect: bool) -> bool:
        if any((x - fx) ** 2 + (z - fz) ** 2 < (r + fr + 0.2) ** 2 for fx, fz, fr in self.footprints):
            return False
        cam = self.cam
        _, _, c0, c1 = solid.region(cam.f, cam.width / 2, cam.height / 2, cam.width, cam.height)
        z_near = float(solid.corners()[:, 2].min())
        for pc0, pc1, p_far in self.protected:
            if c0 < pc1 and pc0 < c1 and (protect or z_near < p_far):
                return False
        self.footprints.append((x, z, r))
        if protect:
            self.protected.append((c0, c1, float(solid.corners()[:, 2].max())))
        self.solids.append(solid)
        return True

    def add_box(self, z_front: tuple[float, float], screen_x: tuple[float, float], width: tuple[float, float],
                height: tuple[float, float], depth: tuple[float, float], yaw_deg: float, pattern: str | None = None,
                kind: str = "box", protect: bool = False, tries: int = 16) -> None:
        """Draws until a placement is accepted; ``screen_x`` is the lateral place as a fraction of half-width."""
        rng, cam = self.rng, self.cam
        for _ in range(tries):
            half = np.array([rng.uniform(*width), rng.uniform(*height), rng.uniform(*depth)]) / 2
            yaw = float(np.radians(rng.uniform(-yaw_deg, yaw_deg)))
            reach = abs(np.cos(yaw)) * half[2] + abs(np.sin(yaw)) * half[0]  # half-extent along Z
            zc = rng.uniform(*z_front) + reach
            x = rng.uniform(*screen_x) * (zc - reach) * cam.tan_half
            box = _Box(np.array([x, cam.cam_h - half[1], zc]), half, yaw, _material(rng, pattern), kind)
            if self._accept(box, x, zc, float(np.hypot(half[0], half[2])), protect):
                return

    def add_sphere(self, z_front: tuple[float, float], screen_x: tuple[float, float], radius: tuple[float, float],
                   tries: int = 16) -> None:
        rng, cam = self.rng, self.cam
        for _ in range(tries):
            r = float(rng.uniform(*radius))
            zc = rng.uniform(*z_front) + r
            x = rng.uniform(*screen_x) * (zc - r) * cam.tan_half
            if self._accept(_Sphere(np.array([x, cam.cam_h - r, zc]), r, _material(rng)), x, zc, r, False):
                return


def _place_objects(rng: np.random.Generator, cam: _Camera, count: int) -> list[_Solid]:
    """The first objects anchor the near, middle and far depth bands with flat, unoccluded faces (what depth
    ordering needs); the rest are random boxes and spheres in between."""
    layout = _Layout(rng, cam)
    z_min = min(cam.ground_min_z, 6.0)
    span = cam.far_z - z_min
    near_x, mid_x = ((0.35, 0.75), (-0.7, -0.1)) if rng.random() < 0.5 else ((-0.75, -0.35), (0.1, 0.7))
    anchors: list[Callable[[], None]] = [
        lambda: layout.add_box((2.5, 6.0), near_x, (0.8, 2.0), (0.8, 2.2), (0.5, 1.5), 25.0,
                               protect=True),
        lambda: layout.add_box((z_min + 0.4 * span, z_min + 0.5 * span), mid_x, (2.0, 4.5),
                               (1.5, 4.0), (1.0, 3.0), 15.0, protect=True),
        lambda: layout.add_box((0.8 * cam.far_z, 0.88 * cam.far_z), (-0.6, 0.6), (4.0, 12.0), (4.0, 12.0),
                               (1.0, 0.1 * cam.far_z), 6.0, pattern="windows", kind="building"),
    ]
    for add in anchors[:count]:
        add()
    for _ in range(count - len(anchors)):
        z_range = (z_min + 0.5, 0.8 * cam.far_z)
        if rng.random() < 0.4:
            layout.add_sphere(z_range, (-0.9, 0.9), (0.3, 1.5))
        else:
            layout.add_box(z_range, (-0.9, 0.9), (0.5, 3.0), (0.5, 3.0), (0.5, 3.0), 45.0)
    return layout.solids


# --------------------------------------------------------------------------------------------- rendering
def _rays(cam: _Camera) -> tuple[np.ndarray, np.ndarray]:
    """Per-column and per-row ray slopes through pixel centres (the ray's Z component is 1)."""
    u = (np.arange(cam.width) + 0.5 - cam.width / 2) / cam.f
    v = (np.arange(cam.height) + 0.5 - cam.height / 2) / cam.f
    return u, v


def _cast(surfaces: list[_Surface], cam: _Camera, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer over surfaces: nearest ray parameter (inf = sky) and the index of the surface hit."""
    h, w = cam.height, cam.width
    tbuf = np.full((h, w), np.inf)
    ids = np.full((h, w), -1, dtype=np.int16)
    origin = np.zeros(3)
    for k, surf in enumerate(surfaces):
        r0, r1, c0, c1 = surf.region(cam.f, w / 2, h / 2, w, h)
        if r0 >= r1 or c0 >= c1:
            continue
        uu, vv = np.meshgrid(u[c0:c1], v[r0:r1])
        d = np.stack([uu, vv, np.ones_like(uu)], axis=-1)
        t = surf.hit(origin, d)
        window = tbuf[r0:r1, c0:c1]
        nearer = t < window
        window[nearer] = t[nearer]
        ids[r0:r1, c0:c1][nearer] = k
    return tbuf, ids


def _shadowed(solids: list[_Solid], p: np.ndarray, n: np.ndarray, light: np.ndarray) -> np.ndarray:
    """True where the ray towards the light is blocked. Points are first culled in light-space coordinates
    (a solid's bounding sphere shadows only a cylinder along the light), then tested exactly."""
    origin = p + 1e-3 * n
    e1 = np.cross(light, [0.0, 0.0, 1.0] if abs(light[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(light, e1)
    a, b, along = (origin @ axis.astype(origin.dtype) for axis in (e1, e2, light))
    blocked = np.zeros(len(p), dtype=bool)
    for solid in solids:
        centre, radius = solid.bound()
        near_axis = (a - centre @ e1) ** 2 + (b - centre @ e2) ** 2 < radius**2
        idx = np.flatnonzero(near_axis & (along < centre @ light + radius) & ~blocked)
        if idx.size:
            t_in, t_out = solid.slab(origin[idx], light)
            blocked[idx[(t_in <= t_out) & (t_out > _EPS)]] = True
    return blocked


def _sky(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Colours (N, 3) of sky rays with slopes (u, v): a horizon-to-zenith gradient with faint clouds."""
    zenith = np.array([rng.uniform(0.18, 0.4), rng.uniform(0.38, 0.6), rng.uniform(0.75, 0.95)])
    horizon = np.clip(zenith + rng.uniform(0.2, 0.45), 0, 1)
    off = rng.uniform(0, _LATTICE, 2)
    cut = rng.uniform(0.45, 0.65)
    elev = np.clip(-v / np.sqrt(1 + u**2 + v**2), 0, 1)
    colour = horizon + (zenith - horizon) * np.sqrt(elev)[:, None]
    lift = 1 / np.maximum(-v, 0.03)  # clouds on a plane overhead: they shrink towards the horizon
    clouds = _fbm(lattice, u * lift * 0.8 + off[0], lift * 0.8 + off[1])
    cover = np.clip((clouds - cut) * 3, 0, 1) * np.clip(elev / 0.1, 0, 1)  # fade out before clouds alias
    return colour + (np.array([0.97, 0.97, 0.98]) - colour) * cover[:, None]


def _shade(surfaces: list[_Surface], solids: list[_Solid], starts: np.ndarray, p: np.ndarray,
           lattice: np.ndarray, rng: np.random.Generator, shadows: bool) -> np.ndarray:
    """Lambertian colours (N, 3) of hit points ``p`` (N, 3) under one directional light plus ambient.

    ``p`` is grouped by surface, group k being ``p[starts[k]:starts[k + 1]]``: one sort instead of a mask
    per surface."""
    elev, azim = np.radians(rng.uniform(25, 65)), np.radians(rng.uniform(60, 300))
    light = np.array([np.cos(elev) * np.sin(azim), -np.sin(elev), np.cos(elev) * np.cos(azim)])
    ambient = rng.uniform(0.3, 0.5)
    tint = np.array([1.0, rng.uniform(0.92, 1.0), rng.uniform(0.85, 1.0)], dtype=np.float32)
    normals, albedo = np.empty_like(p), np.empty_like(p)
    for k, surf in enumerate(surfaces):
        group = slice(starts[k], starts[k + 1])
        if group.start < group.stop:
            normals[group] = surf.normal(p[group])
            albedo[group] = surf.material.albedo(lattice, *surf.surface(p[group]))
    lambert = np.clip(normals @ light.astype(np.float32), 0, 1)
    if shadows and solids:
        lit = np.flatnonzero(lambert > 0)
        lambert[lit[_shadowed(solids, p[lit], normals[lit], light)]] = 0.0
    albedo *= tint
    albedo *= (np.float32(ambient) + np.float32(1 - ambient) * lambert)[:, None]
    return albedo


def _expose(rng: np.random.Generator, colour: np.ndarray, sigma: float) -> np.ndarray:
    """Linear [0, 1] colour to uint8 with uniform sensor noise of standard deviation ``sigma`` grey levels."""
    noise = rng.random(colour.shape, dtype=np.float32) - np.float32(0.5)
    out = colour * np.float32(255) + np.float32(sigma * np.sqrt(12.0)) * noise
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def render_scene(rng: np.random.Generator, cfg: SynthConfig | None = None) -> SynthScene:
    """Sample and ray-cast one scene; every random choice comes from ``rng``, so a seed fixes the bytes."""
    cfg = cfg or SynthConfig()
    w, h = cfg.width, cfg.height
    fov = np.radians(rng.uniform(*cfg.fov_deg))
    cam = _Camera(w, h, float(w / 2 / np.tan(fov / 2)), float(rng.uniform(*cfg.camera_height)),
                  float(rng.uniform(*cfg.far_z)))
    open_sky = bool(rng.random() < cfg.sky_probability)
    lattice = _lattice(rng)
    ground_colour = np.clip(_GROUND_COLOURS[rng.integers(len(_GROUND_COLOURS))] + rng.uniform(-0.07, 0.07, 3), 0, 1)
    surfaces: list[_Surface] = [_Ground(cam.cam_h, cam.far_z, _material(rng, "checker", ground_colour))]
    surfaces.append(_backdrop(rng, cam, open_sky))
    solids = _place_objects(rng, cam, int(rng.integers(cfg.min_objects, cfg.max_objects + 1)))
    surfaces += solids

    u, v = _rays(cam)
    tbuf, ids = _cast(surfaces, cam, u, v)
    valid = np.isfinite(tbuf)
    t = np.where(valid, tbuf, np.nan)
    points32 = np.stack([t * u[None, :], t * v[:, None], t], axis=-1).astype(np.float32)  # t * d, d = (u, v, 1)

    flat_ids = ids.ravel()
    order = np.argsort(flat_ids, kind="stable")  # sky (-1) first, then pixels grouped by surface
    starts = np.searchsorted(flat_ids[order], np.arange(-1, len(surfaces) + 1))
    sky, hit = order[: starts[1]], order[starts[1]:]
    colour = np.empty((h * w, 3), dtype=np.float32)
    colour[sky] = _sky(rng, u[sky % w], v[sky // w], lattice)
    hit_points = points32.reshape(-1, 3).take(hit, axis=0)
    colour[hit] = _shade(surfaces, solids, starts[1:] - starts[1], hit_points, lattice, rng, cfg.shadows)
    image = _expose(rng, colour.reshape(h, w, 3), rng.uniform(*cfg.noise_sigma))
    return SynthScene(image=image, depth=t.astype(np.float32), points=points32,
                      fx=cam.f, fy=cam.f, cx=w / 2, cy=h / 2, objects=[s.describe() for s in surfaces])


# --------------------------------------------------------------------------------------------- output
def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Readers never see a half-written file: write a sibling temp file, then rename over the target."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_scene(scene: SynthScene, out_dir: Path | str, stem: str) -> list[Path]:
    """Write the DIODE layout the loaders already read; returns [image, depth, mask, camera] paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    valid = np.isfinite(scene.depth)
    depth = np.where(valid, scene.depth, 0.0).astype(np.float32)[..., None]
    mask = valid.astype(np.float32)
    h, w = scene.depth.shape
    camera = {"fx": float(scene.fx), "fy": float(scene.fy), "cx": float(scene.cx), "cy": float(scene.cy),
              "width": int(w), "height": int(h), "objects": scene.objects}
    text = (json.dumps(camera, sort_keys=True, indent=2) + "\n").encode()
    paths = [out / f"{stem}.png", out / f"{stem}_depth.npy", out / f"{stem}_depth_mask.npy",
             out / f"{stem}.camera.json"]
    _atomic_write(paths[0], lambda fh: Image.fromarray(scene.image, "RGB").save(fh, format="PNG", compress_level=6))
    _atomic_write(paths[1], lambda fh: np.save(fh, depth, allow_pickle=False))
    _atomic_write(paths[2], lambda fh: np.save(fh, mask, allow_pickle=False))
    _atomic_write(paths[3], lambda fh: fh.write(text))
    return paths


def synthesize(out_dir: Path | str, count: int, seed: int = 0, cfg: SynthConfig | None = None,
               progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write ``count`` scenes named synth-00000...; scene i depends only on (seed, i), never on ``count``."""
    if count < 0:
        raise ConfigError(f"synth count must be >= 0, got {count}")
    cfg = cfg or SynthConfig()
    images = []
    for i in range(count):
        scene = render_scene(np.random.default_rng([seed, i]), cfg)
        images.append(write_scene(scene, out_dir, f"synth-{i:05d}")[0])
        if progress is not None:
            progress(1)
    return images
