"""Price oracles: how each protocol reads the simulated market (spot, TWAP, push feeds, medians).

An oracle observes the market once per step, in the oracle phase (DESIGN.md section 4,
phase 2), through the read-only :class:`PriceQuotes` interface, and then reports
:attr:`Oracle.price` until the next update. Oracles that read a thin book or pool inherit
its manipulability: a ``mid`` or ``last`` oracle moves as soon as the market it reads moves,
a ``twap`` moves by ``1 / window_steps`` of the move per step, and a ``push`` feed lags until
the move exceeds its deviation threshold or its heartbeat expires.

``Oracle.price is None`` means "no price": nothing observed yet, or (for ``last``, ``mid``
and ``median``) nothing observable this step. Protocols must not liquidate, nor value
collateral, on a ``None`` price; they treat the account as not assessable this step.

Sources are instrument ids or AMM pool ids; the source ``"index"`` is the exogenous index.
"""

from __future__ import annotations

import abc
import collections
import math
import statistics
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

__all__ = [
    "INDEX",
    "ORACLE_KINDS",
    "IndexOracle",
    "LastPriceOracle",
    "MedianOracle",
    "MidPriceOracle",
    "Oracle",
    "OracleSet",
    "PriceQuotes",
    "PushOracle",
    "TwapOracle",
    "make_oracle",
]

#: The source name of the exogenous index.
INDEX = "index"

_READS = ("mid", "last", "index")


class PriceQuotes(Protocol):
    """What an oracle may read of the market: the read-only quotes the model provides."""

    def mid_price(self, source: str) -> float | None:
        """Book mid or AMM pool price of ``source``; ``None`` if there is none (empty side)."""
        ...

    def last_price(self, source: str) -> float | None:
        """Last trade price of ``source``; ``None`` if it has not traded yet."""
        ...

    def index_price(self) -> float:
        """The exogenous index value now."""
        ...


# ----------------------------------------------------------------------------- validation
def _param_error(owner: str, name: str, rule: str, value: object) -> ValueError:
    return ValueError(f"The {name!r} parameter of {owner} must be {rule}. Got {value!r} instead.")


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _check_name(owner: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise _param_error(owner, "name", "a non-empty string", name)
    return name


def _check_source(owner: str, param: str, source: object) -> str:
    if not isinstance(source, str) or not source:
        raise _param_error(owner, param, "a non-empty string (a market id or 'index')", source)
    return source


def _check_reads(owner: str, reads: object, sources: Sequence[str]) -> str:
    if reads not in _READS:
        raise _param_error(owner, "reads", "one of 'mid', 'last', 'index'", reads)
    if reads == INDEX and any(s != INDEX for s in sources):
        # Reading the index from a market source is almost certainly a scenario mistake.
        raise _param_error(
            owner,
            "reads",
            "'mid' or 'last' when a source is a market ('index' reads need source 'index')",
            reads,
        )
    return str(reads)


def _observe(quotes: PriceQuotes, source: str, reads: str) -> float | None:
    """One observation: the index for source ``"index"``, else the market's mid or last."""
    if source == INDEX:
        return float(quotes.index_price())
    value = quotes.mid_price(source) if reads == "mid" else quotes.last_price(source)
    # A non-positive or NaN quote is treated as no quote, never published.
    if value is None or not value > 0 or not math.isfinite(value):
        return None
    return float(value)


# ----------------------------------------------------------------------------- base class
class Oracle(abc.ABC):
    """A price feed updated once per step.

    Subclasses implement :meth:`_update`, which returns the price to report after this
    step's observation (or ``None``) and whether it is a new publication.

    Attributes:
        name: The oracle's name (protocols refer to it by name).
    """

    #: The ``kind`` :func:`make_oracle` knows the class by.
    kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        self.name = _check_name(type(self).__name__, name)
        self._price: float | None = None
        self._last_update_step: int | None = None
        self._last_step: int | None = None

    @property
    def price(self) -> float | None:
        """The price reported now; ``None`` means no price (do not liquidate on it)."""
        return self._price

    @property
    def last_update_step(self) -> int | None:
        """The step at which :attr:`price` was last set to a value; ``None`` before."""
        return self._last_update_step

    def update(self, step: int, quotes: PriceQuotes) -> None:
        """Observe the market at ``step`` (steps never decrease).

        A second update in the same step re-observes the market: the model does this between
        liquidation rounds, because a feed that reads the book sees forced sales at once. It
        replaces the step's observation (a TWAP does not count the step twice).

        Raises:
            ValueError: If ``step`` is not an int at least the previous update's step.
        """
        owner = f"{type(self).__name__}.update"
        if not _is_int(step) or step < 0:
            raise _param_error(owner, "step", "an int >= 0", step)
        if self._last_step is not None and step < self._last_step:
            raise _param_error(
                owner, "step", f"at least the previous update's step {self._last_step}", step
            )
        step = int(step)
        gap = 1 if self._last_step is None else step - self._last_step
        self._last_step = step
        price, published = self._update(step, gap, quotes)
        self._price = price
        if published:
            self._last_update_step = step

    @abc.abstractmethod
    def _update(
        self, step: int, gap: int, quotes: PriceQuotes
    ) -> tuple[float | None, bool]:  # pragma: no cover - abstract
        ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, price={self._price!r})"


class _SpotOracle(Oracle):
    """Reports the current observation of one source, or ``None`` when there is none."""

    reads: ClassVar[str]

    def __init__(self, name: str, source: str) -> None:
        super().__init__(name)
        owner = type(self).__name__
        self.source = _check_source(owner, "source", source)
        if self.source == INDEX:
            raise _param_error(
                owner,
                "source",
                f"a market id (a {self.kind!r} oracle reads a market; use kind "
                "'index' for the index)",
                source,
            )

    def _update(self, step: int, gap: int, quotes: PriceQuotes) -> tuple[float | None, bool]:
        value = _observe(quotes, self.source, self.reads)
        return value, value is not None


class LastPriceOracle(_SpotOracle):
    """The source's last trade price (``None`` before its first trade).

    Args:
        name: Oracle name.
        source: Instrument or pool id.
    """

    kind = "last"
    reads = "last"


class MidPriceOracle(_SpotOracle):
    """The source's book mid or pool price now (``None`` while a book side is empty).

    The easiest oracle to manipulate: one order that moves a thin book's mid moves it.

    Args:
        name: Oracle name.
        source: Instrument or pool id.
    """

    kind = "mid"
    reads = "mid"


class IndexOracle(Oracle):
    """The exogenous index itself: an oracle no trader in the simulation can move.

    Args:
        name: Oracle name.
    """

    kind = "index"

    def _update(self, step: int, gap: int, quotes: PriceQuotes) -> tuple[float | None, bool]:
        return float(quotes.index_price()), True


# ----------------------------------------------------------------------------- TWAP
class TwapOracle(Oracle):
    """Time-weighted average of the last ``window_steps`` one-step observations.

    Rules (Uniswap-v2 style accumulation, one observation per step):

    - Before the first observation that has a price, the TWAP has no price.
    - A price, once observed, holds until the next observation: a step with no observable
      price (empty book side, no trade yet) and steps skipped between two updates count the
      last observed price, as a time-weighted accumulator does.
    - The TWAP is the mean of the last ``min(window_steps, steps since the first price)``
      per-step prices, so it ramps up from the first observation instead of waiting for a
      full window.

    Args:
        name: Oracle name.
        source: Instrument or pool id, or ``"index"``.
        reads: ``"mid"`` or ``"last"`` (``"index"`` only with source ``"index"``, which
            reads the index whatever ``reads`` says).
        window_steps: Window length in steps (>= 1).
    """

    kind = "twap"

    def __init__(self, name: str, source: str, reads: str = "mid", window_steps: int = 30) -> None:
        super().__init__(name)
        owner = type(self).__name__
        self.source = _check_source(owner, "source", source)
        self.reads = _check_reads(owner, reads, [self.source])
        if not _is_int(window_steps) or window_steps < 1:
            raise _param_error(owner, "window_steps", "an int >= 1", window_steps)
        self.window_steps = int(window_steps)
        self._window: collections.deque[float] = collections.deque(maxlen=self.window_steps)

    def _update(self, step: int, gap: int, quotes: PriceQuotes) -> tuple[float | None, bool]:
        # A re-observation in the same step (gap 0) replaces that step's value.
        replaced = self._window.pop() if gap == 0 and self._window else None
        if self._window and gap > 1:
            held = self._window[-1]
            self._window.extend([held] * min(gap - 1, self.window_steps))
        value = _observe(quotes, self.source, self.reads)
        if value is None:
            value = (
                replaced if replaced is not None else (self._window[-1] if self._window else None)
            )
            if value is None:
                return None, False
        self._window.append(value)
        # fsum: exact summation, so the average does not depend on accumulated round-off.
        return math.fsum(self._window) / len(self._window), True


# ----------------------------------------------------------------------------- push feed
class PushOracle(Oracle):
    """A push feed (Chainlink style): publishes on a deviation or when the heartbeat expires.

    At each update the feed observes the source. It publishes the observation when

    - nothing has been published yet (the first observation publishes), or
    - ``abs(observed - published) >= deviation * published``, or
    - ``step - last_publication_step >= heartbeat_steps``;

    otherwise it keeps reporting the stale published price. A step with no observable price
    publishes nothing (the feed keeps its last answer, like an on-chain feed whose sources
    are down); the next observable step then publishes if the heartbeat has expired by then.

    Args:
        name: Oracle name.
        source: Instrument or pool id, or ``"index"`` (then the index is observed).
        reads: ``"mid"``, ``"last"``, or ``"index"`` (only with source ``"index"``).
        deviation: Relative deviation threshold, in (0, 1) (0.005 = 0.5%).
        heartbeat_steps: Steps after which a publication is due regardless (>= 1).
    """

    kind = "push"

    def __init__(
        self,
        name: str,
        source: str,
        reads: str = "mid",
        deviation: float = 0.005,
        heartbeat_steps: int = 60,
    ) -> None:
        super().__init__(name)
        owner = type(self).__name__
        self.source = _check_source(owner, "source", source)
        self.reads = _check_reads(owner, reads, [self.source])
        if (
            isinstance(deviation, bool)
            or not isinstance(deviation, int | float | np.integer | np.floating)
            or not 0 < deviation < 1
        ):
            raise _param_error(owner, "deviation", "a float in the range (0, 1)", deviation)
        if not _is_int(heartbeat_steps) or heartbeat_steps < 1:
            raise _param_error(owner, "heartbeat_steps", "an int >= 1", heartbeat_steps)
        self.deviation = float(deviation)
        self.heartbeat_steps = int(heartbeat_steps)

    def _update(self, step: int, gap: int, quotes: PriceQuotes) -> tuple[float | None, bool]:
        published = self._price
        value = _observe(quotes, self.source, self.reads)
        if value is None:
            return published, False
        if (
            published is None
            or abs(value - published) >= self.deviation * published
            or step - self._last_publication() >= self.heartbeat_steps
        ):
            return value, True
        return published, False

    def _last_publication(self) -> int:
        assert self._last_update_step is not None  # set with the first publication
        return self._last_update_step


# ----------------------------------------------------------------------------- median
class MedianOracle(Oracle):
    """Median of several sources, over those that have a price this step.

    With an even number of priced sources the median is the mean of the middle two (as
    :func:`statistics.median`). No source priced: no price.

    Args:
        name: Oracle name.
        sources: Instrument or pool ids (``"index"`` allowed), at least one, no repeats.
        reads: ``"mid"`` or ``"last"``.
    """

    kind = "median"

    def __init__(self, name: str, sources: Sequence[str], reads: str = "mid") -> None:
        super().__init__(name)
        owner = type(self).__name__
        if isinstance(sources, str) or not isinstance(sources, Sequence) or not sources:
            raise _param_error(owner, "sources", "a non-empty list of source names", sources)
        for k, s in enumerate(sources):
            _check_source(owner, f"sources[{k}]", s)
        if len(set(sources)) != len(sources):
            raise _param_error(owner, "sources", "a list without repeats", list(sources))
        self.sources = tuple(sources)
        self.reads = _check_reads(owner, reads, self.sources)

    def _update(self, step: int, gap: int, quotes: PriceQuotes) -> tuple[float | None, bool]:
        seen = [_observe(quotes, s, self.reads) for s in self.sources]
        priced = [v for v in seen if v is not None]
        if not priced:
            return None, False
        return float(statistics.median(priced)), True


# ----------------------------------------------------------------------------- factory
#: Oracle classes by ``kind``.
ORACLE_KINDS: dict[str, type[Oracle]] = {
    cls.kind: cls
    for cls in (LastPriceOracle, MidPriceOracle, IndexOracle, TwapOracle, PushOracle, MedianOracle)
}

#: Parameters each kind takes from the scenario's oracle fields.
_KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "last": ("source",),
    "mid": ("source",),
    "index": (),
    "twap": ("source", "reads", "window_steps"),
    "push": ("source", "reads", "deviation", "heartbeat_steps"),
    "median": ("sources", "reads"),
}
_ALL_PARAMS = frozenset(p for ps in _KIND_PARAMS.values() for p in ps)


def make_oracle(name: str, kind: str, **params: Any) -> Oracle:
    """Build an oracle of ``kind`` named ``name``.

    ``params`` may carry every field of a scenario's oracle table (``source, sources, reads,
    window_steps, deviation, heartbeat_steps``), as ``OracleConfig.model_dump()`` gives them:
    each kind takes the fields it uses and ignores the other known fields. A name that is not
    an oracle field at all is an error.

    Args:
        name: Oracle name.
        kind: ``"last"``, ``"mid"``, ``"index"``, ``"twap"``, ``"push"`` or ``"median"``.
        **params: The kind's parameters (see the classes).

    Raises:
        ValueError: If the kind or a parameter name is unknown, or a value is invalid.

    Examples:
        >>> make_oracle("eth", "twap", source="WETH-USDC", window_steps=5).window_steps
        5
    """
    cls = ORACLE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(
            f"The 'kind' parameter of make_oracle must be one of {sorted(ORACLE_KINDS)}. Got "
            f"{kind!r} instead."
        )
    unknown = sorted(set(params) - _ALL_PARAMS)
    if unknown:
        raise ValueError(
            f"make_oracle got unknown parameter(s) {unknown} for oracle {name!r}; oracle "
            f"parameters are {sorted(_ALL_PARAMS)}"
        )
    used = {k: params[k] for k in _KIND_PARAMS[kind] if k in params}
    return cls(name, **used)


# ----------------------------------------------------------------------------- the set
class OracleSet:
    """The named oracles of a run, updated together in a fixed order.

    Args:
        oracles: The oracles, in the order :meth:`update_all` updates them; names unique.

    Raises:
        ValueError: If two oracles share a name.
    """

    def __init__(self, oracles: Iterable[Oracle] = ()) -> None:
        self._oracles: dict[str, Oracle] = {}
        for oracle in oracles:
            if oracle.name in self._oracles:
                raise ValueError(f"oracle names must be unique; {oracle.name!r} repeats")
            self._oracles[oracle.name] = oracle

    @property
    def names(self) -> tuple[str, ...]:
        """Oracle names, in update order."""
        return tuple(self._oracles)

    def update_all(self, step: int, quotes: PriceQuotes) -> None:
        """Update every oracle at ``step``, in the order given at construction."""
        for oracle in self._oracles.values():
            oracle.update(step, quotes)

    def __getitem__(self, name: str) -> Oracle:
        try:
            return self._oracles[name]
        except KeyError:
            raise KeyError(f"unknown oracle {name!r}; oracles are {list(self._oracles)}") from None

    def price(self, name: str) -> float | None:
        """The price oracle ``name`` reports; ``None`` means no price.

        Raises:
            KeyError: If there is no oracle of that name (the message lists the names).
        """
        return self[name].price

    def prices(self) -> dict[str, float | None]:
        """Every oracle's price by name, in update order."""
        return {name: o.price for name, o in self._oracles.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._oracles

    def __iter__(self) -> Iterator[Oracle]:
        return iter(self._oracles.values())

    def __len__(self) -> int:
        return len(self._oracles)
