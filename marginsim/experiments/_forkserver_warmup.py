"""Fork-server preload that warms numba's kernels once, for every run forked from the server.

Importing this module has a side effect, on purpose and only here: it runs two steps of the
built-in ``default`` scenario (which has a spot book, an AMM, a lending pool, a CDP and a perp
venue), so that the numba kernels are loaded from their on-disk cache once in the fork server
instead of once in every run's fresh process (about 0.3-0.5 s per run on a 2-core machine,
against about 0.9 s for a 200-step run). A Python fork server can only import its preload
modules, which is why the warm-up runs at import. Nothing else imports this module.

The warm-up model is removed from Mesa's model registry afterwards. Runs compute the same
results with or without the warm-up (kernels are pure functions); the sweep tests compare
local runs with runs on Dask workers, which are not warmed. A failing warm-up is logged and
ignored: runs then load their kernels themselves.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def warm_up(scenario_name: str = "default", steps: int = 2) -> bool:
    """Run ``steps`` steps of a built-in scenario and forget the model; True on success."""
    try:
        from marginsim.experiments.runner import run
        from marginsim.experiments.scenarios import load_scenario
        from marginsim.experiments.sweep import _release_models

        scenario = load_scenario(scenario_name).with_overrides({"run.steps": steps})
        # The built-in scenario's shocks lie beyond two steps; its warning is noise here.
        model_logger = logging.getLogger("marginsim.model")
        level = model_logger.level
        model_logger.setLevel(logging.ERROR)
        try:
            run(scenario)
        finally:
            model_logger.setLevel(level)
            _release_models(scenario)
    except Exception:  # noqa: BLE001 - an optimisation only; runs work without it
        logger.warning(
            "fork-server warm-up failed; runs will load kernels themselves", exc_info=True
        )
        return False
    return True


warm_up()
