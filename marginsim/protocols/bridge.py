"""Cross-chain bridge: locks an asset, issues a wrapped asset after a delay, can fail.

A :class:`Bridge` is a node of the protocol network. Its locked asset sits in the ledger
holder ``bridge:<name>:lock``; the wrapped asset is minted (reason ``bridge mint``) only against
that lock, one ledger unit for one, so at any time ``backing = locked units / wrapped supply``.

* :meth:`Bridge.deposit` moves the asset into the lock now and queues the wrapped mint for
  ``delay_steps`` later (:meth:`Bridge.tick` releases it): the time a message takes to cross.
* :meth:`Bridge.genesis` is the bridging that happened before the run (no delay): the model
  uses it when the scenario endows anybody with the wrapped asset, so the wrapped supply
  starts fully backed.
* :meth:`Bridge.fail` is the ``bridge_failure`` shock: a share of the lock is moved to
  ``bridge:<name>:exploiter`` (a ledger transfer, so conservation stays exact). The wrapped
  tokens outstanding are not burned: they are now backed by less.

Protocols that accept the wrapped asset price it as ``underlying price x backing``
(:meth:`Bridge.backing`, capped at 1, exact), through
:meth:`marginsim.protocols.lending.LendingPool.set_exchange_rate`: the way a proof-of-reserve
feed guards a wrapped asset. A failure therefore lowers the collateral value of every account
holding the wrapped asset at once, which may make it liquidatable, and the loss travels on
like any other collateral loss (DESIGN.md s. 6).
"""

from __future__ import annotations

from fractions import Fraction

import pandas as pd

from marginsim.config import BridgeConfig, Scenario
from marginsim.ledger import Ledger

__all__ = ["BRIDGE_COLUMNS", "Bridge", "wrapped_market_oracles"]

#: Columns of the ``bridge_events`` table.
BRIDGE_COLUMNS: dict[str, str] = {
    "step": "int64",
    "bridge": "object",
    "event": "object",
    "holder": "int64",
    "amount": "int64",
}


class Bridge:
    """A lock-and-mint bridge.

    Args:
        ledger: The ledger (holds both assets).
        config: The bridge's scenario configuration.

    Attributes:
        name: Node name.
        asset: Ledger id of the locked asset.
        wrapped: Ledger id of the wrapped asset.
        lock_holder: Holder id of ``bridge:<name>:lock``.
        exploiter_holder: Holder id of ``bridge:<name>:exploiter``.
        failed_step: Step of the first failure, -1 while intact.
        step: Current step (stamped on event rows).
    """

    def __init__(self, ledger: Ledger, config: BridgeConfig) -> None:
        self.ledger = ledger
        self.config = config
        self.name = config.name
        self.asset = ledger.asset_id(config.asset)
        self.wrapped = ledger.asset_id(config.wrapped)
        self.lock_holder = ledger.add_holder(f"bridge:{self.name}:lock")
        self.exploiter_holder = ledger.add_holder(f"bridge:{self.name}:exploiter")
        self.failed_step = -1
        self.step = 0
        self._pending: list[tuple[int, int, int]] = []  # (release step, holder, units)
        self._rows: list[tuple[int, str, str, int, int]] = []

    # ------------------------------------------------------------------------------- reading
    @property
    def locked_units(self) -> int:
        """Units of the asset held in the lock."""
        return self.ledger.balance(self.lock_holder, self.asset)

    @property
    def pending_units(self) -> int:
        """Wrapped units deposited but not yet minted."""
        return sum(units for _, _, units in self._pending)

    def backing(self) -> Fraction:
        """Locked units not owed to pending deposits per wrapped unit, at most 1 (exact).

        1 with no wrapped supply (nothing is owed).
        """
        supply = self.ledger.supply(self.wrapped)
        if supply <= 0:
            return Fraction(1)
        free = max(self.locked_units - self.pending_units, 0)
        return min(Fraction(1), Fraction(free, supply))

    # ------------------------------------------------------------------------------- actions
    def genesis(self, holder: int, units: int) -> None:
        """Bridging before the run: mint ``units`` of both, lock one, give the other."""
        if units <= 0:
            return
        self.ledger.mint(self.lock_holder, self.asset, units, reason="bridge genesis lock")
        self.ledger.mint(holder, self.wrapped, units, reason="bridge mint")

    def deposit(self, holder: int, units: int, step: int) -> bool:
        """Lock ``units`` of the asset now; the wrapped units arrive ``delay_steps`` later.

        Returns:
            False (nothing changes) when the holder lacks the units, the amount is not
            positive, or the bridge has failed (deposits are halted).
        """
        if units <= 0 or self.failed_step >= 0:
            return False
        if self.ledger.balance(holder, self.asset) < units:
            return False
        self.ledger.transfer(holder, self.lock_holder, self.asset, units)
        self._pending.append((step + self.config.delay_steps, holder, units))
        self._rows.append((step, self.name, "deposit", holder, units))
        if self.config.delay_steps == 0:
            self.tick(step)
        return True

    def tick(self, step: int) -> int:
        """Mint every deposit due by ``step``; returns the wrapped units minted."""
        self.step = step
        due = [p for p in self._pending if p[0] <= step]
        if not due or self.failed_step >= 0:
            return 0
        self._pending = [p for p in self._pending if p[0] > step]
        minted = 0
        for _, holder, units in due:
            self.ledger.mint(holder, self.wrapped, units, reason="bridge mint")
            self._rows.append((step, self.name, "mint", holder, units))
            minted += units
        return minted

    def fail(self, share: float, step: int) -> int:
        """Lose ``share`` of the lock to the exploiter; returns the units lost.

        Pending deposits are frozen from then on (never minted), as a halted bridge does.
        """
        if not 0 < share <= 1:
            raise ValueError(f"a bridge failure share must be in (0, 1], got {share}")
        lost = int(Fraction(self.locked_units) * Fraction(repr(share)))
        if lost:
            self.ledger.transfer(self.lock_holder, self.exploiter_holder, self.asset, lost)
        if self.failed_step < 0:
            self.failed_step = step
        self._rows.append((step, self.name, "failure", self.exploiter_holder, lost))
        return lost

    def events_frame(self) -> pd.DataFrame:
        """Deposits, mints and failures (:data:`BRIDGE_COLUMNS`)."""
        return pd.DataFrame(self._rows, columns=list(BRIDGE_COLUMNS)).astype(BRIDGE_COLUMNS)


def wrapped_market_oracles(scenario: Scenario) -> dict[str, str]:
    """Oracles that read a market of a bridge's wrapped asset: oracle name -> wrapped symbol.

    An oracle reads such a market when one of its sources (a ``median``'s included) is a book
    or AMM pool whose base is the wrapped asset. A lending reserve of the wrapped asset priced
    by such an oracle already sees the bridge's loss through trading (the wrapped book falls
    to a discount), so the model does not multiply it by the backing again; a reserve priced
    by any other oracle (the underlying's) is priced at that oracle times the backing.
    """
    wrapped = {b.wrapped for b in scenario.network.bridges}
    bases = {i.id: i.base for i in scenario.instruments} | {p.id: p.base for p in scenario.amms}
    out: dict[str, str] = {}
    for name, cfg in scenario.oracles.items():
        sources = cfg.sources if cfg.kind == "median" else [cfg.source]
        for source in sources:
            if bases.get(source) in wrapped:
                out[name] = str(bases[source])
                break
    return out
