"""The package layout is the data flow: each package imports only the packages below it (see ``ssrl/__init__``).

Every ``import`` of an ``ssrl`` module is checked, at module level and inside functions (lazy imports of optional
extras count too), and every module is imported, so a cycle or a stale path fails here.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import ssrl

ROOT = Path(ssrl.__file__).parent

# package -> the packages it may import besides itself. "ssrl" is the root module (``__version__``).
BASE = {"ssrl", "errors"}
ALLOWED: dict[str, set[str]] = {
    "errors": {"ssrl"},
    "config": BASE,
    "store": BASE,
    "cluster": BASE,
    "sources": BASE | {"config", "store"},
    "tasks": BASE | {"config"},
    "dataset": BASE | {"config", "store", "sources", "tasks"},
    "evals": BASE | {"config", "store", "sources", "tasks", "dataset"},
    "recipes": BASE | {"config", "store", "cluster", "sources", "tasks", "dataset", "evals"},
    "cli": BASE | {"config", "store", "cluster", "sources", "tasks", "dataset", "evals", "recipes"},
    "__main__": {"cli"},
    "configs": set(),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = sorted(_module_name(p) for p in ROOT.rglob("*.py"))


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ssrl"


def _ssrl_imports(path: Path, module: str) -> set[str]:
    """Every ssrl module a file imports, relative imports resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ssrl"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] == "ssrl":
                found.add(base)
    return found


def test_every_module_belongs_to_a_known_package():
    unknown = {m for m in MODULES if _package(m) not in ALLOWED and m != "ssrl"}
    assert not unknown, f"add these packages to the layer table: {sorted(unknown)}"
    assert {"ssrl.store.s3", "ssrl.cluster.client", "ssrl.dataset.generate", "ssrl.sources.imageio"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_imports_only_lower_layers(module):
    folder = ROOT.parent / module.replace(".", "/")
    path = folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")
    own = _package(module)
    if own == "ssrl":
        assert not _ssrl_imports(path, module), "the root module imports nothing of the package"
        return
    bad = sorted(i for i in _ssrl_imports(path, module) if _package(i) not in ALLOWED[own] | {own})
    assert not bad, f"{module} ({own}) imports {bad}: a lower layer may not import a higher one"


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
    importlib.import_module(module)


def test_store_and_s3_backend_do_not_import_each_other_at_import_time():
    """The S3 backend is registered by name; importing the store interface does not load it (or minio)."""
    store_imports = _ssrl_imports(ROOT / "store" / "__init__.py", "ssrl.store")
    assert "ssrl.store.s3" not in store_imports
    from ssrl.store import _BACKENDS

    assert "s3" in _BACKENDS


def test_layer_violation_is_detected(tmp_path):
    """The checker sees a lazy import inside a function, so the test above can fail."""
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from ssrl.recipes.train_grpo import main\n    from . import sibling\n")
    assert _ssrl_imports(f, "ssrl.tasks.x") == {"ssrl.recipes.train_grpo", "ssrl.tasks"}
