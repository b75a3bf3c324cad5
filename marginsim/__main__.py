"""Command line: ``marginsim run|scenarios|validate|study|sweep|report|query``.

Exit codes: 0 success; 2 bad input (invalid scenario, bad ``--set``, unknown scenario name,
missing file), with a short message and no traceback; 1 internal failure or an invariant
violated under ``--check-invariants``, with the traceback saved next to the results.
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from marginsim.config import Scenario, ScenarioError, parse_override_value

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def _fail_input(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            _fail_input(f"--set expects dotted.key=value, got {pair!r}")
        overrides[key.strip()] = parse_override_value(value.strip())
    return overrides


def _load(name_or_path: str, overrides: dict[str, Any]) -> Scenario:
    from marginsim.experiments.scenarios import load_scenario

    try:
        scenario = load_scenario(name_or_path)
        return scenario.with_overrides(overrides) if overrides else scenario
    except ScenarioError as exc:
        _fail_input(str(exc))
        raise  # unreachable: _fail_input exits


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.6g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value) if value != "" else "-"  # e.g. no default_order: nothing defaulted


#: ``--progress/--no-progress`` of every command that runs simulations.
_progress_option = click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal)."
)


def _out_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--out DIR`` (default ``results``), with the command's own help text."""
    return click.option(
        "--out",
        "out_dir",
        default="results",
        show_default=True,
        type=click.Path(file_okay=False),
        help=help_text,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="marginsim")
def cli() -> None:
    """marginsim: agent-based simulation of margin debt and liquidation cascades."""


@cli.command("run")
@click.argument("scenario")
@click.option("--seed", type=click.IntRange(min=0), help="Replace the scenario's seed.")
@click.option("--steps", type=click.IntRange(min=1), help="Replace the number of steps.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a dotted scenario field, e.g. --set agents.noise.count=500. "
    'Repeatable; values are TOML (0.8, true, "text").',
)
@_out_option("Root folder of the results store.")
@click.option("--experiment", default=None, help="Results sub-folder (default: scenario name).")
@click.option(
    "--check-invariants",
    is_flag=True,
    help="Check ledger conservation and book invariants after every step; exit 1 "
    "on the first violation.",
)
@_progress_option
@click.option(
    "--report/--no-report",
    default=True,
    show_default=True,
    help="Build the run's HTML report (report.html in the run folder) after storing it.",
)
def run_command(
    scenario: str,
    seed: int | None,
    steps: int | None,
    sets: tuple[str, ...],
    out_dir: str,
    experiment: str | None,
    check_invariants: bool,
    progress: bool | None,
    report: bool,
) -> None:
    """Run SCENARIO (a built-in name or a TOML file) and store its results."""
    overrides = _parse_sets(sets)
    if seed is not None:
        overrides["run.seed"] = seed
    if steps is not None:
        overrides["run.steps"] = steps
    sc = _load(scenario, overrides)

    from marginsim.experiments.runner import run
    from marginsim.experiments.store import run_id, write_run
    from marginsim.model import InvariantViolation

    try:
        result = run(sc, check_invariants=check_invariants, progress=progress)
        folder = write_run(result, out_dir, experiment)
    except ScenarioError as exc:  # found while building the run (e.g. an unhealthy account)
        _fail_input(str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure gets a saved traceback
        parent = Path(out_dir) / (experiment or sc.name)
        parent.mkdir(parents=True, exist_ok=True)
        trace = parent / f"{run_id(sc)}.traceback.txt"
        trace.write_text(traceback.format_exc(), encoding="utf-8")
        kind = "invariant violated" if isinstance(exc, InvariantViolation) else "run failed"
        click.echo(f"error: {kind}: {exc}\ntraceback saved to {trace}", err=True)
        sys.exit(EXIT_FAILURE)
    width = max(len(k) for k in result.summary)
    click.echo(f"{sc.name}: {sc.run.steps} steps, seed {sc.run.seed}, {result.wall_seconds:.2f} s")
    for key, value in result.summary.items():
        click.echo(f"  {key:<{width}}  {_format_value(value)}")
    if report:  # before the results line, which stays last for scripts that read it
        _build_report_or_exit(Path(folder))
    click.echo(f"results: {folder}")


def _build_report_or_exit(folder: Path) -> None:
    """Build the report of a stored run or sweep and print its path and build time."""
    import time

    from marginsim.experiments.report import ReportError, ReportUnavailable, build_report

    started = time.perf_counter()
    try:
        path = build_report(folder)
    except ReportError as exc:
        _fail_input(str(exc))
    except ReportUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # noqa: BLE001 - every failure gets a saved traceback
        trace = folder / "report.traceback.txt" if folder.is_dir() else None
        if trace is not None:
            trace.write_text(traceback.format_exc(), encoding="utf-8")
        saved = f"\ntraceback saved to {trace}" if trace is not None else ""
        click.echo(f"error: report failed: {exc}{saved}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(f"report: {path} ({time.perf_counter() - started:.2f} s)")


@cli.command("scenarios")
def scenarios_command() -> None:
    """List the built-in scenarios."""
    from marginsim.experiments.scenarios import builtin_scenarios

    items = builtin_scenarios()
    width = max(len(n) for n in items)
    for name, description in items.items():
        click.echo(f"{name:<{width}}  {description}")


@cli.command("validate")
@click.argument("scenario")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Overrides to validate along with the file.",
)
@click.option("--show", is_flag=True, help="Print the resolved scenario as TOML.")
def validate_command(scenario: str, sets: tuple[str, ...], show: bool) -> None:
    """Check SCENARIO without running it (the run is built, so initial accounts are checked)."""
    sc = _load(scenario, _parse_sets(sets))
    from marginsim.model import MarginModel

    try:
        MarginModel(sc)  # places the initial accounts: an unhealthy one is bad input too
    except ScenarioError as exc:
        _fail_input(str(exc))
    if show:
        click.echo(sc.to_toml(), nl=False)
    else:
        click.echo(f"ok: {sc.name} ({sc.run.steps} steps, seed {sc.run.seed})")


@cli.command("study")
@click.argument("name", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the built-in studies and exit.")
@click.option("--quick", is_flag=True, help="Run the small version (fewer runs and steps).")
@_out_option("Root folder; the study writes into OUT/study-NAME/.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes for studies that run many simulations (default: all cores).",
)
@_progress_option
def study_command(
    name: str | None,
    list_only: bool,
    quick: bool,
    out_dir: str,
    workers: int | None,
    progress: bool | None,
) -> None:
    """Run the built-in study NAME (see --list) and write its tables and figures."""
    from marginsim.experiments.studies import builtin_studies, get_study

    if list_only or name is None:
        studies = builtin_studies()
        width = max(len(n) for n in studies)
        for study_name, study in studies.items():
            click.echo(f"{study_name:<{width}}  {study.description}")
        return
    try:
        study = get_study(name)
    except KeyError as exc:
        _fail_input(str(exc.args[0]))
        raise  # unreachable: _fail_input exits
    folder = Path(out_dir) / f"study-{name}" / ("quick" if quick else "full")
    try:
        main_output = study.load()(folder, quick=quick, workers=workers, progress=progress)
    except ScenarioError as exc:
        _fail_input(str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure gets a saved traceback
        folder.mkdir(parents=True, exist_ok=True)
        trace = folder / "traceback.txt"
        trace.write_text(traceback.format_exc(), encoding="utf-8")
        click.echo(f"error: study failed: {exc}\ntraceback saved to {trace}", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(f"{name}: done\nresults: {main_output}")


@cli.command("sweep")
@click.argument("spec_file", metavar="SWEEP", required=False)
@click.option("--list", "list_only", is_flag=True, help="List the example sweeps and exit.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Runs at once (local processes, or LocalCluster workers); default: all cores.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Run on Dask: 'local' starts a LocalCluster, tcp://host:port joins a running "
    "cluster (needs pip install 'marginsim[cluster]'). Default: local worker processes.",
)
@_out_option("Root folder; the sweep writes into OUT/<sweep name>/.")
@_progress_option
@click.option(
    "--report/--no-report",
    default=True,
    show_default=True,
    help="Write the sweep report (figures and report.html) at the end.",
)
def sweep_command(
    spec_file: str | None,
    list_only: bool,
    workers: int | None,
    scheduler: str | None,
    out_dir: str,
    progress: bool | None,
    report: bool,
) -> None:
    """Run the sweep SWEEP (a TOML file or an example's name, see --list).

    Running the same sweep again computes only the missing runs.

    Exit 0 when every run succeeded, 1 when some failed (their tracebacks are in
    OUT/<name>/failures/), 2 for a bad sweep file, 130 when interrupted.
    """
    from marginsim.experiments.executors import DaskUnavailableError, make_executor
    from marginsim.experiments.sweep import (
        SweepError,
        builtin_sweeps,
        load_sweep,
        plan_sweep,
        run_sweep,
    )

    if list_only or spec_file is None:
        for sweep_name, path in builtin_sweeps().items():
            description = load_sweep(path).description
            click.echo(f"{sweep_name:<14} {description}  ({path})")
        return

    try:
        spec = load_sweep(spec_file)
        plans = plan_sweep(spec)
    except SweepError as exc:
        _fail_input(str(exc))
        raise  # unreachable: _fail_input exits
    try:
        executor = make_executor(workers, scheduler)
    except (DaskUnavailableError, ValueError, OSError) as exc:
        _fail_input(str(exc))
        raise  # unreachable
    folder = Path(out_dir) / spec.name
    click.echo(f"{spec.name}: {len(plans)} runs ({spec.design.kind} design) -> {folder}", err=True)
    try:
        outcome = run_sweep(spec, out_dir, executor=executor, progress=progress, plans=plans)
    except SweepError as exc:
        executor.shutdown(wait=False, cancel_futures=True)
        _fail_input(str(exc))
    except KeyboardInterrupt:
        executor.shutdown(wait=False, cancel_futures=True)
        click.echo(
            f"interrupted: finished runs are stored in {folder}/runs; "
            "run the same command again to compute the missing ones",
            err=True,
        )
        sys.exit(130)
    executor.shutdown(wait=True)
    click.echo(
        f"{spec.name}: {outcome.computed} computed, {outcome.skipped} already stored, "
        f"{outcome.failed} failed"
    )
    if report:
        from marginsim.experiments.sweep_report import build_sweep_report

        try:
            click.echo(f"report: {build_sweep_report(outcome.folder)}")
        except Exception as exc:  # noqa: BLE001 - the runs are stored; say what failed
            click.echo(f"warning: report not written: {exc}", err=True)
    click.echo(f"summary: {outcome.folder / 'summary.parquet'}")
    if outcome.failed:
        click.echo(f"error: {outcome.failed} run(s) failed; see {folder / 'failures'}", err=True)
        sys.exit(EXIT_FAILURE)


@cli.command("report")
@click.argument("results_dir", type=click.Path(path_type=Path))
def report_command(results_dir: Path) -> None:
    """Build the HTML report of RESULTS_DIR (a run folder or a sweep folder).

    Writes report.html into the folder, figures embedded, and prints its path.
    """
    _build_report_or_exit(results_dir)


@cli.command("query")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
def query_command(results_dir: Path, sql: str, fmt: str) -> None:
    """Run SQL over RESULTS_DIR (a run, experiment or sweep folder) with DuckDB.

    Views: metrics, summary, runs and one per event table (trades, liquidations, ...);
    for an experiment or sweep folder each view starts with a run_id column. Bad SQL or a
    missing folder exits 2 with DuckDB's message. Example:
    marginsim query results/crash "select count(*) from liquidations"
    """
    from marginsim.experiments.query import QueryError, format_result, run_query

    try:
        frame = run_query(results_dir, sql)
    except QueryError as exc:
        _fail_input(str(exc))
        raise  # unreachable: _fail_input exits
    click.echo(format_result(frame, fmt), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="marginsim")


if __name__ == "__main__":
    main()
