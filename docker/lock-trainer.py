"""Print the pins of ssrl[s3,train,k8s]'s installed dependency closure (what the test suite ran), for
docker/trainer-constraints.txt:  .venv/bin/python docker/lock-trainer.py > docker/trainer-constraints.txt
DeepSpeed is left out (the Dockerfile installs it from its sdist with DS_BUILD_OPS=0)."""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = """\
# Pins of ssrl[s3,train,k8s]'s runtime dependencies as the test suite ran them (torch, its CUDA wheels, TRL,
# transformers...): docker/trainer.Dockerfile installs them first, so one tag rebuilds the same torch/CUDA. DeepSpeed
# is pinned in the Dockerfile (built from its sdist). Regenerate: .venv/bin/python docker/lock-trainer.py > this file"""


def closure(name: str, extras: set[str]) -> dict[str, str]:
    """Installed versions of ``name[extras]`` and everything it requires (markers evaluated here)."""
    seen: dict[tuple[str, frozenset[str]], str] = {}
    todo = [(Requirement(name), extras)]
    while todo:
        req, want = todo.pop()
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # a marker-excluded or optional dependency that is not installed
        key = (canonicalize_name(req.name), frozenset(want))
        if key in seen:
            continue
        seen[key] = dist.version
        for text in dist.requires or []:
            r = Requirement(text)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in (sorted(want) or [""])):
                todo.append((r, set(r.extras)))
    return {n: v for (n, _), v in seen.items()}


def main() -> None:
    pins = closure("ssrl", {"s3", "train", "k8s"})
    for skip in ("ssrl", "deepspeed"):
        pins.pop(skip, None)
    print(HEADER)
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")


if __name__ == "__main__":
    main()
