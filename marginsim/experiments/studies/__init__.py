"""Built-in studies: experiments users run by name with ``marginsim study NAME``.

A study is a function ``run(out, *, quick, workers, progress) -> Path`` that runs whatever
simulations it needs, writes its tables (Parquet and CSV), figures (PNG) and an HTML or
Markdown summary into the folder ``out`` (created if missing), and returns the path of its
main output file. ``quick`` asks for a smaller version (fewer runs, fewer steps) that still
exercises every part of the study; tests run the quick versions.

Studies are registered below by module path, so that importing this package imports no
study (and none of their dependencies) until one is asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

__all__ = ["Study", "StudyRunner", "builtin_studies", "get_study"]


class StudyRunner(Protocol):
    """The signature every study's ``run`` function has."""

    def __call__(
        self, out: Path, *, quick: bool, workers: int | None, progress: bool | None
    ) -> Path:
        """Run the study, write its outputs into ``out`` and return its main output file."""
        ...


@dataclasses.dataclass(frozen=True)
class Study:
    """A built-in study.

    Attributes:
        name: The name users type (``marginsim study NAME``).
        description: One paragraph: the question the study answers and what it writes.
        target: ``"module:function"`` of its :class:`StudyRunner`.
    """

    name: str
    description: str
    target: str

    def load(self) -> StudyRunner:
        """Import and return the study's run function."""
        module, _, attr = self.target.partition(":")
        runner: Callable[..., Path] = getattr(importlib.import_module(module), attr)
        return runner


_STUDIES: tuple[Study, ...] = (
    Study(
        name="amplification",
        description=(
            "How much leverage deepens a crash: runs the `crash` scenario with and without "
            "its leveraged accounts (same seed, same shock) over several seeds and tabulates "
            "the price falls, their ratio and the liquidations (amplification.parquet/.csv)."
        ),
        target="marginsim.experiments.amplification:amplification_study",
    ),
    Study(
        name="contagion-window",
        description=(
            "How often and how far a loss at one lending protocol spreads through deposits "
            "between protocols, against the network's average degree: generated Erdos-Renyi "
            "networks, one protocol loses its external assets, Eisenberg-Noe clearing "
            "(contagion_window*.parquet/.csv, contagion_window.png, example_network.png)."
        ),
        target="marginsim.experiments.studies.contagion:contagion_window_study",
    ),
    Study(
        name="depeg-contagion",
        description=(
            "The `depeg` scenario with k = 0..4 lending pools accepting the failing "
            "stablecoin as collateral: DAI price, liquidations, bad debt and defaults per k "
            "(depeg_contagion.parquet/.csv, depeg_contagion.png)."
        ),
        target="marginsim.experiments.studies.contagion:depeg_contagion_study",
    ),
    Study(
        name="liquidation-designs",
        description=(
            "Which liquidation policy protects a protocol best: static, dynamic margin, "
            "gradual (TWAP and Dutch), predictive and circuit breaker on `crash`, "
            "`liquidation_hunt` and `depeg` with replicates, compared on bad debt, "
            "liquidation volume, accounts liquidated, drawdown, cascade length, the hunter's "
            "profit and protocol revenue (one table and figure per measure), plus a sweep "
            "of each policy's main parameter (report.md; docs/policies.md)."
        ),
        target="marginsim.experiments.studies.liquidation_designs:liquidation_designs_study",
    ),
)


def builtin_studies() -> dict[str, Study]:
    """The built-in studies by name, in the order ``marginsim study --list`` shows them."""
    return {study.name: study for study in _STUDIES}


def get_study(name: str) -> Study:
    """The built-in study called ``name``.

    Raises:
        KeyError: With the known names, if there is no such study.
    """
    studies = builtin_studies()
    if name not in studies:
        raise KeyError(f"unknown study {name!r}; built-in studies: {', '.join(studies)}")
    return studies[name]
