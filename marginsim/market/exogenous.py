"""Exogenous price drivers: the fundamental value / external index the market follows.

A driver generates the whole index path of a run in one call,
``driver.generate(n_steps, step_seconds, rng)``, returning ``n_steps + 1`` float64 values:
``path[0]`` is the value before the first step and ``path[t + 1]`` the value after step ``t``.
Random drivers draw only from the ``rng`` they are given (the model passes its ``exogenous``
stream), so a path is a pure function of the parameters and that stream.

Parameters are annualised: a step of ``step_seconds`` lasts ``dt = step_seconds / (365 *
86400)`` years. Every constructor validates its arguments and raises ``ValueError`` naming the
parameter, the rule and the value given.
"""

from __future__ import annotations

import abc
import inspect
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numba
import numpy as np

__all__ = [
    "DRIVERS",
    "GBM",
    "SECONDS_PER_YEAR",
    "ExogenousDriver",
    "Garch",
    "JumpDiffusion",
    "Replay",
    "ScriptedPath",
    "apply_fundamental_jumps",
    "make_driver",
]

#: Seconds in the 365-day year the annualised parameters refer to.
SECONDS_PER_YEAR = 365 * 86400


# ----------------------------------------------------------------------------- validation
def _param_error(owner: str, name: str, rule: str, value: object) -> ValueError:
    return ValueError(f"The {name!r} parameter of {owner} must be {rule}. Got {value!r} instead.")


def _is_real(x: object) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(
        x, bool | np.bool_
    )


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _finite(owner: str, name: str, value: object) -> float:
    if not _is_real(value) or not math.isfinite(value):
        raise _param_error(owner, name, "a finite float", value)
    return float(value)


def _at_least(owner: str, name: str, value: object, low: float, strict: bool) -> float:
    rule = f"a finite float {'>' if strict else '>='} {low:g}"
    if not _is_real(value) or not math.isfinite(value):
        raise _param_error(owner, name, rule, value)
    if value < low or (strict and value == low):
        raise _param_error(owner, name, rule, value)
    return float(value)


# ----------------------------------------------------------------------------- base class
class ExogenousDriver(abc.ABC):
    """A model of the exogenous index that generates a whole path at once.

    Subclasses implement :meth:`_generate`; :meth:`generate` validates the step grid and the
    result.
    """

    #: The name :func:`make_driver` knows the driver by.
    model: ClassVar[str]
    #: Whether the driver draws random numbers (then ``rng`` is required).
    random: ClassVar[bool] = True

    def generate(
        self, n_steps: int, step_seconds: float, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """The index path over ``n_steps`` steps of ``step_seconds`` each.

        Args:
            n_steps: Number of steps (>= 0).
            step_seconds: Length of a step in seconds (> 0).
            rng: The generator to draw from; the only source of randomness. Drivers without
                randomness (``path``, ``replay``) accept ``None``.

        Returns:
            float64 array of ``n_steps + 1`` positive finite values, ``path[0]`` the initial
            value.

        Raises:
            ValueError: If an argument is invalid, or the path overflows or leaves (0, inf).
        """
        owner = f"{type(self).__name__}.generate"
        if not _is_int(n_steps) or n_steps < 0:
            raise _param_error(owner, "n_steps", "an int >= 0", n_steps)
        step_seconds = _at_least(owner, "step_seconds", step_seconds, 0.0, strict=True)
        if self.random and not isinstance(rng, np.random.Generator):
            raise _param_error(owner, "rng", "a numpy.random.Generator", rng)
        path = self._generate(int(n_steps), step_seconds / SECONDS_PER_YEAR, rng)
        bad = np.flatnonzero(~(np.isfinite(path) & (path > 0)))
        if bad.size:
            # Only reachable with extreme parameters (volatility of hundreds per year).
            raise ValueError(
                f"{type(self).__name__} produced a non-positive or non-finite value "
                f"{path[bad[0]]!r} at step {int(bad[0])}; the parameters are too extreme for "
                f"float64"
            )
        return path

    @abc.abstractmethod
    def _generate(
        self, n_steps: int, dt: float, rng: np.random.Generator | None
    ) -> np.ndarray:  # pragma: no cover - abstract
        ...


def _path_from_log_returns(initial: float, log_returns: np.ndarray) -> np.ndarray:
    path = np.empty(log_returns.size + 1, dtype=np.float64)
    path[0] = initial
    with np.errstate(over="ignore"):  # an overflow is reported by generate, with its step
        path[1:] = initial * np.exp(np.cumsum(log_returns))
    return path


# ----------------------------------------------------------------------------- GBM
class GBM(ExogenousDriver):
    """Geometric Brownian motion, stepped exactly.

    Each step's log return is ``(drift - volatility**2 / 2) * dt + volatility * sqrt(dt) * Z``
    with ``Z`` standard normal, so ``E[S_t] = initial * exp(drift * t)`` with no
    discretisation error.

    Args:
        initial: Value at step 0 (> 0).
        drift: Annualised drift of the price (expected growth rate).
        volatility: Annualised volatility of log returns (>= 0).

    Examples:
        >>> GBM(2000.0, volatility=0.0).generate(3, 60.0, np.random.default_rng(0)).tolist()
        [2000.0, 2000.0, 2000.0, 2000.0]
    """

    model = "gbm"

    def __init__(self, initial: float, drift: float = 0.0, volatility: float = 0.8) -> None:
        owner = type(self).__name__
        self.initial = _at_least(owner, "initial", initial, 0.0, strict=True)
        self.drift = _finite(owner, "drift", drift)
        self.volatility = _at_least(owner, "volatility", volatility, 0.0, strict=False)

    def _generate(self, n_steps: int, dt: float, rng: np.random.Generator | None) -> np.ndarray:
        assert rng is not None
        z = rng.standard_normal(n_steps)
        sigma = self.volatility
        log_returns = (self.drift - 0.5 * sigma * sigma) * dt + sigma * math.sqrt(dt) * z
        return _path_from_log_returns(self.initial, log_returns)


# ----------------------------------------------------------------------------- jumps
class JumpDiffusion(ExogenousDriver):
    """Merton jump diffusion: GBM plus Poisson jumps with normal log sizes.

    Per step: ``N ~ Poisson(jump_intensity * dt)`` jumps whose log sizes are
    ``Normal(jump_mean, jump_std)``, so their sum is ``N * jump_mean + sqrt(N) * jump_std *
    Z2``. The drift is **compensated** (Merton 1976): the diffusion part has drift ``drift -
    volatility**2 / 2 - jump_intensity * kappa`` with ``kappa = exp(jump_mean + jump_std**2 /
    2) - 1``, so ``E[S_t] = initial * exp(drift * t)`` as in :class:`GBM`. Jumps then change
    the shape of the distribution (fat left tail for a negative ``jump_mean``), not its mean;
    for a path that also trends down, set a negative ``drift``.

    Random numbers are drawn in a fixed order: ``n_steps`` normals (diffusion), ``n_steps``
    Poisson counts, ``n_steps`` normals (jump sizes), always all three arrays.

    Args:
        initial: Value at step 0 (> 0).
        drift: Annualised expected growth rate of the price.
        volatility: Annualised diffusion volatility (>= 0).
        jump_intensity: Expected jumps per year (>= 0).
        jump_mean: Mean of the log jump size.
        jump_std: Standard deviation of the log jump size (>= 0).
    """

    model = "jump"

    def __init__(
        self,
        initial: float,
        drift: float = 0.0,
        volatility: float = 0.8,
        jump_intensity: float = 12.0,
        jump_mean: float = -0.05,
        jump_std: float = 0.1,
    ) -> None:
        owner = type(self).__name__
        self.initial = _at_least(owner, "initial", initial, 0.0, strict=True)
        self.drift = _finite(owner, "drift", drift)
        self.volatility = _at_least(owner, "volatility", volatility, 0.0, strict=False)
        self.jump_intensity = _at_least(owner, "jump_intensity", jump_intensity, 0.0, False)
        self.jump_mean = _finite(owner, "jump_mean", jump_mean)
        self.jump_std = _at_least(owner, "jump_std", jump_std, 0.0, strict=False)

    @property
    def kappa(self) -> float:
        """Expected relative jump size ``E[e^J] - 1``, the compensator per unit intensity."""
        return math.expm1(self.jump_mean + 0.5 * self.jump_std**2)

    def _generate(self, n_steps: int, dt: float, rng: np.random.Generator | None) -> np.ndarray:
        assert rng is not None
        z = rng.standard_normal(n_steps)
        counts = rng.poisson(self.jump_intensity * dt, n_steps)
        z_jump = rng.standard_normal(n_steps)
        sigma = self.volatility
        mu = self.drift - 0.5 * sigma * sigma - self.jump_intensity * self.kappa
        jumps = counts * self.jump_mean + np.sqrt(counts) * self.jump_std * z_jump
        log_returns = mu * dt + sigma * math.sqrt(dt) * z + jumps
        return _path_from_log_returns(self.initial, log_returns)


# ----------------------------------------------------------------------------- GARCH
@numba.njit(cache=True, nogil=True)
def _garch_log_returns(
    z: np.ndarray, drift_dt: float, omega: float, alpha: float, beta: float, h0: float
) -> np.ndarray:  # pragma: no cover - compiled
    out = np.empty(z.size, dtype=np.float64)
    h = h0
    for t in range(z.size):
        eps = math.sqrt(h) * z[t]
        out[t] = drift_dt - 0.5 * h + eps
        h = omega + alpha * eps * eps + beta * h
    return out


class Garch(ExogenousDriver):
    """GARCH(1,1) volatility on per-step log returns: volatility clusters.

    Per step ``t``: ``eps_t = sqrt(h_t) * Z_t``, log return ``r_t = drift * dt - h_t / 2 +
    eps_t`` (the ``-h_t / 2`` keeps ``drift`` the expected growth rate, as in :class:`GBM`),
    and ``h_(t+1) = omega + alpha * eps_t**2 + beta * h_t``. ``omega = (1 - alpha - beta) *
    volatility**2 * dt``, so the unconditional per-step variance is ``volatility**2 * dt``,
    and ``h_0`` starts there. The recursion runs in a compiled loop (10^6 steps in a few ms).

    Args:
        initial: Value at step 0 (> 0).
        drift: Annualised expected growth rate.
        volatility: Long-run annualised volatility (>= 0).
        alpha: Weight of the last squared shock (>= 0).
        beta: Weight of the last variance (>= 0); ``alpha + beta < 1``.
    """

    model = "garch"

    def __init__(
        self,
        initial: float,
        drift: float = 0.0,
        volatility: float = 0.8,
        alpha: float = 0.08,
        beta: float = 0.9,
    ) -> None:
        owner = type(self).__name__
        self.initial = _at_least(owner, "initial", initial, 0.0, strict=True)
        self.drift = _finite(owner, "drift", drift)
        self.volatility = _at_least(owner, "volatility", volatility, 0.0, strict=False)
        self.alpha = _at_least(owner, "alpha", alpha, 0.0, strict=False)
        self.beta = _at_least(owner, "beta", beta, 0.0, strict=False)
        if not self.alpha + self.beta < 1:
            raise ValueError(
                f"The 'alpha' and 'beta' parameters of {owner} must satisfy alpha + beta < 1 "
                f"(a stationary variance). Got alpha={alpha!r}, beta={beta!r} instead."
            )

    def omega(self, dt: float) -> float:
        """The GARCH constant for a step of ``dt`` years."""
        return (1.0 - self.alpha - self.beta) * self.volatility**2 * dt

    def _generate(self, n_steps: int, dt: float, rng: np.random.Generator | None) -> np.ndarray:
        assert rng is not None
        z = rng.standard_normal(n_steps)
        h0 = self.volatility**2 * dt
        log_returns = _garch_log_returns(
            z, self.drift * dt, self.omega(dt), self.alpha, self.beta, h0
        )
        return _path_from_log_returns(self.initial, log_returns)


# ----------------------------------------------------------------------------- scripted
class ScriptedPath(ExogenousDriver):
    """A deterministic path: explicit values per step, or geometric segments.

    Give exactly one of ``values`` or ``segments``:

    - ``values``: the index after each step. ``values[0]`` is the value after step 0, i.e.
      ``path[1]``; ``path[0]`` is always ``initial``. After the list ends the last value
      holds; a list longer than the run is cut.
    - ``segments``: ``{"steps": k, "change": c}`` entries, applied in order: over ``k`` steps
      the value moves from its level ``v`` at the start of the segment to exactly ``v * (1 +
      c)``, linearly in log price (by the factor ``(1 + c) ** (1 / k)`` each step). After
      the segments end the value holds. ``{"steps": 1440, "change": -0.45}`` is a 45% fall
      over a day of minute steps. ``steps`` may be given as an integral float (TOML tables
      read as ``dict[str, float]``).

    Args:
        initial: Value at step 0 (> 0).
        values: Positive prices, one per step from step 0 on.
        segments: Geometric segments, see above.

    Examples:
        >>> ScriptedPath(100.0, values=[101.0, 99.0]).generate(4, 60.0).tolist()
        [100.0, 101.0, 99.0, 99.0, 99.0]
    """

    model = "path"
    random = False

    def __init__(
        self,
        initial: float,
        values: Sequence[float] | None = None,
        segments: Sequence[Mapping[str, float]] | None = None,
    ) -> None:
        owner = type(self).__name__
        self.initial = _at_least(owner, "initial", initial, 0.0, strict=True)
        if (values is None) == (segments is None):
            raise ValueError(
                f"{owner} needs exactly one of the 'values' and 'segments' parameters. Got "
                f"values={values!r}, segments={segments!r} instead."
            )
        self.values = values
        self.segments = segments
        if values is not None:
            arr = np.asarray(values, dtype=np.float64) if _all_real(values) else None
            if arr is None or arr.ndim != 1 or arr.size == 0:
                raise _param_error(owner, "values", "a non-empty list of floats", values)
            bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
            if bad.size:
                raise _param_error(
                    owner,
                    "values",
                    "a list of finite floats > 0",
                    f"values[{int(bad[0])}] = {float(arr[bad[0]])!r}",
                )
            self._values = arr
        else:
            if isinstance(segments, str | bytes | Mapping) or not isinstance(segments, Sequence):
                raise _param_error(owner, "segments", "a list of {steps, change} dicts", segments)
            if len(segments) == 0:
                raise _param_error(owner, "segments", "a non-empty list", segments)
            self._segments = [_check_segment(owner, i, seg) for i, seg in enumerate(segments)]

    def _generate(self, n_steps: int, dt: float, rng: np.random.Generator | None) -> np.ndarray:
        path = np.empty(n_steps + 1, dtype=np.float64)
        path[0] = self.initial
        if self.values is not None:
            k = min(n_steps, self._values.size)
            path[1 : k + 1] = self._values[:k]
            path[k + 1 :] = self._values[k - 1] if k else self.initial
            return path
        level, t = self.initial, 0
        for steps, change in self._segments:
            if t >= n_steps:
                break
            take = min(steps, n_steps - t)
            j = np.arange(1, take + 1, dtype=np.float64)
            path[t + 1 : t + take + 1] = level * np.exp(math.log1p(change) * j / steps)
            if take == steps:
                # Anchor each segment end exactly, so long scripts do not accumulate error.
                level = level * (1.0 + change)
                path[t + take] = level
            t += take
        path[t + 1 :] = path[t]
        return path


def _all_real(values: object) -> bool:
    if isinstance(values, str | bytes | Mapping):
        return False
    try:
        return all(_is_real(v) for v in values)  # type: ignore[union-attr]
    except TypeError:
        return False


def _check_segment(owner: str, i: int, seg: object) -> tuple[int, float]:
    rule = "a dict {'steps': int >= 1, 'change': float > -1}"
    if not isinstance(seg, Mapping) or set(seg) != {"steps", "change"}:
        raise _param_error(owner, f"segments[{i}]", rule, seg)
    steps, change = seg["steps"], seg["change"]
    if not _is_real(steps) or not math.isfinite(steps) or steps != int(steps) or steps < 1:
        raise _param_error(owner, f"segments[{i}]", rule, seg)
    if not _is_real(change) or not math.isfinite(change) or change <= -1:
        raise _param_error(owner, f"segments[{i}]", rule, seg)
    return int(steps), float(change)


# ----------------------------------------------------------------------------- replay
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
_PARQUET_SUFFIXES = (".parquet", ".pq")


class Replay(ExogenousDriver):
    """A recorded price series read from a CSV or Parquet file.

    The file format follows the extension (``.csv`` and compressed ``.csv.gz`` etc., or
    ``.parquet`` / ``.pq``). The column is read at construction, so a missing file, an
    unknown column or a non-numeric column fails before the run starts. :meth:`generate`
    returns ``scale * column[start_row : start_row + n_steps + 1]``; rows are 0-based data
    rows (the CSV header is not a row).

    Args:
        path: The file.
        column: Name of the price column.
        start_row: First data row used (its value is ``path[0]``).
        scale: Factor applied to every price (> 0), e.g. to change units.

    Raises:
        ValueError: If the file is missing or unreadable, the column is not in it (the
            message lists the columns found) or not numeric, or a parameter is invalid.
            :meth:`generate` raises when the file has too few rows from ``start_row`` or a
            used price is NaN or not positive (naming the row).
    """

    model = "replay"
    random = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        column: str = "price",
        start_row: int = 0,
        scale: float = 1.0,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise _param_error(owner, "path", "a file path", path)
        if not isinstance(column, str) or not column:
            raise _param_error(owner, "column", "a non-empty string", column)
        if not _is_int(start_row) or start_row < 0:
            raise _param_error(owner, "start_row", "an int >= 0", start_row)
        self.path = path
        self.column = column
        self.start_row = int(start_row)
        self.scale = _at_least(owner, "scale", scale, 0.0, strict=True)
        self._prices = _read_price_column(Path(path), column)

    @property
    def n_rows(self) -> int:
        """Number of data rows in the file."""
        return int(self._prices.size)

    def _generate(self, n_steps: int, dt: float, rng: np.random.Generator | None) -> np.ndarray:
        need = n_steps + 1
        have = max(self.n_rows - self.start_row, 0)
        if have < need:
            raise ValueError(
                f"Replay file {str(self.path)!r} has {have} rows from start_row "
                f"{self.start_row} ({self.n_rows} rows in all), but a run of {n_steps} steps "
                f"needs n_steps + 1 = {need}"
            )
        raw = self._prices[self.start_row : self.start_row + need]
        bad = np.flatnonzero(~(raw > 0))  # catches NaN too
        if bad.size:
            row = self.start_row + int(bad[0])
            raise ValueError(
                f"Replay file {str(self.path)!r}, column {self.column!r}: the price at data "
                f"row {row} (0-based) is {float(raw[bad[0]])!r}; prices must be positive "
                f"numbers"
            )
        return raw * self.scale


def _read_price_column(path: Path, column: str) -> np.ndarray:
    import pandas as pd  # only replay needs pandas; keep the module import light

    name = path.name.lower()
    if not path.is_file():
        raise ValueError(
            f"The 'path' parameter of Replay must be an existing file. Got "
            f"{str(path)!r} instead (no such file)."
        )
    try:
        if name.endswith(_CSV_SUFFIXES):
            columns = list(pd.read_csv(path, nrows=0).columns)
            if column not in columns:
                raise _missing_column(path, column, columns)
            series = pd.read_csv(path, usecols=[column])[column]
        elif name.endswith(_PARQUET_SUFFIXES):
            import pyarrow.parquet as pq

            columns = list(pq.read_schema(path).names)
            if column not in columns:
                raise _missing_column(path, column, columns)
            series = pd.read_parquet(path, columns=[column])[column]
        else:
            raise ValueError(
                f"The 'path' parameter of Replay must name a CSV ({', '.join(_CSV_SUFFIXES)}) "
                f"or Parquet ({', '.join(_PARQUET_SUFFIXES)}) file. Got {str(path)!r} instead."
            )
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"Replay could not read {str(path)!r}: {exc}") from exc
    try:
        return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"Replay file {str(path)!r}: column {column!r} must be numeric, got dtype "
            f"{series.dtype}"
        ) from exc


def _missing_column(path: Path, column: str, columns: list[str]) -> ValueError:
    return ValueError(
        f"Replay file {str(path)!r} has no column {column!r}; the columns found are {columns}"
    )


# ----------------------------------------------------------------------------- factory
#: Driver classes by model name, as used by ``exogenous.model`` in a scenario.
DRIVERS: dict[str, type[ExogenousDriver]] = {
    cls.model: cls for cls in (GBM, JumpDiffusion, Garch, ScriptedPath, Replay)
}


def make_driver(model: str, **params: Any) -> ExogenousDriver:
    """Build the driver named ``model`` from keyword parameters.

    Args:
        model: One of ``"gbm"``, ``"jump"``, ``"garch"``, ``"path"``, ``"replay"``.
        **params: The driver's constructor parameters.

    Raises:
        ValueError: If the model name is unknown (listing the valid names), a parameter is
            not one the driver takes (listing those it takes), or a value is invalid.

    Examples:
        >>> make_driver("gbm", initial=2000.0, volatility=0.5).volatility
        0.5
    """
    cls = DRIVERS.get(model) if isinstance(model, str) else None
    if cls is None:
        raise ValueError(
            f"The 'model' parameter of make_driver must be one of {sorted(DRIVERS)}. Got "
            f"{model!r} instead."
        )
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"{cls.__name__} (model {model!r}) does not take the parameter(s) {unknown}; it "
            f"takes {accepted}"
        )
    return cls(**params)


# ----------------------------------------------------------------------------- shocks
def apply_fundamental_jumps(
    path: np.ndarray, steps: Sequence[int], sizes: Sequence[float]
) -> np.ndarray:
    """A copy of ``path`` with relative jumps: value ``s`` onward multiplied by ``1 + size``.

    Jumps compose multiplicatively: two jumps of -10% at steps 3 and 5 leave ``path[5:]``
    multiplied by 0.81. Several jumps may share a step.

    Args:
        path: The index path (not modified).
        steps: Path positions from which each jump applies, each in ``[0, len(path))``.
        sizes: Relative sizes, each finite and > -1.

    Returns:
        A new float64 array.

    Raises:
        ValueError: If the lengths differ, a step is out of range or a size invalid.

    Examples:
        >>> apply_fundamental_jumps(np.full(4, 100.0), [2], [-0.5]).tolist()
        [100.0, 100.0, 50.0, 50.0]
    """
    out = np.array(path, dtype=np.float64, copy=True)
    if out.ndim != 1:
        raise _param_error("apply_fundamental_jumps", "path", "a 1-d array", out.shape)
    steps, sizes = list(steps), list(sizes)
    if len(steps) != len(sizes):
        raise ValueError(
            f"apply_fundamental_jumps needs as many sizes as steps. Got {len(steps)} steps "
            f"and {len(sizes)} sizes instead."
        )
    factor = np.ones(out.size, dtype=np.float64)
    for k, (step, size) in enumerate(zip(steps, sizes, strict=True)):
        if not _is_int(step) or not 0 <= step < out.size:
            raise _param_error(
                "apply_fundamental_jumps", f"steps[{k}]", f"an int in [0, {out.size - 1}]", step
            )
        if not _is_real(size) or not math.isfinite(size) or size <= -1:
            raise _param_error("apply_fundamental_jumps", f"sizes[{k}]", "a float > -1", size)
        factor[int(step)] *= 1.0 + float(size)
    return out * np.cumprod(factor)
