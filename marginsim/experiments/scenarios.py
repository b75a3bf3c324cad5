"""Built-in scenarios: TOML files shipped in ``marginsim/experiments/scenarios/``."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from marginsim.config import Scenario, ScenarioError

__all__ = ["builtin_scenarios", "load_scenario"]


def _files() -> dict[str, resources.abc.Traversable]:
    folder = resources.files("marginsim.experiments") / "scenarios"
    return {
        f.name.removesuffix(".toml"): f
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".toml")
    }


def builtin_scenarios() -> dict[str, str]:
    """Names of the built-in scenarios with their one-line descriptions, sorted by name."""
    out = {}
    for name, f in _files().items():
        description = str(tomllib.loads(f.read_text(encoding="utf-8")).get("description", ""))
        out[name] = next(iter(description.strip().splitlines()), "")
    return out


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name, or a scenario file by path.

    A string that names a built-in scenario loads it; anything else is read as a path.

    Raises:
        ScenarioError: If the name is unknown and no such file exists, or it is invalid.
    """
    files = _files()
    key = str(name_or_path)
    if key in files:
        return Scenario.from_toml_str(files[key].read_text(encoding="utf-8"), f"built-in {key}")
    path = Path(name_or_path)
    if not path.exists():
        raise ScenarioError(
            [
                (
                    "<scenario>",
                    f"{key!r} is neither a built-in scenario ({', '.join(files)}) "
                    "nor an existing file",
                )
            ]
        )
    return Scenario.from_toml(path)
