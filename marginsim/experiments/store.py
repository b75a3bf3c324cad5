"""The results store: each run as Parquet, TOML and JSON under ``results/<experiment>/<run_id>/``.

Layout of one run folder::

    metrics.parquet          per-step metrics (see marginsim.metrics)
    events/<table>.parquet   event tables (trades, swaps, shocks, mints)
    scenario.toml            the resolved scenario, every default written out
    summary.json             the run's summary (marginsim.experiments.runner.summarize)
    manifest.json            versions, git commit, seed, wall time

Everything is first written into a hidden temporary folder beside the final one and then
renamed into place, so an interrupted run never leaves a half-written folder behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from marginsim.config import Scenario
from marginsim.experiments.runner import RunResult

__all__ = ["git_commit", "manifest", "run_id", "write_run"]

_LIBRARIES = ("numpy", "pandas", "numba", "mesa", "pyarrow", "pydantic", "networkx", "duckdb")


def run_id(scenario: Scenario) -> str:
    """A run's folder name: scenario name, seed and a hash of the resolved scenario.

    The same scenario always maps to the same id, so a rerun replaces its own folder and a
    restarted sweep can recognise runs that are already stored.
    """
    digest = hashlib.sha256(scenario.to_toml().encode("utf-8")).hexdigest()[:10]
    return f"{scenario.name}-seed{scenario.run.seed}-{digest}"


def git_commit() -> str | None:
    """The commit of the marginsim checkout, with ``-dirty`` if modified; None if unknown."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def manifest(result: RunResult) -> dict[str, Any]:
    """Provenance of a run: what ran, on what, with which seed, for how long."""
    return {
        "marginsim_version": _version("marginsim"),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in _LIBRARIES},
        "scenario": result.scenario.name,
        "seed": result.scenario.run.seed,
        "steps": result.scenario.run.steps,
        "wall_seconds": round(result.wall_seconds, 3),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _json(obj: Any) -> str:
    # NaN is not JSON: write null, so every JSON reader can load the file.
    def clean(x: Any) -> Any:
        if isinstance(x, float) and x != x:
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    return json.dumps(clean(obj), indent=2, sort_keys=False) + "\n"


def write_run(
    result: RunResult, out_dir: str | Path = "results", experiment: str | None = None
) -> Path:
    """Write a run under ``out_dir/<experiment>/<run_id>/`` atomically and return the folder.

    Args:
        result: The run.
        out_dir: Root of the results store.
        experiment: Folder grouping runs; defaults to the scenario name.

    Returns:
        The run's folder.
    """
    parent = Path(out_dir) / (experiment or result.scenario.name)
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / run_id(result.scenario)
    tmp = parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    (tmp / "events").mkdir(parents=True)
    try:
        result.metrics.to_parquet(tmp / "metrics.parquet", index=False)
        for name, table in result.events.items():
            table.to_parquet(tmp / "events" / f"{name}.parquet", index=False)
        (tmp / "scenario.toml").write_text(result.scenario.to_toml(), encoding="utf-8")
        (tmp / "summary.json").write_text(_json(result.summary), encoding="utf-8")
        (tmp / "manifest.json").write_text(_json(manifest(result)), encoding="utf-8")
        if final.exists():
            old = parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
