"""DuckDB over the results store: open a run, experiment or sweep folder as SQL views.

:func:`open_results` returns an in-memory DuckDB connection whose views read the Parquet
and JSON files of a results folder in place (nothing is copied):

- ``metrics``: ``metrics.parquet`` of every run;
- one view per event table (``trades``, ``liquidations``, ``cascades``, ...): the union of
  ``events/<table>.parquet`` (and of any other ``<table>.parquet`` beside ``metrics.parquet``)
  over every run that has it;
- ``summary``: each run's ``summary.json`` as one row, or a sweep's ``summary.parquet``;
- ``runs``: ``run_id`` and ``path`` of every run folder found.

Which folders are understood:

- a run folder (holds ``metrics.parquet``): one run; the views have no ``run_id`` column;
- a sweep folder (holds ``sweep.toml``): the runs under ``runs/``, ``summary`` is the sweep's
  ``summary.parquet`` with a ``run_id`` column (the last part of ``run_dir``) put first;
- any other folder (an experiment folder, or the results root): every run folder below it,
  at any depth (hidden folders such as unfinished ``.tmp-*`` runs are skipped).

For the last two every view starts with a ``run_id`` column: the run folder's name, which is
unique because the store names runs ``<scenario>-seed<seed>-<hash of the scenario>``. Event
tables that differ in columns between runs (a run recorded without a newer column) are
unioned by column name, missing values are NULL.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

__all__ = [
    "FolderKind",
    "QueryError",
    "ResultsFolder",
    "format_result",
    "open_results",
    "run_query",
    "scan_results",
]

# Views that a table file of the same name must not replace.
_RESERVED = frozenset({"metrics", "summary", "runs"})


class QueryError(Exception):
    """A results folder cannot be opened, or a query on it failed (the message says why)."""


class FolderKind(enum.Enum):
    """What a results folder holds."""

    RUN = "run"
    SWEEP = "sweep"
    COLLECTION = "collection"


@dataclasses.dataclass(frozen=True)
class ResultsFolder:
    """The run folders found under a results folder.

    Attributes:
        root: The folder that was opened.
        kind: Run, sweep, or a collection of runs (an experiment folder or the results root).
        runs: ``run_id`` to run folder, in sorted order of ``run_id``.
        tables: Event table name to the Parquet files holding it, with the ``run_id`` of each.
    """

    root: Path
    kind: FolderKind
    runs: dict[str, Path]
    tables: dict[str, list[tuple[str, Path]]]

    @property
    def several(self) -> bool:
        """Whether the views carry a ``run_id`` column (every folder but a single run)."""
        return self.kind is not FolderKind.RUN


def _is_run(folder: Path) -> bool:
    return (folder / "metrics.parquet").is_file()


def _find_runs(root: Path) -> list[Path]:
    found = []
    for metrics in root.rglob("metrics.parquet"):
        rel = metrics.relative_to(root).parts
        if any(part.startswith(".") for part in rel):
            continue  # unfinished (.tmp-*) or replaced (.old-*) runs of the store
        found.append(metrics.parent)
    return found


def _table_files(run: Path) -> dict[str, Path]:
    files = {p.stem: p for p in sorted(run.glob("*.parquet")) if p.stem != "metrics"}
    # events/<table>.parquet is where the store writes; it wins over a same-named loose file.
    files.update({p.stem: p for p in sorted((run / "events").glob("*.parquet"))})
    return {name: path for name, path in files.items() if name not in _RESERVED}


def scan_results(folder: str | Path) -> ResultsFolder:
    """Find the runs and event tables under a results folder.

    Args:
        folder: A run folder, a sweep folder or any folder holding run folders.

    Returns:
        What was found.

    Raises:
        QueryError: If the folder does not exist or holds no run.
    """
    root = Path(folder)
    if not root.is_dir():
        raise QueryError(f"results folder {str(root)!r} does not exist or is not a folder")
    if _is_run(root):
        kind, paths = FolderKind.RUN, [root]
    elif (root / "sweep.toml").is_file():
        runs_dir = root / "runs"
        kind = FolderKind.SWEEP
        paths = _find_runs(runs_dir) if runs_dir.is_dir() else []
    else:
        kind, paths = FolderKind.COLLECTION, _find_runs(root)
    if not paths and kind is not FolderKind.SWEEP:
        raise QueryError(
            f"no run found in {str(root)!r}: expected a run folder (with metrics.parquet), "
            "a sweep folder (with sweep.toml) or a folder holding run folders"
        )
    runs: dict[str, Path] = {}
    for path in sorted(paths, key=lambda p: (p.name, str(p))):
        if path.name in runs:
            raise QueryError(
                f"two run folders named {path.name!r} under {str(root)!r} "
                f"({runs[path.name]} and {path}); open one of their parents instead"
            )
        runs[path.name] = path
    tables: dict[str, list[tuple[str, Path]]] = {}
    for run_id, path in runs.items():
        for name, file in _table_files(path).items():
            tables.setdefault(name, []).append((run_id, file))
    return ResultsFolder(root, kind, runs, dict(sorted(tables.items())))


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _union_view(
    con: duckdb.DuckDBPyConnection, name: str, files: Sequence[tuple[str, Path]], several: bool
) -> None:
    paths = [p.resolve().as_posix() for _, p in files]
    listing = "[" + ", ".join(_sql_str(p) for p in paths) + "]"
    if not several:
        con.execute(f"CREATE VIEW {_ident(name)} AS SELECT * FROM read_parquet({listing})")
        return
    # The run id is the run folder's name: the folder above metrics.parquet or above
    # events/. Parsing it out of DuckDB's file name column keeps the scan a streaming
    # projection (no join, no sort), so rows come out file by file, in the files' order.
    run_id = r"regexp_extract(_marginsim_file, '([^/]+)/(?:events/)?[^/]+\.parquet$', 1)"
    con.execute(
        f"CREATE VIEW {_ident(name)} AS "
        f"SELECT {run_id} AS run_id, * EXCLUDE (_marginsim_file) FROM read_parquet({listing}, "
        f"union_by_name = true, filename = '_marginsim_file')"
    )


def _summary_frame(found: ResultsFolder) -> pd.DataFrame:
    rows = []
    for run_id, path in found.runs.items():
        file = path / "summary.json"
        data: dict[str, Any] = (
            json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
        )
        rows.append({"run_id": run_id, **data} if found.several else data)
    return pd.DataFrame(rows)


def open_results(folder: str | Path) -> duckdb.DuckDBPyConnection:
    """Open a results folder as an in-memory DuckDB connection with one view per table.

    Args:
        folder: A run folder, a sweep folder (with ``sweep.toml``) or any folder holding run
            folders (an experiment folder, the results root).

    Returns:
        A connection with the views ``metrics``, ``summary``, ``runs`` and one per event
        table (see the module docstring).

    Raises:
        QueryError: If the folder does not exist or holds no run.

    Examples:
        >>> con = open_results("results/lending_cascade")  # doctest: +SKIP
        >>> con.sql("select run_id, count(*) from liquidations group by run_id")  # doctest: +SKIP
    """
    found = scan_results(folder)
    con = duckdb.connect(":memory:")
    several = found.several
    con.execute("CREATE TABLE runs (run_id VARCHAR, path VARCHAR)")
    con.executemany(
        "INSERT INTO runs VALUES (?, ?)",
        [(run_id, str(path)) for run_id, path in found.runs.items()],
    )
    if found.runs:
        metrics = [(run_id, path / "metrics.parquet") for run_id, path in found.runs.items()]
        _union_view(con, "metrics", metrics, several)
    for name, files in found.tables.items():
        _union_view(con, name, files, several)
    sweep_summary = found.root / "summary.parquet"
    if found.kind is FolderKind.SWEEP and sweep_summary.is_file():
        path = _sql_str(sweep_summary.resolve().as_posix())
        columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {path}").fetchall()]
        if "run_id" in columns:
            select = f"SELECT * FROM {path}"
        else:
            # The run folder's name, whether run_dir is written with / or \ separators.
            select = (
                "SELECT CASE WHEN run_dir IS NULL THEN NULL ELSE "
                "regexp_extract(rtrim(replace(run_dir, '\\', '/'), '/'), '[^/]+$') END "
                f"AS run_id, * FROM {path}"
                if "run_dir" in columns
                else f"SELECT * FROM {path}"
            )
        con.execute(f"CREATE VIEW summary AS {select}")
    elif found.runs:
        frame = _summary_frame(found)
        con.register("_summary_frame", frame)
        con.execute("CREATE TABLE summary AS SELECT * FROM _summary_frame")
        con.unregister("_summary_frame")
    return con


def run_query(folder: str | Path, sql: str) -> pd.DataFrame:
    """Run one SQL query over a results folder and return its result as a DataFrame.

    Args:
        folder: See :func:`open_results`.
        sql: The query; it sees the views of :func:`open_results`.

    Returns:
        The result.

    Raises:
        QueryError: If the folder cannot be opened or DuckDB rejects the query (with
            DuckDB's message).
    """
    con = open_results(folder)
    try:
        relation = con.sql(sql)
        if relation is None:  # a statement without a result (CREATE, SET, ...)
            return pd.DataFrame()
        return relation.df()
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from exc
    finally:
        con.close()


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if hasattr(value, "item"):  # numpy scalars
        return _json_value(value.item())
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (str, int, bool)):
        return value
    return str(value)


def format_result(frame: pd.DataFrame, fmt: str = "table") -> str:
    """Render a query result as an aligned table, CSV or JSON.

    Args:
        frame: The result.
        fmt: ``"table"`` (aligned columns, numbers right-aligned, a row count below),
            ``"csv"`` (header and full-precision values) or ``"json"`` (a list of objects,
            NaN and NULL as ``null``).

    Returns:
        The text, ending with a newline.

    Raises:
        ValueError: If ``fmt`` is not one of the three.
    """
    if fmt == "csv":
        return frame.to_csv(index=False, lineterminator="\n")
    if fmt == "json":
        records = [
            {str(col): _json_value(val) for col, val in zip(frame.columns, row, strict=True)}
            for row in frame.itertuples(index=False, name=None)
        ]
        return json.dumps(records, indent=2) + "\n"
    if fmt != "table":
        raise ValueError(f"format must be one of table, csv, json; got {fmt!r}")
    n = len(frame)
    footer = f"({n:,} row{'s' if n != 1 else ''})\n"
    if frame.shape[1] == 0:
        return footer
    columns = []
    for name in frame.columns:
        series = frame[name]
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        cells = [str(name), *(_cell(v) for v in series.tolist())]
        width = max(len(c) for c in cells)
        columns.append([c.rjust(width) if numeric else c.ljust(width) for c in cells])
    lines = ["  ".join(row).rstrip() for row in zip(*columns, strict=True)]
    return "\n".join(lines) + "\n" + footer


def _cell(value: Any) -> str:
    value = _json_value(value)
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)
