"""Parameter sweeps: a TOML spec, its design points, and running them with resume.

A sweep spec names a base scenario, the parameters to vary (by dotted path), a design, the
number of replicates and a master seed. :func:`load_sweep` validates it and
:func:`plan_sweep` builds the scenario of every run up front, so a bad spec is refused before
anything runs. :func:`run_sweep` runs the missing runs on an executor
(:mod:`marginsim.experiments.executors`), writes each run as it finishes, and keeps the
sweep's summary table up to date.

Seeds: replicate ``i`` of design point ``p`` runs with ``run.seed = master_seed`` and
``run.spawn_key = [p, i]``, i.e. from ``SeedSequence(master_seed, spawn_key=(p, i))``. The
key is part of the run's scenario, so the run is replayable alone with the command stored in
the summary's ``replay`` column, and its run id (a hash of the resolved scenario) is the same
wherever and whenever it runs: that is how a restarted sweep recognises finished runs.

Folder of a sweep ``OUT/<name>/``::

    sweep.toml          the resolved spec (base as a built-in name or an absolute path)
    summary.parquet     one row per run (see SUMMARY_COLUMNS), rewritten atomically
    runs/<run_id>/      each finished run (a normal run folder; summary files only with
                        keep_runs = "summary")
    failures/<run_id>.json   error, traceback and parameters of each failed run
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import itertools
import json
import logging
import os
import shlex
import shutil
import time
import tomllib
import traceback
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm.auto import tqdm

from marginsim.config import ProblemsError, Scenario, ScenarioError
from marginsim.experiments.runner import run
from marginsim.experiments.store import run_id, write_run

__all__ = [
    "DESIGN_KINDS",
    "SUMMARY_COLUMNS",
    "DesignConfig",
    "ParameterConfig",
    "RunPlan",
    "RunTask",
    "SweepError",
    "SweepOutcome",
    "SweepSpec",
    "design_matrix",
    "execute_run",
    "load_summary",
    "load_sweep",
    "plan_sweep",
    "replay_command",
    "run_sweep",
]

logger = logging.getLogger(__name__)

DESIGN_KINDS = ("grid", "zip", "lhs", "sobol_sequence", "sobol", "morris")

#: Leading columns of ``summary.parquet``; then one per varied parameter (its dotted path),
#: then the run's summary keys (:func:`marginsim.experiments.runner.summarize`).
SUMMARY_COLUMNS = (
    "point",
    "replicate",
    "seed",
    "status",
    "error",
    "run_id",
    "run_dir",
    "replay",
)

#: Spawn-key word of the design's own random stream (samplers), apart from every run's
#: two-word key ``(point, replicate)``.
_DESIGN_STREAM = (2**32 - 1,)


class SweepError(ProblemsError):
    """A sweep spec is invalid; ``problems`` lists every error as ``(field, message)``."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ParameterConfig(_Frozen):
    """One varied parameter.

    Attributes:
        path: Dotted scenario path, as for ``--set`` (``protocols.aave.reserves.WETH.ltv``).
        values: The values, for ``grid`` and ``zip`` designs (any TOML values).
        low: Lower end of the range, for ``lhs``, ``sobol_sequence``, ``sobol``, ``morris``.
        high: Upper end of the range (``> low``).
        integer: Round sampled values to the nearest integer (for integer fields such as
            ``agents.noise.count``).
    """

    path: str = Field(min_length=1)
    values: list[Any] | None = None
    low: float | None = Field(default=None, allow_inf_nan=False)
    high: float | None = Field(default=None, allow_inf_nan=False)
    integer: bool = False


class DesignConfig(_Frozen):
    """How design points are chosen.

    Attributes:
        kind: ``grid`` (Cartesian product of ``values``, last parameter fastest), ``zip``
            (the k-th values together), ``lhs`` (Latin hypercube, ``points`` points),
            ``sobol_sequence`` (scrambled Sobol' points), ``sobol`` (Saltelli's design for
            Sobol' indices: ``points * (D + 2)`` points, ``points * (2D + 2)`` with
            ``second_order``), ``morris`` (``points`` trajectories of ``D + 1`` points on a
            ``levels`` grid).
        points: Number of points (``lhs``, ``sobol_sequence``), base samples (``sobol``; a
            power of 2) or trajectories (``morris``).
        levels: Grid levels of a Morris design (even, >= 2).
        second_order: Also sample for second-order Sobol' indices.
    """

    kind: Literal["grid", "zip", "lhs", "sobol_sequence", "sobol", "morris"] = "grid"
    points: int | None = Field(default=None, ge=1, le=1_000_000)
    levels: int = Field(default=4, ge=2, le=1000)
    second_order: bool = False


class SweepSpec(_Frozen):
    """A validated sweep specification (see docs/sweeps.md).

    Attributes:
        name: Folder name of the sweep under the output root.
        description: Free text.
        base: A built-in scenario name or a scenario file (relative paths: relative to the
            sweep file).
        overrides: Dotted-path overrides applied to every run (e.g. ``"run.steps" = 200``).
        parameters: The varied parameters, in order.
        design: The design.
        replicates: Runs per design point (each with its own seed).
        master_seed: Root of every run's seed.
        keep_runs: ``"all"`` keeps each run's full folder (metrics, events); ``"summary"``
            keeps only ``summary.json``, ``scenario.toml`` and ``manifest.json``.
        report_metrics: Summary columns the report plots (default: a standard set).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = ""
    base: str = Field(min_length=1)
    overrides: dict[str, Any] = Field(default_factory=dict)
    parameters: list[ParameterConfig] = Field(min_length=1)
    design: DesignConfig = DesignConfig()
    replicates: int = Field(default=1, ge=1, le=100_000)
    master_seed: int = Field(default=0, ge=0, lt=2**63)
    keep_runs: Literal["all", "summary"] = "all"
    report_metrics: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        problems: list[tuple[str, str]] = []
        kind = self.design.kind
        seen: set[str] = set()
        for k, p in enumerate(self.parameters):
            where = f"parameters[{k}]"
            if p.path in seen:
                problems.append((f"{where}.path", f"{p.path!r} is varied twice"))
            seen.add(p.path)
            if p.path in self.overrides:
                problems.append((f"{where}.path", f"{p.path!r} is also in overrides"))
            if kind in ("grid", "zip"):
                if p.values is None:
                    problems.append((f"{where}.values", f"required by design {kind!r}"))
                elif len(p.values) == 0:
                    problems.append((f"{where}.values", "empty: give at least one value"))
                if p.low is not None or p.high is not None:
                    problems.append((where, f"low/high are for ranges, not design {kind!r}"))
            else:
                if p.values is not None:
                    problems.append((f"{where}.values", f"not used by design {kind!r}"))
                if p.low is None or p.high is None:
                    problems.append((where, f"low and high are required by design {kind!r}"))
                elif not p.low < p.high:
                    problems.append(
                        (where, f"empty range: low must be < high; got [{p.low}, {p.high}]")
                    )
        if kind == "zip":
            lengths = {len(p.values) for p in self.parameters if p.values}
            if len(lengths) > 1:
                problems.append(("parameters", f"zip needs equal-length values; got {lengths}"))
        if kind in ("lhs", "sobol_sequence", "sobol", "morris") and self.design.points is None:
            problems.append(("design.points", f"required by design {kind!r}"))
        if kind in ("sobol", "sobol_sequence") and self.design.points is not None:
            n = self.design.points
            if n & (n - 1):
                problems.append(("design.points", f"must be a power of 2 for {kind!r}; got {n}"))
        if kind == "morris" and self.design.levels % 2:
            problems.append(("design.levels", f"must be even; got {self.design.levels}"))
        if kind in ("sobol", "morris") and len(self.parameters) < 2:
            problems.append(("parameters", f"design {kind!r} needs at least 2 parameters"))
        if problems:
            raise _SpecProblems(problems)
        return self

    def to_toml(self) -> str:
        """The spec as TOML, every default written out."""
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))

    @property
    def paths(self) -> list[str]:
        """Dotted paths of the varied parameters, in order."""
        return [p.path for p in self.parameters]


class _SpecProblems(ValueError):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


def _validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _SpecProblems):
            problems.extend(ctx_error.problems)
            continue
        field = ""
        for part in err["loc"]:
            field += f"[{part}]" if isinstance(part, int) else ("." if field else "") + str(part)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (not part of the sweep format)"
        elif err["type"] != "missing" and not isinstance(err["input"], dict | list):
            message = f"{message}; got {err['input']!r}"
        problems.append((field or "<sweep>", message))
    return problems


def builtin_sweeps() -> dict[str, Path]:
    """The example sweeps shipped with the package (``marginsim/experiments/sweeps``), by name.

    The name is the file's stem; ``marginsim sweep NAME`` and :func:`load_sweep` accept it
    wherever no file of that name exists.
    """
    folder = Path(__file__).with_name("sweeps")
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def load_sweep(
    source: str | Path | Mapping[str, Any], *, base_dir: Path | None = None
) -> SweepSpec:
    """Read and validate a sweep spec (a TOML file, a built-in sweep's name, or a dict).

    A relative ``base`` that names a file is made absolute against the sweep file's folder
    (or ``base_dir``), so the resolved spec runs from anywhere.

    Raises:
        SweepError: Listing every problem with the spec itself (not yet its scenarios).
    """
    where = None
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        shipped = builtin_sweeps()
        if not path.exists() and str(source) in shipped:
            path = shipped[str(source)]
        where = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            hint = f" (built-in sweeps: {', '.join(shipped)})" if not path.exists() else ""
            raise SweepError(
                [("<file>", f"cannot read {path}: {exc.strerror}{hint}")], where
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise SweepError([("<toml>", f"not valid TOML: {exc}")], where) from None
        base_dir = path.resolve().parent if base_dir is None else base_dir
    try:
        spec = SweepSpec(**data)
    except ValidationError as exc:
        raise SweepError(_validation_problems(exc), where) from None
    from marginsim.experiments.scenarios import builtin_scenarios

    if spec.base not in builtin_scenarios():
        base_path = Path(spec.base)
        if not base_path.is_absolute() and base_dir is not None:
            base_path = base_dir / base_path
        spec = spec.model_copy(update={"base": str(base_path.resolve())})
    return spec


def _unit_to_range(unit: np.ndarray, spec: SweepSpec) -> np.ndarray:
    low = np.array([p.low for p in spec.parameters], dtype=np.float64)
    high = np.array([p.high for p in spec.parameters], dtype=np.float64)
    return low + unit * (high - low)


def _salib_problem(spec: SweepSpec) -> dict[str, Any]:
    return {
        "num_vars": len(spec.parameters),
        "names": spec.paths,
        "bounds": [[p.low, p.high] for p in spec.parameters],
    }


def _qmc(cls: Any, d: int, seed_seq: np.random.SeedSequence, **kwargs: Any) -> Any:
    # SciPy >= 1.15 names the generator argument ``rng``; older releases call it ``seed``.
    generator = np.random.default_rng(seed_seq)
    try:
        return cls(d=d, rng=generator, **kwargs)
    except TypeError:
        return cls(d=d, seed=generator, **kwargs)


def design_matrix(spec: SweepSpec) -> np.ndarray:
    """The raw design of a range-based sweep: one row per point, one column per parameter.

    Before ``integer`` rounding; it is the ``X`` of the sensitivity analysis. The samplers
    draw from ``SeedSequence(master_seed, spawn_key=(2**32 - 1,))``, a stream no run uses.

    Raises:
        ValueError: For ``grid`` and ``zip`` designs (they have no ranges).
    """
    kind, d = spec.design.kind, len(spec.parameters)
    seed_seq = np.random.SeedSequence(spec.master_seed, spawn_key=_DESIGN_STREAM)
    # SALib takes an int seed: a 32-bit word of the design stream.
    salib_seed = int(seed_seq.generate_state(1)[0])
    n = spec.design.points or 0
    if kind == "lhs":
        from scipy.stats import qmc

        return _unit_to_range(_qmc(qmc.LatinHypercube, d, seed_seq).random(n), spec)
    if kind == "sobol_sequence":
        from scipy.stats import qmc

        sampler = _qmc(qmc.Sobol, d, seed_seq, scramble=True)
        return _unit_to_range(sampler.random(n), spec)
    if kind == "sobol":
        from SALib.sample import sobol

        return sobol.sample(
            _salib_problem(spec),
            n,
            calc_second_order=spec.design.second_order,
            scramble=True,
            seed=salib_seed,
        )
    if kind == "morris":
        from SALib.sample import morris

        return morris.sample(
            _salib_problem(spec), n, num_levels=spec.design.levels, seed=salib_seed
        )
    raise ValueError(f"design {kind!r} has no range matrix")


def _python(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def design_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The parameter values of every design point, in point order.

    ``grid``: the Cartesian product of the ``values`` lists, the last parameter varying
    fastest; ``zip``: the k-th values of every list; range designs: the rows of
    :func:`design_matrix`, rounded where ``integer`` is set.
    """
    paths = spec.paths
    if spec.design.kind == "grid":
        rows = itertools.product(*[p.values or [] for p in spec.parameters])
        return [dict(zip(paths, map(_python, row), strict=True)) for row in rows]
    if spec.design.kind == "zip":
        columns = [p.values or [] for p in spec.parameters]
        return [
            dict(zip(paths, map(_python, row), strict=True)) for row in zip(*columns, strict=True)
        ]
    matrix = design_matrix(spec)
    points = []
    for row in matrix:
        point = {}
        for p, value in zip(spec.parameters, row, strict=True):
            point[p.path] = int(round(float(value))) if p.integer else float(value)
        points.append(point)
    return points


def _toml_value(value: Any) -> str:
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def replay_command(
    base: str,
    master_seed: int,
    point: int,
    replicate: int,
    overrides: Mapping[str, Any],
    experiment: str,
) -> str:
    """The ``marginsim run`` command that replays one sweep run alone (same run id)."""
    parts = ["marginsim", "run", base, "--seed", str(master_seed)]
    parts += ["--set", f"run.spawn_key=[{point}, {replicate}]"]
    for key, value in overrides.items():
        parts += ["--set", f"{key}={_toml_value(value)}"]
    parts += ["--experiment", experiment]
    return shlex.join(parts)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One run of a sweep.

    Attributes:
        point: Design point (0-based).
        replicate: Replicate of the point (0-based).
        params: The varied parameters' values, by dotted path.
        scenario: The run's resolved scenario (seed and spawn key included).
        run_id: Its run id (folder name under ``runs/``).
        replay: Command that replays it alone.
    """

    point: int
    replicate: int
    params: dict[str, Any]
    scenario: Scenario
    run_id: str
    replay: str


def plan_sweep(spec: SweepSpec, *, max_problems: int = 20) -> list[RunPlan]:
    """Every run of the sweep, with its scenario built and validated.

    Raises:
        SweepError: If the base scenario is invalid, a parameter path does not exist, or
            any design point's value is rejected by the scenario; nothing has run yet.
    """
    from marginsim.experiments.scenarios import load_scenario

    try:
        base = load_scenario(spec.base)
    except ScenarioError as exc:
        raise SweepError(
            [
                ("base", f"{spec.base!r}: {m}" if f == "<scenario>" else f"{f}: {m}")
                for f, m in exc.problems
            ]
        ) from None
    try:
        base = base.with_overrides(spec.overrides) if spec.overrides else base
    except ScenarioError as exc:
        raise SweepError(
            [
                (f"overrides.{f}" if f in spec.overrides else f"overrides: {f}", m)
                for f, m in exc.problems
            ]
        ) from None
    points = design_points(spec)
    problems: list[tuple[str, str]] = []
    # Each path alone first (with the first point's value): an unknown path is then named
    # once, not once per design point.
    for k, p in enumerate(spec.parameters):
        try:
            base.with_overrides({p.path: points[0][p.path]})
        except ScenarioError as exc:
            problems += [(f"parameters[{k}] ({p.path})", f"{f}: {m}") for f, m in exc.problems]
    if problems:
        raise SweepError(problems)
    plans: list[RunPlan] = []
    bad = 0
    for index, point in enumerate(points):
        try:
            scenario = base.with_overrides(
                {**point, "run.seed": spec.master_seed, "run.spawn_key": [index, 0]}
            )
        except ScenarioError as exc:
            bad += 1
            if len(problems) < max_problems:
                values = ", ".join(f"{k}={v!r}" for k, v in point.items())
                for f, m in exc.problems:
                    problems.append((f"point {index} ({values})", f"{f}: {m}"))
            continue
        overrides = {**spec.overrides, **point}
        for replicate in range(spec.replicates):
            rep = (
                scenario
                if replicate == 0
                else scenario.model_copy(
                    update={
                        "run": scenario.run.model_copy(update={"spawn_key": (index, replicate)})
                    }
                )
            )
            plans.append(
                RunPlan(
                    point=index,
                    replicate=replicate,
                    params=point,
                    scenario=rep,
                    run_id=run_id(rep),
                    replay=replay_command(
                        spec.base, spec.master_seed, index, replicate, overrides, spec.name
                    ),
                )
            )
    if problems:
        if bad > max_problems:
            problems.append(("<design>", f"{bad} design points rejected in all"))
        raise SweepError(problems)
    return plans


@dataclasses.dataclass(frozen=True)
class RunTask:
    """What a worker needs for one run (picklable).

    Attributes:
        scenario: The run's resolved scenario.
        sweep_dir: Absolute path of the sweep folder (workers may run in another folder).
        keep_runs: ``"all"`` or ``"summary"`` (see :class:`SweepSpec`).
    """

    scenario: Scenario
    sweep_dir: str
    keep_runs: str


def _release_models(scenario: Scenario) -> None:
    """Drop this run's model from Mesa's class-level registry so it can be freed.

    Mesa 3.3.1 keys ``Agent._ids`` by model and never removes entries; in a long-lived
    worker (Dask) every finished model would stay alive. Only models of this scenario object
    are removed, so concurrent runs in other threads keep their counters.
    """
    try:
        from mesa import Agent
    except ImportError:  # pragma: no cover - mesa is a dependency
        return
    registry = getattr(Agent, "_ids", None)
    if not isinstance(registry, dict):
        return
    for model in list(registry):
        if getattr(model, "scenario", None) is scenario:
            registry.pop(model, None)


def _write_summary_only(
    scenario: Scenario, summary: dict[str, Any], wall: float, sweep_dir: Path
) -> Path:
    from marginsim.experiments.store import _json

    parent = sweep_dir / "runs"
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / run_id(scenario)
    tmp = parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    (tmp / "scenario.toml").write_text(scenario.to_toml(), encoding="utf-8")
    (tmp / "summary.json").write_text(_json(summary), encoding="utf-8")
    (tmp / "manifest.json").write_text(
        _json(
            {
                "scenario": scenario.name,
                "seed": scenario.run.seed,
                "wall_seconds": round(wall, 3),
                "keep_runs": "summary",
            }
        ),
        encoding="utf-8",
    )
    if final.exists():  # the same run stored by an earlier attempt: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = f"{record.levelname.lower()}: {record.getMessage()}"
        if message not in self.messages:
            self.messages.append(message)


def execute_run(task: RunTask) -> dict[str, Any]:
    """Run one sweep run and write it; never raises for a failing simulation.

    Runs in a worker. Returns ``{"status": "ok", "run_dir": ..., "warnings": [...]}`` or
    ``{"status": "failed", "error": ..., "traceback": ..., "warnings": [...]}``. Warnings
    that marginsim logs during the run are collected instead of printed, so that the driver
    can report each distinct one once rather than once per run over the progress bar.
    """
    package_logger = logging.getLogger("marginsim")
    collect, propagate = _Collect(), package_logger.propagate
    package_logger.addHandler(collect)
    package_logger.propagate = False
    try:
        try:
            result = run(task.scenario)
        finally:
            _release_models(task.scenario)
        if task.keep_runs == "all":
            folder = write_run(result, task.sweep_dir, "runs")
        else:
            folder = _write_summary_only(
                task.scenario, result.summary, result.wall_seconds, Path(task.sweep_dir)
            )
    except Exception as exc:  # noqa: BLE001 - recorded in the sweep, the others go on
        return {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "warnings": collect.messages,
        }
    finally:
        package_logger.removeHandler(collect)
        package_logger.propagate = propagate
    return {"status": "ok", "run_dir": str(folder), "warnings": collect.messages}


@dataclasses.dataclass(frozen=True)
class SweepOutcome:
    """What :func:`run_sweep` did.

    Attributes:
        folder: The sweep's folder.
        summary: The summary table (as in ``summary.parquet``).
        computed: Runs computed by this call.
        skipped: Runs found finished on disk and not recomputed.
        failed: Runs whose status is ``failed`` at the end.
    """

    folder: Path
    summary: pd.DataFrame
    computed: int
    skipped: int
    failed: int


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _read_summary(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _row(
    plan: RunPlan,
    spec: SweepSpec,
    status: str,
    error: str | None,
    summary: Mapping[str, Any] | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "point": plan.point,
        "replicate": plan.replicate,
        "seed": spec.master_seed,
        "status": status,
        "error": error,
        "run_id": plan.run_id,
        "run_dir": f"runs/{plan.run_id}" if status == "ok" else None,
        "replay": plan.replay,
    }
    row.update(plan.params)
    for key, value in (summary or {}).items():
        if key not in row:
            row[key] = value
    return row


def _write_table(rows: Sequence[dict[str, Any]], path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Fixed columns and parameters first (every row has them), then summary keys in the
    # order of the first row that has them.
    columns = list(rows[0]) if rows else []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return table.to_pandas()


def load_summary(folder: str | Path) -> pd.DataFrame:
    """A sweep's ``summary.parquet`` as a DataFrame."""
    return pd.read_parquet(Path(folder) / "summary.parquet")


def run_sweep(
    spec: SweepSpec | str | Path,
    out: str | Path = "results",
    *,
    executor: cf.Executor | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool | None = None,
    plans: Sequence[RunPlan] | None = None,
) -> SweepOutcome:
    """Run every missing run of a sweep and write its summary table.

    Runs already stored under ``OUT/<name>/runs/`` are not run again; failed runs are
    retried. Each run is written by its worker as it finishes; ``summary.parquet`` is
    rewritten (atomically) as results arrive, at most every two seconds, and at the end.

    Args:
        spec: The spec or the path of a sweep file.
        out: Output root; the sweep writes into ``out/<name>/``.
        executor: A ``concurrent.futures`` executor to use (not shut down here); by default
            one from :func:`marginsim.experiments.executors.make_executor`.
        workers: Worker processes of the default executor.
        scheduler: Dask scheduler of the default executor (``"local"`` or an address).
        progress: Progress bar (``None``: only on a terminal).
        plans: ``plan_sweep(spec)`` when the caller has it already (it is not rebuilt).

    Returns:
        A :class:`SweepOutcome`.

    Raises:
        SweepError: The spec is invalid, or ``out/<name>`` holds a different sweep.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    plans = list(plan_sweep(spec) if plans is None else plans)
    folder = Path(out) / spec.name
    resolved = spec.to_toml()
    spec_file = folder / "sweep.toml"
    if spec_file.exists() and spec_file.read_text(encoding="utf-8") != resolved:
        raise SweepError(
            [
                (
                    "name",
                    f"{folder} holds a different sweep named {spec.name!r}; "
                    "rename the sweep or use another --out",
                )
            ]
        )
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    (folder / "failures").mkdir(exist_ok=True)
    # Half-written runs of an interrupted attempt (never renamed into place) are garbage.
    for stale in (folder / "runs").glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    _atomic_write_text(spec_file, resolved)

    rows: list[dict[str, Any]] = []
    todo: list[int] = []
    for k, plan in enumerate(plans):
        summary = _read_summary(folder / "runs" / plan.run_id)
        if summary is not None:
            rows.append(_row(plan, spec, "ok", None, summary))
        else:
            rows.append(_row(plan, spec, "pending", None, None))
            todo.append(k)
    summary_path = folder / "summary.parquet"
    _write_table(rows, summary_path)
    skipped = len(plans) - len(todo)
    failed = 0
    if todo:
        own = executor is None
        if own:
            from marginsim.experiments.executors import make_executor

            executor = make_executor(workers, scheduler)
        assert executor is not None
        futures: dict[cf.Future, int] = {}
        disable = None if progress is None else not progress
        last_write = time.monotonic()
        warned: dict[str, int] = {}
        try:
            for k in todo:
                task = RunTask(plans[k].scenario, str(folder.resolve()), spec.keep_runs)
                futures[executor.submit(execute_run, task)] = k
            with tqdm(
                total=len(plans),
                initial=skipped,
                disable=disable,
                unit="run",
                desc=spec.name,
                smoothing=0.1,
            ) as bar:
                for future in cf.as_completed(futures):
                    k = futures[future]
                    plan = plans[k]
                    try:
                        outcome = future.result()
                    except Exception as exc:  # noqa: BLE001 - the executor lost the run
                        trace = getattr(exc, "remote_traceback", None) or traceback.format_exc()
                        outcome = {
                            "status": "failed",
                            "error": f"{type(exc).__name__}: {exc}",
                            "traceback": trace,
                        }
                    for message in outcome.get("warnings", ()):
                        warned[message] = warned.get(message, 0) + 1
                    failure_file = folder / "failures" / f"{plan.run_id}.json"
                    if outcome["status"] == "ok":
                        rows[k] = _row(
                            plan, spec, "ok", None, _read_summary(folder / "runs" / plan.run_id)
                        )
                        failure_file.unlink(missing_ok=True)
                    else:
                        failed += 1
                        rows[k] = _row(plan, spec, "failed", outcome["error"], None)
                        _atomic_write_text(
                            failure_file,
                            json.dumps(
                                {
                                    "point": plan.point,
                                    "replicate": plan.replicate,
                                    "run_id": plan.run_id,
                                    "parameters": plan.params,
                                    "error": outcome["error"],
                                    "traceback": outcome["traceback"],
                                    "replay": plan.replay,
                                },
                                indent=2,
                            )
                            + "\n",
                        )
                    bar.update(1)
                    bar.set_postfix(failed=failed, refresh=False)
                    if time.monotonic() - last_write >= 2.0:
                        _write_table(rows, summary_path)
                        last_write = time.monotonic()
        except BaseException:
            # Interrupted: finished runs are on disk already; record what is known.
            if own:
                executor.shutdown(wait=False, cancel_futures=True)
            _write_table(rows, summary_path)
            raise
        if own:
            executor.shutdown(wait=True)
        for message, count in warned.items():
            logger.warning("%s (in %d of %d runs)", message, count, len(todo))
    table = _write_table(rows, summary_path)
    return SweepOutcome(folder, table, len(todo), skipped, int((table["status"] == "failed").sum()))
