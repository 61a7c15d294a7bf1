"""What every benchmark records about the machine its figures come from."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine_info(**versions: str) -> dict[str, Any]:
    """CPU, cores, memory, Python, platform and load, plus the library ``versions`` a benchmark depends on."""
    import psutil

    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        **versions,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def write_results(path: Path, res: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")


def finish(res: dict[str, Any], started: float, report: str, output: Path) -> None:
    """The tail every benchmark shares: elapsed time and load into the results, the report printed, the JSON
    written."""
    res["elapsed_s"] = time.perf_counter() - started
    res["loadavg_at_end"] = os.getloadavg()
    print()
    print(report)
    print(f"\nTotal {res['elapsed_s']:.0f} s; results in {output}")
    write_results(output, res)
