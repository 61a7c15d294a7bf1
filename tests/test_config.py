from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ssrl.config import apply_overrides, build_config, load_config
from ssrl.errors import ConfigError


@dataclass
class Inner:
    rows: int = 2
    name: str = "x"


@dataclass
class Outer:
    seed: int = 0
    ratio: float = 0.5
    flag: bool = False
    tasks: list[str] = field(default_factory=lambda: ["a"])
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None


def test_precedence_yaml_flags_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("seed: 1\nratio: 2\ntasks: [b, c]\ninner: {rows: 3}\n")
    cfg = load_config(Outer, f, ["inner.name=y", "seed=7"], seed=5, flag=None)
    assert cfg == Outer(seed=7, ratio=2.0, tasks=["b", "c"], inner=Inner(rows=3, name="y"))
    assert load_config(Outer, f, [], seed=5).seed == 5
    assert load_config(Outer, None, ["tasks=x,y"]).tasks == ["x", "y"]


def test_every_problem_reported() -> None:
    with pytest.raises(ConfigError) as e:
        build_config(Outer, {"sed": 1, "ratio": "high", "flag": "yes", "inner": {"rowz": 1}, "maybe": 1.5})
    text = str(e.value)
    assert "did you mean seed" in text and "ratio" in text and "flag" in text and "inner.rowz" in text
    assert "maybe" in text


def test_override_syntax() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, tmp_path / "list.yaml")
