"""marginsim: an agent-based simulator of margin debt and leverage in crypto markets.

Examples:
    >>> import marginsim
    >>> scenario = marginsim.load_scenario("default")
    >>> result = marginsim.run(scenario.with_overrides({"run.steps": 5}))
    >>> sorted(result.events)[:5]
    ['auctions', 'bad_debt', 'flash_loans', 'holders', 'liquidations']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marginsim.config import Scenario, ScenarioError

__all__ = [
    "RunResult",
    "Scenario",
    "ScenarioError",
    "build_report",
    "load_scenario",
    "load_sweep",
    "open_results",
    "run",
    "run_sweep",
    "write_run",
]

if TYPE_CHECKING:
    from marginsim.experiments.query import open_results
    from marginsim.experiments.report import build_report
    from marginsim.experiments.runner import RunResult, run
    from marginsim.experiments.scenarios import load_scenario
    from marginsim.experiments.store import write_run
    from marginsim.experiments.sweep import load_sweep, run_sweep

_LAZY = {
    "RunResult": "marginsim.experiments.runner",
    "run": "marginsim.experiments.runner",
    "load_scenario": "marginsim.experiments.scenarios",
    "write_run": "marginsim.experiments.store",
    "load_sweep": "marginsim.experiments.sweep",
    "run_sweep": "marginsim.experiments.sweep",
    "open_results": "marginsim.experiments.query",
    "build_report": "marginsim.experiments.report",
}


def __getattr__(name: str) -> Any:
    # Lazy so that ``import marginsim`` stays light (no numba compilation, no Mesa).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'marginsim' has no attribute {name!r}")
