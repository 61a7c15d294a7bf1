"""Finding users' images and pairing each with its depth map (and validity mask) by file-name rules.

Only directory listings are read here, never file contents (list files excepted), so time and memory grow
with the number of files. Results are sorted by id and independent of the file system's listing order.
"""

from __future__ import annotations

import glob
import os
import posixpath
import re
import string
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ssrl.errors import ConfigError

__all__ = ["DEFAULT_RULES", "IMAGE_EXTENSIONS", "LIST_EXTENSIONS", "PairingRule", "Source", "discover",
           "parse_rules"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: An input with one of these extensions is a list file: one path per line.
LIST_EXTENSIONS = (".txt", ".lst")
#: Placeholders every template may use besides the regex's named groups (which take precedence).
BUILTIN_FIELDS = ("stem", "name", "ext")
_MAGIC = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class PairingRule:
    """Where an image's depth (and optional mask) lives, as a regex on the image and path templates.

    ``image`` is searched (``re.search``) in the image's path relative to its input root (posix). A regex
    without ``/`` is searched in the file name only, so ``.*`` cannot swallow folder names; one with ``/`` sees
    the whole relative path. ``depth``/``mask`` are ``str.format`` templates, relative to the image's folder,
    filled from the regex's named groups plus ``{stem}`` (file name without extension), ``{name}`` (file name)
    and ``{ext}`` (extension with its dot). Invalid regexes or placeholders raise ``ConfigError``.

    >>> rule = PairingRule(image=r"(?P<pre>.*)_img(?P<n>\\d+)\\.\\w+$", depth="{pre}_depth{n}.h5")
    >>> rule.fill("scenes/RGB-D_img1.jpg")
    ('RGB-D_depth1.h5', None)
    >>> PairingRule(image=".*", depth="{stem}_depth.npy", mask="{stem}_depth_mask.npy").fill("a/x.png")
    ('x_depth.npy', 'x_depth_mask.npy')
    """

    image: str
    depth: str
    mask: str | None = None

    def __post_init__(self) -> None:
        problems = _rule_problems(self)
        if problems:
            raise ConfigError(problems)

    def fill(self, rel: str) -> tuple[str, str | None] | None:
        """(depth, mask) paths relative to the image's folder, or None when the regex does not match."""
        name = rel.rsplit("/", 1)[-1]
        m = re.search(self.image, rel if "/" in self.image else name)
        if m is None:
            return None
        stem, ext = os.path.splitext(name)
        fields = {"stem": stem, "name": name, "ext": ext}
        fields.update({k: v or "" for k, v in m.groupdict().items()})
        return self.depth.format(**fields), (self.mask.format(**fields) if self.mask else None)


def _rule_problems(rule: PairingRule) -> list[str]:
    problems: list[str] = []
    if not isinstance(rule.image, str) or not isinstance(rule.depth, str) or not (
        rule.mask is None or isinstance(rule.mask, str)
    ):
        return ["image and depth must be strings, mask a string or null"]
    try:
        groups = set(re.compile(rule.image).groupindex)
    except re.error as e:
        return [f"bad image regex {rule.image!r}: {e}"]
    allowed = groups | set(BUILTIN_FIELDS)
    for key, template in (("depth", rule.depth), ("mask", rule.mask)):
        if template is None:
            continue
        if not template.strip():
            problems.append(f"{key} template is empty")
            continue
        problems += [f"{key} template {template!r}: {p}" for p in _template_problems(template, allowed)]
    return problems


def _template_problems(template: str, allowed: set[str]) -> list[str]:
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        return [f"malformed braces ({e})"]
    problems = []
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in allowed:
            problems.append(f"unknown placeholder {{{field}}} (allowed: {', '.join(sorted(allowed))})")
        elif spec or conversion:
            problems.append(f"placeholder {{{field}}} takes no format spec or conversion")
    return problems


#: DIODE (x_depth.npy + x_depth_mask.npy), MegaDepth (x.h5 beside the image, or ../depths/x.h5 as in
#: MegaDepth's imgs/ and depths/ folders), millimetre 16-bit PNG (x_depth.png), then the naming of the
#: paper's reference samples (<pre>_img<n>.* <-> <pre>_depth<n>.h5 or .npy). First existing depth wins.
DEFAULT_RULES: list[PairingRule] = [
    PairingRule(image=r".*", depth="{stem}_depth.npy", mask="{stem}_depth_mask.npy"),
    PairingRule(image=r".*", depth="{stem}.h5"),
    PairingRule(image=r".*", depth="../depths/{stem}.h5"),
    PairingRule(image=r".*", depth="{stem}_depth.png"),
    # The paper's reference samples: RGB-D_img1.jpg <-> RGB-D_depth1.h5 | RGB-D_depth1.npy + RGB-D_depth_mask1.npy
    PairingRule(image=r"^(?P<pre>.*)_img(?P<n>\d*)\.\w+$", depth="{pre}_depth{n}.h5"),
    PairingRule(image=r"^(?P<pre>.*)_img(?P<n>\d*)\.\w+$", depth="{pre}_depth{n}.npy", mask="{pre}_depth_mask{n}.npy"),
]


#: Intrinsics files tried for each image: ``ssrl synth``'s per-image file, then one for the whole folder.
DEFAULT_CAMERAS: tuple[str, ...] = ("{stem}.camera.json", "camera.json")


def parse_rules(items: list[dict[str, Any]]) -> list[PairingRule]:
    """Rules from a YAML config's list of ``{image, depth, mask}`` mappings; every problem reported at once.

    >>> parse_rules([{"image": r"(?P<pre>.*)_img(?P<n>\\d+)", "depth": "{pre}_depth{n}.h5"}])[0].depth
    '{pre}_depth{n}.h5'
    """
    if not isinstance(items, list):
        raise ConfigError(f"pairing rules must be a list of mappings, got {type(items).__name__}")
    rules: list[PairingRule] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        where = f"pairing rule {i}"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a mapping with image, depth and optional mask")
            continue
        unknown = sorted(set(item) - {"image", "depth", "mask"})
        missing = [k for k in ("image", "depth") if k not in item]
        if unknown:
            problems.append(f"{where}: unknown keys {', '.join(map(str, unknown))}")
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
        if unknown or missing:
            continue
        try:
            rules.append(PairingRule(image=item["image"], depth=item["depth"], mask=item.get("mask")))
        except ConfigError as e:
            problems += [f"{where}: {p}" for p in e.problems]
    if problems:
        raise ConfigError(problems)
    return rules


@dataclass(frozen=True)
class Source:
    """One image and, for RGB-D, its depth and optional mask (absolute paths).

    ``id`` is the image path relative to its input root (posix). When two inputs yield the same relative
    path, every such source is prefixed ``input<k>/`` with k the 0-based index of its input in ``inputs``.
    """

    id: str
    image: str
    depth: str | None = None
    mask: str | None = None
    camera: str | None = None
    """Its intrinsics (``camera.json``), when one of ``discover``'s ``cameras`` templates names a file."""


@dataclass(frozen=True)
class _Candidate:
    path: str  # absolute, normalised
    rel: str  # posix, relative to its input root
    input_index: int


class _Listing:
    """Cached directory listings: each folder is listed once, however many images ask about it."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = _split(path)
        if folder not in self._names:
            self._names[folder] = _list_names(folder)
        return name in self._names[folder] and (_is_url(path) or os.path.isfile(path))


# --------------------------------------------------------------------------------------------- store URLs
# Inputs may be store URLs (s3://bucket/prefix): candidates are then full object URLs, listed once per
# folder through ``ssrl.store``, and paired with the same rules as local files.


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _url_parts(url: str) -> tuple[str, str]:
    """("s3://bucket", "a/b/c.png")."""
    scheme, rest = url.split("://", 1)
    bucket, _, key = rest.partition("/")
    return f"{scheme}://{bucket}", key


def _split(path: str) -> tuple[str, str]:
    if _is_url(path):
        root, key = _url_parts(path)
        folder, name = posixpath.split(key)
        return f"{root}/{folder}".rstrip("/"), name
    return os.path.split(path)


def _join_norm(folder: str, rel: str) -> str:
    if _is_url(folder):
        root, key = _url_parts(folder)
        joined = posixpath.normpath(posixpath.join("/", key, rel)).lstrip("/")
        return f"{root}/{joined}"
    return os.path.normpath(os.path.join(folder, rel))


def _list_names(folder: str) -> frozenset[str]:
    if not _is_url(folder):
        try:
            return frozenset(os.listdir(folder))
        except OSError:
            return frozenset()
    from ssrl.store import open_store

    keys = open_store(folder).list()
    return frozenset(k for k in keys if "/" not in k)


def _expand_url(raw: str, index: int, exts: tuple[str, ...], problems: list[str]) -> list[_Candidate]:
    from ssrl.errors import StoreError
    from ssrl.store import open_store

    try:
        store = open_store(raw)
        keys = store.list()
    except StoreError as e:
        problems.append(f"input {raw!r}: {e}")
        return []
    base = raw.rstrip("/")
    found = [_Candidate(f"{base}/{k}", k, index) for k in keys
             if _is_image(k, exts) and not any(p.startswith(".") for p in k.split("/"))]
    if not found:
        problems.append(f"input {raw!r} (store prefix) contains no image files ({', '.join(exts)})")
    return found


def discover(inputs: list[str], rules: Sequence[PairingRule] = DEFAULT_RULES, *,
             extensions: Sequence[str] = IMAGE_EXTENSIONS, cameras: Sequence[str] = DEFAULT_CAMERAS) -> list[Source]:
    """Images under ``inputs`` (folders searched recursively, globs, list files, single images), paired.

    ``cameras`` are templates (``{stem}``, ``{name}``, ``{ext}``, relative to the image's folder) of its
    intrinsics file; the first that exists is the source's ``camera``.

    Files matched as the depth or mask of another found image are not images themselves. Hidden files and
    folders (name starting with ``.``) are skipped when walking folders. Missing inputs and inputs without
    images raise one ``ConfigError`` listing every problem.
    """
    exts = tuple(e.lower() for e in extensions)
    problems: list[str] = []
    candidates: dict[str, _Candidate] = {}
    for index, raw in enumerate(inputs):
        found = _expand(raw, index, exts, problems)
        for cand in sorted(found, key=lambda c: c.path):
            candidates.setdefault(cand.path, cand)  # the first input to reach a file owns it
    if problems:
        raise ConfigError(problems)
    listing = _Listing()
    pairs = {path: _pair(cand, rules, listing) for path, cand in sorted(candidates.items())}
    companions = {p for depth, mask in pairs.values() for p in (depth, mask) if p is not None}
    kept = [c for path, c in sorted(candidates.items()) if path not in companions]
    ids = _unique_ids(kept)
    sources = [Source(id=ids[c.path], image=c.path, depth=pairs[c.path][0], mask=pairs[c.path][1],
                      camera=_camera(c, cameras, listing)) for c in kept]
    return sorted(sources, key=lambda s: s.id)


def _pair(cand: _Candidate, rules: Sequence[PairingRule], listing: _Listing) -> tuple[str | None, str | None]:
    folder = _split(cand.path)[0]
    for rule in rules:
        filled = rule.fill(cand.rel)
        if filled is None:
            continue
        depth = _join_norm(folder, filled[0])
        if depth == cand.path or not listing.exists(depth):
            continue
        mask = _join_norm(folder, filled[1]) if filled[1] else None
        return depth, (mask if mask and mask != cand.path and listing.exists(mask) else None)
    return None, None


def _camera(cand: _Candidate, templates: Sequence[str], listing: _Listing) -> str | None:
    folder, name = _split(cand.path)
    stem, ext = os.path.splitext(name)
    for template in templates:
        path = _join_norm(folder, template.format(stem=stem, name=name, ext=ext))
        if listing.exists(path):
            return path
    return None


def _unique_ids(cands: list[_Candidate]) -> dict[str, str]:
    """Relative paths as ids; colliding ones get ``input<k>/``, and the absolute path as a last resort."""
    by_rel: dict[str, list[_Candidate]] = defaultdict(list)
    for c in cands:
        by_rel[c.rel].append(c)
    ids = {c.path: (c.rel if len(group) == 1 else f"input{c.input_index}/{c.rel}")
           for group in by_rel.values() for c in group}
    counts: dict[str, int] = defaultdict(int)
    for i in ids.values():
        counts[i] += 1
    return {path: (i if counts[i] == 1 else _posix(path).lstrip("/")) for path, i in ids.items()}


# --------------------------------------------------------------------------------------------- inputs


def _posix(path: str) -> str:
    return path.replace(os.sep, "/")


def _is_image(name: str, exts: tuple[str, ...]) -> bool:
    return name.lower().endswith(exts)


def _rel(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return _posix(path).lstrip("/") if rel.startswith("..") else _posix(rel)


def _expand(raw: str, index: int, exts: tuple[str, ...], problems: list[str]) -> list[_Candidate]:
    if _is_url(raw):
        return _expand_url(raw, index, exts, problems)
    if raw.startswith("file://"):
        raw = raw[len("file://"):]
    path = os.path.abspath(os.path.expanduser(raw))
    if os.path.isdir(path):
        found = [_Candidate(p, _rel(p, path), index) for p in _walk(path, exts)]
        kind = "folder"
    elif os.path.isfile(path) and path.lower().endswith(LIST_EXTENSIONS):
        found = _read_list(path, index, exts, problems)
        kind = "list file"
    elif os.path.isfile(path) and _is_image(path, exts):
        found = [_Candidate(os.path.normpath(path), os.path.basename(path), index)]
        kind = "image"
    elif _MAGIC.search(raw):
        found = _glob(raw, index, exts)
        kind = "glob"
    elif os.path.exists(path):
        problems.append(f"input {raw!r} is not a folder, glob, list file ({', '.join(LIST_EXTENSIONS)}) "
                        f"or image ({', '.join(exts)})")
        return []
    else:
        problems.append(f"input {raw!r} does not exist")
        return []
    if not found and kind != "list file":
        verb = "matches" if kind == "glob" else "contains"
        problems.append(f"input {raw!r} ({kind}) {verb} no image files ({', '.join(exts)})")
    return found


def _walk(root: str, exts: tuple[str, ...]) -> Iterator[str]:
    """Image files under ``root``, following symlinked folders but never the same folder twice."""
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and _is_image(name, exts):
                yield os.path.normpath(os.path.join(folder, name))


def _glob(pattern: str, index: int, exts: tuple[str, ...]) -> list[_Candidate]:
    """Glob (``**`` recursive); ids are relative to the pattern's folder part before the first wildcard."""
    expanded = os.path.expanduser(pattern)
    parts = _posix(expanded).split("/")
    fixed = []
    for part in parts:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    root = os.path.abspath("/".join(fixed) or ".") if fixed != [""] else os.path.abspath("/")
    return [
        _Candidate(p, _rel(p, root), index)
        for p in (os.path.normpath(os.path.abspath(m)) for m in glob.glob(expanded, recursive=True))
        if os.path.isfile(p) and _is_image(p, exts)
    ]


def _read_list(list_path: str, index: int, exts: tuple[str, ...], problems: list[str]) -> list[_Candidate]:
    """One path per line, relative to the list file's folder; ``#`` comment lines and blank lines skipped."""
    root = os.path.dirname(list_path)
    try:
        with open(list_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"list file {list_path!r} cannot be read: {e}")
        return []
    found: list[_Candidate] = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = os.path.normpath(os.path.join(root, os.path.expanduser(entry)))
        where = f"{list_path}:{number}"
        if not os.path.isfile(path):
            problems.append(f"{where}: {entry!r} does not exist")
        elif not _is_image(path, exts):
            problems.append(f"{where}: {entry!r} is not an image file ({', '.join(exts)})")
        else:
            found.append(_Candidate(path, _rel(path, root), index))
    if not found and not any(p.startswith(f"{list_path}:") for p in problems):
        problems.append(f"list file {list_path!r} lists no images")
    return found
