"""What every agent shares: order batches, the population base class, parameter draws."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import mesa
import numpy as np

from marginsim.config import Dist
from marginsim.market.engine import OrderKind

if TYPE_CHECKING:
    from marginsim.market.view import MarketView

__all__ = ["OrderBatch", "Population", "Trader", "draw"]


def draw(dist: Dist, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` values of a scenario distribution, clipped to its [min, max].

    Args:
        dist: The distribution from the scenario.
        n: Number of draws.
        rng: The stream to draw from.

    Returns:
        float64 array of length ``n``.
    """
    if dist.dist == "const":
        out = np.full(n, dist.value, dtype=np.float64)
    elif dist.dist == "uniform":
        out = rng.uniform(dist.low, dist.high, n)
    elif dist.dist == "normal":
        out = rng.normal(dist.mean, dist.std, n)
    else:  # lognormal, parametrised by its median
        out = dist.median * np.exp(dist.sigma * rng.standard_normal(n))
    if dist.min is not None or dist.max is not None:
        out = np.clip(out, dist.min, dist.max)
    return out


@dataclasses.dataclass(frozen=True)
class OrderBatch:
    """Orders of one agent's activation, as arrays in the order they are to be submitted.

    Attributes:
        instrument: Instrument index in the engine.
        side: +1 buy, -1 sell.
        kind: :class:`~marginsim.market.engine.OrderKind` codes.
        price_ticks: Limit price (ignored for market orders).
        qty_lots: Quantity (for a modify: the new quantity).
        account: Ledger holder id of the account sending each order.
        order_ref: Target order id of a cancel or modify, else 0.
    """

    instrument: np.ndarray
    side: np.ndarray
    kind: np.ndarray
    price_ticks: np.ndarray
    qty_lots: np.ndarray
    account: np.ndarray
    order_ref: np.ndarray

    @classmethod
    def empty(cls) -> OrderBatch:
        """A batch with no orders."""
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z, z, z, z)

    @classmethod
    def build(
        cls,
        instrument: int | np.ndarray,
        side: int | np.ndarray,
        kind: int | np.ndarray,
        price_ticks: int | np.ndarray,
        qty_lots: int | np.ndarray,
        account: int | np.ndarray,
        order_ref: int | np.ndarray = 0,
    ) -> OrderBatch:
        """Broadcast scalars and arrays into one batch of int64 arrays.

        Raises:
            ValueError: If two array arguments differ in length.
        """
        columns = [
            np.asarray(x, dtype=np.int64).reshape(-1) if np.ndim(x) else x
            for x in (instrument, side, kind, price_ticks, qty_lots, account, order_ref)
        ]
        lengths = {c.shape[0] for c in columns if isinstance(c, np.ndarray)}
        if len(lengths) > 1:
            raise ValueError(f"order batch arrays must have equal lengths, got {sorted(lengths)}")
        n = lengths.pop() if lengths else 1
        # np.full for scalars is several times cheaper than np.broadcast_arrays, and batches
        # are built for every agent activation.
        return cls(
            *(c if isinstance(c, np.ndarray) else np.full(n, c, dtype=np.int64) for c in columns)
        )

    @classmethod
    def concat(cls, batches: list[OrderBatch]) -> OrderBatch:
        """Concatenate batches, keeping their order."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        return cls(
            *(
                np.concatenate([getattr(b, f.name) for b in batches])
                for f in dataclasses.fields(cls)
            )
        )

    def __len__(self) -> int:
        return int(self.side.shape[0])

    @classmethod
    def sell_wallet_share(
        cls, view: MarketView, instrument: int, holders: np.ndarray, asset: int, share: float
    ) -> OrderBatch:
        """Market sells of ``share`` of each holder's ``asset`` wallet, rounded down to lots.

        Holders whose share rounds to no lot send nothing.
        """
        wallet = view.balances(holders, asset)
        per_lot = view.base_units_per_lot(instrument)
        lots = np.floor(wallet * share / per_lot).astype(np.int64)
        sell = lots > 0
        if not sell.any():
            return cls.empty()
        return cls.build(instrument, -1, int(OrderKind.MARKET), 0, lots[sell], holders[sell])

    @classmethod
    def cancels(cls, instrument: int, account: np.ndarray, order_ids: np.ndarray) -> OrderBatch:
        """Cancel orders ``order_ids`` of ``account``."""
        return cls.build(instrument, 1, int(OrderKind.CANCEL), 0, 0, account, order_ids)


class Trader(mesa.Agent):
    """A Mesa agent that acts by returning orders; it never touches a venue itself.

    Subclasses implement :meth:`act`; the model submits the returned batch to the engine in
    activation order and hands the results back through :meth:`on_results`.
    """

    def act(self, view: MarketView) -> OrderBatch:
        """Decide this step's orders from a read-only view of the market."""
        raise NotImplementedError

    def on_results(
        self, batch: OrderBatch, order_id: np.ndarray, status: np.ndarray, resting: np.ndarray
    ) -> None:
        """Learn the engine's answer to this step's batch (ids assigned, resting lots)."""


class Population(Trader):
    """Many accounts of one strategy family, held as arrays and decided in one call.

    Attributes:
        first_holder: Ledger id of account 0; accounts are ``first_holder + arange(count)``.
        count: Number of accounts.
        stream: The population's own random stream (DESIGN.md section 3); Mesa's ``rng``
            attribute is the model's and is not used for decisions.
    """

    def __init__(
        self, model: mesa.Model, first_holder: int, count: int, rng: np.random.Generator
    ) -> None:
        super().__init__(model)
        self.first_holder = int(first_holder)
        self.count = int(count)
        self.stream = rng
        self.holders = self.first_holder + np.arange(self.count, dtype=np.int64)


class RestingOrders:
    """Order ids an agent left resting, with the step each was placed, for later cancels."""

    def __init__(self) -> None:
        self.order_id = np.zeros(0, dtype=np.int64)
        self.account = np.zeros(0, dtype=np.int64)
        self.placed_step = np.zeros(0, dtype=np.int64)

    def add(self, order_id: np.ndarray, account: np.ndarray, step: int) -> None:
        """Remember orders that rest on the book."""
        self.order_id = np.concatenate([self.order_id, order_id])
        self.account = np.concatenate([self.account, account])
        self.placed_step = np.concatenate(
            [self.placed_step, np.full(order_id.shape[0], step, dtype=np.int64)]
        )

    def pop_expired(self, step: int, lifetime_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Forget and return (order ids, accounts) placed ``lifetime_steps`` or more ago."""
        expired = step - self.placed_step >= lifetime_steps
        out = self.order_id[expired], self.account[expired]
        keep = ~expired
        self.order_id = self.order_id[keep]
        self.account = self.account[keep]
        self.placed_step = self.placed_step[keep]
        return out
