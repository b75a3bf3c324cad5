"""The public API of ``import marginsim``: every name in ``__all__`` resolves, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import marginsim
from marginsim.experiments import query, report, runner, scenarios, store, sweep


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("load_sweep", sweep),
        ("run_sweep", sweep),
        ("open_results", query),
        ("build_report", report),
        ("run", runner),
        ("RunResult", runner),
        ("load_scenario", scenarios),
        ("write_run", store),
    ],
)
def test_lazy_export_is_the_module_object(name: str, module: object) -> None:
    # The package attribute is the very function/class of its module, not a wrapper.
    assert name in marginsim.__all__
    assert getattr(marginsim, name) is getattr(module, name)


def test_every_name_in_all_imports() -> None:
    for name in marginsim.__all__:
        assert getattr(marginsim, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        marginsim.nope  # noqa: B018


def test_import_stays_light() -> None:
    # Lazy exports: importing the package must not import the sweep, query or report
    # modules (duckdb, SALib, matplotlib) until one of their names is used.
    code = (
        "import sys, marginsim\n"
        "mods = ['marginsim.experiments.sweep', 'marginsim.experiments.query',"
        " 'marginsim.experiments.report']\n"
        "print(sum(m in sys.modules for m in mods))\n"
        "from marginsim import load_sweep, run_sweep, open_results, build_report\n"
        "print(sum(m in sys.modules for m in mods))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["0", "3"]
