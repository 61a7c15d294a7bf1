"""The real-node tier runs on its own: ``make test`` runs it after the other tiers through ``make test-realnode``
(``pytest -p no:xdist -m realnode``: root, one node, no parallel workers). Any run that does not ask for the marker,
the parallel ``pytest -n 2 -m "not cluster"`` of ``make test`` and a bare ``pytest`` included, deselects it."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "realnode" in (config.option.markexpr or ""):
        return
    dropped = [item for item in items if item.get_closest_marker("realnode")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("realnode")]
